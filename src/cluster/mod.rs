//! Orchestration: `start` as a list of steps (see [`start`]), and stop, delete, status, ip,
//! kubeconfig, node add/delete, addons, image load, all through the same layers. How a node of
//! each kind (container, VM, machine) is prepared and reached is in [`node`], once.

mod addons;
mod cancel;
mod ctx;
mod error;
pub(crate) mod host_lb;
mod images;
mod manage;
pub mod node;
mod nodes;
pub(crate) mod pause;
mod resources;
pub(crate) mod spec;
mod start;

pub use addons::{addon_rows, set_addon, AddonRow, ADDONS};
pub use cancel::{first_signal, listen as listen_for_interrupts, Cancel, Interrupted};
pub use ctx::Ctx;
pub use error::{Error, Result};
pub use images::{load as load_images, short as images_short, ImageSource, LoadRow};
pub use manage::{
    delete, delete_all, delete_standalone, ip, kubeconfig_cmd, status, stop, StatusReport,
};
pub use nodes::{node_add, node_delete, node_list, NodeAdd, NodeRow};
pub use pause::{pause, unpause, PauseOutcome};
pub use start::{conflicts as start_conflicts, start, SshStart, StartOptions};

use std::net::IpAddr;
use std::path::PathBuf;

use timonel_driver::{ClusterName, PortMapping};

use crate::kubeconfig::ClusterCredentials;
use crate::profile::{Profile, Store};

/// The file in a profile's folder holding its standalone kubeconfig (0600).
pub const KUBECONFIG_FILE: &str = "kubeconfig.yaml";

pub use crate::profile::server_url;

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

/// The API that answers, as (client, host-reachable URL): the load balancer's when the cluster
/// has one and it answers, else the first server whose API does. Without a balancer (VMs,
/// machines) this is how the kubeconfig fails over: each server's API port is reachable from
/// the host, and `kubeconfig --merge` points the context at one that answers.
pub async fn live_api(
    profile: &Profile,
    creds: &ClusterCredentials,
) -> Option<(crate::distro::ready::ApiClient, String)> {
    if let Some(url) = profile.balancer_url() {
        if let Some(found) = first_ready(creds, vec![url]).await {
            return Some(found);
        }
    }
    live_server(profile, creds).await
}

/// The first server whose own API answers (not through the balancer), as (client, URL).
pub async fn live_server(
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
    first_ready(creds, servers).await
}

async fn first_ready(
    creds: &ClusterCredentials,
    urls: Vec<String>,
) -> Option<(crate::distro::ready::ApiClient, String)> {
    for url in urls {
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
) -> std::result::Result<PathBuf, crate::kubeconfig::KubeconfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = profile.and_then(|p| p.kubeconfig.clone()) {
        return Ok(p);
    }
    crate::kubeconfig::resolve_target(None)
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

pub use crate::units::parse_memory;

#[cfg(test)]
mod tests {
    use super::*;

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
}
