//! The connection to the daemon: lazy, version-negotiated, with failures turned into a reason and
//! a fix the user can act on.

use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::Docker;
use tokio::sync::{Mutex, OnceCell};

use timonel_driver::{Availability, DriverError};

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
        let host = pick_host(
            std::env::var("DOCKER_HOST").ok(),
            cfg!(windows),
            std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
            |path| std::path::Path::new(path).exists(),
        );
        Self::connect_with_host(&host)
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
        let podman = version
            .components
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.name.contains("Podman"));
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
        Availability::Ready {
            version: described,
            notes,
        }
    }
}

/// Why the daemon could not be reached, and what to do about it.
pub(crate) fn unreachable_reason(err: &BollardError, host: &str) -> (String, String) {
    let kind = io_kind(err);
    let text = format!("{err} {}", chain_text(err)).to_lowercase();
    let local = host.starts_with("unix://") || host.starts_with("npipe://");
    let default_host = host == DEFAULT_HOST;
    if kind == Some(std::io::ErrorKind::PermissionDenied) || text.contains("permission denied") {
        return (
            format!("permission denied on the Docker socket `{host}`"),
            permission_fix(cfg!(windows)).into(),
        );
    }
    if !default_host {
        let why = if local {
            "nothing is listening there"
        } else {
            "it does not answer"
        };
        return (
            format!("`DOCKER_HOST={host}` is unreachable: {why}"),
            "point DOCKER_HOST at a running daemon, or unset it to use the local one (start Docker Desktop / `sudo systemctl start docker`)".into(),
        );
    }
    (
        format!("the Docker daemon is not running (no answer on `{host}`)"),
        if cfg!(windows) || cfg!(target_os = "macos") {
            "start Docker Desktop".into()
        } else {
            "start Docker Desktop / `sudo systemctl start docker`, or Podman's service (`sudo systemctl start podman.socket`, or `systemctl --user start podman.socket` for rootless; timonel finds its socket)".into()
        },
    )
}

/// Whether an error says the daemon is there but not answering yet: its unix socket file
/// exists (or it is a named pipe) and the connection was refused, reset or dropped, or it
/// answered 502/503 (a proxy in front of a daemon still booting).
pub(crate) fn is_starting(err: &BollardError, host: &str) -> bool {
    if let BollardError::DockerResponseServerError { status_code, .. } = err {
        return matches!(status_code, 502 | 503);
    }
    let present = if let Some(path) = host.strip_prefix("unix://") {
        std::path::Path::new(path).exists()
    } else {
        host.starts_with("npipe://")
    };
    if !present {
        return false;
    }
    use std::io::ErrorKind as K;
    // Windows: ERROR_PIPE_BUSY (231), the pipe exists but its server is not serving yet.
    let pipe_busy = cfg!(windows) && raw_os_error(err) == Some(231);
    pipe_busy
        || matches!(
            io_kind(err),
            Some(
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::UnexpectedEof
                    | K::BrokenPipe
            )
        )
        || matches!(err, BollardError::HyperResponseError { .. })
}

fn raw_os_error(err: &BollardError) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        source = e.source();
    }
    None
}

/// How a user gets the right to the daemon's socket or pipe.
fn permission_fix(windows: bool) -> &'static str {
    if windows {
        "add your user to the docker-users group, in an elevated PowerShell: `Add-LocalGroupMember -Group docker-users -Member $env:USERNAME`, then sign out and in again"
    } else {
        "add your user to the docker group: `sudo usermod -aG docker $USER`, then log in again"
    }
}

fn io_kind(err: &BollardError) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

fn chain_text(err: &BollardError) -> String {
    let mut out = String::new();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(&e.to_string());
        out.push(' ');
        source = e.source();
    }
    out
}

/// Maps a bollard error of an operation on `what` to a typed driver error.
pub(crate) fn map_err(op: &str, what: &str, err: BollardError) -> DriverError {
    if is_not_found(&err) {
        return DriverError::NotFound {
            what: what.to_string(),
        };
    }
    match err {
        BollardError::DockerResponseServerError {
            status_code: 409 | 500,
            message,
        } if message.contains("already in use") || message.contains("already exists") => {
            DriverError::AlreadyExists {
                what: what.to_string(),
                hint: None,
            }
        }
        BollardError::DockerResponseServerError { message, .. } => {
            DriverError::backend(format!("{op} {what}"), message)
        }
        other => DriverError::backend(format!("{op} {what}"), error_text(&other)),
    }
}

/// An error's text with its sources, for messages that have no other place for them.
pub(crate) fn error_text(err: &BollardError) -> String {
    let chain = chain_text(err);
    if chain.is_empty() {
        err.to_string()
    } else {
        format!("{err}: {}", chain.trim_end())
    }
}

/// Whether a bollard error is a 404.
/// Docker's 409 to a second removal of a container while the first is still running.
pub(crate) fn is_removal_in_progress(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } if message.contains("already in progress")
    )
}

/// Whether a bollard error says the object is not there: Docker's 404, or Podman's 500 whose
/// `cause` is one of its not-found errors (`{"cause":"no such container","message":"no
/// container with name or ID \"x\" found: no such container","response":500}`, as Podman 3
/// answered a forced removal; 4.x answers 404 with the same body).
pub(crate) fn is_not_found(err: &BollardError) -> bool {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => true,
        BollardError::DockerResponseServerError {
            status_code: 500,
            message,
        } => is_missing_object(message),
        _ => false,
    }
}

/// Podman's not-found causes, which end its error messages.
pub(crate) fn is_missing_object(message: &str) -> bool {
    [
        "no such container",
        "no such volume",
        "network not found",
        "no such image",
        "image not known",
    ]
    .iter()
    .any(|cause| message.ends_with(cause))
}

/// Whether creating a container failed because its image is missing: Docker's 404 `No such
/// image: x`, Podman's `no such image: docker.io/x: image not known` (404 in 4.x, 500 before).
pub(crate) fn is_missing_image(err: &BollardError) -> bool {
    match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let m = message.to_lowercase();
            (*status_code == 404 || *status_code == 500)
                && (m.contains("no such image") || m.contains("image not known"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_fix() {
        let missing = BollardError::SocketNotFoundError("/var/run/docker.sock".into());
        let (reason, fix) = unreachable_reason(&missing, DEFAULT_HOST);
        assert!(reason.contains("not running"), "{reason}");
        assert!(fix.contains("Docker Desktop"), "{fix}");

        let denied = BollardError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let (reason, fix) = unreachable_reason(&denied, DEFAULT_HOST);
        assert!(reason.contains("permission denied"), "{reason}");
        assert_eq!(fix, permission_fix(cfg!(windows)));

        let refused = BollardError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let (reason, fix) = unreachable_reason(&refused, "tcp://10.0.0.5:2375");
        assert!(
            reason.contains("DOCKER_HOST=tcp://10.0.0.5:2375") && reason.contains("unreachable"),
            "{reason}"
        );
        assert!(fix.contains("unset it"), "{fix}");
    }

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
    fn a_missing_image_at_create_on_each_engine() {
        let answer = |status_code, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        // Docker: 404 `No such image: x`; Podman 4.x: 404, older: 500, with its cause.
        assert!(is_missing_image(&answer(
            404,
            "No such image: timonel/k3s:v1"
        )));
        assert!(is_missing_image(&answer(
            404,
            "no such image: docker.io/timonel/k3s:v1: image not known"
        )));
        assert!(is_missing_image(&answer(
            500,
            "no such image: docker.io/timonel/k3s:v1: image not known"
        )));
        assert!(!is_missing_image(&answer(500, "database is locked")));
        // Podman's not-found causes are not-found at 500 too; other 500s are not.
        assert!(is_not_found(&answer(
            500,
            "no container with name or ID \"timonel-dev\" found: no such container"
        )));
        assert!(!is_not_found(&answer(500, "database is locked")));
        assert!(matches!(
            map_err(
                "removing",
                "volume `v`",
                answer(500, "no volume with name \"v\" found: no such volume")
            ),
            DriverError::NotFound { .. }
        ));
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

    #[test]
    fn the_permission_fix_names_the_platforms_group() {
        assert!(permission_fix(true).contains("docker-users"));
        assert!(!permission_fix(true).contains("sudo"));
        assert!(permission_fix(false).contains("usermod -aG docker"));
    }
}
