//! Process plumbing shared by `server` and `agent`: signals (also as PID 1),
//! systemd notification, the stand-in's env overrides, and the node password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil;
use crate::logfmt;

/// Version reported by `--version`, `/version` and the nodes.
pub const ENV_VERSION: &str = "K3S_STANDIN_VERSION";
/// Commit reported by `--version`.
pub const ENV_COMMIT: &str = "K3S_STANDIN_COMMIT";
/// How long the API answers 503 and the node stays NotReady (`3s`, `500ms`, `1m`).
pub const ENV_READY_DELAY: &str = "K3S_STANDIN_READY_DELAY";
/// Where the node password lives (default `/etc/rancher/node`).
pub const ENV_NODE_DIR: &str = "K3S_STANDIN_NODE_DIR";
/// The default kubeconfig path (default `/etc/rancher/k3s/k3s.yaml` as root).
pub const ENV_KUBECONFIG_DEFAULT: &str = "K3S_STANDIN_KUBECONFIG_DEFAULT_PATH";

pub const DEFAULT_VERSION: &str = "v1.31.2+k3s1";
pub const DEFAULT_COMMIT: &str = "0123abcd";

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn version() -> String {
    env(ENV_VERSION).unwrap_or_else(|| DEFAULT_VERSION.to_string())
}

pub fn commit() -> String {
    env(ENV_COMMIT).unwrap_or_else(|| DEFAULT_COMMIT.to_string())
}

/// The Kubernetes minor version of a k3s version string (`v1.31.2+k3s1` → 31).
pub fn minor_version(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// Parses Go-like durations: `3s`, `1.5s`, `500ms`, `2m`, `1m30s`, or bare seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

pub fn ready_delay() -> Result<Duration, String> {
    match env(ENV_READY_DELAY) {
        None => Ok(Duration::ZERO),
        Some(v) => parse_duration(&v).ok_or_else(|| format!("invalid {ENV_READY_DELAY} `{v}`")),
    }
}

fn home() -> PathBuf {
    PathBuf::from(env("HOME").unwrap_or_else(|| "/root".into()))
}

/// `--data-dir`, or k3s's default for root / non-root.
pub fn data_dir(flag: Option<&str>) -> PathBuf {
    match flag {
        Some(d) => PathBuf::from(d),
        None if fsutil::is_root() => PathBuf::from("/var/lib/rancher/k3s"),
        None => home().join(".rancher/k3s"),
    }
}

/// The default kubeconfig path for root / non-root, or the override.
pub fn default_kubeconfig_path() -> PathBuf {
    match env(ENV_KUBECONFIG_DEFAULT) {
        Some(p) => PathBuf::from(p),
        None if fsutil::is_root() => PathBuf::from("/etc/rancher/k3s/k3s.yaml"),
        None => home().join(".kube/k3s.yaml"),
    }
}

pub fn node_dir() -> PathBuf {
    PathBuf::from(env(ENV_NODE_DIR).unwrap_or_else(|| "/etc/rancher/node".into()))
}

/// Reads `<node-dir>/password`, creating it (0600) if missing.
pub fn ensure_node_password(dir: &Path) -> Result<String, String> {
    let path = dir.join("password");
    match std::fs::read_to_string(&path) {
        Ok(pw) if !pw.trim().is_empty() => return Ok(pw.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot read node password `{}`: {e}",
                path.display()
            ))
        }
    }
    let pw = fsutil::random_hex(16).map_err(|e| e.to_string())?;
    fsutil::write_atomic(&path, format!("{pw}\n").as_bytes(), 0o600)
        .map_err(|e| format!("cannot write node password `{}`: {e}", path.display()))?;
    Ok(pw)
}

/// The node name: flag/env, else the lower-cased hostname; `--with-node-id` appends an id
/// kept in `<data-dir>/agent/standin-node-id`.
pub fn node_name(
    flag: Option<&str>,
    with_node_id: bool,
    data_dir: &Path,
) -> Result<String, String> {
    let base = flag
        .map(str::to_string)
        .unwrap_or_else(|| crate::net::hostname().to_lowercase());
    if !with_node_id {
        return Ok(base);
    }
    let id_path = data_dir.join("agent/standin-node-id");
    let id = match std::fs::read_to_string(&id_path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = fsutil::random_hex(4).map_err(|e| e.to_string())?;
            fsutil::write_atomic(&id_path, id.as_bytes(), 0o600).map_err(|e| e.to_string())?;
            id
        }
    };
    Ok(format!("{base}-{id}"))
}

/// Exits 0 on SIGTERM or SIGINT. Handlers are installed explicitly, which matters
/// when the stand-in is PID 1 in a container (PID 1 has no default handlers).
pub fn exit_on_signals(what: &'static str) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGINT {
                    "interrupt"
                } else {
                    "terminated"
                };
                logfmt::info(&format!("Received signal ({name}), shutting down {what}"));
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;
    Ok(())
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` when set (systemd `Type=notify`).
pub fn notify_ready() {
    let Some(path) = env("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        if let Some(abstract_name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
            sock.send_to_addr(b"READY=1", &addr)?;
        } else {
            sock.send_to(b"READY=1", &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        logfmt::warn(&format!("failed to notify systemd at {path}: {e}"));
    }
}

/// Blocks forever (signals end the process).
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3x"), None);
    }

    #[test]
    fn minor_versions() {
        assert_eq!(minor_version("v1.31.2+k3s1"), Some(31));
        assert_eq!(minor_version("v1.35.4+k3s1"), Some(35));
    }

    #[test]
    fn node_password_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_node_password(dir.path()).unwrap();
        let b = ensure_node_password(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }
}
