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
}
