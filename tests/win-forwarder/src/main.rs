//! A Windows program that stands in for `powershell.exe` or `VBoxManage.exe` when timonel.exe
//! runs under Wine: Wine cannot start the Linux simulators (`tests/simulators`) itself, so this
//! program relays its whole run to `tests/windows/relay.py` on the Linux side, over loopback.
//!
//! It reads `<its own path without .exe>.relay` (e.g. `powershell.relay` beside
//! `powershell.exe`): `port=`, `secret=`, `target=` (which simulator the relay runs) and any
//! `env.NAME=value` lines (variables added to the relayed environment). It sends its argument
//! list as Windows parsed it from the command line, its environment, its working folder and its
//! stdin; it writes the simulator's stdout and stderr byte for byte and exits with its code.
//! The protocol is in `protocol.rs`.

mod protocol;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use protocol::{Frame, Request};

/// Exit code for the forwarder's own failures (no config, no relay): distinct from the tools'.
const OWN_FAILURE: u8 = 125;

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("win-forwarder: {message}");
            ExitCode::from(OWN_FAILURE)
        }
    }
}

struct Config {
    port: u16,
    secret: String,
    target: String,
    env: Vec<(String, String)>,
}

fn config_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own path: {e}"))?;
    Ok(exe.with_extension("relay"))
}

fn read_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {} ({e}); the test lane writes it beside the forwarder",
            path.display()
        )
    })?;
    let (mut port, mut secret, mut target, mut env) = (None, None, None, Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{}: `{line}` is not KEY=value", path.display()));
        };
        match key {
            "port" => port = value.parse::<u16>().ok(),
            "secret" => secret = Some(value.to_string()),
            "target" => target = Some(value.to_string()),
            _ => match key.strip_prefix("env.") {
                Some(name) if !name.is_empty() => env.push((name.to_string(), value.to_string())),
                _ => return Err(format!("{}: unknown key `{key}`", path.display())),
            },
        }
    }
    match (port, secret, target) {
        (Some(port), Some(secret), Some(target)) => Ok(Config {
            port,
            secret,
            target,
            env,
        }),
        _ => Err(format!(
            "{} needs port=, secret= and target= lines",
            path.display()
        )),
    }
}

/// Text of the OS string, or an error naming it: the relay speaks UTF-8 (Windows strings that
/// are not valid UTF-16 cannot be relayed, and are refused rather than altered).
fn utf8(what: &str, s: std::ffi::OsString) -> Result<String, String> {
    s.into_string()
        .map_err(|s| format!("{what} {s:?} is not valid Unicode; cannot relay it unchanged"))
}

fn request(config: &Config) -> Result<Request, String> {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| utf8("argument", a))
        .collect::<Result<Vec<_>, _>>()?;
    // Case-insensitive names, as on Windows; the config's variables win.
    let mut env = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let name = utf8("environment variable name", name)?;
        let value = utf8("environment variable value", value)?;
        env.insert(name.to_uppercase(), (name, value));
    }
    for (name, value) in &config.env {
        env.insert(name.to_uppercase(), (name.clone(), value.clone()));
    }
    let cwd = std::env::current_dir().map_err(|e| format!("no working folder: {e}"))?;
    Ok(Request {
        secret: config.secret.clone(),
        target: config.target.clone(),
        args,
        env: env.into_values().collect(),
        cwd: utf8("working folder", cwd.into_os_string())?,
    })
}

fn run() -> Result<u8, String> {
    let config = read_config(&config_path()?)?;
    let request = request(&config)?;
    let mut stream = TcpStream::connect(("127.0.0.1", config.port))
        .map_err(|e| format!("cannot reach the relay on 127.0.0.1:{}: {e}", config.port))?;
    stream
        .write_all(&request.encode())
        .map_err(|e| format!("relay: {e}"))?;

    // stdin goes to the relay as it comes; a reader that never ends (a console) only keeps this
    // thread, which the exit below ends.
    let mut upstream = stream.try_clone().map_err(|e| format!("relay: {e}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let n = stdin.read(&mut buf).unwrap_or(0);
            let frame = Frame::Stdin(buf[..n].to_vec()).encode();
            if upstream.write_all(&frame).is_err() || n == 0 {
                break;
            }
        }
    });

    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    loop {
        match Frame::read(&mut stream).map_err(|e| format!("relay: {e}"))? {
            Frame::Stdout(data) => {
                // A reader that left early: keep draining so the simulator finishes.
                let _ = stdout.write_all(&data).and_then(|()| stdout.flush());
            }
            Frame::Stderr(data) => {
                let _ = stderr.write_all(&data);
            }
            Frame::Exit(code) => return Ok(code),
            Frame::Refused(why) => return Err(format!("the relay refused: {why}")),
            Frame::Stdin(_) => return Err("relay: unexpected stdin frame".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_keys_and_env_lines() {
        let dir = std::env::temp_dir().join(format!("win-forwarder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("powershell.relay");
        std::fs::write(
            &path,
            "port=4242\nsecret=s3\ntarget=powershell\nenv.A_B=x=y\n",
        )
        .unwrap_or_default();
        let config = read_config(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let config = config.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.port, 4242);
        assert_eq!(config.target, "powershell");
        assert_eq!(config.env, vec![("A_B".to_string(), "x=y".to_string())]);
    }

    #[test]
    fn config_without_a_port_is_refused() {
        let dir = std::env::temp_dir().join(format!("win-forwarder-np-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("x.relay");
        std::fs::write(&path, "secret=s\ntarget=t\n").unwrap_or_default();
        let result = read_config(&path);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(result.is_err_and(|e| e.contains("port=")));
    }
}
