//! The host key policy: accept and record on first connect, refuse a different key later.

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};

use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use super::error::SshError;
use crate::seed::write_atomic;

pub(super) struct Client {
    pub(super) addr: String,
    pub(super) host_key_file: PathBuf,
    pub(super) refusal: Arc<StdMutex<Option<SshError>>>,
}

impl Client {
    pub(super) fn check(&self, offered: &PublicKey) -> Result<(), SshError> {
        let offered_text = offered.to_openssh().unwrap_or_default();
        match std::fs::read_to_string(&self.host_key_file) {
            Ok(recorded) => {
                let same = PublicKey::from_openssh(recorded.trim())
                    .map(|k| k.key_data() == offered.key_data())
                    .unwrap_or(false);
                if same {
                    Ok(())
                } else {
                    Err(SshError::HostKeyMismatch {
                        addr: self.addr.clone(),
                        file: self.host_key_file.clone(),
                        expected: recorded.trim().to_string(),
                        offered: offered_text,
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(
                    &self.host_key_file,
                    format!("{offered_text}\n").as_bytes(),
                    Some(0o644),
                )
                .map_err(|e| SshError::HostKeyRecord {
                    addr: self.addr.clone(),
                    file: self.host_key_file.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                tracing::debug!(addr = %self.addr, "recorded host key");
                Ok(())
            }
            Err(source) => Err(SshError::HostKeyRecord {
                addr: self.addr.clone(),
                file: self.host_key_file.clone(),
                source,
            }),
        }
    }
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
