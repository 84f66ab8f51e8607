//! Which kubeconfig file to write: kubectl's (client-go's) rules.
//!
//! client-go (`tools/clientcmd/config.go`, `PathOptions::GetDefaultFilename`) picks the file it
//! writes new entries and `current-context` into like this, and so do we:
//!
//! 1. the explicit `--kubeconfig` file, whether or not it exists;
//! 2. else `$KUBECONFIG`, split with the OS path-list separator (`:` on unix, `;` on Windows),
//!    empty entries dropped and duplicates removed (first occurrence kept):
//!    - one entry: that entry, whether or not it exists;
//!    - several: the first one that exists; when none exists, the **last** one;
//! 3. else `~/.kube/config` (`%USERPROFILE%\.kube\config` on Windows).
//!
//! minikube takes the *first* `$KUBECONFIG` entry and k3d refuses lists; we follow kubectl so that
//! `kubectl config` and timonel agree on where our context lives.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::KubeconfigError;

/// The environment variable kubectl reads.
pub const KUBECONFIG_ENV: &str = "KUBECONFIG";

/// The kubeconfig file to merge into, from `--kubeconfig`, `$KUBECONFIG` and the home directory.
pub fn resolve_target(explicit: Option<&Path>) -> Result<PathBuf, KubeconfigError> {
    let env = std::env::var_os(KUBECONFIG_ENV);
    let home = dirs::home_dir();
    resolve_target_with(explicit, env.as_deref(), home.as_deref())
}

/// [`resolve_target`] with its inputs passed in: the value of `$KUBECONFIG` (if set) and the
/// home directory (if known). Existence of files is checked on the real file system.
pub fn resolve_target_with(
    explicit: Option<&Path>,
    kubeconfig_env: Option<&OsStr>,
    home: Option<&Path>,
) -> Result<PathBuf, KubeconfigError> {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(path.to_path_buf());
    }
    let files = kubeconfig_env.map(env_files).unwrap_or_default();
    match files.as_slice() {
        [] => {}
        [only] => return Ok(only.clone()),
        [.., last] => {
            // `exists` follows symlinks, like Go's os.Stat: a dangling symlink does not exist.
            let chosen = files.iter().find(|f| f.exists()).unwrap_or(last);
            return Ok(chosen.clone());
        }
    }
    home.map(|h| h.join(".kube").join("config"))
        .ok_or(KubeconfigError::NoHome)
}

/// The entries of a `$KUBECONFIG` value: split, empty ones dropped, duplicates removed.
pub fn env_files(value: &OsStr) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in std::env::split_paths(value) {
        if !path.as_os_str().is_empty() && !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn join(paths: &[&Path]) -> OsString {
        std::env::join_paths(paths).unwrap()
    }

    #[test]
    fn explicit_wins_even_if_missing() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = dir.path().join("nope");
        let env = join(&[&dir.path().join("a")]);
        let got = resolve_target_with(Some(&explicit), Some(&env), Some(dir.path())).unwrap();
        assert_eq!(got, explicit);
    }

    #[test]
    fn single_env_entry_is_used_even_if_missing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let got = resolve_target_with(None, Some(&join(&[&a])), Some(dir.path())).unwrap();
        assert_eq!(got, a);
    }

    #[test]
    fn first_existing_env_entry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&b, "").unwrap();
        std::fs::write(&c, "").unwrap();
        let got = resolve_target_with(None, Some(&join(&[&a, &b, &c])), None).unwrap();
        assert_eq!(got, b);
    }

    #[test]
    fn last_env_entry_when_none_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let got = resolve_target_with(None, Some(&join(&[&a, &b])), None).unwrap();
        assert_eq!(got, b);
    }

    #[test]
    fn empty_entries_and_duplicates_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let sep = if cfg!(windows) { ";" } else { ":" };
        let mut value = OsString::new();
        value.push(sep);
        value.push(a.as_os_str());
        value.push(sep);
        value.push(sep);
        value.push(a.as_os_str());
        value.push(sep);
        // One distinct entry left: used although it does not exist.
        assert_eq!(env_files(&value), vec![a.clone()]);
        assert_eq!(resolve_target_with(None, Some(&value), None).unwrap(), a);
    }

    #[test]
    fn empty_env_falls_back_to_home() {
        let home = Path::new("/home/someone");
        let expected = home.join(".kube").join("config");
        assert_eq!(
            resolve_target_with(None, Some(OsStr::new("")), Some(home)).unwrap(),
            expected
        );
        assert_eq!(
            resolve_target_with(None, None, Some(home)).unwrap(),
            expected
        );
        assert!(matches!(
            resolve_target_with(None, None, None),
            Err(KubeconfigError::NoHome)
        ));
    }
}
