//! SSH errors, and how they reach the user.

use std::path::PathBuf;
use std::time::Duration;

use timonel_driver::DriverError;

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
    #[error("the host key of {addr} changed: recorded {expected}, offered {offered}")]
    HostKeyMismatch {
        addr: String,
        file: PathBuf,
        expected: String,
        offered: String,
    },
    #[error("could not record the host key of {addr} in `{}`", file.display())]
    HostKeyRecord {
        addr: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} refused the key for user `{user}`")]
    Auth { addr: String, user: String },
    #[error("ssh session with {addr} failed")]
    Protocol {
        addr: String,
        #[source]
        source: russh::Error,
    },
    #[error("`{command}` on {addr} ended without an exit status")]
    NoExitStatus { addr: String, command: String },
}

impl SshError {
    /// Errors that waiting longer will not fix.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::HostKeyMismatch { .. } | Self::HostKeyRecord { .. }
        )
    }
}

impl From<SshError> for DriverError {
    fn from(e: SshError) -> Self {
        let hint = match &e {
            SshError::HostKeyMismatch { file, .. } => Some(format!(
                "if the node was recreated outside timonel, delete `{}`; otherwise something else answers at this address",
                file.display()
            )),
            SshError::Auth { .. } => Some(
                "the node's cloud-init may not have installed the profile's key; see the node's console log".to_string(),
            ),
            _ => None,
        };
        DriverError::Backend {
            op: "ssh".to_string(),
            message: error_chain(&e),
            hint,
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
