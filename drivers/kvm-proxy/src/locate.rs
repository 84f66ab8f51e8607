//! Where the helper is: `TIMONEL_KVM_HELPER`, else beside timonel's own executable, else on
//! PATH. When it is nowhere, the error says where it looked and how to get it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The helper's program name (`timonel-kvm.exe` on Windows).
pub const HELPER_NAME: &str = "timonel-kvm";
/// Environment: the helper's path, instead of looking for it.
pub const ENV_HELPER: &str = "TIMONEL_KVM_HELPER";

/// Why the kvm driver cannot be used, and what to do: what `probe` reports, and every call's
/// [`timonel_driver::DriverError::NotAvailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub fix: String,
}

impl Unavailable {
    pub fn to_error(&self) -> timonel_driver::DriverError {
        timonel_driver::DriverError::NotAvailable {
            driver: "kvm".to_string(),
            reason: self.reason.clone(),
            fix: self.fix.clone(),
        }
    }
}

/// How to get the helper, for every error that means it is missing or broken.
pub const INSTALL_FIX: &str =
    "install the helper from timonel's source with `cargo install --path drivers/kvm` \
(it builds against libvirt: first `sudo apt-get install libvirt-dev pkg-config` on Debian/Ubuntu, \
or `sudo dnf install libvirt-devel pkgconf-pkg-config` on Fedora), \
or set TIMONEL_KVM_HELPER to the helper's path";

/// The helper this process uses.
pub fn locate() -> Result<PathBuf, Unavailable> {
    locate_in(
        std::env::var_os(ENV_HELPER),
        std::env::current_exe().ok(),
        std::env::var_os("PATH"),
    )
}

fn file_name() -> String {
    format!("{HELPER_NAME}{}", std::env::consts::EXE_SUFFIX)
}

/// [`locate`] from the given environment variable, own executable and PATH.
pub fn locate_in(
    explicit: Option<OsString>,
    own_exe: Option<PathBuf>,
    path: Option<OsString>,
) -> Result<PathBuf, Unavailable> {
    if let Some(explicit) = explicit.filter(|v| !v.is_empty()) {
        let explicit = PathBuf::from(explicit);
        return if explicit.is_file() {
            Ok(explicit)
        } else {
            Err(Unavailable {
                reason: format!(
                    "its helper program was not found: {ENV_HELPER} is `{}`, which is not a file",
                    explicit.display()
                ),
                fix: INSTALL_FIX.to_string(),
            })
        };
    }
    let beside = own_exe.as_deref().and_then(Path::parent);
    let mut looked = Vec::new();
    if let Some(dir) = beside {
        let candidate = dir.join(file_name());
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(format!("beside timonel in {}", dir.display()));
    }
    if let Some(found) = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(file_name()))
        .find(|c| c.is_file())
    {
        return Ok(found);
    }
    looked.push("on PATH".to_string());
    Err(Unavailable {
        reason: format!(
            "it runs in the helper program `{HELPER_NAME}` (timonel itself links no libvirt), \
             which was not found (looked {})",
            looked.join(" and ")
        ),
        fix: INSTALL_FIX.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn touch(dir: &Path) -> PathBuf {
        let p = dir.join(file_name());
        std::fs::write(&p, b"").unwrap();
        p
    }

    #[test]
    fn the_variable_wins_and_must_name_a_file() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let in_a = touch(a.path());
        touch(b.path());
        let found = locate_in(
            Some(in_a.clone().into()),
            Some(b.path().join("timonel")),
            None,
        );
        assert_eq!(found.unwrap(), in_a);
        let missing = a.path().join("nope");
        let err = locate_in(
            Some(missing.clone().into()),
            Some(b.path().join("timonel")),
            None,
        )
        .unwrap_err();
        assert!(err.reason.contains(ENV_HELPER), "{err:?}");
        assert!(
            err.reason.contains(&missing.display().to_string()),
            "{err:?}"
        );
        assert!(
            err.fix.contains("cargo install --path drivers/kvm"),
            "{err:?}"
        );
    }

    #[test]
    fn beside_timonel_before_path() {
        let (exe_dir, path_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let on_path = touch(path_dir.path());
        let path = std::env::join_paths([path_dir.path()]).unwrap();
        let exe = exe_dir.path().join("timonel");
        assert_eq!(
            locate_in(None, Some(exe.clone()), Some(path.clone())).unwrap(),
            on_path
        );
        let beside = touch(exe_dir.path());
        assert_eq!(locate_in(None, Some(exe), Some(path)).unwrap(), beside);
    }

    #[test]
    fn nowhere_says_where_it_looked_and_what_to_install() {
        let (exe_dir, path_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let path = std::env::join_paths([path_dir.path()]).unwrap();
        let err = locate_in(
            Some(OsString::new()),
            Some(exe_dir.path().join("timonel")),
            Some(path),
        )
        .unwrap_err();
        assert!(
            err.reason
                .contains(&format!("beside timonel in {}", exe_dir.path().display())),
            "{err:?}"
        );
        assert!(err.reason.contains("on PATH"), "{err:?}");
        for package in ["libvirt-dev", "pkg-config", "libvirt-devel"] {
            assert!(err.fix.contains(package), "{err:?}");
        }
    }
}
