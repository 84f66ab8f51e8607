//! What a removed VM leaves behind on disk.

use std::path::{Path, PathBuf};

use timonel_driver::DriverError;

use super::{HyperVDriver, VMID_FILE};
use crate::files::remove_file_when_released;
use crate::parse::Removed;

impl HyperVDriver {
    /// Removes what a removed VM left behind: its disk (`<name>.vhdx`), the ISOs and the
    /// `hyperv-vmid` record in the same directory. Nothing outside that directory is touched,
    /// so a base image can never be removed. Returns the files removed.
    pub(super) async fn remove_leftovers(
        &self,
        removed: &Removed,
    ) -> Result<Vec<PathBuf>, DriverError> {
        let disk_name = format!("{}.vhdx", removed.name);
        let Some(disk) = removed.files.iter().map(PathBuf::from).find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().eq_ignore_ascii_case(&disk_name))
        }) else {
            return Ok(Vec::new());
        };
        let Some(dir) = disk.parent().map(Path::to_path_buf) else {
            return Ok(Vec::new());
        };
        let mut targets = vec![disk.clone()];
        for f in removed.files.iter().map(PathBuf::from) {
            let iso = f.extension().is_some_and(|e| e.eq_ignore_ascii_case("iso"));
            if iso && f.parent() == Some(dir.as_path()) {
                targets.push(f);
            }
        }
        let record = dir.join(VMID_FILE);
        if std::fs::read_to_string(&record)
            .is_ok_and(|id| id.trim().eq_ignore_ascii_case(&removed.vm_id))
        {
            targets.push(record);
        }
        let mut gone = Vec::new();
        for path in targets {
            if remove_file_when_released(&path, self.timing).await? {
                gone.push(path);
            }
        }
        Ok(gone)
    }
}
