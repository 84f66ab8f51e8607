//! Logging in: the [`SshAuth`] methods of a target, tried in order on one connection.

use std::path::PathBuf;
use std::sync::Arc;

use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{AgentAuthError, MethodKind, MethodSet};

use super::error::{SshError, TIMONEL_KEY_LABEL};
use super::host_key::Client;
use crate::keys::SshKey;

mod sources;

use sources::{connect_agent, load_key_file};

/// One way to log in; a target's methods are tried in order until one succeeds.
#[derive(Clone)]
pub enum SshAuth {
    /// timonel's own key (a profile's [`SshKey`]).
    Key(SshKey),
    /// A private key file (OpenSSH or PEM format: ed25519, ecdsa, rsa). An encrypted key needs
    /// `passphrase`.
    KeyFile {
        path: PathBuf,
        passphrase: Option<String>,
    },
    /// Every key the running ssh-agent holds: `$SSH_AUTH_SOCK` on unix; on windows the OpenSSH
    /// agent's named pipe (or the pipe `SSH_AUTH_SOCK` names), then pageant. Where there is no
    /// agent, this method is skipped.
    Agent,
    /// Password authentication (`keyboard-interactive` too, when the server asks for the password
    /// that way).
    Password(String),
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password or a passphrase.
        match self {
            Self::Key(key) => f.debug_tuple("Key").field(key).finish(),
            Self::KeyFile { path, passphrase } => f
                .debug_struct("KeyFile")
                .field("path", path)
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::Agent => f.write_str("Agent"),
            Self::Password(_) => f.debug_tuple("Password").field(&"<redacted>").finish(),
        }
    }
}

/// The state of one login attempt sequence.
struct Login<'a> {
    handle: &'a mut Handle<Client>,
    user: &'a str,
    addr: &'a str,
    /// What was tried, for [`SshError::Auth`].
    tried: Vec<String>,
    /// The methods the server still accepts, once a failure said so.
    methods: Option<MethodSet>,
    /// Public keys offered already (a key file that the agent holds too is offered once).
    offered: Vec<KeyData>,
    /// The RSA signature hash, asked of the server once, when an RSA key comes up.
    rsa_hash: Option<Option<HashAlg>>,
    /// Whether any credential reached the server.
    attempted: bool,
    /// A key file that could not be used: the error when nothing else reached the server.
    key_file_error: Option<SshError>,
}

/// Whether a login attempt ended the sequence.
enum Step {
    Done,
    Refused,
}

impl Login<'_> {
    fn protocol(&self, source: russh::Error) -> SshError {
        SshError::Protocol {
            addr: self.addr.to_string(),
            source,
        }
    }

    fn allows(&self, method: MethodKind) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }

    fn note(&mut self, result: &AuthResult) -> Step {
        match result {
            AuthResult::Success => Step::Done,
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                if !remaining_methods.is_empty() {
                    self.methods = Some(remaining_methods.clone());
                }
                Step::Refused
            }
        }
    }

    async fn rsa_hash(&mut self) -> Option<HashAlg> {
        if let Some(hash) = self.rsa_hash {
            return hash;
        }
        // `None` (no server-sig-algs): the server predates rsa-sha2, so ssh-rsa (SHA-1).
        let hash = self
            .handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        self.rsa_hash = Some(hash);
        hash
    }

    /// Whether `key` is offered for the first time (and remembers it).
    fn first_offer(&mut self, key: &KeyData) -> bool {
        if self.offered.contains(key) {
            return false;
        }
        self.offered.push(key.clone());
        true
    }

    async fn private_key(&mut self, key: Arc<PrivateKey>) -> Result<Step, SshError> {
        if !self.first_offer(key.public_key().key_data()) {
            return Ok(Step::Refused);
        }
        let hash = if key.algorithm().is_rsa() {
            self.rsa_hash().await
        } else {
            None
        };
        self.attempted = true;
        let result = self
            .handle
            .authenticate_publickey(self.user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| self.protocol(e))?;
        Ok(self.note(&result))
    }

    async fn agent(&mut self) -> Result<Step, SshError> {
        let mut agent = match connect_agent().await {
            Ok(agent) => agent,
            Err(e) => {
                self.tried.push(format!("ssh-agent (unavailable: {e})"));
                return Ok(Step::Refused);
            }
        };
        let identities = match agent.request_identities().await {
            Ok(ids) => ids,
            Err(e) => {
                self.tried.push(format!("ssh-agent (unavailable: {e})"));
                return Ok(Step::Refused);
            }
        };
        self.tried.push(match identities.len() {
            0 => "ssh-agent (no keys)".to_string(),
            1 => "ssh-agent (1 key)".to_string(),
            n => format!("ssh-agent ({n} keys)"),
        });
        for identity in identities {
            let public = match &identity {
                AgentIdentity::PublicKey { key, .. } => key.key_data().clone(),
                AgentIdentity::Certificate { certificate, .. } => certificate.public_key().clone(),
            };
            if !self.first_offer(&public) {
                continue;
            }
            let hash = if public.algorithm().is_rsa() {
                self.rsa_hash().await
            } else {
                None
            };
            self.attempted = true;
            let result = match identity {
                AgentIdentity::PublicKey { key, .. } => {
                    self.handle
                        .authenticate_publickey_with(self.user, key, hash, &mut agent)
                        .await
                }
                AgentIdentity::Certificate { certificate, .. } => {
                    self.handle
                        .authenticate_certificate_with(self.user, certificate, hash, &mut agent)
                        .await
                }
            };
            match result {
                Ok(result) => {
                    if let Step::Done = self.note(&result) {
                        return Ok(Step::Done);
                    }
                }
                // The agent would not sign with this key (locked, confirmation refused): the next.
                Err(AgentAuthError::Key(e)) => {
                    tracing::debug!(addr = %self.addr, error = %e, "ssh-agent did not sign");
                }
                Err(AgentAuthError::Send(_)) => return Err(self.protocol(russh::Error::SendError)),
            }
        }
        Ok(Step::Refused)
    }

    async fn password(&mut self, password: &str) -> Result<Step, SshError> {
        self.attempted = true;
        if self.allows(MethodKind::Password) {
            let result = self
                .handle
                .authenticate_password(self.user, password)
                .await
                .map_err(|e| self.protocol(e))?;
            if let Step::Done = self.note(&result) {
                return Ok(Step::Done);
            }
        }
        if !self.allows(MethodKind::KeyboardInteractive) || self.methods.is_none() {
            return Ok(Step::Refused);
        }
        // Keyboard-interactive, answering the one hidden prompt with the password.
        let mut reply = self
            .handle
            .authenticate_keyboard_interactive_start(self.user, None)
            .await
            .map_err(|e| self.protocol(e))?;
        let mut answered = false;
        for _ in 0..5 {
            match reply {
                KeyboardInteractiveAuthResponse::Success => return Ok(Step::Done),
                KeyboardInteractiveAuthResponse::Failure {
                    remaining_methods,
                    partial_success,
                } => {
                    return Ok(self.note(&AuthResult::Failure {
                        remaining_methods,
                        partial_success,
                    }))
                }
                KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                    let responses = match prompts.as_slice() {
                        [only] if !only.echo && !answered => {
                            answered = true;
                            vec![password.to_string()]
                        }
                        _ => vec![String::new(); prompts.len()],
                    };
                    reply = self
                        .handle
                        .authenticate_keyboard_interactive_respond(responses)
                        .await
                        .map_err(|e| self.protocol(e))?;
                }
            }
        }
        Ok(Step::Refused)
    }

    async fn attempt(&mut self, auth: &SshAuth) -> Result<Step, SshError> {
        let accepted = match auth {
            SshAuth::Password(_) => {
                self.allows(MethodKind::Password) || self.allows(MethodKind::KeyboardInteractive)
            }
            _ => self.allows(MethodKind::PublicKey),
        };
        if !accepted {
            let what = match auth {
                SshAuth::Key(key) => format!("{TIMONEL_KEY_LABEL} {}", key.private_path.display()),
                SshAuth::KeyFile { path, .. } => format!("key file {}", path.display()),
                SshAuth::Agent => "ssh-agent".to_string(),
                SshAuth::Password(_) => "password".to_string(),
            };
            self.tried
                .push(format!("{what} (not accepted by the server)"));
            return Ok(Step::Refused);
        }
        match auth {
            SshAuth::Key(key) => {
                self.tried.push(format!(
                    "{TIMONEL_KEY_LABEL} {}",
                    key.private_path.display()
                ));
                self.private_key(key.private()).await
            }
            SshAuth::KeyFile { path, passphrase } => {
                match load_key_file(path, passphrase.as_deref()) {
                    Ok(key) => {
                        self.tried.push(format!("key file {}", path.display()));
                        self.private_key(Arc::new(key)).await
                    }
                    Err(e) => {
                        let reason = match &e {
                            SshError::KeyFile { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        self.tried
                            .push(format!("key file {} ({reason})", path.display()));
                        self.key_file_error.get_or_insert(e);
                        Ok(Step::Refused)
                    }
                }
            }
            SshAuth::Agent => self.agent().await,
            SshAuth::Password(password) => {
                self.tried.push("password".to_string());
                self.password(password).await
            }
        }
    }
}

/// Logs in as `user` with the first of `methods` the server accepts.
pub(super) async fn authenticate(
    handle: &mut Handle<Client>,
    addr: &str,
    user: &str,
    methods: &[SshAuth],
) -> Result<(), SshError> {
    let mut login = Login {
        handle,
        user,
        addr,
        tried: Vec::new(),
        methods: None,
        offered: Vec::new(),
        rsa_hash: None,
        attempted: false,
        key_file_error: None,
    };
    for auth in methods {
        match login.attempt(auth).await {
            Ok(Step::Done) => return Ok(()),
            Ok(Step::Refused) => {}
            // The server may close the connection after too many refusals: what was refused
            // matters more then.
            Err(e) if login.tried.len() > 1 && login.handle.is_closed() => {
                tracing::debug!(addr, error = %e, "connection closed during login");
                login
                    .tried
                    .push("then the server closed the connection".to_string());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    // Only unusable key files: what is wrong with the (first) file is the news.
    if let (false, Some(e)) = (login.attempted, login.key_file_error) {
        return Err(e);
    }
    Err(SshError::Auth {
        addr: addr.to_string(),
        user: user.to_string(),
        tried: login.tried,
    })
}

#[cfg(test)]
mod tests;
