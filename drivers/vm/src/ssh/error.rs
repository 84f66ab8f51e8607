//! SSH errors, and how they reach the user.

use std::path::PathBuf;
use std::time::Duration;

use timonel_driver::DriverError;

/// How [`SshAuth::Key`](super::SshAuth::Key) shows in [`SshError::Auth::tried`]: the hint for a
/// refused timonel key (a VM whose cloud-init has not run) differs from the one for the user's
/// own credentials.
pub(crate) const TIMONEL_KEY_LABEL: &str = "timonel's key";

/// Why an SSH connection or command failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("could not connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no SSH handshake with {addr} within {after:?}")]
    Timeout { addr: String, after: Duration },
    /// [`HostKeyPolicy::Record`](super::HostKeyPolicy::Record): the recorded key differs.
    #[error("the host key of {addr} changed: recorded {expected}, offered {offered}")]
    HostKeyMismatch {
        addr: String,
        file: PathBuf,
        expected: String,
        offered: String,
    },
    /// The host key file could not be read or written.
    #[error("could not read or record the host key of {addr} in `{}`", file.display())]
    HostKeyRecord {
        addr: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// [`HostKeyPolicy::KnownHosts`](super::HostKeyPolicy::KnownHosts) without `accept_new`: the
    /// host (or its key of this algorithm) is not in the file.
    #[error("the host key of {addr} is not in `{}` (offered {fingerprint})", file.display())]
    UnknownHostKey {
        addr: String,
        file: PathBuf,
        /// `SHA256:… (ED25519)`, as `ssh-keygen -l` shows it.
        fingerprint: String,
    },
    /// [`HostKeyPolicy::KnownHosts`](super::HostKeyPolicy::KnownHosts): the file holds another
    /// key of the same algorithm for this host.
    #[error(
        "the host key of {addr} does not match line {line} of `{}` (offered {fingerprint}): the machine was reinstalled, or someone is intercepting the connection (man-in-the-middle)",
        file.display()
    )]
    HostKeyChanged {
        addr: String,
        file: PathBuf,
        line: usize,
        fingerprint: String,
    },
    /// Every login method was refused. `tried` names each one, e.g. `key file ~/.ssh/id_ed25519`,
    /// `ssh-agent (2 keys)`, `password`.
    #[error(
        "{addr} refused every login for user `{user}` (tried: {})",
        tried_text(tried)
    )]
    Auth {
        addr: String,
        user: String,
        tried: Vec<String>,
    },
    /// A private key file that cannot be read, parsed or decrypted.
    #[error("SSH key file `{}`: {message}", path.display())]
    KeyFile { path: PathBuf, message: String },
    #[error("ssh session with {addr} failed")]
    Protocol {
        addr: String,
        #[source]
        source: russh::Error,
    },
    #[error("`{command}` on {addr} ended without an exit status")]
    NoExitStatus { addr: String, command: String },
}

fn tried_text(tried: &[String]) -> String {
    if tried.is_empty() {
        "no login method".to_string()
    } else {
        tried.join(", ")
    }
}

impl SshError {
    /// Errors that waiting longer will not fix. A refused login is not one of them: a new VM's
    /// cloud-init may install the key moments later.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::HostKeyMismatch { .. }
                | Self::HostKeyRecord { .. }
                | Self::UnknownHostKey { .. }
                | Self::HostKeyChanged { .. }
                | Self::KeyFile { .. }
        )
    }
}

/// `host` for port 22, `[host]:port` otherwise: how known_hosts and `ssh-keygen -R` name a host.
/// `addr` is `host:port` or `[ipv6]:port`.
fn known_hosts_name(addr: &str) -> String {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return addr.to_string();
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if port == "22" {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `ssh -p PORT HOST` for `addr`.
fn ssh_command(addr: &str) -> String {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return format!("ssh {addr}");
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if port == "22" {
        format!("ssh {host}")
    } else {
        format!("ssh -p {port} {host}")
    }
}

/// The server's public key file for the algorithm named at the end of a fingerprint.
fn host_key_pub_file(fingerprint: &str) -> &'static str {
    if fingerprint.ends_with("(RSA)") {
        "/etc/ssh/ssh_host_rsa_key.pub"
    } else if fingerprint.ends_with("(ECDSA)") {
        "/etc/ssh/ssh_host_ecdsa_key.pub"
    } else {
        "/etc/ssh/ssh_host_ed25519_key.pub"
    }
}

impl From<SshError> for DriverError {
    fn from(e: SshError) -> Self {
        let hint = match &e {
            SshError::HostKeyMismatch { file, .. } => Some(format!(
                "if the node was recreated outside timonel, delete `{}`; otherwise something else answers at this address",
                file.display()
            )),
            SshError::UnknownHostKey {
                addr, fingerprint, ..
            } => Some(format!(
                "check the fingerprint on the machine (`ssh-keygen -lf {}`), then connect once with `{}` to record it, or rerun with `--ssh-accept-new-host-keys` to trust it on first use",
                host_key_pub_file(fingerprint),
                ssh_command(addr)
            )),
            SshError::HostKeyChanged { addr, file, .. } => Some(format!(
                "if the machine was reinstalled, `ssh-keygen -R '{}' -f '{}'` removes the old key; otherwise do not connect",
                known_hosts_name(addr),
                file.display()
            )),
            SshError::Auth { tried, .. }
                if tried.len() == 1 && tried[0].starts_with(TIMONEL_KEY_LABEL) =>
            {
                Some(
                    "the node's cloud-init may not have installed the profile's key; see the node's console log".to_string(),
                )
            }
            SshError::Auth { .. } => Some(
                "check the user name, pass --ssh-key FILE, load the key into ssh-agent, or set TIMONEL_SSH_PASSWORD".to_string(),
            ),
            SshError::KeyFile { path, .. } => Some(format!(
                "`ssh-keygen -y -f '{}'` shows whether the key is readable; an encrypted key needs TIMONEL_SSH_KEY_PASSPHRASE, or load it into ssh-agent",
                path.display()
            )),
            _ => None,
        };
        DriverError::Backend {
            op: "ssh".to_string(),
            message: error_chain(&e),
            hint,
        }
    }
}

pub(crate) use timonel_driver::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_names() {
        assert_eq!(known_hosts_name("10.0.0.5:22"), "10.0.0.5");
        assert_eq!(known_hosts_name("10.0.0.5:2222"), "[10.0.0.5]:2222");
        assert_eq!(known_hosts_name("[fd00::5]:22"), "fd00::5");
        assert_eq!(known_hosts_name("[fd00::5]:2222"), "[fd00::5]:2222");
        assert_eq!(ssh_command("[fd00::5]:2222"), "ssh -p 2222 fd00::5");
        assert_eq!(ssh_command("host.lan:22"), "ssh host.lan");
    }

    #[test]
    fn auth_hints_depend_on_what_was_tried() {
        let vm: DriverError = SshError::Auth {
            addr: "10.0.0.5:22".into(),
            user: "ubuntu".into(),
            tried: vec![format!("{TIMONEL_KEY_LABEL} /p/id_ed25519")],
        }
        .into();
        assert!(timonel_driver::Hint::hint(&vm)
            .unwrap()
            .contains("cloud-init"));
        let e = SshError::Auth {
            addr: "10.0.0.5:22".into(),
            user: "pi".into(),
            tried: vec![
                "key file ~/.ssh/id_ed25519".into(),
                "ssh-agent (2 keys)".into(),
                "password".into(),
            ],
        };
        assert_eq!(
            e.to_string(),
            "10.0.0.5:22 refused every login for user `pi` (tried: key file ~/.ssh/id_ed25519, ssh-agent (2 keys), password)"
        );
        assert!(!e.is_permanent());
        let user: DriverError = e.into();
        assert!(timonel_driver::Hint::hint(&user)
            .unwrap()
            .contains("TIMONEL_SSH_PASSWORD"));
    }
}
