//! timonel's SSH driver: k3s on machines the user already has.
//!
//! A "node" is an existing Linux machine reached over SSH (`--node user@host[:port]`). The host
//! key must be in the user's known_hosts (or is trusted on first use when asked), login uses the
//! user's key file, agent or password, and commands run through `sudo -n` unless the user is
//! root. Nothing changes on any machine until every machine passed the [preflight](SshDriver::preflight).
//!
//! - `create` records the node (a marker at [`facts::MARKER_PATH`]), places the spec's files
//!   (config, binary, airgap images, the systemd unit) and enables the unit;
//! - `start`/`stop` start and stop the k3s service;
//! - `delete` uninstalls: services, processes, mounts, interfaces and firewall chains k3s made,
//!   the files timonel placed, and the k3s folders that did not exist before.

mod credentials;
pub mod facts;
pub mod host;
mod preflight;
pub mod uninstall;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    Availability, Capabilities, ClusterName, Cmd, CommandError, Driver, DriverError, DriverKind,
    MachineName, MachineSpec, MachineState, NodeAccess, NodeKind, NodeRole, Preflight, Reporter,
    Runner, StopMode,
};
use timonel_driver_vm::{HostKeyPolicy, SshAccess, SshTarget};
use tokio::sync::Mutex;

pub use credentials::Credentials;
pub use facts::{HostFacts, Marker, Problem};
pub use host::SshHost;

/// Environment variable holding the SSH login password (never stored).
pub const PASSWORD_ENV: &str = "TIMONEL_SSH_PASSWORD";
/// Environment variable holding the passphrase of an encrypted `--ssh-key` (never stored).
pub const PASSPHRASE_ENV: &str = "TIMONEL_SSH_KEY_PASSPHRASE";

/// One node of an SSH cluster: the machine, the part it plays, and the systemd unit that runs
/// the distribution there (the distribution names it; the driver stops, starts and reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshNode {
    pub host: SshHost,
    pub role: NodeRole,
    pub unit: String,
}

impl SshNode {
    fn unit(&self) -> &str {
        &self.unit
    }
}

/// The SSH driver of one cluster: it knows the cluster's machines.
pub struct SshDriver {
    cluster: ClusterName,
    /// Identifies the cluster on its machines (see [`Marker::cluster_id`]).
    cluster_id: String,
    nodes: BTreeMap<MachineName, SshNode>,
    creds: Credentials,
    /// `--adopt`: machines that already run k3s (or belong to another timonel cluster) may be
    /// taken over; their k3s is replaced.
    adopt: bool,
    sessions: Mutex<BTreeMap<MachineName, Arc<SshAccess>>>,
}

impl std::fmt::Debug for SshDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshDriver")
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// How long one preflight, install step or uninstall may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

impl SshDriver {
    pub fn new(
        cluster: ClusterName,
        cluster_id: impl Into<String>,
        nodes: BTreeMap<MachineName, SshNode>,
        creds: Credentials,
        adopt: bool,
    ) -> Self {
        Self {
            cluster,
            cluster_id: cluster_id.into(),
            nodes,
            creds,
            adopt,
            sessions: Mutex::new(BTreeMap::new()),
        }
    }

    fn node(&self, name: &MachineName) -> Result<&SshNode, DriverError> {
        self.nodes.get(name).ok_or_else(|| DriverError::NotFound {
            what: format!("node `{name}` (no machine is given for it)"),
        })
    }

    fn target(&self, host: &SshHost) -> Result<SshTarget, DriverError> {
        let known_hosts =
            self.creds
                .known_hosts_file()
                .ok_or_else(|| DriverError::NotAvailable {
                    driver: "ssh".to_string(),
                    reason: "there is no home folder to find ~/.ssh/known_hosts in".to_string(),
                    fix: "pass --ssh-known-hosts FILE".to_string(),
                })?;
        let mut target = SshTarget::with_auth(
            host.host.clone(),
            host.port,
            host.user.clone(),
            self.creds.auth(),
            HostKeyPolicy::KnownHosts {
                file: known_hosts,
                accept_new: self.creds.accept_new_host_keys,
            },
        );
        if let Some(t) = self.creds.connect_timeout {
            target.connect_timeout = t;
        }
        Ok(target)
    }

    /// A connected session to the node's machine (reused).
    async fn session(&self, name: &MachineName) -> Result<Arc<SshAccess>, DriverError> {
        let node = self.node(name)?;
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(name) {
            return Ok(s.clone());
        }
        let access = Arc::new(SshAccess::new(self.target(&node.host)?));
        access.connect().await?;
        sessions.insert(name.clone(), access.clone());
        Ok(access)
    }

    /// Runs a root shell script on the node's machine.
    async fn root_script(&self, name: &MachineName, script: &str) -> Result<String, DriverError> {
        let access = self.session(name).await?;
        let out = access
            .run(&Cmd::new("sh").args(["-c", script]).timeout(STEP_TIMEOUT))
            .await?;
        Ok(out.stdout)
    }

    /// Checks that the login can run commands as root without a password.
    async fn check_sudo(&self, name: &MachineName) -> Result<(), String> {
        let node = self.node(name).map_err(|e| e.to_string())?;
        if node.host.user == "root" {
            return Ok(());
        }
        let access = self.session(name).await.map_err(|e| error_text(&e))?;
        match access.run(&Cmd::new("true").timeout(STEP_TIMEOUT)).await {
            Ok(_) => Ok(()),
            Err(CommandError::Exited { stderr, .. }) => Err(format!(
                "user `{}` cannot run commands as root without a password (sudo said: {})",
                node.host.user,
                stderr.trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// What the preflight found on the node's machine (runs as root).
    pub async fn inspect(&self, name: &MachineName) -> Result<HostFacts, DriverError> {
        Ok(HostFacts::parse(
            &self.root_script(name, &facts::script()).await?,
        ))
    }

    /// Uninstalls k3s from the node's machine when it is this cluster's node; a machine that is
    /// not (never installed, or already removed) is left alone. Whether anything was removed.
    async fn uninstall(&self, name: &MachineName) -> Result<bool, DriverError> {
        let found = self.inspect(name).await?;
        if !found.owned_by(&self.cluster_id) {
            return Ok(false);
        }
        self.root_script(name, &uninstall::script(found.marker.as_ref()))
            .await?;
        Ok(true)
    }

    async fn unit_state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        let node = self.node(name)?;
        let unit = node.unit();
        let script = format!(
            "if [ -r {m} ]; then cat {m}; else echo none; fi; echo; systemctl is-active {unit} 2>/dev/null || true",
            m = facts::MARKER_PATH
        );
        let out = self.root_script(name, &script).await?;
        let mut lines = out.lines();
        let marker = lines.next().unwrap_or("none");
        let marker: Option<Marker> = serde_json::from_str(marker).ok();
        if marker.is_none_or(|m| m.cluster_id != self.cluster_id) {
            return Ok(MachineState::NotCreated);
        }
        let active = lines.rfind(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Ok(match active {
            "active" | "reloading" => MachineState::Running,
            "activating" => MachineState::Starting,
            "deactivating" => MachineState::Stopping,
            "failed" => MachineState::Error {
                raw: format!("{unit}.service failed"),
            },
            _ => MachineState::Stopped,
        })
    }
}

/// An error's text with its causes.
fn error_text(e: &DriverError) -> String {
    let mut text = timonel_driver::error_chain(e);
    if let Some(h) = timonel_driver::Hint::hint(e) {
        text.push_str(&format!(" ({h})"));
    }
    text
}

#[async_trait]
impl Driver for SshDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Ssh
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Machine,
            ..Default::default()
        }
    }

    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::Unsupported {
            why: "the nodes are other machines: this host's folders are not on them".into(),
            instead: "put the files on the machines yourself (rsync, NFS) and use them there through a hostPath volume; drop --mount".into(),
        }
    }

    async fn probe(&self) -> Availability {
        if self.nodes.is_empty() {
            return Availability::Unusable {
                reason: "no machines were given".into(),
                fix: "name each machine with --node user@host[:port]".into(),
            };
        }
        Availability::Ready {
            version: format!("ssh to {} machine(s)", self.nodes.len()),
            notes: Vec::new(),
        }
    }

    /// Records the node on its machine, places the spec's files and enables its unit. The
    /// machine must have passed the preflight; a k3s found there is replaced only with
    /// `--adopt`.
    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        let node = self.node(&spec.name)?;
        report.step(&format!("checking {}", node.host));
        let found = self.inspect(&spec.name).await?;
        let problems = found.problems(node.role, self.adopt, &self.cluster_id);
        if let Some(p) = problems.first() {
            return Err(DriverError::Backend {
                op: "create".into(),
                message: format!("{} cannot be node `{}`: {}", node.host, spec.name, p.what),
                hint: Some(p.fix.clone()),
            });
        }
        let mut found = found;
        if !found.k3s.is_empty() && !found.owned_by(&self.cluster_id) {
            // --adopt: the k3s that is there goes first, with everything it made.
            report.step(&format!("removing the k3s found on {}", node.host));
            self.root_script(&spec.name, &uninstall::script(found.marker.as_ref()))
                .await?;
            found = self.inspect(&spec.name).await?;
        }
        let marker = Marker {
            cluster_id: self.cluster_id.clone(),
            cluster: self.cluster.to_string(),
            node: spec.name.to_string(),
            preexisting: found
                .existing
                .iter()
                .filter(|p| facts::K3S_DIRS.contains(&p.as_str()))
                .cloned()
                .collect(),
            placed: spec.files.iter().map(|f| f.path.clone()).collect(),
        };
        let line = serde_json::to_string(&marker).map_err(|e| DriverError::Parse {
            what: "the node record".into(),
            message: e.to_string(),
        })?;
        let access = self.session(&spec.name).await?;
        // The marker first: an interrupted install is then still found and removed by delete.
        access
            .copy_in(&[timonel_driver::FilePlacement::bytes(
                facts::MARKER_PATH,
                0o600,
                format!("{line}\n").into_bytes(),
            )])
            .await?;
        report.step(&format!("installing k3s on {}", node.host));
        access.copy_in(&spec.files).await?;
        let unit = node.unit();
        self.root_script(
            &spec.name,
            &format!("systemctl daemon-reload && systemctl enable {unit} 2>&1"),
        )
        .await?;
        Ok(())
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        let unit = self.node(name)?.unit();
        // Without blocking on k3s's readiness (Type=notify): timonel waits itself.
        self.root_script(name, &format!("systemctl start --no-block {unit}"))
            .await?;
        Ok(())
    }

    async fn stop(&self, name: &MachineName, _how: StopMode) -> Result<(), DriverError> {
        if self.unit_state(name).await? == MachineState::NotCreated {
            return Ok(());
        }
        self.root_script(name, &uninstall::stop_script()).await?;
        Ok(())
    }

    /// Refused: the machines are not timonel's to freeze. Freezing the k3s unit's cgroup
    /// (`systemctl freeze`) would leave the pods running (they live in their own cgroups) while
    /// the kubelet that minds them is frozen, and needs a writable cgroup v2 hierarchy.
    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.node(name)?;
        Err(DriverError::Unsupported {
            driver: "ssh".to_string(),
            what: "pausing existing machines (timonel does not own them; k3s's pods would run \
                   on while it is frozen); `timonel stop` stops k3s on them and `timonel start` \
                   starts it again"
                .to_string(),
        })
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.node(name)?;
        Err(DriverError::Unsupported {
            driver: "ssh".to_string(),
            what: "unpausing existing machines (they are never paused)".to_string(),
        })
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        self.uninstall(name).await.map(|_| ())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        if cluster != &self.cluster {
            return Ok(Vec::new());
        }
        let tasks = self.nodes.iter().map(|(name, node)| async move {
            self.uninstall(name)
                .await
                .map(|owned| owned.then(|| format!("k3s on {} ({name})", node.host)))
                .map_err(|e| format!("{} ({name}): {}", node.host, error_text(&e)))
        });
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for r in futures_util::future::join_all(tasks).await {
            match r {
                Ok(Some(line)) => removed.push(line),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(DriverError::Backend {
                op: "delete".into(),
                message: format!(
                    "k3s could not be removed from every machine:\n  {}",
                    errors.join("\n  ")
                ),
                hint: Some(
                    "make the machines reachable and run `timonel delete` again: it removes what is left"
                        .into(),
                ),
            });
        }
        Ok(removed)
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        self.unit_state(name).await
    }

    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        let host = &self.node(name)?.host;
        if let Some(ip) = host.ip_literal() {
            return Ok(ip);
        }
        let mut addrs = tokio::net::lookup_host((host.host.as_str(), host.port))
            .await
            .map_err(|e| DriverError::io(format!("cannot resolve `{}`", host.host), e))?;
        addrs
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| DriverError::NotFound {
                what: format!("an address for `{}`", host.host),
            })
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        Ok(SocketAddr::new(self.ip(name).await?, port))
    }

    async fn access(&self, name: &MachineName) -> Result<Arc<dyn NodeAccess>, DriverError> {
        Ok(self.session(name).await?)
    }

    fn as_preflight(&self) -> Option<&dyn Preflight> {
        Some(self)
    }

    async fn logs(&self, name: &MachineName, tail: usize) -> Result<String, DriverError> {
        let unit = self.node(name)?.unit();
        self.root_script(
            name,
            &format!(
                "journalctl -u {unit} {} --no-pager -o cat 2>&1 || true",
                // 0: the whole log.
                if tail == 0 {
                    "-n all".to_string()
                } else {
                    format!("-n {tail}")
                }
            ),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_driver_without_machines_says_what_to_do() {
        let d = SshDriver::new(
            "dev".parse().unwrap(),
            "id",
            BTreeMap::new(),
            Credentials::default(),
            false,
        );
        match d.probe().await {
            Availability::Unusable { fix, .. } => assert!(fix.contains("--node")),
            other => panic!("{other:?}"),
        }
        let e = d.state(&"dev".parse().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("no machine"), "{e}");
    }

    #[tokio::test]
    async fn pausing_a_machine_is_refused_without_touching_it() {
        let name: MachineName = "dev-m1".parse().unwrap();
        let node = SshNode {
            // Nothing listens there: the refusal must come before any connection.
            host: "root@192.0.2.1".parse().unwrap(),
            role: NodeRole::Server,
            unit: "k3s".to_string(),
        };
        let d = SshDriver::new(
            "dev".parse().unwrap(),
            "id",
            BTreeMap::from([(name.clone(), node)]),
            Credentials::default(),
            false,
        );
        let e = d.pause(&name).await.unwrap_err();
        assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("`timonel stop`"), "{e}");
        assert!(matches!(
            d.unpause(&name).await,
            Err(DriverError::Unsupported { .. })
        ));
    }
}
