//! SSH access to a node with `russh`: a [`Runner`] and a [`NodeAccess`].
//!
//! Host keys ([`HostKeyPolicy`]): timonel's own VMs are created moments before the first
//! connect, so their policy is accept-and-record ([`HostKeyPolicy::Record`]). The first key seen
//! is written to the node's file; a different key later is an error
//! ([`SshError::HostKeyMismatch`]). Deleting the node deletes the record. The user's own machines
//! are checked against an OpenSSH known_hosts file ([`HostKeyPolicy::KnownHosts`]).
//!
//! Login ([`SshAuth`]): the target's methods are tried in order on one connection: timonel's
//! key, key files, the ssh-agent's keys, a password.

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, Handle};
use russh::keys::Algorithm;
use russh::{ChannelMsg, Preferred};
use timonel_driver::runner::check_exit;
use timonel_driver::{
    poll_until, Cmd, CommandError, DriverError, FilePlacement, FileSource, NodeAccess, Output,
    Runner, WaitError,
};
use tokio::io::AsyncRead;
use tokio::sync::Mutex;

use crate::keys::SshKey;

mod auth;
mod error;
mod host_key;

use crate::shell::{command_line, quote};
pub use auth::SshAuth;
use error::error_chain;
pub use error::SshError;
use host_key::Client;
pub use host_key::HostKeyPolicy;

/// How long one copy (`copy_in` of one file, `copy_out`) may take.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one TCP connect plus SSH handshake may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// An IP address or a host name.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The login methods, tried in order.
    pub auth: Vec<SshAuth>,
    /// How the server's host key is checked (see the module docs).
    pub host_keys: HostKeyPolicy,
    /// Prefix commands with `sudo -n` (default: when `user` is not root).
    pub sudo: bool,
    pub connect_timeout: Duration,
    pub transfer_timeout: Duration,
}

impl SshTarget {
    /// One of timonel's VMs: timonel's key, the host key recorded in `host_key_file`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        key: SshKey,
        host_key_file: impl Into<PathBuf>,
    ) -> Self {
        Self::with_auth(
            host,
            port,
            user,
            vec![SshAuth::Key(key)],
            HostKeyPolicy::Record(host_key_file.into()),
        )
    }

    /// Any machine: these login methods (tried in order) and this host key policy. `sudo` is on
    /// when `user` is not root.
    pub fn with_auth(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        auth: Vec<SshAuth>,
        host_keys: HostKeyPolicy,
    ) -> Self {
        let user = user.into();
        Self {
            host: host.into(),
            port,
            sudo: user != "root",
            user,
            auth,
            host_keys,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
        }
    }

    /// `host:port`, or `[host]:port` for an IPv6 address.
    pub fn addr(&self) -> String {
        timonel_driver::net::host_port(&self.host, self.port)
    }
}

/// What a remote command produced, as bytes.
#[derive(Debug, Default)]
struct RawOutput {
    code: Option<u32>,
    signal: Option<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

async fn connect(target: &SshTarget) -> Result<Handle<Client>, SshError> {
    let addr = target.addr();
    let refusal = Arc::new(StdMutex::new(None));
    let handler = Client {
        addr: addr.clone(),
        host: target.host.clone(),
        port: target.port,
        policy: target.host_keys.clone(),
        refusal: refusal.clone(),
    };
    let mut preferred = Preferred::default();
    if let HostKeyPolicy::KnownHosts { file, .. } = &target.host_keys {
        let known = host_key::known_algorithms(&target.host, target.port, file);
        preferred.key = prefer_known(&preferred.key, &known).into();
    }
    let config = Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        preferred,
        ..Default::default()
    });
    let handshake = async {
        let mut handle = client::connect(config, (target.host.as_str(), target.port), handler)
            .await
            .map_err(|e| {
                if let Some(refused) = refusal.lock().ok().and_then(|mut r| r.take()) {
                    return refused;
                }
                match e {
                    russh::Error::IO(source) => SshError::Connect {
                        addr: addr.clone(),
                        source,
                    },
                    source => SshError::Protocol {
                        addr: addr.clone(),
                        source,
                    },
                }
            })?;
        auth::authenticate(&mut handle, &addr, &target.user, &target.auth).await?;
        Ok(handle)
    };
    tokio::time::timeout(target.connect_timeout, handshake)
        .await
        .map_err(|_| SshError::Timeout {
            addr: addr.clone(),
            after: target.connect_timeout,
        })?
}

/// The host key algorithms in `default` order, those of the keys known for the host first (as
/// OpenSSH does), so that a host known by, say, its RSA key is asked for that key.
fn prefer_known(default: &[Algorithm], known: &[Algorithm]) -> Vec<Algorithm> {
    let is_known = |a: &Algorithm| {
        known
            .iter()
            .any(|k| k == a || matches!((k, a), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })))
    };
    let (mut first, rest): (Vec<_>, Vec<_>) = default.iter().cloned().partition(is_known);
    first.extend(rest);
    first
}

/// Commands and files in one node over SSH. Connects on first use and reuses the connection.
pub struct SshAccess {
    target: SshTarget,
    label: String,
    session: Mutex<Option<Arc<Handle<Client>>>>,
}

impl std::fmt::Debug for SshAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAccess")
            .field("target", &self.label)
            .finish()
    }
}

impl SshAccess {
    /// An access that connects lazily, on the first command.
    pub fn new(target: SshTarget) -> Self {
        Self {
            label: format!("ssh {}@{}", target.user, target.host),
            target,
            session: Mutex::new(None),
        }
    }

    /// Connects now (or checks the open connection): the first connect records the host key.
    pub async fn connect(&self) -> Result<(), SshError> {
        self.session().await.map(|_| ())
    }

    async fn session(&self) -> Result<Arc<Handle<Client>>, SshError> {
        let mut slot = self.session.lock().await;
        if let Some(handle) = slot.as_ref() {
            if !handle.is_closed() {
                return Ok(handle.clone());
            }
        }
        let handle = Arc::new(connect(&self.target).await?);
        *slot = Some(handle.clone());
        Ok(handle)
    }

    async fn forget_session(&self) {
        *self.session.lock().await = None;
    }

    /// Runs one command line, streaming `stdin` to it, and collects its output.
    async fn exec_raw<R>(&self, line: &str, stdin: Option<R>) -> Result<RawOutput, SshError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let addr = self.target.addr();
        let protocol = |source| SshError::Protocol {
            addr: addr.clone(),
            source,
        };
        let handle = self.session().await?;
        let channel = match handle.channel_open_session().await {
            Ok(c) => c,
            Err(_) => {
                // The connection may have died since the last command: reconnect once.
                self.forget_session().await;
                self.session()
                    .await?
                    .channel_open_session()
                    .await
                    .map_err(protocol)?
            }
        };
        channel.exec(true, line).await.map_err(protocol)?;
        let (mut read, write) = channel.split();
        let feed = async {
            if let Some(data) = stdin {
                write.data(data).await?;
            }
            write.eof().await
        };
        let collect = async {
            let mut out = RawOutput::default();
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.code = Some(exit_status),
                    ChannelMsg::ExitSignal {
                        signal_name,
                        error_message,
                        ..
                    } => out.signal = Some(format!("{signal_name:?} {error_message}")),
                    _ => {}
                }
            }
            out
        };
        let (fed, out) = tokio::join!(feed, collect);
        // A command that exits without reading its stdin closes the channel under the writer;
        // its exit status is what matters then.
        if let (Err(e), None) = (&fed, out.code) {
            return Err(protocol(russh::Error::IO(std::io::Error::other(
                e.to_string(),
            ))));
        }
        if out.code.is_none() && out.signal.is_none() {
            return Err(SshError::NoExitStatus {
                addr,
                command: line.to_string(),
            });
        }
        Ok(out)
    }

    async fn exec_timed<R>(
        &self,
        cmd: &Cmd,
        line: &str,
        stdin: Option<R>,
        timeout: Duration,
    ) -> Result<Output, CommandError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let argv = cmd.to_string();
        let raw = tokio::time::timeout(timeout, self.exec_raw(line, stdin))
            .await
            .map_err(|_| CommandError::Timeout {
                argv: argv.clone(),
                after: timeout,
            })?
            .map_err(|e| CommandError::Io {
                argv: argv.clone(),
                source: std::io::Error::other(error_chain(&e)),
            })?;
        let mut stderr = String::from_utf8_lossy(&raw.stderr).into_owned();
        if let Some(signal) = &raw.signal {
            stderr.push_str(&format!("\nkilled by signal {signal}"));
        }
        let out = Output {
            code: raw.code.map_or(-1, |c| i32::try_from(c).unwrap_or(-1)),
            stdout: String::from_utf8_lossy(&raw.stdout).into_owned(),
            stderr,
        };
        tracing::debug!(target = %self.label, command = %argv, code = out.code, "ran ssh command");
        check_exit(cmd, out)
    }

    /// `copy_in` of one file.
    async fn put(&self, file: &FilePlacement) -> Result<(), DriverError> {
        if !file.path.starts_with('/') {
            return Err(DriverError::Parse {
                what: format!("`{}`", file.path),
                message: "a path in the node must be absolute".to_string(),
            });
        }
        let script = r#"set -e; tmp="$1.timonel-part"; mkdir -p -- "$(dirname -- "$1")"; cat > "$tmp"; chmod "$2" "$tmp"; mv -f -- "$tmp" "$1""#;
        let cmd = Cmd::new("sh").args([
            "-c".to_string(),
            script.to_string(),
            "timonel-copy".to_string(),
            file.path.clone(),
            format!("{:o}", file.mode),
        ]);
        let line = command_line(&cmd, self.target.sudo)?;
        let timeout = self.target.transfer_timeout;
        match &file.source {
            FileSource::Bytes(data) => {
                self.exec_timed(&cmd, &line, Some(&data[..]), timeout)
                    .await?;
            }
            FileSource::HostPath(host) => {
                let reader = tokio::fs::File::open(host).await.map_err(|e| {
                    DriverError::io(format!("could not open `{}`", host.display()), e)
                })?;
                let reader = tokio::io::BufReader::with_capacity(256 * 1024, reader);
                self.exec_timed(&cmd, &line, Some(reader), timeout).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Runner for SshAccess {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let line = command_line(cmd, self.target.sudo)?;
        self.exec_timed(cmd, &line, cmd.stdin.as_deref(), cmd.timeout)
            .await
    }

    fn target(&self) -> &str {
        &self.label
    }
}

#[async_trait]
impl NodeAccess for SshAccess {
    async fn copy_in(&self, files: &[FilePlacement]) -> Result<(), DriverError> {
        for file in files {
            self.put(file).await?;
        }
        Ok(())
    }

    async fn copy_out(&self, path: &str) -> Result<Vec<u8>, DriverError> {
        let cmd = Cmd::new("cat").args(["--", path]);
        let line = command_line(&cmd, self.target.sudo)?;
        let argv = format!("cat -- {}", quote(path));
        let raw = tokio::time::timeout(
            self.target.transfer_timeout,
            self.exec_raw(&line, None::<&[u8]>),
        )
        .await
        .map_err(|_| CommandError::Timeout {
            argv: argv.clone(),
            after: self.target.transfer_timeout,
        })??;
        match raw.code {
            Some(0) => Ok(raw.stdout),
            code => Err(DriverError::Command(CommandError::Exited {
                argv,
                code: code.map_or(-1, |c| i32::try_from(c).unwrap_or(-1)),
                stdout: String::new(),
                stderr: String::from_utf8_lossy(&raw.stderr).into_owned(),
            })),
        }
    }
}

/// Waits until `target` accepts an SSH login and runs `true`, polling every 2 s until `timeout`.
/// Connection refused, no route, handshake timeouts and refused keys (cloud-init may not have
/// installed the key yet) are retried; a changed host key is not.
pub async fn wait_for_ssh(target: SshTarget, timeout: Duration) -> Result<SshAccess, DriverError> {
    let what = format!("ssh on {}", target.addr());
    let access = SshAccess::new(target);
    let probe_cmd = Cmd::new("true").timeout(Duration::from_secs(30));
    let result = poll_until(&what, timeout, Duration::from_secs(2), || async {
        match access.connect().await {
            Err(e) if e.is_permanent() => Err(e),
            Err(e) => {
                access.forget_session().await;
                Ok(Err(error_chain(&e)))
            }
            Ok(()) => {
                let line = command_line(&probe_cmd, false).unwrap_or_else(|_| "true".into());
                match access
                    .exec_timed(&probe_cmd, &line, None::<&[u8]>, probe_cmd.timeout)
                    .await
                {
                    Ok(_) => Ok(Ok(())),
                    Err(e) => {
                        access.forget_session().await;
                        Ok(Err(e.to_string()))
                    }
                }
            }
        }
    })
    .await;
    match result {
        Ok(()) => Ok(access),
        Err(WaitError::Timeout { what, after, last }) => Err(DriverError::Timeout {
            what,
            after,
            last_state: last,
        }),
        Err(WaitError::Failed(e)) => Err(e.into()),
    }
}

/// SSH into a running VM node of `driver`: the one way every VM driver's node is reached. The
/// driver only reports where port 22 is ([`Driver::endpoint`](timonel_driver::Driver::endpoint):
/// the VM's address, or a NAT forward on the host); the key and the recorded host key live in
/// `key_dir`. Waits up to `timeout` for SSH to answer.
pub async fn vm_access(
    driver: &dyn timonel_driver::Driver,
    node: &timonel_driver::MachineName,
    key_dir: &std::path::Path,
    user: &str,
    timeout: Duration,
) -> Result<SshAccess, DriverError> {
    let addr = driver.endpoint(node, 22).await?;
    let key = crate::SshKey::load(key_dir)?;
    let target = SshTarget::new(
        addr.ip().to_string(),
        addr.port(),
        user,
        key,
        crate::host_key_path(key_dir, node.as_str()),
    );
    wait_for_ssh(target, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(file: PathBuf) -> Client {
        Client {
            addr: "192.0.2.1:22".into(),
            host: "192.0.2.1".into(),
            port: 22,
            policy: HostKeyPolicy::Record(file),
            refusal: Arc::new(StdMutex::new(None)),
        }
    }

    #[test]
    fn host_key_is_recorded_then_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts.d").join("node");
        let first = SshKey::ensure(&dir.path().join("a"), "host-a").unwrap();
        let other = SshKey::ensure(&dir.path().join("b"), "host-b").unwrap();
        let c = client(file.clone());
        c.check(first.public_key()).unwrap();
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("ssh-ed25519 "));
        c.check(first.public_key()).unwrap();
        match c.check(other.public_key()) {
            Err(SshError::HostKeyMismatch { file: f, .. }) => assert_eq!(f, file),
            other => panic!("expected a mismatch, got {other:?}"),
        }
        let e: DriverError = c.check(other.public_key()).unwrap_err().into();
        assert!(timonel_driver::Hint::hint(&e).unwrap().contains("delete"));
    }

    #[test]
    fn target_defaults_to_sudo_for_non_root() {
        let dir = tempfile::tempdir().unwrap();
        let key = SshKey::ensure(dir.path(), "k").unwrap();
        let t = SshTarget::new("10.0.0.5", 22, "ubuntu", key.clone(), dir.path().join("h"));
        assert!(t.sudo);
        assert_eq!(t.addr(), "10.0.0.5:22");
        let root = SshTarget::new("fd00::5", 2222, "root", key, dir.path().join("h"));
        assert!(!root.sudo);
        assert_eq!(root.addr(), "[fd00::5]:2222");
        assert_eq!(SshAccess::new(root).target(), "ssh root@fd00::5");
    }

    #[test]
    fn with_auth_and_new_agree() {
        let dir = tempfile::tempdir().unwrap();
        let key = SshKey::ensure(dir.path(), "k").unwrap();
        let vm = SshTarget::new("10.0.0.5", 22, "ubuntu", key, dir.path().join("h"));
        assert!(matches!(vm.auth.as_slice(), [SshAuth::Key(_)]));
        assert_eq!(vm.host_keys, HostKeyPolicy::Record(dir.path().join("h")));
        let own = SshTarget::with_auth(
            "pi.lan",
            22,
            "root",
            vec![SshAuth::Agent, SshAuth::Password("hunter2".into())],
            HostKeyPolicy::KnownHosts {
                file: dir.path().join("known_hosts"),
                accept_new: false,
            },
        );
        assert!(!own.sudo);
        assert_eq!(own.addr(), "pi.lan:22");
        assert_eq!(own.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(!format!("{own:?}").contains("hunter2"));
    }

    #[test]
    fn known_host_key_algorithms_come_first() {
        let default = Preferred::default().key.to_vec();
        let rsa_first = prefer_known(&default, &[Algorithm::Rsa { hash: None }]);
        assert_eq!(rsa_first.len(), default.len());
        assert!(rsa_first[..3]
            .iter()
            .all(|a| matches!(a, Algorithm::Rsa { .. })));
        assert_eq!(prefer_known(&default, &[]), default);
        assert_eq!(prefer_known(&default, &[Algorithm::Ed25519]), default);
    }

    #[tokio::test]
    async fn wait_for_ssh_times_out_with_the_last_error() {
        // Nothing listens on this loopback port: connection refused until the deadline.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let dir = tempfile::tempdir().unwrap();
        let key = SshKey::ensure(dir.path(), "k").unwrap();
        let target = SshTarget::new("127.0.0.1", port, "root", key, dir.path().join("h"));
        let err = wait_for_ssh(target, Duration::from_millis(300))
            .await
            .unwrap_err();
        match err {
            DriverError::Timeout { last_state, .. } => {
                assert!(last_state.contains("could not connect"), "{last_state}")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}
