//! `agent`: join with the token, keep a node password, register and heartbeat.

use std::time::{Duration, Instant};

use crate::cli::{self, Role, Settings};
use crate::join;
use crate::logfmt;
use crate::net;
use crate::nodes::{self, NodeError, RegisterRequest, UpstreamClient};
use crate::runtime;
use crate::server::{kernel_version, parse_labels};
use crate::token;

/// How long k3s's agent waits before it tries to join again.
const JOIN_RETRY: Duration = Duration::from_secs(2);

pub fn run(args: &[String]) -> i32 {
    let specs = cli::specs(Role::Agent);
    let parsed = match cli::parse(&specs, args) {
        Ok(p) => p,
        Err(e) => return crate::usage_error(&e, "agent"),
    };
    let settings = match crate::config::resolve(&specs, &parsed, &|k| runtime::env(k)) {
        Ok(s) => s,
        Err(crate::config::ConfigError::Usage(e)) => return crate::usage_error(&e, "agent"),
        Err(e) => {
            logfmt::fatal(&e.to_string());
            return 1;
        }
    };
    if let Err(e) = runtime::exit_on_signals("k3s agent") {
        logfmt::fatal(&e);
        return 1;
    }
    match start(&settings) {
        Ok(never) => match never {},
        Err(e) => {
            logfmt::fatal(&e);
            1
        }
    }
}

fn start(settings: &Settings) -> Result<std::convert::Infallible, String> {
    let started = Instant::now();
    let version = runtime::version();
    let ready_delay = runtime::ready_delay()?;
    logfmt::info(&format!(
        "Starting k3s agent {version} ({})",
        runtime::commit()
    ));
    let server = settings.str("server").ok_or("--server is required")?;
    let token_text = match (settings.str("token"), settings.str("token-file")) {
        (Some(t), _) => t.to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read token file `{path}`: {e}"))?,
        (None, None) => return Err("--token is required".into()),
    };
    let tok = token::parse(&token_text, "node").map_err(|e| e.to_string())?;
    // k3s retries the join every 2 s, whatever failed (no server yet, a wrong CA hash), and
    // never gives up on its own.
    let joined = loop {
        match join::join(server, &tok) {
            Ok(joined) => break joined,
            Err(e) => {
                logfmt::error(&format!(
                    "Failed to validate connection to cluster at {server}: {e}"
                ));
                std::thread::sleep(JOIN_RETRY);
            }
        }
    };
    let data_dir = runtime::data_dir(settings.str("data-dir"));
    crate::images::preload(&data_dir);
    std::fs::create_dir_all(data_dir.join("agent"))
        .map_err(|e| format!("cannot create `{}`: {e}", data_dir.join("agent").display()))?;
    let node_password = runtime::ensure_node_password(&runtime::node_dir())?;
    let name = runtime::node_name(
        settings.str("node-name"),
        settings.bool("with-node-id"),
        &data_dir,
    )?;
    let node_ip = match settings.list("node-ip").first() {
        Some(ip) => ip.clone(),
        None => net::detect_addresses().0.to_string(),
    };
    let client = UpstreamClient {
        url: joined.url.clone(),
        config: joined.config,
        user: "node".into(),
        password: tok.password,
    };
    let mut request = RegisterRequest {
        name: name.clone(),
        node_password,
        roles: Vec::new(),
        internal_ip: node_ip,
        labels: parse_labels(&settings.list("node-label")),
        taints: settings.list("node-taint"),
        ready: false,
        kubelet_version: version,
        kernel_version: kernel_version(),
    };
    let mut registered = false;
    loop {
        request.ready = started.elapsed() >= ready_delay;
        match client.register(&request) {
            Ok(_) => {
                if !registered {
                    registered = true;
                    logfmt::info(&format!("Successfully registered node {name}"));
                    runtime::notify_ready();
                }
            }
            Err(NodeError::Rejected(msg)) => return Err(msg),
            Err(NodeError::Unavailable(msg)) => {
                logfmt::error(&format!("Failed to register node {name}: {msg}"));
            }
        }
        let pause = if registered && request.ready {
            Duration::from_secs(nodes::HEARTBEAT_SECS)
        } else {
            Duration::from_millis(500)
        };
        std::thread::sleep(pause);
    }
}
