//! The driver's files beside a VM: the VM id it remembers, and files Hyper-V may still hold open.

use std::path::Path;

use timonel_driver::{poll_until, DriverError, WaitError};

use crate::driver::{Timing, VMID_FILE};

/// Removes `path`, retrying while Hyper-V still holds it open. `Ok(false)` if it was not there.
pub(crate) async fn remove_file_when_released(
    path: &Path,
    timing: Timing,
) -> Result<bool, DriverError> {
    let what = format!("release of `{}`", path.display());
    let result = poll_until::<bool, std::io::Error, _, _>(
        &what,
        timing.file_release_timeout,
        timing.poll_interval,
        || async move {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(Ok(true)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ok(false)),
                // In use (Windows error 32) or denied for a moment: try again.
                Err(e) => Ok(Err(e.to_string())),
            }
        },
    )
    .await;
    result.map_err(|e| match e {
        WaitError::Timeout { last, .. } => DriverError::io(
            format!("could not remove `{}`", path.display()),
            std::io::Error::other(last),
        ),
        WaitError::Failed(source) => {
            DriverError::io(format!("could not remove `{}`", path.display()), source)
        }
    })
}

pub(crate) fn path_string(what: &str, p: &Path) -> Result<String, DriverError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| DriverError::Parse {
            what: what.to_string(),
            message: format!("`{}` is not valid Unicode", p.display()),
        })
}

/// Writes `<dir>/hyperv-vmid` atomically.
pub(crate) fn write_vmid(dir: &Path, id: &str) -> Result<(), DriverError> {
    let tmp = dir.join(format!("{VMID_FILE}.tmp"));
    let dest = dir.join(VMID_FILE);
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&tmp, &dest))
        .map_err(|e| DriverError::io(format!("could not write `{}`", dest.display()), e))
}
