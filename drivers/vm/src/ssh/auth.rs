//! Logging in: the [`SshAuth`] methods of a target, tried in order on one connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::client::{AgentClient, AgentStream};
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{AgentAuthError, MethodKind, MethodSet};

use super::error::{SshError, TIMONEL_KEY_LABEL};
use super::host_key::Client;
use crate::keys::SshKey;

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

/// An agent connection, whatever the platform's stream.
type Agent = AgentClient<Box<dyn AgentStream + Send + Unpin + 'static>>;

#[cfg(unix)]
async fn connect_agent() -> Result<Agent, String> {
    AgentClient::connect_env()
        .await
        .map(AgentClient::dynamic)
        .map_err(|e| e.to_string())
}

#[cfg(windows)]
async fn connect_agent() -> Result<Agent, String> {
    let pipe = std::env::var("SSH_AUTH_SOCK")
        .ok()
        .filter(|s| s.starts_with(r"\\"))
        .unwrap_or_else(|| r"\\.\pipe\openssh-ssh-agent".to_string());
    let pipe_error = match AgentClient::connect_named_pipe(&pipe).await {
        Ok(agent) => return Ok(agent.dynamic()),
        Err(e) => e,
    };
    match AgentClient::connect_pageant().await {
        Ok(agent) => Ok(agent.dynamic()),
        Err(e) => Err(format!(
            "no agent at `{pipe}` ({pipe_error}), no pageant ({e})"
        )),
    }
}

#[cfg(not(any(unix, windows)))]
async fn connect_agent() -> Result<Agent, String> {
    Err("ssh-agent is not supported on this platform".to_string())
}

/// Reads a private key file, with messages that say what to do.
fn load_key_file(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let fail = |message: String| SshError::KeyFile {
        path: path.to_path_buf(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("could not read it: {e}")))?;
    match russh::keys::decode_secret_key(&text, passphrase) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(fail(
            "encrypted key: set TIMONEL_SSH_KEY_PASSPHRASE or load it into ssh-agent".to_string(),
        )),
        Err(e) => {
            let encrypted = passphrase.is_some()
                && matches!(
                    russh::keys::decode_secret_key(&text, None),
                    Err(russh::keys::Error::KeyIsEncrypted)
                );
            Err(fail(if encrypted {
                format!("could not decrypt it with the given passphrase ({e})")
            } else {
                format!("not a private key timonel can use (OpenSSH or PEM; ed25519, ecdsa or rsa): {e}")
            }))
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
mod tests {
    use std::time::Duration;

    use russh::keys::PublicKey;
    use russh::server::{self, Auth, VerifiedPublicKey};

    use super::super::{connect, HostKeyPolicy, SshTarget};
    use super::*;

    /// An in-process russh server (not sshd) that accepts one key and one password.
    #[derive(Clone)]
    struct Server {
        key: PublicKey,
        password: &'static str,
    }

    impl server::Handler for Server {
        type Error = russh::Error;

        async fn auth_publickey(
            &mut self,
            _: &str,
            key: VerifiedPublicKey<'_>,
        ) -> Result<Auth, Self::Error> {
            Ok(if key.public_key.key_data() == self.key.key_data() {
                Auth::Accept
            } else {
                Auth::reject()
            })
        }

        async fn auth_password(&mut self, _: &str, password: &str) -> Result<Auth, Self::Error> {
            Ok(if password == self.password {
                Auth::Accept
            } else {
                Auth::reject()
            })
        }
    }

    /// Serves `server` on a loopback port; returns the port.
    async fn serve(server: Server, host_key: PrivateKey) -> u16 {
        let config = Arc::new(server::Config {
            keys: vec![host_key],
            auth_rejection_time: Duration::ZERO,
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (config, server) = (config.clone(), server.clone());
                tokio::spawn(async move {
                    if let Ok(session) = server::run_stream(config, socket, server).await {
                        let _ = session.await;
                    }
                });
            }
        });
        port
    }

    fn key_file(dir: &Path, name: &str) -> (PathBuf, PublicKey) {
        let key = SshKey::ensure(&dir.join(name), name).unwrap();
        (key.private_path.clone(), key.public_key().clone())
    }

    #[tokio::test]
    async fn methods_are_tried_in_order_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let host = SshKey::ensure(&dir.path().join("host"), "host").unwrap();
        let (good, good_public) = key_file(dir.path(), "good");
        let (bad, _) = key_file(dir.path(), "bad");
        let port = serve(
            Server {
                key: good_public,
                password: "right",
            },
            host.private().as_ref().clone(),
        )
        .await;
        let known_hosts = dir.path().join("known_hosts");
        let target = |auth: Vec<SshAuth>| {
            SshTarget::with_auth(
                "127.0.0.1",
                port,
                "pi",
                auth,
                HostKeyPolicy::KnownHosts {
                    file: known_hosts.clone(),
                    accept_new: true,
                },
            )
        };
        let file = |path: &PathBuf| SshAuth::KeyFile {
            path: path.clone(),
            passphrase: None,
        };

        // A refused key and a wrong password, then a right key.
        let ok = target(vec![
            file(&bad),
            SshAuth::Password("wrong".into()),
            file(&good),
        ]);
        connect(&ok).await.unwrap();
        // Trust on first use recorded the key; the second connect checks it.
        let recorded = std::fs::read_to_string(&known_hosts).unwrap();
        assert!(recorded.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")));
        connect(&target(vec![SshAuth::Password("right".into())]))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), recorded);

        // Everything refused: the error lists what was tried.
        match connect(&target(vec![file(&bad), SshAuth::Password("wrong".into())])).await {
            Err(SshError::Auth { user, tried, .. }) => {
                assert_eq!(user, "pi");
                assert_eq!(
                    tried,
                    [
                        format!("key file {}", bad.display()),
                        "password".to_string()
                    ]
                );
            }
            other => panic!("expected a refused login, got {:?}", other.map(|_| ())),
        }

        // An unusable key file alone is its own, permanent error; next to another method, it is
        // one more line in the list.
        let missing = dir.path().join("missing");
        match connect(&target(vec![file(&missing)])).await {
            Err(e @ SshError::KeyFile { .. }) => assert!(e.is_permanent()),
            other => panic!("expected a key file error, got {:?}", other.map(|_| ())),
        }
        connect(&target(vec![file(&missing), file(&good)]))
            .await
            .unwrap();
        match connect(&target(vec![file(&missing), file(&bad)])).await {
            Err(SshError::Auth { tried, .. }) => {
                assert_eq!(tried.len(), 2, "{tried:?}");
                assert!(tried[0].contains("could not read"), "{tried:?}");
            }
            other => panic!("expected a refused login, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?}",
            vec![
                SshAuth::Password("hunter2".into()),
                SshAuth::KeyFile {
                    path: "/k".into(),
                    passphrase: Some("sesame".into()),
                },
                SshAuth::Agent,
            ]
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("sesame"), "{text}");
        assert!(text.contains("Password(\"<redacted>\")"), "{text}");
        assert!(text.contains("/k"), "{text}");
    }

    #[test]
    fn key_file_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        match load_key_file(&missing, None) {
            Err(SshError::KeyFile { path, message }) => {
                assert_eq!(path, missing);
                assert!(message.contains("could not read"), "{message}");
            }
            other => panic!("expected a key file error, got {other:?}"),
        }

        let key = SshKey::ensure(dir.path(), "t").unwrap();
        let encrypted = key
            .private()
            .encrypt(&mut getrandom::SysRng, "sesame")
            .unwrap()
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap();
        let path = dir.path().join("enc");
        std::fs::write(&path, encrypted.as_bytes()).unwrap();
        let e = load_key_file(&path, None).unwrap_err();
        assert!(e.to_string().contains("TIMONEL_SSH_KEY_PASSPHRASE"), "{e}");
        assert!(e.is_permanent());
        let e = load_key_file(&path, Some("wrong")).unwrap_err();
        assert!(e.to_string().contains("passphrase"), "{e}");
        let loaded = load_key_file(&path, Some("sesame")).unwrap();
        assert_eq!(loaded.public_key().key_data(), key.public_key().key_data());

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key").unwrap();
        let e = load_key_file(&garbage, None).unwrap_err();
        assert!(e.to_string().contains("not a private key"), "{e}");
    }
}
