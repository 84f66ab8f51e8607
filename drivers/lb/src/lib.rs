//! timonel-lb: the TCP load balancer timonel runs in front of the API servers of a cluster with
//! several servers — in a container on Docker, as a host process for VM and ssh clusters
//! (docs/architecture.md, "The API load balancer"). Standard library only, so it builds for
//! every host timonel does (Linux, macOS, Windows).
//!
//! It listens on one address and passes each connection, bytes untouched (TLS ends at the API
//! servers), to a healthy backend, taking them in turn. Backends come from a file, one
//! `IP:PORT` a line, read again whenever it changes, so timonel updates them by copying a new
//! file into the container without restarting it. A backend is healthy while a TCP connect to it
//! succeeds within [`CONNECT_TIMEOUT`]; every backend is checked each [`CHECK_EVERY`], and one
//! that fails a connection is marked down at once. When one goes down, or leaves the file, the
//! connections it carries are closed, so clients reconnect to a live one instead of hanging.
//!
//! It uses only the standard library: it is built as a static binary and runs alone in a
//! scratch image (no shell, no libc on disk). Every change is one line on stderr (the
//! container's log).

mod backends;
mod pool;
mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use backends::{parse as parse_backends, Watched};
pub use pool::Pool;
pub use proxy::serve;

/// How long a connect to a backend may take, for a health check or a client's connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often every backend's health is checked, and the backends file looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What the program was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub listen: SocketAddr,
    pub backends: PathBuf,
}

const USAGE: &str = "usage: timonel-lb --listen IP:PORT --backends FILE";

/// Parses `--listen IP:PORT --backends FILE`.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut listen = None;
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen `{v}`: {e}"))?,
                );
            }
            "--backends" => file = Some(PathBuf::from(value("--backends")?)),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    match (listen, file) {
        (Some(listen), Some(backends)) => Ok(Args { listen, backends }),
        _ => Err(USAGE.to_string()),
    }
}

/// The program: exits non-zero only when it cannot start.
pub fn main_with(args: Vec<String>) -> ExitCode {
    if args.iter().any(|a| a == "--version") {
        println!("timonel-lb {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("timonel-lb: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("timonel-lb: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let pool = Pool::new();
    pool.watch(Watched::new(args.backends));
    eprintln!("timonel-lb: listening on {}", args.listen);
    serve(listener, pool);
    ExitCode::SUCCESS
}

/// One line on stderr: the container's log, or the host process's `lb.log`.
pub(crate) fn log(line: &str) {
    eprintln!("timonel-lb: {line}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args(&strings(&["--listen", "0.0.0.0:6443", "--backends", "/b"])).unwrap();
        assert_eq!(a.listen, "0.0.0.0:6443".parse().unwrap());
        assert_eq!(a.backends, PathBuf::from("/b"));
        assert!(parse_args(&strings(&["--listen", "nope", "--backends", "/b"])).is_err());
        assert!(parse_args(&strings(&["--listen"])).is_err());
        assert!(parse_args(&strings(&["--backends", "/b"])).is_err());
        assert!(parse_args(&strings(&["--what"])).is_err());
    }
}
