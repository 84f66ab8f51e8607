//! The API load balancer as a process on this machine, for drivers that make none themselves
//! (VMs, machines): `timonel-lb --listen <listen address>:<port> --backends <file>`, detached,
//! owned by the profile (docs/architecture.md, "The API load balancer").
//!
//! In the profile's folder: `lb-backends` (the servers' host-reachable `IP:PORT`, one a line,
//! replaced whole: the program reads it again when it changes), `lb-process.json` (its pid and
//! start time, so a pid the system gave to another process since is never signalled) and
//! `lb.log` (its stderr).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use timonel_driver::{
    ApiBalancer, BalancerSpec, BalancerStatus, ClusterName, DriverError, MachineState, Reporter,
};

use crate::profile::Profile;

const BACKENDS: &str = "lb-backends";
const PROCESS: &str = "lb-process.json";
const LOG: &str = "lb.log";
/// `TIMONEL_LB`, else beside timonel's executable, else on PATH.
const ENV_PROGRAM: &str = "TIMONEL_LB";
const FIX: &str = "build it with `cargo build --release -p timonel-lb` (scripts/build-lb.sh) and put it beside timonel or on PATH, or set TIMONEL_LB to its path; or start one server (`--control-planes 1`)";

/// Which process is the balancer: its pid and when it started (the system's own clock of the
/// process, so a reused pid shows another start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    pid: u32,
    started: String,
}

/// The host-process balancer of the profile whose folder is `dir`.
#[derive(Debug, Clone)]
pub struct HostBalancer {
    dir: PathBuf,
}

impl HostBalancer {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn running(&self) -> Option<Owned> {
        let text = std::fs::read_to_string(self.dir.join(PROCESS)).ok()?;
        let owned: Owned = serde_json::from_str(&text).ok()?;
        (start_time(owned.pid).as_deref() == Some(owned.started.as_str())).then_some(owned)
    }

    fn write_backends(&self, backends: &[SocketAddr]) -> Result<(), DriverError> {
        let text: String = backends.iter().map(|b| format!("{b}\n")).collect();
        crate::fsutil::atomic_write(&self.dir.join(BACKENDS), text.as_bytes(), 0o644)
            .map_err(|e| DriverError::io("cannot write the load balancer's backends", e))
    }

    /// Stops the process when it is ours and running; forgets it either way.
    pub fn stop(&self) -> Result<(), DriverError> {
        if let Some(owned) = self.running() {
            kill(owned.pid)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while start_time(owned.pid).as_deref() == Some(owned.started.as_str()) {
                if Instant::now() > deadline {
                    return Err(DriverError::backend(
                        "stopping the API load balancer",
                        format!("process {} is still running", owned.pid),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        match std::fs::remove_file(self.dir.join(PROCESS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError::io(
                "cannot remove the load balancer's process record",
                e,
            )),
            _ => Ok(()),
        }
    }
}

/// The servers' host-reachable API addresses (each server's own URL, resolved): a machine's
/// address, else the URL recorded for the server.
pub fn host_backends(profile: &Profile) -> Vec<SocketAddr> {
    profile
        .nodes
        .iter()
        .filter(|n| n.role == timonel_driver::NodeRole::Server)
        .filter_map(|n| match &n.machine {
            Some(m) => Some(format!(
                "https://{}:{}",
                m.host,
                crate::distro::k3s::API_PORT
            )),
            None => profile.api_url(n),
        })
        .filter_map(|url| {
            let url = url::Url::parse(&url).ok()?;
            let host = url.host_str()?.trim_matches(['[', ']']).to_string();
            (host.as_str(), url.port_or_known_default()?)
                .to_socket_addrs()
                .ok()?
                .next()
        })
        .collect()
}

#[async_trait]
impl ApiBalancer for HostBalancer {
    async fn balancer_ready(&self) -> Result<(), DriverError> {
        program().map(drop)
    }

    async fn ensure_balancer(
        &self,
        spec: &BalancerSpec,
        _report: &dyn Reporter,
    ) -> Result<(), DriverError> {
        self.write_backends(&spec.backends)?;
        if self.running().is_some() {
            return Ok(());
        }
        let listen = SocketAddr::new(spec.host_ip, spec.host_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG))
            .map_err(|e| DriverError::io("cannot open the load balancer's log", e))?;
        let mut cmd = Command::new(program()?);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--backends")
            .arg(self.dir.join(BACKENDS))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        detach(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| DriverError::io("cannot start the API load balancer (timonel-lb)", e))?;
        let pid = child.id();
        let started = start_time(pid).ok_or_else(|| {
            DriverError::backend(
                "starting the API load balancer",
                format!(
                    "process {pid} ended at once; see {}",
                    self.dir.join(LOG).display()
                ),
            )
        })?;
        let owned = serde_json::to_vec(&Owned { pid, started }).unwrap_or_default();
        crate::fsutil::atomic_write(&self.dir.join(PROCESS), &owned, 0o644)
            .map_err(|e| DriverError::io("cannot record the load balancer's process", e))?;
        // It listens within moments, or says why not (a port taken meanwhile) and exits.
        let connect_to = crate::profile::server_url(spec.host_ip, spec.host_port);
        let target = SocketAddr::new(
            url::Url::parse(&connect_to)
                .ok()
                .and_then(|u| {
                    u.host_str()
                        .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
                })
                .unwrap_or(spec.host_ip),
            spec.host_port,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = std::fs::remove_file(self.dir.join(PROCESS));
                return Err(DriverError::Backend {
                    op: "starting the API load balancer".into(),
                    message: format!(
                        "timonel-lb exited ({status}): {}",
                        last_line(&self.dir.join(LOG))
                    ),
                    hint: Some(format!(
                        "if port {} is taken by another program, free it and run `timonel start` again",
                        spec.host_port
                    )),
                });
            }
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DriverError::Timeout {
                    what: format!("the API load balancer on {listen}"),
                    after: Duration::from_secs(10),
                    last_state: last_line(&self.dir.join(LOG)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn set_backends(
        &self,
        _cluster: &ClusterName,
        backends: &[SocketAddr],
    ) -> Result<(), DriverError> {
        self.write_backends(backends)
    }

    async fn stop_balancer(&self, _cluster: &ClusterName) -> Result<(), DriverError> {
        self.stop()
    }

    async fn balancer(
        &self,
        _cluster: &ClusterName,
    ) -> Result<Option<BalancerStatus>, DriverError> {
        let Ok(text) = std::fs::read_to_string(self.dir.join(BACKENDS)) else {
            return Ok(None);
        };
        let owned = self.running();
        Ok(Some(BalancerStatus {
            state: if owned.is_some() {
                MachineState::Running
            } else {
                MachineState::Stopped
            },
            host_port: None,
            backends: timonel_lb_backends(&text),
        }))
    }
}

fn timonel_lb_backends(text: &str) -> Vec<SocketAddr> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| t.lines().last().map(str::to_string))
        .unwrap_or_else(|| "no output".to_string())
}

/// The program: `TIMONEL_LB`, beside timonel's executable, or on PATH.
fn program() -> Result<PathBuf, DriverError> {
    let name = format!("timonel-lb{}", std::env::consts::EXE_SUFFIX);
    let missing = |reason: String| DriverError::NotAvailable {
        driver: "host".into(),
        reason: format!(
            "the load balancer of a cluster with several servers needs `timonel-lb`: {reason}"
        ),
        fix: FIX.to_string(),
    };
    if let Some(p) = std::env::var_os(ENV_PROGRAM).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(format!(
                "{ENV_PROGRAM} is `{}`, which is not a file",
                p.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(&name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&name));
    beside
        .into_iter()
        .chain(on_path)
        .find(|c| c.is_file())
        .ok_or_else(|| missing("not found (looked beside timonel and on PATH)".to_string()))
}

/// Its own process group (Unix) or a detached process without a console (Windows): a Ctrl-C
/// in the terminal that ran `start` does not reach it, and it outlives timonel.
#[cfg(unix)]
fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

#[cfg(windows)]
fn detach(cmd: &mut Command) {
    use std::os::windows::process::CommandExt;
    const DETACHED_PROCESS: u32 = 0x0000_0008;
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
}

#[cfg(not(any(unix, windows)))]
fn detach(_cmd: &mut Command) {}

/// When process `pid` started, as the system says; `None` when there is no such process.
/// Linux: field 22 of /proc/PID/stat (clock ticks since boot).
#[cfg(target_os = "linux")]
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // A zombie (state Z) has exited.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| s.to_string())
}

/// Other Unix systems: `ps -o lstart=` (the start date and time).
#[cfg(all(unix, not(target_os = "linux")))]
fn start_time(pid: u32) -> Option<String> {
    let out = Command::new("ps")
        .args(["-o", "lstart=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Windows: the process's start time as PowerShell's Get-Process reports it.
#[cfg(windows)]
fn start_time(pid: u32) -> Option<String> {
    let out = Command::new("powershell")
        .args([
            "-NoProfile",
            "-Command",
            &format!("(Get-Process -Id {pid} -ErrorAction Stop).StartTime.ToFileTimeUtc()"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(not(any(unix, windows)))]
fn start_time(_pid: u32) -> Option<String> {
    None
}

/// Asks process `pid` to end (SIGTERM on Unix; `taskkill /F` on Windows, which has no signal).
fn kill(pid: u32) -> Result<(), DriverError> {
    #[cfg(windows)]
    let mut cmd = {
        let mut c = Command::new("taskkill");
        c.args(["/PID", &pid.to_string(), "/F"]);
        c
    };
    #[cfg(not(windows))]
    let mut cmd = {
        let mut c = Command::new("kill");
        c.arg(pid.to_string());
        c
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DriverError::io("cannot stop the API load balancer", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DriverError::backend(
            "stopping the API load balancer",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_recorded_pid_whose_start_differs_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let lb = HostBalancer::at(dir.path());
        assert!(lb.running().is_none());
        let me = std::process::id();
        let record = |started: &str| {
            let owned = Owned {
                pid: me,
                started: started.to_string(),
            };
            std::fs::write(
                dir.path().join(PROCESS),
                serde_json::to_vec(&owned).unwrap(),
            )
            .unwrap();
        };
        // This test's own process with another start time: a reused pid, never signalled.
        record("1");
        assert!(lb.running().is_none());
        lb.stop().unwrap();
        assert!(!dir.path().join(PROCESS).exists());
        if let Some(now) = start_time(me) {
            record(&now);
            assert_eq!(lb.running().map(|o| o.pid), Some(me));
        }
    }
}
