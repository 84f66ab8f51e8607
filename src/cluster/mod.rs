//! Orchestration: start = pick driver → artifacts → node image → nodes → k3s → wait →
//! kubeconfig; and stop, delete, status, ip, kubeconfig, all through the same layers.

mod addons;
mod cancel;
mod images;
mod manage;
mod nodes;
mod start;
mod vm;

pub use addons::{addon_rows, set_addon, AddonRow, ADDONS};
pub use cancel::Cancel;
pub use images::{load as load_images, short as images_short, ImageSource, LoadRow};
pub use manage::{delete, delete_all, ip, kubeconfig_cmd, status, stop, StatusReport};
pub use nodes::{node_add, node_delete, node_list, NodeAdd, NodeRow};
pub(crate) use start::node_access;
pub use start::{start, SshStart, StartOptions};
pub(crate) use vm::journal;

use std::net::IpAddr;
use std::path::PathBuf;

use timonel_driver::{ClusterName, PortMapping};

use crate::kubeconfig::ClusterCredentials;
use crate::profile::{Profile, Store};

/// The file in a profile's folder holding its standalone kubeconfig (0600).
pub const KUBECONFIG_FILE: &str = "kubeconfig.yaml";

/// The host-reachable API URL of a profile.
pub fn server_url(listen: IpAddr, port: u16) -> String {
    match listen {
        IpAddr::V6(v6) if !v6.is_unspecified() => format!("https://[{v6}]:{port}"),
        // 0.0.0.0 is not a destination (and not reachable on Windows): talk to loopback.
        IpAddr::V4(v4) if v4.is_unspecified() => format!("https://127.0.0.1:{port}"),
        IpAddr::V6(_) => format!("https://127.0.0.1:{port}"),
        other => format!("https://{other}:{port}"),
    }
}

/// The credentials kept in the profile folder, with the server the host uses.
pub fn saved_credentials(store: &Store, name: &ClusterName) -> anyhow::Result<ClusterCredentials> {
    let path = store.dir(name).join(KUBECONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the kubeconfig of profile `{name}` (`{}`): {e}",
            path.display()
        )
    })?;
    Ok(crate::kubeconfig::parse_k3s_yaml(&text)?)
}

/// The first server whose API answers, as (client, host-reachable URL). With several servers
/// this is how the kubeconfig fails over: each server's API port is published on the host, and
/// `start` / `kubeconfig --merge` point the context at one that answers.
pub async fn live_api(
    profile: &Profile,
    creds: &ClusterCredentials,
) -> Option<(crate::distro::ready::ApiClient, String)> {
    let mut servers: Vec<String> = profile
        .nodes
        .iter()
        .filter(|n| n.role == timonel_driver::NodeRole::Server)
        .filter_map(|n| profile.api_url(n))
        .collect();
    // The recorded server first, then the others in node order.
    if let Some(pos) = servers.iter().position(|u| *u == creds.server) {
        let u = servers.remove(pos);
        servers.insert(0, u);
    }
    for url in servers {
        if let Ok(api) = crate::distro::ready::ApiClient::new(creds, &url) {
            if matches!(api.api_ready().await, Ok(true)) {
                return Some((api, url));
            }
        }
    }
    None
}

/// The node `--node` names (with the list of nodes when there is none such), else the first
/// server.
pub fn pick_node<'a>(
    profile: &'a Profile,
    node: Option<&str>,
) -> anyhow::Result<&'a crate::profile::NodeRecord> {
    match node {
        Some(n) => profile.node(n).ok_or_else(|| {
            let names: Vec<&str> = profile.nodes.iter().map(|n| n.name.as_str()).collect();
            crate::error::UserError::new(
                format!("profile `{}` has no node `{n}`", profile.name),
                format!("its nodes are: {}", names.join(", ")),
            )
            .into()
        }),
        None => profile
            .server()
            .ok_or_else(|| anyhow::anyhow!("profile `{}` has no server node", profile.name)),
    }
}

/// Where the kubeconfig of `profile` was merged (or would be).
pub fn kubeconfig_target(
    profile: Option<&Profile>,
    explicit: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = profile.and_then(|p| p.kubeconfig.clone()) {
        return Ok(p);
    }
    Ok(crate::kubeconfig::resolve_target(None)?)
}

/// Parses `--ports HOST:NODE[/tcp|udp]`.
pub fn parse_port(s: &str, listen: IpAddr) -> Result<PortMapping, String> {
    let (ports, protocol) = match s.split_once('/') {
        Some((p, proto)) if proto == "tcp" || proto == "udp" => (p, proto),
        Some((_, proto)) => return Err(format!("`{proto}` is not tcp or udp")),
        None => (s, "tcp"),
    };
    let (host, node) = ports
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST_PORT:NODE_PORT (e.g. 8080:80)"))?;
    let parse = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))
    };
    Ok(PortMapping {
        host_ip: listen,
        host_port: parse(host)?,
        node_port: parse(node)?,
        protocol: protocol.to_string(),
    })
}

/// Parses a memory size: `2048`, `2048m`, `2g`, `2GiB`, `512MB` → MiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 2g, 2048m)"))?;
    let mib = match unit.trim() {
        "" | "m" | "mb" | "mib" => n,
        "g" | "gb" | "gib" => n.saturating_mul(1024),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use m or g)")),
    };
    if mib < 256 {
        return Err(format!(
            "`{s}` is too little memory for a Kubernetes node (at least 256m; k3s wants 512m or more)"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_memory("2g").unwrap(), 2048);
        assert_eq!(parse_memory("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory("1536m").unwrap(), 1536);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("lots").unwrap_err().contains("not a size"));
        assert!(parse_memory("100m").unwrap_err().contains("too little"));
    }

    #[test]
    fn parses_ports() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let p = parse_port("8080:80", lo).unwrap();
        assert_eq!(
            (p.host_port, p.node_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(parse_port("53:53/udp", lo).unwrap().protocol, "udp");
        assert!(parse_port("80", lo).is_err());
        assert!(parse_port("0:80", lo).is_err());
        assert!(parse_port("1:2/sctp", lo).is_err());
    }

    #[test]
    fn server_urls_are_host_reachable() {
        assert_eq!(
            server_url("127.0.0.1".parse().unwrap(), 1),
            "https://127.0.0.1:1"
        );
        assert_eq!(
            server_url("0.0.0.0".parse().unwrap(), 1),
            "https://127.0.0.1:1"
        );
        assert_eq!(server_url("::1".parse().unwrap(), 1), "https://[::1]:1");
    }
}
