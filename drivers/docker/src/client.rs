//! The connection to the daemon: lazy, version-negotiated, with failures turned into a reason and
//! a fix the user can act on.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::Docker;
use tokio::sync::{Mutex, OnceCell};

use timonel_driver::{Availability, DriverError};

pub(crate) use crate::answers::{
    error_text, is_missing_image, is_not_found, is_removal_in_progress, map_err,
};
use crate::answers::{is_starting, unreachable_reason};
use crate::config::SecurityProfile;
use crate::engine::Engine;

/// The daemon address when `DOCKER_HOST` is unset on this platform (what the docker CLI uses).
pub const DEFAULT_HOST: &str = default_host_for(cfg!(windows));

/// The daemon address when `DOCKER_HOST` is unset: Docker Desktop's named pipe on Windows, the
/// unix socket elsewhere.
pub const fn default_host_for(windows: bool) -> &'static str {
    if windows {
        "npipe:////./pipe/docker_engine"
    } else {
        "unix:///var/run/docker.sock"
    }
}

/// The daemon address: `DOCKER_HOST` when set and not empty, else the platform's default.
fn host_from(docker_host: Option<String>, windows: bool) -> String {
    docker_host
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| default_host_for(windows).to_string())
}

/// Where Podman's Docker-compatible service listens when started the usual way: as root
/// (`/run/podman/podman.sock`, the systemd `podman.socket`), else as the user
/// (`$XDG_RUNTIME_DIR/podman/podman.sock`, the user's `podman.socket`).
pub(crate) fn podman_sockets(xdg_runtime_dir: Option<&str>) -> Vec<String> {
    let mut sockets = vec!["/run/podman/podman.sock".to_string()];
    if let Some(dir) = xdg_runtime_dir.filter(|d| !d.is_empty()) {
        sockets.push(format!("{}/podman/podman.sock", dir.trim_end_matches('/')));
    }
    sockets
}

/// The address to use: `DOCKER_HOST`; else Docker's socket when it exists; else the first of
/// Podman's sockets that exists; else Docker's default (whose absence the probe explains).
/// Unix only: on Windows the default is Docker Desktop's pipe.
fn pick_host(
    docker_host: Option<String>,
    windows: bool,
    xdg_runtime_dir: Option<&str>,
    exists: impl Fn(&str) -> bool,
) -> String {
    let host = host_from(docker_host.clone(), windows);
    if windows || docker_host.is_some_and(|h| !h.is_empty()) {
        return host;
    }
    let docker = host.trim_start_matches("unix://");
    if exists(docker) {
        return host;
    }
    podman_sockets(xdg_runtime_dir)
        .into_iter()
        .find(|s| exists(s))
        .map(|s| format!("unix://{s}"))
        .unwrap_or(host)
}

/// How long the probe waits for the daemon to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon whose socket or pipe exists but does not answer yet (Docker Desktop
/// booting, a service being started) is waited for.
pub const START_WAIT: Duration = Duration::from_secs(60);
/// Requests that move a lot of data (image import, 300 MB uploads, long stops) get this long.
pub(crate) const LONG_REQUEST: Duration = Duration::from_secs(30 * 60);

/// The Docker driver. Construction never fails and never talks to the daemon: [`probe`] does.
///
/// [`probe`]: timonel_driver::Driver::probe
pub struct DockerDriver {
    /// Where the daemon is, for messages: `DOCKER_HOST` or the platform default.
    pub(crate) host: String,
    /// The client, once the API version has been negotiated with the daemon.
    negotiated: OnceCell<Docker>,
    /// Serializes creating the cluster network when nodes are created in parallel.
    pub(crate) network_lock: Mutex<()>,
    /// Per image: the security profile this daemon accepts (probed once).
    pub(crate) accepted_security: Mutex<HashMap<String, SecurityProfile>>,
    /// How long a daemon that is still starting (its socket or pipe is there, nothing answers
    /// yet) is waited for.
    start_wait: Duration,
    /// The engine, once identified by the probe.
    pub(crate) engine: OnceCell<Engine>,
    /// The daemon's `/info`, as the probe read it (its ID and machine do not change while
    /// timonel runs).
    pub(crate) info: OnceCell<bollard::models::SystemInfo>,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl DockerDriver {
    /// Connects the way the `docker` CLI does: `DOCKER_HOST` when set, else the default unix
    /// socket (`/var/run/docker.sock`) or named pipe (`//./pipe/docker_engine`); on unix, when
    /// Docker's socket is absent, Podman's (`/run/podman/podman.sock`, then
    /// `$XDG_RUNTIME_DIR/podman/podman.sock`) if one exists. Lazy: this never fails;
    /// [`probe`](timonel_driver::Driver::probe) tells whether the daemon answers.
    pub fn connect() -> Self {
        Self::connect_with_host(&Self::default_host())
    }

    /// The address [`connect`](Self::connect) uses now: `DOCKER_HOST`, else Docker's socket when
    /// it exists, else Podman's. A cluster records it so that later commands ask the engine its
    /// nodes are on, not whichever engine's socket happens to exist then.
    pub fn default_host() -> String {
        pick_host(
            std::env::var("DOCKER_HOST").ok(),
            cfg!(windows),
            std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
            |path| std::path::Path::new(path).exists(),
        )
    }

    /// Connects to an explicit daemon address (`unix:///path`, `npipe:////./pipe/name`,
    /// `tcp://host:port`), as if `DOCKER_HOST` said so. Lazy like [`connect`](Self::connect).
    pub fn connect_with_host(host: &str) -> Self {
        Self {
            host: host.to_string(),
            negotiated: OnceCell::new(),
            network_lock: Mutex::new(()),
            accepted_security: Mutex::new(HashMap::new()),
            start_wait: START_WAIT,
            engine: OnceCell::new(),
            info: OnceCell::new(),
        }
    }

    /// How long to wait for a daemon that is still starting ([`START_WAIT`] by default).
    pub fn with_start_wait(mut self, wait: Duration) -> Self {
        self.start_wait = wait;
        self
    }

    /// The negotiated client, connecting on first use.
    pub(crate) async fn client(&self) -> Result<&Docker, DriverError> {
        self.negotiated
            .get_or_try_init(|| async {
                // Built here, not in `connect`: a socket that appears later (a daemon started
                // after timonel) must still be found.
                let base = Docker::connect_with_host(&self.host).map_err(|e| {
                    let (reason, fix) = match e {
                        BollardError::UnsupportedURISchemeError { .. } => (
                            format!("`DOCKER_HOST={}` is not an address timonel can use", self.host),
                            "set DOCKER_HOST to unix:///path/to/docker.sock, npipe:////./pipe/docker_engine or tcp://host:port, or unset it".to_string(),
                        ),
                        other => unreachable_reason(&other, &self.host),
                    };
                    DriverError::NotAvailable {
                        driver: "docker".into(),
                        reason,
                        fix,
                    }
                })?;
                let base = base.with_timeout(Duration::from_secs(120));
                let negotiated = self.negotiate(base).await;
                match negotiated {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(BollardError::APIVersionParseError {})) => {
                        Err(DriverError::NotAvailable {
                            driver: "docker".into(),
                            reason: format!("the engine at `{}` answers, but its `/version` names no Docker API version timonel can use", self.host),
                            fix: "point DOCKER_HOST at a Docker-compatible API (Docker, or Podman's `podman system service`), not at an engine's own API".into(),
                        })
                    }
                    Ok(Err(e)) => {
                        let (reason, fix) = unreachable_reason(&e, &self.host);
                        Err(DriverError::NotAvailable {
                            driver: "docker".into(),
                            reason,
                            fix,
                        })
                    }
                    Err(waited) => Err(DriverError::NotAvailable {
                        driver: "docker".into(),
                        reason: format!(
                            "the Docker daemon at `{}` did not answer within {waited:?}: it is not running, or still starting",
                            self.host
                        ),
                        fix: "wait for it to finish starting (Docker Desktop shows when it runs), or check that it is healthy (`docker info`) and restart it"
                            .into(),
                    }),
                }
            })
            .await
    }

    /// Negotiates the API version, waiting up to `start_wait` for a daemon that is still
    /// starting: its socket or pipe exists but refuses or drops the connection, or it answers
    /// 502/503. Err(waited) when each try timed out or the wait ran out.
    async fn negotiate(&self, base: Docker) -> Result<Result<Docker, BollardError>, Duration> {
        let started = tokio::time::Instant::now();
        let mut said = false;
        loop {
            let left = self.start_wait.saturating_sub(started.elapsed());
            let attempt =
                tokio::time::timeout(PROBE_TIMEOUT, base.clone().negotiate_version()).await;
            match attempt {
                Ok(Err(e)) if is_starting(&e, &self.host) && !left.is_zero() => {
                    if !said {
                        tracing::warn!(
                            "the Docker daemon at `{}` does not answer yet ({}): waiting up to {:?} for it to start",
                            self.host,
                            error_text(&e),
                            self.start_wait
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250).min(left)).await;
                }
                Ok(Err(e)) if is_starting(&e, &self.host) => return Err(self.start_wait),
                Ok(other) => return Ok(other),
                Err(_) => return Err(started.elapsed()),
            }
        }
    }

    /// The daemon's `/info`: the probe's reading when there was one, else asked now (a
    /// failure is a backend error of `op`).
    pub(crate) async fn daemon_info(
        &self,
        op: &str,
    ) -> Result<bollard::models::SystemInfo, DriverError> {
        if let Some(info) = self.info.get() {
            return Ok(info.clone());
        }
        self.client()
            .await?
            .info()
            .await
            .map_err(|e| DriverError::backend(op, error_text(&e)))
    }

    /// Whether the client is connected and its API version negotiated already.
    pub(crate) fn is_negotiated(&self) -> bool {
        self.negotiated.initialized()
    }

    /// The client with a longer request timeout, for transfers and long stops.
    pub(crate) async fn long_client(&self) -> Result<Docker, DriverError> {
        Ok(self.client().await?.clone().with_timeout(LONG_REQUEST))
    }

    pub(crate) async fn probe_daemon(&self) -> Availability {
        let docker = match self.client().await {
            Ok(d) => d,
            Err(DriverError::NotAvailable { reason, fix, .. }) => {
                return Availability::Unusable { reason, fix }
            }
            Err(e) => {
                return Availability::Unusable {
                    reason: e.to_string(),
                    fix: "check `docker info`".into(),
                }
            }
        };
        let info = tokio::time::timeout(PROBE_TIMEOUT, docker.info()).await;
        let info = match info {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                let (reason, fix) = unreachable_reason(&e, &self.host);
                return Availability::Unusable { reason, fix };
            }
            Err(_) => {
                return Availability::Unusable {
                    reason: format!("the Docker daemon at `{}` did not answer", self.host),
                    fix: "check that the daemon is healthy (`docker info`), or restart it".into(),
                }
            }
        };
        if info.os_type.as_deref() == Some("windows") {
            return Availability::Unusable {
                reason: "the Docker daemon runs Windows containers".into(),
                fix: "switch Docker Desktop to Linux containers".into(),
            };
        }
        let version = match tokio::time::timeout(PROBE_TIMEOUT, docker.version()).await {
            Ok(Ok(v)) => v,
            _ => Default::default(),
        };
        let podman = crate::engine::podman_component(&version).is_some();
        let rootless_flag = if podman {
            crate::raw::get_json(&self.host, "/info")
                .await
                .and_then(|v| v.get("Rootless").and_then(serde_json::Value::as_bool))
        } else {
            None
        };
        let engine = Engine::identify(&version, &info, rootless_flag);
        if let Some((reason, fix)) = engine.unfit_for_k3s() {
            return Availability::Unusable { reason, fix };
        }
        let api = docker.client_version().to_string();
        let storage = info.driver.clone().unwrap_or_else(|| "?".into());
        let cgroup = match engine.cgroup {
            Some(v) => format!("cgroup v{v}"),
            None => "cgroup version unknown".into(),
        };
        let mut notes = vec![format!("storage driver {storage}, {cgroup}")];
        notes.extend(engine.notes());
        if matches!(storage.as_str(), "btrfs" | "zfs") {
            notes.push(format!(
                "storage driver {storage}: k3s's data dir is a volume, but containerd inside may need `--snapshotter=native`"
            ));
        }
        let described = engine.describe(&api);
        let _ = self.engine.set(engine);
        let _ = self.info.set(info);
        Availability::Ready {
            version: described,
            notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_daemon_address_is_the_platforms() {
        assert_eq!(default_host_for(true), "npipe:////./pipe/docker_engine");
        assert_eq!(default_host_for(false), "unix:///var/run/docker.sock");
        assert_eq!(DEFAULT_HOST, default_host_for(cfg!(windows)));
        assert_eq!(host_from(None, true), "npipe:////./pipe/docker_engine");
        assert_eq!(
            host_from(Some(String::new()), false),
            "unix:///var/run/docker.sock"
        );
        // DOCKER_HOST wins on every platform.
        for windows in [true, false] {
            let tcp = Some("tcp://127.0.0.1:2375".to_string());
            assert_eq!(host_from(tcp, windows), "tcp://127.0.0.1:2375");
        }
    }

    #[test]
    fn podmans_sockets_are_found_when_docker_has_none() {
        let only = |present: &'static [&'static str]| move |p: &str| present.contains(&p);
        let xdg = Some("/run/user/1000");
        // Docker's socket wins when it is there.
        assert_eq!(
            pick_host(
                None,
                false,
                xdg,
                only(&["/var/run/docker.sock", "/run/podman/podman.sock"])
            ),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(
            pick_host(None, false, xdg, only(&["/run/podman/podman.sock"])),
            "unix:///run/podman/podman.sock"
        );
        assert_eq!(
            pick_host(
                None,
                false,
                xdg,
                only(&["/run/user/1000/podman/podman.sock"])
            ),
            "unix:///run/user/1000/podman/podman.sock"
        );
        // Nothing there: Docker's default, which the probe reports as not running.
        assert_eq!(
            pick_host(None, false, None, only(&[])),
            "unix:///var/run/docker.sock"
        );
        // DOCKER_HOST always wins; Windows keeps Docker Desktop's pipe.
        let set = Some("unix:///tmp/x.sock".to_string());
        assert_eq!(
            pick_host(set, false, xdg, only(&["/run/podman/podman.sock"])),
            "unix:///tmp/x.sock"
        );
        assert_eq!(
            pick_host(None, true, xdg, only(&["/run/podman/podman.sock"])),
            "npipe:////./pipe/docker_engine"
        );
        assert_eq!(podman_sockets(Some("")), vec!["/run/podman/podman.sock"]);
    }
}
