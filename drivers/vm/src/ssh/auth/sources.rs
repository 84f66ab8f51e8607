//! Where login credentials come from: the platform's ssh-agent, and private key files.

use std::path::Path;

use russh::keys::agent::client::{AgentClient, AgentStream};
use russh::keys::PrivateKey;

use super::super::error::SshError;

/// An agent connection, whatever the platform's stream.
pub(super) type Agent = AgentClient<Box<dyn AgentStream + Send + Unpin + 'static>>;

#[cfg(unix)]
pub(super) async fn connect_agent() -> Result<Agent, String> {
    AgentClient::connect_env()
        .await
        .map(AgentClient::dynamic)
        .map_err(|e| e.to_string())
}

#[cfg(windows)]
pub(super) async fn connect_agent() -> Result<Agent, String> {
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
pub(super) async fn connect_agent() -> Result<Agent, String> {
    Err("ssh-agent is not supported on this platform".to_string())
}

/// Reads a private key file, with messages that say what to do.
pub(super) fn load_key_file(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
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
