//! What the engine's answers mean: why it could not be reached, whether it is still starting,
//! and its error statuses and messages — Docker's and Podman's forms — as typed driver errors.

use std::error::Error as _;

use bollard::errors::Error as BollardError;

use timonel_driver::DriverError;

use crate::client::DEFAULT_HOST;

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

/// Whether creating a container failed because the name is taken: Docker's 409 `Conflict. The
/// container name "/x" is already in use…`, Podman 4.3's 500 `container create: creating
/// container storage: the container name "x" is already in use by <id>. You have to remove
/// that container to be able to reuse that name: that name is already in use`.
pub(crate) fn is_name_conflict(err: &BollardError) -> bool {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 409, ..
        } => true,
        BollardError::DockerResponseServerError {
            status_code: 500,
            message,
        } => message.ends_with("that name is already in use"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_container_name_on_each_engine() {
        let answer = |status_code, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(is_name_conflict(&answer(409, "Conflict. The container name \"/timonel-dev\" is already in use by container \"191c7a707a01\". You have to remove (or rename) that container to be able to reuse that name.")));
        assert!(is_name_conflict(&answer(500, "container create: creating container storage: the container name \"timonel-dev\" is already in use by 191c7a707a012b28fad99c677625e14ea177edcc0d188b425e253eb560c9356d. You have to remove that container to be able to reuse that name: that name is already in use")));
        assert!(!is_name_conflict(&answer(500, "database is locked")));
    }

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
    fn the_permission_fix_names_the_platforms_group() {
        assert!(permission_fix(true).contains("docker-users"));
        assert!(!permission_fix(true).contains("sudo"));
        assert!(permission_fix(false).contains("usermod -aG docker"));
    }
}
