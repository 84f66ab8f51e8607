//! How timonel logs in to the machines: key file, agent, password, known_hosts.

use std::path::PathBuf;
use std::time::Duration;

use timonel_driver_vm::SshAuth;

use crate::{PASSPHRASE_ENV, PASSWORD_ENV};

/// How timonel logs in to the machines, shared by every node of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `--ssh-key`: a private key file. Without it, the agent and the default key files
    /// (~/.ssh/id_ed25519, id_ecdsa, id_rsa) are tried, as `ssh` does.
    pub key_file: Option<PathBuf>,
    /// The known_hosts file host keys are checked against (default ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Trust an unknown host's key on first use and record it in `known_hosts`.
    pub accept_new_host_keys: bool,
    /// From [`PASSWORD_ENV`].
    pub password: Option<String>,
    /// From [`PASSPHRASE_ENV`].
    pub key_passphrase: Option<String>,
    pub connect_timeout: Option<Duration>,
}

impl Credentials {
    /// Reads the password and passphrase from the environment.
    pub fn with_env(mut self) -> Self {
        self.password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
        self.key_passphrase = std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty());
        self
    }

    /// The known_hosts file in use.
    pub fn known_hosts_file(&self) -> Option<PathBuf> {
        self.known_hosts
            .clone()
            .or_else(|| dirs_home().map(|h| h.join(".ssh").join("known_hosts")))
    }

    pub(crate) fn auth(&self) -> Vec<SshAuth> {
        let mut auth = Vec::new();
        match &self.key_file {
            Some(path) => auth.push(SshAuth::KeyFile {
                path: path.clone(),
                passphrase: self.key_passphrase.clone(),
            }),
            None => {
                auth.push(SshAuth::Agent);
                if let Some(home) = dirs_home() {
                    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                        let path = home.join(".ssh").join(name);
                        if path.is_file() {
                            auth.push(SshAuth::KeyFile {
                                path,
                                passphrase: self.key_passphrase.clone(),
                            });
                        }
                    }
                }
            }
        }
        if let Some(p) = &self.password {
            auth.push(SshAuth::Password(p.clone()));
        }
        auth
    }
}

/// The user's home folder, where `ssh` keeps `.ssh/`.
fn dirs_home() -> Option<PathBuf> {
    dirs::home_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_try_the_key_file_given_then_the_password() {
        let c = Credentials {
            key_file: Some("/keys/id".into()),
            password: Some("pw".into()),
            ..Default::default()
        };
        let auth = c.auth();
        assert!(
            matches!(&auth[0], SshAuth::KeyFile { path, .. } if path == &PathBuf::from("/keys/id"))
        );
        assert!(matches!(&auth[1], SshAuth::Password(p) if p == "pw"));
        assert_eq!(auth.len(), 2);
        let none = Credentials::default();
        assert!(matches!(none.auth().first(), Some(SshAuth::Agent)));
    }
}
