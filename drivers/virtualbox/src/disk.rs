//! The base VDI made by VirtualBox itself: timonel hands `VBoxManage convertfromraw` the cloud
//! image's disk as a raw file and VirtualBox writes a dynamic VDI, which every node's disk is
//! then cloned from (`clonemedium`). No `qemu-img`; and `convertfromraw` leaves VirtualBox's
//! media registry alone (the new file is not registered), so nothing needs closing.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{DiskImages, DiskSource, DiskTool, DriverError};

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
    fn disk_tool(&self) -> DiskTool {
        DiskTool {
            name: "VBoxManage convertfromraw",
            formats: &["vdi"],
            source: DiskSource::Raw,
        }
    }

    /// VBoxManage removes a disk it could not finish; one whose process was killed may be left,
    /// so it is removed here too.
    async fn make_disk(&self, source: &Path, dest: &Path, format: &str) -> Result<(), DriverError> {
        debug_assert_eq!(format, "vdi");
        let cmd = self
            .vbox
            .cmd(convert_args(source, dest))
            .timeout(CONVERT_TIMEOUT);
        if let Err(e) = self.vbox.run(cmd).await {
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
