//! Host key policies: accept-and-record for timonel's own VMs, an OpenSSH known_hosts file for
//! the user's machines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use russh::client;
use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};

use super::error::SshError;
use crate::seed::write_atomic;

/// How the server's host key is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// timonel's own VMs: accept and record the first key in this file (one key, OpenSSH public
    /// key format), refuse a different one later.
    Record(PathBuf),
    /// The user's machines: the key must be in this OpenSSH known_hosts file, looked up as `host`
    /// (port 22) or `[host]:port`, hashed entries included. With `accept_new` (trust on first
    /// use), an unknown host's key is appended to the file and accepted. A known host offering a
    /// different key of the same algorithm is always refused.
    ///
    /// Patterns (`*`, `?`, `!`) and `@cert-authority`/`@revoked` lines are not understood: such
    /// lines match nothing.
    KnownHosts { file: PathBuf, accept_new: bool },
}

/// Serializes the look-up and the append of trust-on-first-use, so that two connects to one new
/// host in this process record its key once.
static KNOWN_HOSTS_LOCK: StdMutex<()> = StdMutex::new(());

pub(super) struct Client {
    /// `host:port` or `[host]:port`, for messages.
    pub(super) addr: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) policy: HostKeyPolicy,
    pub(super) refusal: Arc<StdMutex<Option<SshError>>>,
}

/// `SHA256:… (ED25519)`, the way `ssh-keygen -l` ends its line.
pub(super) fn fingerprint(key: &PublicKey) -> String {
    let kind = match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".to_string(),
        Algorithm::Ecdsa { .. } => "ECDSA".to_string(),
        Algorithm::Rsa { .. } => "RSA".to_string(),
        Algorithm::Dsa => "DSA".to_string(),
        other => other.as_str().to_string(),
    };
    format!("{} ({kind})", key.fingerprint(HashAlg::Sha256))
}

/// The algorithms of the keys `file` holds for `host`/`port`, for the host key preference (as
/// OpenSSH does: a host known by its RSA key is asked for its RSA key). Empty when the file is
/// missing or unreadable; the check after the handshake reports that.
pub(super) fn known_algorithms(host: &str, port: u16, file: &Path) -> Vec<Algorithm> {
    known_host_keys_path(host, port, file)
        .map(|keys| keys.into_iter().map(|(_, k)| k.algorithm()).collect())
        .unwrap_or_default()
}

/// russh numbers only the lines that are not comments; the line in the file, counting every line.
fn physical_line(file: &Path, counted: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return counted;
    };
    let mut n = 0;
    for (i, line) in text.split('\n').enumerate() {
        if !line.starts_with('#') {
            n += 1;
            if n == counted {
                return i + 1;
            }
        }
    }
    counted
}

impl Client {
    pub(super) fn check(&self, offered: &PublicKey) -> Result<(), SshError> {
        match &self.policy {
            HostKeyPolicy::Record(file) => self.check_recorded(file, offered),
            HostKeyPolicy::KnownHosts { file, accept_new } => {
                self.check_known_hosts(file, *accept_new, offered)
            }
        }
    }

    fn record_error(&self, file: &Path, source: impl ToString) -> SshError {
        SshError::HostKeyRecord {
            addr: self.addr.clone(),
            file: file.to_path_buf(),
            source: std::io::Error::other(source.to_string()),
        }
    }

    fn check_recorded(&self, file: &Path, offered: &PublicKey) -> Result<(), SshError> {
        let offered_text = offered.to_openssh().unwrap_or_default();
        match std::fs::read_to_string(file) {
            Ok(recorded) => {
                let same = PublicKey::from_openssh(recorded.trim())
                    .map(|k| k.key_data() == offered.key_data())
                    .unwrap_or(false);
                if same {
                    Ok(())
                } else {
                    Err(SshError::HostKeyMismatch {
                        addr: self.addr.clone(),
                        file: file.to_path_buf(),
                        expected: recorded.trim().to_string(),
                        offered: offered_text,
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(file, format!("{offered_text}\n").as_bytes(), Some(0o644))
                    .map_err(|e| self.record_error(file, e))?;
                tracing::debug!(addr = %self.addr, "recorded host key");
                Ok(())
            }
            Err(source) => Err(SshError::HostKeyRecord {
                addr: self.addr.clone(),
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    fn check_known_hosts(
        &self,
        file: &Path,
        accept_new: bool,
        offered: &PublicKey,
    ) -> Result<(), SshError> {
        let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let known = match known_host_keys_path(&self.host, self.port, file) {
            Ok(known) => known,
            Err(e) => return Err(self.record_error(file, e)),
        };
        let mut line_of_other = None;
        for (line, key) in known {
            if key.algorithm() != offered.algorithm() {
                continue;
            }
            if key.key_data() == offered.key_data() {
                return Ok(());
            }
            line_of_other.get_or_insert(line);
        }
        if let Some(line) = line_of_other {
            return Err(SshError::HostKeyChanged {
                addr: self.addr.clone(),
                file: file.to_path_buf(),
                line: physical_line(file, line),
                fingerprint: fingerprint(offered),
            });
        }
        if !accept_new {
            return Err(SshError::UnknownHostKey {
                addr: self.addr.clone(),
                file: file.to_path_buf(),
                fingerprint: fingerprint(offered),
            });
        }
        learn(&self.host, self.port, offered, file).map_err(|e| self.record_error(file, e))?;
        tracing::info!(
            addr = %self.addr,
            file = %file.display(),
            fingerprint = %fingerprint(offered),
            "trusted a new host key"
        );
        Ok(())
    }
}

/// Appends `offered` for `host`/`port` to `file`, creating the parent directory (0700 on unix)
/// and the file (0600 on unix) when they do not exist yet; an existing file keeps its mode.
fn learn(host: &str, port: u16, offered: &PublicKey, file: &Path) -> Result<(), String> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
            dir.create(parent)
                .map_err(|e| format!("could not create `{}`: {e}", parent.display()))?;
        }
    }
    let empty = std::fs::metadata(file).map_or(true, |m| m.len() == 0);
    if !empty {
        return learn_known_hosts_path(host, port, offered, file).map_err(|e| e.to_string());
    }
    // russh starts an empty file with a blank line; the first line is written here instead, in
    // the same format.
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let key = offered.to_openssh().map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(file).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut out, format!("{name} {key}\n").as_bytes())
        .map_err(|e| e.to_string())
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            return Ok(false);
        };
        match self.check(key) {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some(e);
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SshKey;

    /// A P-256 host key of another machine, as a known_hosts line carries it.
    const ECDSA_KEY: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEdGgt+tMbR/Fy5gC3nvkr6HVGkXYeqeyzIvA1MaMbMBIbsOaT2B4HjsWNriks5u/LOKWPx4ViXdv36goyu1P2I=";
    /// `[127.0.0.1]:2222` hashed with the salt 1..=20 (HMAC-SHA1, as `ssh-keygen -H` does).
    const HASHED_HOST: &str = "|1|AQIDBAUGBwgJCgsMDQ4PEBESExQ=|6nwC5rG6k7vxYwKIoAwPZGhI1VE=";

    fn client(file: &Path, accept_new: bool) -> Client {
        Client {
            addr: "127.0.0.1:2222".into(),
            host: "127.0.0.1".into(),
            port: 2222,
            policy: HostKeyPolicy::KnownHosts {
                file: file.to_path_buf(),
                accept_new,
            },
            refusal: Arc::new(StdMutex::new(None)),
        }
    }

    fn host_key(dir: &Path, name: &str) -> PublicKey {
        SshKey::ensure(&dir.join(name), name)
            .unwrap()
            .public_key()
            .clone()
    }

    fn openssh(key: &PublicKey) -> String {
        let mut key = key.clone();
        key.set_comment("");
        key.to_openssh().unwrap()
    }

    #[test]
    fn a_known_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let file = dir.path().join("known_hosts");
        let text = format!(
            "# a comment\nother.lan {ECDSA_KEY}\n[127.0.0.1]:2222 {ECDSA_KEY}\n127.0.0.1,[127.0.0.1]:2222 {}\n",
            openssh(&key)
        );
        std::fs::write(&file, &text).unwrap();
        for accept_new in [false, true] {
            client(&file, accept_new).check(&key).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn a_hashed_entry_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let other = host_key(dir.path(), "b");
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("{HASHED_HOST} {}\n", openssh(&key))).unwrap();
        client(&file, false).check(&key).unwrap();
        match client(&file, true).check(&other) {
            Err(SshError::HostKeyChanged { line: 1, .. }) => {}
            other => panic!("expected a changed key, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_host_is_refused_without_accept_new() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let file = dir.path().join("known_hosts");
        // Port 22 is another entry than port 2222.
        let text = format!("127.0.0.1 {}\n", openssh(&key));
        std::fs::write(&file, &text).unwrap();
        match client(&file, false).check(&key) {
            Err(SshError::UnknownHostKey {
                addr,
                file: f,
                fingerprint,
            }) => {
                assert_eq!(addr, "127.0.0.1:2222");
                assert_eq!(f, file);
                assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
                assert!(fingerprint.ends_with(" (ED25519)"), "{fingerprint}");
            }
            other => panic!("expected an unknown host key, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        // A missing file: nothing is known, nothing is created.
        let missing = dir.path().join("none").join("known_hosts");
        let e = client(&missing, false).check(&key).unwrap_err();
        assert!(matches!(e, SshError::UnknownHostKey { .. }), "{e:?}");
        assert!(e.is_permanent());
        assert!(!missing.exists());
        // The host is known by a key of another algorithm only: still unknown.
        std::fs::write(&file, format!("[127.0.0.1]:2222 {ECDSA_KEY}\n")).unwrap();
        let e = client(&file, false).check(&key).unwrap_err();
        assert!(matches!(e, SshError::UnknownHostKey { .. }), "{e:?}");
    }

    #[test]
    fn accept_new_records_the_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let file = dir.path().join("known_hosts");
        let before = format!("other.lan {ECDSA_KEY}"); // no final newline
        std::fs::write(&file, &before).unwrap();
        let c = client(&file, true);
        c.check(&key).unwrap();
        let after = std::fs::read_to_string(&file).unwrap();
        let added = after.strip_prefix(&format!("{before}\n")).unwrap();
        assert_eq!(added.lines().count(), 1, "{after}");
        assert!(
            added.starts_with("[127.0.0.1]:2222 ssh-ed25519 "),
            "{added}"
        );
        assert!(added.contains(&openssh(&key)[12..]), "{added}");
        c.check(&key).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
    }

    #[test]
    fn accept_new_creates_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let file = dir.path().join("ssh").join("known_hosts");
        client(&file, true).check(&key).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("[127.0.0.1]:2222 ssh-ed25519 "), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&file), 0o600);
            assert_eq!(mode(file.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn a_changed_key_is_refused_even_with_accept_new() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path(), "a");
        let other = host_key(dir.path(), "b");
        let file = dir.path().join("known_hosts");
        let text = format!(
            "# comments count as lines\n\nother.lan {ECDSA_KEY}\n[127.0.0.1]:2222 {}\n",
            openssh(&key)
        );
        std::fs::write(&file, &text).unwrap();
        for accept_new in [false, true] {
            match client(&file, accept_new).check(&other) {
                Err(SshError::HostKeyChanged {
                    addr,
                    file: f,
                    line,
                    fingerprint,
                }) => {
                    assert_eq!(addr, "127.0.0.1:2222");
                    assert_eq!(f, file);
                    assert_eq!(line, 4);
                    assert_eq!(fingerprint, super::fingerprint(&other));
                }
                other => panic!("expected a changed key, got {other:?}"),
            }
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        let e = client(&file, true).check(&other).unwrap_err();
        assert!(e.is_permanent());
        assert!(e.to_string().contains("line 4 of"), "{e}");
        let e: timonel_driver::DriverError = e.into();
        let hint = timonel_driver::Hint::hint(&e).unwrap();
        assert!(hint.contains("ssh-keygen -R '[127.0.0.1]:2222'"), "{hint}");
    }
}
