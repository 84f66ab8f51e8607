//! The per-profile SSH key: ed25519, generated in Rust, private key 0600 (unix), public key in
//! OpenSSH format next to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey, PublicKey};

use crate::error::VmError;
use crate::seed::write_atomic;

/// The private key's file name in the key directory (`.pub` is the public key).
pub const PRIVATE_KEY_FILE: &str = "id_ed25519";
pub const PUBLIC_KEY_FILE: &str = "id_ed25519.pub";
/// Where the host keys of the profile's nodes are recorded, one file per node.
pub const KNOWN_HOSTS_DIR: &str = "known_hosts.d";

/// An ed25519 key pair on disk.
#[derive(Clone)]
pub struct SshKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    key: Arc<PrivateKey>,
}

impl std::fmt::Debug for SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key itself.
        f.debug_struct("SshKey")
            .field("private_path", &self.private_path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn key_error(path: &Path, message: impl ToString) -> VmError {
    VmError::Key {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

impl SshKey {
    /// Loads the key in `dir`, generating it first when there is none. `comment` goes into the
    /// public key (`timonel@<profile>`).
    pub fn ensure(dir: &Path, comment: &str) -> Result<Self, VmError> {
        let private_path = dir.join(PRIVATE_KEY_FILE);
        if private_path.exists() {
            return Self::load(dir);
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| key_error(&private_path, e))?;
        let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        key.set_comment(comment);
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| key_error(&private_path, e))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| key_error(&private_path, e))?;
        write_atomic(&private_path, pem.as_bytes(), Some(0o600))?;
        let public_path = dir.join(PUBLIC_KEY_FILE);
        write_atomic(&public_path, format!("{public}\n").as_bytes(), Some(0o644))?;
        tracing::debug!(path = %private_path.display(), "generated SSH key");
        Ok(Self {
            private_path,
            public_path,
            key: Arc::new(key),
        })
    }

    /// Loads an existing key from `dir`.
    pub fn load(dir: &Path) -> Result<Self, VmError> {
        let private_path = dir.join(PRIVATE_KEY_FILE);
        let pem = std::fs::read_to_string(&private_path)
            .map_err(|e| VmError::io(format!("could not read `{}`", private_path.display()), e))?;
        let key = PrivateKey::from_openssh(pem).map_err(|e| key_error(&private_path, e))?;
        if key.is_encrypted() {
            return Err(key_error(&private_path, "it is encrypted"));
        }
        Ok(Self {
            public_path: dir.join(PUBLIC_KEY_FILE),
            private_path,
            key: Arc::new(key),
        })
    }

    /// The public key in OpenSSH format (`ssh-ed25519 AAAA… comment`), for `authorized_keys`.
    pub fn public_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `SHA256:…`
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    pub(crate) fn private(&self) -> Arc<PrivateKey> {
        self.key.clone()
    }
}

/// Where the host key of `node` is recorded in the key directory `dir`.
pub fn host_key_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(KNOWN_HOSTS_DIR).join(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SshKey::ensure(dir.path(), "timonel@dev").unwrap();
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert!(public.trim_end().ends_with(" timonel@dev"), "{public}");
        assert_eq!(public.trim_end(), key.public_openssh());
        let private = std::fs::read_to_string(&key.private_path).unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key.private_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SshKey::ensure(dir.path(), "other").unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let other = SshKey::ensure(tempfile::tempdir().unwrap().path(), "x").unwrap();
        assert_ne!(other.fingerprint(), key.fingerprint());
    }
}
