//! Where timonel keeps its state: `$TIMONEL_HOME`, else `~/.timonel` (`%USERPROFILE%\.timonel`).

use std::path::{Path, PathBuf};

use timonel_driver::ClusterName;

use crate::env;

/// The folders under timonel's home.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$TIMONEL_HOME`, else `<home dir>/.timonel`.
    pub fn from_env() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os(env::TIMONEL_HOME).filter(|v| !v.is_empty()) {
            return Ok(Self::at(PathBuf::from(dir)));
        }
        let home = dirs::home_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find your home directory; set {} to a folder timonel may use",
                env::TIMONEL_HOME
            )
        })?;
        Ok(Self::at(home.join(".timonel")))
    }

    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn profiles(&self) -> PathBuf {
        self.root.join("profiles")
    }
    pub fn profile_dir(&self, name: &ClusterName) -> PathBuf {
        self.profiles().join(name.as_str())
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// This home's identity: a random id made once (0600 file `home-id`), which labels what the
    /// home creates in a backend other homes may share (a Docker daemon), so `delete --all`
    /// tells this home's clusters from other users' and jobs'.
    pub fn id(&self) -> Result<String, crate::error::UserError> {
        use crate::error::UserError;
        let path = self.root.join(ID_FILE);
        let unusable = |what: &str, e: std::io::Error| {
            UserError::new(
                format!("cannot {what} this home's id (`{}`): {e}", path.display()),
                format!(
                    "check that `{}` is yours and writable, or point {} at another folder",
                    self.root.display(),
                    env::TIMONEL_HOME
                ),
            )
        };
        if !path.exists() {
            crate::fsutil::create_dir_all_private(&self.root)
                .and_then(|()| {
                    crate::fsutil::write_new(&path, format!("{}\n", new_id()).as_bytes(), 0o600)
                })
                .map_err(|e| unusable("write", e))?;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| unusable("read", e))?;
        let id = text.trim();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UserError::new(
                format!("`{}` does not hold a timonel home id (32 hex digits)", path.display()),
                "remove it and a new id is made; clusters labelled with the old id then count as another home's (`timonel delete -p NAME` still removes them)",
            ));
        }
        Ok(id.to_ascii_lowercase())
    }
}

/// The file under the home holding its id.
const ID_FILE: &str = "home-id";

fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        let id = home.id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(home.id().unwrap(), id);
        assert_ne!(Home::at(dir.path().join("other")).id().unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("h/home-id"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("h/home-id"), "junk").unwrap();
        assert!(home.id().unwrap_err().to_string().contains("does not hold"));
    }

    #[test]
    fn writers_racing_agree_on_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("h");
        let ids: Vec<String> = (0..8)
            .map(|_| {
                let home = Home::at(root.clone());
                std::thread::spawn(move || home.id().unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    }
}
