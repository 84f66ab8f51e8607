//! The base VDI made by VirtualBox itself: timonel hands `VBoxManage convertfromraw` the cloud
//! image's disk as a raw file and VirtualBox writes a dynamic VDI, which every node's disk is
//! then cloned from (`clonemedium`). No `qemu-img`; and `convertfromraw` leaves VirtualBox's
//! media registry alone (the new file is not registered), so nothing needs closing.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{DiskImages, DiskSource, DriverError, Reporter};

use crate::driver::VirtualBoxDriver;

/// Converting writes the whole disk (a few GB).
const CONVERT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// `convertfromraw <raw> <dest> --format VDI`: the arguments, in the order VBoxManage 5.x to 7.x
/// all accept (positional files first, then the option).
pub fn convert_args(source: &Path, dest: &Path) -> Vec<String> {
    vec![
        "convertfromraw".to_string(),
        source.to_string_lossy().into_owned(),
        dest.to_string_lossy().into_owned(),
        "--format".to_string(),
        "VDI".to_string(),
    ]
}

#[async_trait]
impl DiskImages for VirtualBoxDriver {
    fn disk_formats(&self) -> &[&'static str] {
        &["vdi"]
    }

    fn disk_source(&self) -> DiskSource {
        DiskSource::Raw
    }

    fn disk_tool(&self) -> String {
        "VBoxManage convertfromraw".to_string()
    }

    async fn make_disk(
        &self,
        source: &Path,
        dest: &Path,
        format: &str,
        _report: &dyn Reporter,
    ) -> Result<(), DriverError> {
        if format != "vdi" {
            return Err(DriverError::Unsupported {
                driver: "virtualbox".to_string(),
                what: format!("making {format} disks"),
            });
        }
        let cmd = self
            .vbox
            .cmd(convert_args(source, dest))
            .timeout(CONVERT_TIMEOUT);
        if let Err(e) = self.vbox.run(cmd).await {
            // VBoxManage removes a disk it could not finish; a killed one may not have.
            let _ = std::fs::remove_file(dest);
            let what = format!("disk `{}`", dest.display());
            return Err(e.into_driver(&what, "make the base VDI"));
        }
        if !dest.is_file() {
            return Err(DriverError::Backend {
                op: "make the base VDI".to_string(),
                message: format!(
                    "VBoxManage convertfromraw reported success but `{}` is not there",
                    dest.display()
                ),
                hint: None,
            });
        }
        Ok(())
    }
}
