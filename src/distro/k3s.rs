//! k3s: the install plan (config.yaml + `k3s server|agent`), where it writes its kubeconfig,
//! and the ports it serves. Facts from docs/k3s-contract.md §3–§5 and §7.3.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use timonel_driver::{Cmd, FilePlacement, NodeKind, NodeRole, ServiceSpec};

use super::{ClusterSettings, InstallPlan, NodeSettings};

/// Supervisor and API port.
pub const API_PORT: u16 = 6443;
/// Where k3s writes the admin kubeconfig (as root).
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// k3s's registry configuration (mirrors, auth).
pub const REGISTRIES_PATH: &str = "/etc/rancher/k3s/registries.yaml";
/// Extra CA certificates go here: Go programs (containerd's image pulls, k3s) load every PEM in
/// /etc/ssl/certs besides the bundle, and Debian-like VMs pick it up with update-ca-certificates.
pub const EXTRA_CA_DIR: &str = "/etc/ssl/certs";
/// k3s imports tarballs found here into containerd when it starts.
pub const AIRGAP_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// The binary, as the rancher/k3s image lays it out.
pub const BINARY_PATH: &str = "/bin/k3s";

/// Components `--disable` accepts (docs/k3s-contract.md §3.7).
pub const DISABLEABLE: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

/// `/etc/rancher/k3s/config.yaml`: keys are the long flag names.
#[derive(Debug, Serialize)]
struct ConfigFile<'a> {
    token: &'a str,
    #[serde(rename = "node-name")]
    node_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    #[serde(
        rename = "write-kubeconfig-mode",
        skip_serializing_if = "Option::is_none"
    )]
    write_kubeconfig_mode: Option<&'a str>,
    #[serde(rename = "tls-san", skip_serializing_if = "<[_]>::is_empty")]
    tls_san: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    disable: &'a [String],
    #[serde(rename = "cluster-init", skip_serializing_if = "std::ops::Not::not")]
    cluster_init: bool,
}

/// The config.yaml of one node.
pub fn config_yaml(cluster: &ClusterSettings, node: &NodeSettings) -> Result<String, String> {
    let server = node.role == NodeRole::Server;
    let empty: [String; 0] = [];
    let file = ConfigFile {
        token: &cluster.token,
        node_name: &node.name,
        server: node.join.as_deref(),
        write_kubeconfig_mode: server.then_some("0600"),
        tls_san: if server { &cluster.tls_sans } else { &empty },
        disable: if server { &cluster.disable } else { &empty },
        cluster_init: server && node.cluster_init,
    };
    serde_saphyr::to_string(&file).map_err(|e| e.to_string())
}

/// The install plan of a node: config.yaml (0600: it holds the token), the airgap images when
/// preloading, and `k3s server` or `k3s agent` as the service.
pub fn plan(
    cluster: &ClusterSettings,
    node: &NodeSettings,
    airgap: Option<&Path>,
) -> Result<InstallPlan, String> {
    let mut files = vec![FilePlacement::bytes(
        CONFIG_PATH,
        0o600,
        config_yaml(cluster, node)?.into_bytes(),
    )];
    for (i, pem) in cluster.ca_certs.iter().enumerate() {
        files.push(FilePlacement::bytes(
            format!("{EXTRA_CA_DIR}/timonel-extra-ca-{}.pem", i + 1),
            0o644,
            pem.clone().into_bytes(),
        ));
    }
    if !cluster.registry_mirrors.is_empty() {
        files.push(FilePlacement::bytes(
            REGISTRIES_PATH,
            0o600,
            registries_yaml(&cluster.registry_mirrors)?.into_bytes(),
        ));
    }
    if let Some(tarball) = airgap {
        let name = tarball
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("k3s-airgap-images.tar.zst");
        files.push(FilePlacement::host_file(
            format!("{AIRGAP_DIR}/{name}"),
            0o644,
            tarball,
        ));
    }
    let command = match node.role {
        NodeRole::Server => "server",
        NodeRole::Agent => "agent",
    };
    // The user's extra arguments go on the command line: timonel's own flags are in
    // config.yaml, and `--k3s-arg` refuses those (k3s_args::OWNED), so no flag is given twice.
    let mut args = vec![command.to_string()];
    args.extend(cluster.k3s_args.for_role(node.role).cloned());
    Ok(InstallPlan {
        files,
        service: ServiceSpec {
            program: BINARY_PATH.to_string(),
            args,
            env: cluster.env.clone(),
        },
    })
}

/// `registries.yaml` sending docker.io pulls to `mirrors` (in order; k3s falls back to the
/// registry itself when every mirror fails).
pub fn registries_yaml(mirrors: &[String]) -> Result<String, String> {
    #[derive(Serialize)]
    struct Endpoints<'a> {
        endpoint: &'a [String],
    }
    #[derive(Serialize)]
    struct Registries<'a> {
        mirrors: std::collections::BTreeMap<&'a str, Endpoints<'a>>,
    }
    let doc = Registries {
        mirrors: [("docker.io", Endpoints { endpoint: mirrors })]
            .into_iter()
            .collect(),
    };
    serde_saphyr::to_string(&doc).map_err(|e| e.to_string())
}

/// Checks a `--ca-cert` file's content: PEM certificates only (no private keys).
pub fn validate_ca_pem(text: &str) -> Result<(), String> {
    if text.contains("PRIVATE KEY") {
        return Err("it contains a private key; give only the CA certificate".to_string());
    }
    let begins = text.matches("-----BEGIN CERTIFICATE-----").count();
    let ends = text.matches("-----END CERTIFICATE-----").count();
    if begins == 0 || begins != ends {
        return Err(
            "it is not a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)"
                .to_string(),
        );
    }
    Ok(())
}

/// A systemd unit that runs the plan's service on a VM or machine (like install.sh writes).
pub fn systemd_unit(service: &ServiceSpec, binary: &str) -> String {
    let mut unit = String::from(
        "[Unit]\nDescription=Lightweight Kubernetes (installed by timonel)\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=notify\n",
    );
    for (k, v) in &service.env {
        unit.push_str(&format!("Environment=\"{k}={}\"\n", v.replace('"', "\\\"")));
    }
    unit.push_str("KillMode=process\nDelegate=yes\nLimitNOFILE=1048576\nLimitNPROC=infinity\nTasksMax=infinity\nTimeoutStartSec=0\nRestart=always\nRestartSec=5s\nExecStartPre=-/sbin/modprobe br_netfilter\nExecStartPre=-/sbin/modprobe overlay\n");
    let args: Vec<String> = service.args.iter().map(|a| unit_word(a)).collect();
    unit.push_str(&format!("ExecStart={binary} {}\n", args.join(" ")));
    unit.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    unit
}

/// One argument of `ExecStart=` as systemd reads it back: `%` and `$` doubled (they start
/// specifiers and variables), and in double quotes, with `\\` and `\"` escaped, when it has
/// spaces, quotes or backslashes (docs/k3s-contract.md §7.3).
fn unit_word(arg: &str) -> String {
    let arg = arg.replace('%', "%%").replace('$', "$$");
    if arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        arg
    }
}

/// Where the binary goes on VMs and machines, as install.sh puts it.
pub const SERVICE_BINARY_PATH: &str = "/usr/local/bin/k3s";

/// Where a node of `kind` has the k3s binary: the image's path in containers, install.sh's on
/// VMs and machines.
pub fn binary_path(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Container => BINARY_PATH,
        NodeKind::Vm | NodeKind::Machine => SERVICE_BINARY_PATH,
    }
}

/// The systemd unit that runs k3s on a VM or machine, as install.sh names it.
pub fn unit_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Server => "k3s",
        NodeRole::Agent => "k3s-agent",
    }
}

/// The binary and the systemd unit that run the plan's service on a VM or machine.
pub fn service_files(plan: &InstallPlan, binary: &Path, role: NodeRole) -> Vec<FilePlacement> {
    vec![
        FilePlacement::host_file(SERVICE_BINARY_PATH, 0o755, binary),
        FilePlacement::bytes(
            format!("/etc/systemd/system/{}.service", unit_name(role)),
            0o644,
            systemd_unit(&plan.service, SERVICE_BINARY_PATH).into_bytes(),
        ),
    ]
}

/// Enables and starts the unit, without waiting for k3s to be ready (timonel waits itself).
pub fn start_service(role: NodeRole) -> Cmd {
    let unit = unit_name(role);
    Cmd::new("sh")
        .arg("-c")
        .arg(format!(
            "systemctl daemon-reload && systemctl enable {unit} && systemctl restart --no-block {unit}"
        ))
        .timeout(Duration::from_secs(120))
}

/// The last `tail` lines (0: all) of the unit's journal.
pub fn journal(role: NodeRole, tail: usize) -> Cmd {
    let lines = if tail == 0 {
        "all".to_string()
    } else {
        tail.to_string()
    };
    Cmd::new("journalctl")
        .args([
            "-u",
            unit_name(role),
            "-n",
            &lines,
            "--no-pager",
            "-o",
            "cat",
        ])
        .timeout(Duration::from_secs(60))
}

/// Checks `--disable` values before anything is created.
pub fn validate_disable(items: &[String]) -> Result<(), String> {
    for item in items {
        if !DISABLEABLE.contains(&item.as_str()) {
            return Err(format!(
                "`{item}` is not a k3s component that can be disabled (valid: {})",
                DISABLEABLE.join(", ")
            ));
        }
    }
    Ok(())
}

/// A fresh join secret: 32 random bytes from a CSPRNG (rand's thread RNG, seeded by the OS), hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterSettings {
        ClusterSettings {
            token: "s3cret".into(),
            disable: vec!["traefik".into()],
            tls_sans: vec!["127.0.0.1".into(), "localhost".into()],
            env: vec![],
            ca_certs: vec![],
            registry_mirrors: vec![],
            k3s_args: Default::default(),
        }
    }

    #[test]
    fn extra_args_reach_the_command_line_of_their_nodes() {
        let mut c = cluster();
        let list: Vec<crate::distro::k3s_args::K3sArg> = [
            "--node-label=tier=all",
            "--node-taint=role=cp:NoSchedule@server",
            "--node-label=x=agent@agent",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        c.k3s_args = crate::distro::k3s_args::K3sArgs::from_list(&list);
        let mut node = NodeSettings {
            name: "dev".into(),
            role: NodeRole::Server,
            join: None,
            cluster_init: false,
        };
        let server = plan(&c, &node, None).unwrap();
        assert_eq!(
            server.service.args,
            [
                "server",
                "--node-label=tier=all",
                "--node-taint=role=cp:NoSchedule"
            ]
        );
        node.role = NodeRole::Agent;
        let agent = plan(&c, &node, None).unwrap();
        assert_eq!(
            agent.service.args,
            ["agent", "--node-label=tier=all", "--node-label=x=agent"]
        );
        // The systemd unit keeps each argument one word, whatever it holds.
        let mut svc = agent.service.clone();
        svc.args
            .push("--kubelet-arg=eviction-hard=memory.available<5%".into());
        svc.args.push("--node-label=a=b c\"$HOME".into());
        let unit = systemd_unit(&svc, SERVICE_BINARY_PATH);
        let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(
            exec,
            "ExecStart=/usr/local/bin/k3s agent --node-label=tier=all --node-label=x=agent \
             --kubelet-arg=eviction-hard=memory.available<5%% \"--node-label=a=b c\\\"$$HOME\""
        );
    }

    #[test]
    fn server_config_carries_sans_and_disables() {
        let node = NodeSettings {
            name: "dev".into(),
            role: NodeRole::Server,
            join: None,
            cluster_init: false,
        };
        let yaml = config_yaml(&cluster(), &node).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["token"], "s3cret");
        assert_eq!(v["node-name"], "dev");
        assert_eq!(v["write-kubeconfig-mode"], "0600");
        assert_eq!(v["tls-san"], serde_json::json!(["127.0.0.1", "localhost"]));
        assert_eq!(v["disable"], serde_json::json!(["traefik"]));
        assert!(v.get("server").is_none());
        assert!(v.get("cluster-init").is_none());
    }

    #[test]
    fn agent_config_joins_and_carries_no_server_flags() {
        let node = NodeSettings {
            name: "dev-m02".into(),
            role: NodeRole::Agent,
            join: Some("https://10.201.0.2:6443".into()),
            cluster_init: false,
        };
        let yaml = config_yaml(&cluster(), &node).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["server"], "https://10.201.0.2:6443");
        // Agents refuse server-only keys such as tls-san and disable.
        assert!(v.get("tls-san").is_none(), "{yaml}");
        assert!(v.get("disable").is_none(), "{yaml}");
        assert!(v.get("write-kubeconfig-mode").is_none(), "{yaml}");
        let plan = plan(&cluster(), &node, None).unwrap();
        assert_eq!(plan.service.args, vec!["agent"]);
        assert_eq!(plan.files[0].mode, 0o600);
    }

    #[test]
    fn ca_certs_and_mirrors_become_files() {
        let mut c = cluster();
        c.ca_certs = vec!["-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into()];
        c.registry_mirrors = vec!["https://mirror.corp:5000".into()];
        let node = NodeSettings {
            name: "dev".into(),
            role: NodeRole::Server,
            join: None,
            cluster_init: false,
        };
        let plan = plan(&c, &node, None).unwrap();
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            paths.contains(&"/etc/ssl/certs/timonel-extra-ca-1.pem"),
            "{paths:?}"
        );
        let reg = plan
            .files
            .iter()
            .find(|f| f.path == REGISTRIES_PATH)
            .unwrap();
        let timonel_driver::FileSource::Bytes(b) = &reg.source else {
            panic!()
        };
        let v: serde_json::Value = serde_saphyr::from_str(std::str::from_utf8(b).unwrap()).unwrap();
        assert_eq!(
            v["mirrors"]["docker.io"]["endpoint"][0],
            "https://mirror.corp:5000"
        );
        assert!(
            validate_ca_pem("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----").is_ok()
        );
        assert!(validate_ca_pem("hello").is_err());
        assert!(validate_ca_pem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----").is_err());
    }

    #[test]
    fn tokens_are_random_and_long() {
        let a = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_token());
    }

    #[test]
    fn disable_is_checked() {
        assert!(validate_disable(&["traefik".into(), "servicelb".into()]).is_ok());
        let err = validate_disable(&["trafik".into()]).unwrap_err();
        assert!(err.contains("`trafik`") && err.contains("traefik"), "{err}");
    }
}
