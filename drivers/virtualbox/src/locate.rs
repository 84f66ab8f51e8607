//! Finding VBoxManage: `TIMONEL_VBOXMANAGE`, then `PATH`, then the usual install locations.

use std::path::{Path, PathBuf};

/// Names the VBoxManage binary explicitly (a path).
pub const ENV_VBOXMANAGE: &str = "TIMONEL_VBOXMANAGE";

fn exe_names() -> &'static [&'static str] {
    if cfg!(windows) {
        &["VBoxManage.exe"]
    } else {
        &["VBoxManage", "vboxmanage"]
    }
}

/// The install locations, in the order they are tried, given how to read an env var.
pub fn install_locations(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if cfg!(windows) {
        for var in ["VBOX_INSTALL_PATH", "VBOX_MSI_INSTALL_PATH"] {
            // These may hold `;`-separated lists.
            for dir in env(var)
                .unwrap_or_default()
                .split(';')
                .filter(|d| !d.is_empty())
            {
                out.push(Path::new(dir).join("VBoxManage.exe"));
            }
        }
        for var in ["ProgramFiles", "ProgramW6432", "ProgramFiles(x86)"] {
            if let Some(dir) = env(var) {
                out.push(Path::new(&dir).join(r"Oracle\VirtualBox\VBoxManage.exe"));
            }
        }
        out.push(PathBuf::from(
            r"C:\Program Files\Oracle\VirtualBox\VBoxManage.exe",
        ));
    } else {
        out.push(PathBuf::from(
            "/Applications/VirtualBox.app/Contents/MacOS/VBoxManage",
        ));
        out.push(PathBuf::from("/usr/bin/VBoxManage"));
        out.push(PathBuf::from("/usr/local/bin/VBoxManage"));
    }
    out
}

/// Where VBoxManage is, reading the real environment and file system.
pub fn locate_vboxmanage() -> Option<PathBuf> {
    locate_with(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()), &|p| {
        p.is_file()
    })
}

/// [`locate_vboxmanage`] with the environment and the file test injected (for tests).
pub fn locate_with(
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(explicit) = env(ENV_VBOXMANAGE) {
        return Some(PathBuf::from(explicit));
    }
    if let Some(path) = env("PATH") {
        for dir in std::env::split_paths(&path) {
            for name in exe_names() {
                let candidate = dir.join(name);
                if exists(&candidate) {
                    return Some(candidate);
                }
            }
        }
    }
    install_locations(env).into_iter().find(|p| exists(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_env_var_wins() {
        let env = env_of(&[
            (ENV_VBOXMANAGE, "/opt/vbox/VBoxManage"),
            ("PATH", "/usr/bin"),
        ]);
        assert_eq!(
            locate_with(&env, &|_| true),
            Some(PathBuf::from("/opt/vbox/VBoxManage"))
        );
    }

    #[test]
    fn then_path_then_install_locations() {
        let dir = std::env::temp_dir().join("timonel-vbox-locate");
        let path = std::env::join_paths([dir.clone()]).unwrap();
        let env = env_of(&[("PATH", path.to_str().unwrap())]);
        let in_path = dir.join(exe_names()[0]);
        assert_eq!(
            locate_with(&env, &|p| p == in_path.as_path()),
            Some(in_path.clone())
        );
        let last = install_locations(&env).pop().unwrap();
        assert_eq!(
            locate_with(&env, &|p| p == last.as_path()),
            Some(last.clone())
        );
        assert_eq!(locate_with(&env, &|_| false), None);
    }

    #[cfg(windows)]
    #[test]
    fn windows_reads_the_msi_variable() {
        let env = env_of(&[("VBOX_MSI_INSTALL_PATH", r"D:\VBox\")]);
        assert!(install_locations(&env).contains(&PathBuf::from(r"D:\VBox\VBoxManage.exe")));
    }

    #[cfg(not(windows))]
    #[test]
    fn unix_knows_the_macos_bundle() {
        let env = env_of(&[]);
        assert!(install_locations(&env).contains(&PathBuf::from(
            "/Applications/VirtualBox.app/Contents/MacOS/VBoxManage"
        )));
    }
}
