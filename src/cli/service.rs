//! `timonel service NAME [-n NAMESPACE] [--url]`: how to reach a NodePort or LoadBalancer
//! Service from the host. Container nodes are reachable on the host only through the ports
//! published when the profile was created (`start --ports HOST:NODE`), so a service port is
//! reachable when its node port (or, for LoadBalancer services with servicelb, its port on the
//! node) is among them.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use timonel_driver::PortMapping;

use super::{Ctx, OutputFormat};
use crate::cluster;
use crate::error::UserError;

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The Service's name.
    pub name: String,
    /// Its namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Print only the URLs, one a line (nothing else on stdout).
    #[arg(long)]
    pub url: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// One port of the Service and where the host reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortReach {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// `http://127.0.0.1:8080` (TCP) or `127.0.0.1:5353` (UDP) when published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What `service` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReach {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ports: Vec<PortReach>,
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v6) if v6.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn url_for(p: &PortMapping, port: u16, name: Option<&str>) -> String {
    let host = host_of(p.host_ip);
    if p.protocol.eq_ignore_ascii_case("udp") {
        return format!("{host}:{}", p.host_port);
    }
    let tls = port == 443 || name.is_some_and(|n| n.contains("https") || n == "websecure");
    format!(
        "{}://{host}:{}",
        if tls { "https" } else { "http" },
        p.host_port
    )
}

/// Where each port of the Service `svc` (API JSON) is reachable through `published`.
/// `servicelb`: LoadBalancer ports are also served on the nodes' own port numbers.
pub fn reach(svc: &Value, published: &[PortMapping], servicelb: bool) -> ServiceReach {
    let kind = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let exposed = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    let ports = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p["port"]
                .as_u64()
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0);
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
            let node_port = p["nodePort"].as_u64().and_then(|v| u16::try_from(v).ok());
            let name = p["name"].as_str().map(str::to_string);
            let on_node: Vec<u16> = if !exposed {
                Vec::new()
            } else if kind == "LoadBalancer" && servicelb {
                node_port.into_iter().chain([port]).collect()
            } else {
                node_port.into_iter().collect()
            };
            let url = published
                .iter()
                .find(|m| {
                    on_node.contains(&m.node_port) && m.protocol.eq_ignore_ascii_case(&protocol)
                })
                .map(|m| url_for(m, port, name.as_deref()));
            PortReach {
                name,
                port,
                protocol,
                node_port,
                url,
            }
        })
        .collect();
    ServiceReach {
        namespace: svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        name: svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        kind,
        ports,
    }
}

/// Why a port is not reachable, and what to do.
fn explain(ctx: &Ctx, r: &ServiceReach, p: &PortReach) {
    let what = format!(
        "port {}/{} of service {}/{}",
        p.port, p.protocol, r.namespace, r.name
    );
    let forward = format!(
        "`kubectl port-forward -n {} svc/{} 8080:{}`",
        r.namespace, r.name, p.port
    );
    let message = match (r.kind.as_str(), p.node_port) {
        ("NodePort" | "LoadBalancer", Some(np)) => format!(
            "{what} (node port {np}) is not published on the host: a profile's ports are fixed when it is created. Reach it with {forward}, or create a profile that publishes it: `timonel start -p <new-profile> --ports 8080:{np}`"
        ),
        ("LoadBalancer", None) => format!(
            "{what} is not published on the host. Reach it with {forward}, or create a profile that publishes it: `timonel start -p <new-profile> --ports 8080:{}`",
            p.port
        ),
        _ => format!(
            "{what} is a {} service, only reachable inside the cluster. Reach it with {forward}, or make it a NodePort service and publish its node port on a new profile (`timonel start -p <new-profile> --ports 8080:<node port>`)",
            r.kind
        ),
    };
    ctx.printer.warn(&message);
}

pub async fn run(ctx: &Ctx, args: ServiceArgs) -> anyhow::Result<ExitCode> {
    let profile = ctx.store.load(&ctx.profile)?;
    let name = profile.name.clone();
    let creds = cluster::saved_credentials(&ctx.store, &name)?;
    let (api, _) = cluster::live_api(&profile, &creds).await.ok_or_else(|| {
        UserError::new(
            format!("the API server of profile `{name}` does not answer"),
            format!("`timonel status -p {name}` shows why; `timonel start -p {name}` starts it"),
        )
    })?;
    let path = format!(
        "/api/v1/namespaces/{}/services/{}",
        args.namespace, args.name
    );
    let svc = api
        .get_object(&path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read service {}/{}: {e}", args.namespace, args.name))?
        .ok_or_else(|| {
            UserError::new(
                format!(
                    "there is no service `{}` in namespace `{}`",
                    args.name, args.namespace
                ),
                format!(
                    "`kubectl --context {name} get services -A` lists the services; give the namespace with `-n`"
                ),
            )
        })?;
    let servicelb = !profile.disable.iter().any(|d| d == "servicelb");
    let r = reach(&svc, &profile.ports, servicelb);
    if args.url {
        let urls: Vec<&str> = r.ports.iter().filter_map(|p| p.url.as_deref()).collect();
        if urls.is_empty() {
            for p in &r.ports {
                explain(ctx, &r, p);
            }
            return Err(UserError::new(
                format!(
                    "service {}/{} is not reachable from the host",
                    r.namespace, r.name
                ),
                "see the warnings above",
            )
            .into());
        }
        for u in urls {
            crate::outln!("{u}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&r)?)?,
        OutputFormat::Text => {
            crate::outln!(
                "{:<16} {:<24} {:<13} {:<12} {:<9} URL",
                "NAMESPACE",
                "NAME",
                "TYPE",
                "PORT",
                "NODEPORT"
            )?;
            for p in &r.ports {
                crate::outln!(
                    "{:<16} {:<24} {:<13} {:<12} {:<9} {}",
                    r.namespace,
                    r.name,
                    r.kind,
                    format!("{}/{}", p.port, p.protocol),
                    p.node_port
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    p.url.as_deref().unwrap_or("-")
                )?;
            }
            for p in r.ports.iter().filter(|p| p.url.is_none()) {
                explain(ctx, &r, p);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(host: u16, node: u16) -> PortMapping {
        PortMapping {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: host,
            node_port: node,
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn node_ports_and_load_balancers_map_to_published_ports() {
        let svc = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                {"name": "https", "port": 443, "protocol": "TCP", "nodePort": 30443}]}});
        let r = reach(&svc, &[mapping(8080, 30080)], true);
        assert_eq!(r.ports[0].url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(r.ports[1].url, None);

        let lb = json!({
            "metadata": {"name": "traefik", "namespace": "kube-system"},
            "spec": {"type": "LoadBalancer", "ports": [
                {"name": "web", "port": 80, "protocol": "TCP"},
                {"name": "websecure", "port": 443, "protocol": "TCP"}]}});
        let r = reach(&lb, &[mapping(9443, 443)], true);
        assert_eq!(r.ports[1].url.as_deref(), Some("https://127.0.0.1:9443"));
        // Without servicelb nothing listens on the service port in the node.
        assert_eq!(reach(&lb, &[mapping(9443, 443)], false).ports[1].url, None);

        let cluster_ip = json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}});
        assert_eq!(
            reach(&cluster_ip, &[mapping(9443, 443)], true).ports[0].url,
            None
        );
    }
}
