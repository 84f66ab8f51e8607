//! A node's spec, derived only from the profile (so a resume rebuilds the same spec), and the
//! settings every node of a cluster shares.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use timonel_driver::{ClusterName, MachineSpec, NodeRole, PortMapping};

use super::error::{Error, Result};
use crate::distro::{k3s, ClusterSettings, NodeSettings};
use crate::profile::{NodeRecord, Profile};

/// The k3s settings every node of `profile` shares.
pub fn cluster_settings(profile: &Profile) -> ClusterSettings {
    let mut sans = tls_sans(profile.listen_address);
    // Existing machines: the API is reached at the address the admin gave.
    for n in &profile.nodes {
        if let (NodeRole::Server, Some(m)) = (n.role, &n.machine) {
            if !sans.contains(&m.host) {
                sans.push(m.host.clone());
            }
        }
    }
    ClusterSettings {
        token: profile.token.clone(),
        disable: profile.disable.clone(),
        tls_sans: sans,
        env: profile
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ca_certs: profile.ca_certs.clone(),
        registry_mirrors: profile.registry_mirrors.clone(),
        k3s_args: profile.k3s_args.clone(),
    }
}

/// The URL nodes use to join the server at `ip`.
pub fn join_url(ip: IpAddr) -> String {
    timonel_driver::net::https_url(ip, k3s::API_PORT)
}

/// The spec of one node, derived only from the profile (so a resume rebuilds the same spec).
/// `join` is the first server's URL for every node but the first server.
pub fn machine_spec(
    profile: &Profile,
    node: &NodeRecord,
    settings: &ClusterSettings,
    join: Option<&str>,
    airgap: Option<&Path>,
) -> Result<MachineSpec> {
    let first = profile
        .server()
        .map(|s| s.name == node.name)
        .unwrap_or(false);
    let plan = k3s::plan(
        settings,
        &NodeSettings {
            name: node.name.to_string(),
            role: node.role,
            join: join.map(str::to_string),
            cluster_init: first && profile.embedded_etcd,
        },
        airgap,
    )
    .map_err(|e| Error::internal(format!("cannot write the k3s configuration: {e}")))?;
    let mut spec = MachineSpec::new(
        node.name.clone(),
        profile.name.clone(),
        node.role,
        node.index,
    );
    spec.cpus = profile.cpus;
    spec.memory_mib = profile.memory_mib;
    remember_security(&mut spec);
    if let Some(switch) = &profile.hyperv_switch {
        spec.options.insert(
            timonel_driver_hyperv::SWITCH_OPTION.to_string(),
            switch.clone(),
        );
    }
    spec.image = profile.node_image.clone();
    spec.files = plan.files;
    spec.service = Some(plan.service);
    spec.mounts = profile.mounts.clone();
    if let (NodeRole::Server, Some(port)) = (node.role, node.api_port) {
        spec.ports.push(PortMapping {
            host_ip: profile.listen_address,
            host_port: port,
            node_port: k3s::API_PORT,
            protocol: "tcp".into(),
        });
    }
    if first {
        spec.ports.extend(profile.ports.iter().cloned());
    }
    Ok(spec)
}

/// The first server's spec as far as it is known before the artifacts are: its name, cluster,
/// owner and the options that do not depend on the profile. What
/// [`NodeImages::learn_ahead`](timonel_driver::NodeImages::learn_ahead) gets while the
/// download runs; nothing of the node is in it.
pub fn ahead_spec(cluster: &ClusterName, owner: String) -> MachineSpec {
    let mut spec = MachineSpec::new(cluster.machine(1), cluster.clone(), NodeRole::Server, 1);
    spec.owner = Some(owner);
    remember_security(&mut spec);
    spec
}

/// Where the Docker driver keeps the security verdicts it learnt (per daemon).
fn remember_security(spec: &mut MachineSpec) {
    if let Some(home) = security_cache_dir() {
        spec.options.insert(
            timonel_driver_docker::OPTION_SECURITY_CACHE.to_string(),
            home.join("cache")
                .join("docker-security.json")
                .display()
                .to_string(),
        );
    }
}

/// timonel's home, for the Docker driver's remembered security verdicts.
fn security_cache_dir() -> Option<PathBuf> {
    crate::home::Home::from_env()
        .ok()
        .map(|h| h.root().to_path_buf())
}

/// Every name and address the host may use to reach the API.
fn tls_sans(listen: IpAddr) -> Vec<String> {
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ];
    if !listen.is_loopback() && !listen.is_unspecified() {
        sans.push(listen.to_string());
    }
    sans
}

/// The host's proxy settings, for k3s in the nodes (image pulls go through them), with
/// `NO_PROXY` extended by the cluster's own addresses and names so in-cluster traffic does not.
pub fn proxy_env(cluster: &ClusterName, nodes: u32) -> Vec<String> {
    proxy_env_from(cluster, nodes, |k| std::env::var(k).ok())
}

fn proxy_env_from(
    cluster: &ClusterName,
    nodes: u32,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let pick = |upper: &str| {
        get(upper)
            .or_else(|| get(&upper.to_ascii_lowercase()))
            .filter(|v| !v.is_empty())
    };
    let http = pick("HTTP_PROXY");
    let https = pick("HTTPS_PROXY");
    if http.is_none() && https.is_none() {
        return Vec::new();
    }
    let mut env = Vec::new();
    if let Some(v) = http {
        env.push(format!("HTTP_PROXY={v}"));
    }
    if let Some(v) = https {
        env.push(format!("HTTPS_PROXY={v}"));
    }
    let mut no_proxy: Vec<String> = pick("NO_PROXY")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut add = |s: String| {
        if !no_proxy.contains(&s) {
            no_proxy.push(s);
        }
    };
    for s in [
        "localhost",
        "127.0.0.1",
        "::1",
        "10.42.0.0/16",
        "10.43.0.0/16",
        ".svc",
        ".cluster.local",
    ] {
        add(s.to_string());
    }
    for i in 1..=nodes.max(1) {
        add(cluster.machine(i).to_string());
    }
    env.push(format!("NO_PROXY={}", no_proxy.join(",")));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_reach_the_nodes_with_the_cluster_excluded() {
        let name: ClusterName = "dev".parse().unwrap();
        let env = proxy_env_from(&name, 2, |k| match k {
            "https_proxy" => Some("http://proxy.corp:3128".into()),
            "NO_PROXY" => Some("corp.example, 10.0.0.0/8".into()),
            _ => None,
        });
        assert_eq!(env[0], "HTTPS_PROXY=http://proxy.corp:3128");
        let no = env[1].strip_prefix("NO_PROXY=").unwrap();
        for want in [
            "corp.example",
            "10.0.0.0/8",
            "10.42.0.0/16",
            "10.43.0.0/16",
            ".svc",
            ".cluster.local",
            "dev",
            "dev-m02",
            "localhost",
        ] {
            assert!(no.split(',').any(|x| x == want), "{want} missing from {no}");
        }
        assert!(proxy_env_from(&name, 1, |_| None).is_empty());
    }
}
