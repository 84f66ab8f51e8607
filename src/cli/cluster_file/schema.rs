//! The cluster file's schema (docs/cluster-file.md): what `start --config` reads and `config
//! export` writes. Every field is a flag of `start` under another name; reading keeps each
//! value's place in the file (`Spanned`) so an error can point at it.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The versions of the file this timonel reads; the first is the one it writes.
pub const API_VERSIONS: [&str; 1] = ["timonel.dev/v1alpha1"];
/// The one kind of document.
pub const KIND: &str = "Cluster";

/// A value and where it was written (line and column, from 1).
pub type At<T> = Spanned<T>;

/// The file as read. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterFile {
    pub api_version: At<String>,
    pub kind: At<String>,
    /// `-p`.
    pub name: Option<At<String>>,
    /// `--driver`.
    pub driver: Option<At<String>>,
    /// `--kubernetes-version`.
    pub kubernetes_version: Option<At<String>>,
    /// `--control-planes`.
    pub servers: Option<At<u32>>,
    /// With `servers`, `--nodes` (servers + agents).
    pub agents: Option<At<u32>>,
    /// `--cpus`.
    pub cpus: Option<At<f64>>,
    /// `--memory`.
    pub memory: Option<At<String>>,
    /// `--disable`.
    pub disable: Option<Vec<At<String>>>,
    /// `--env`, each `KEY=VALUE`.
    pub env: Option<Vec<At<String>>>,
    /// `--ports`, each `HOST:NODE[/tcp|udp]`.
    pub ports: Option<Vec<At<String>>>,
    /// `--mount`, each `HOST_DIR:NODE_DIR[:ro]`; a relative host folder is relative to the file.
    pub mounts: Option<Vec<At<String>>>,
    pub api_server: Option<ApiServer>,
    pub registries: Option<Registries>,
    /// `--node-image`.
    pub node_image: Option<At<String>>,
    /// `--preload`.
    pub preload: Option<At<bool>>,
    /// `--k3s-arg`, by the nodes each list is for.
    pub k3s_args: Option<K3sArgs>,
    pub vm: Option<Vm>,
    pub ssh: Option<Ssh>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServer {
    /// `--apiserver-port`.
    pub port: Option<At<u16>>,
    /// `--listen-address`.
    pub listen_address: Option<At<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registries {
    /// `--registry-mirror`.
    pub mirrors: Option<Vec<At<String>>>,
    /// `--ca-cert`: a PEM file, or the PEM itself.
    pub ca_certs: Option<Vec<CaCert>>,
}

/// One CA certificate: `file:` (relative to the cluster file) or `pem:`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCert {
    pub file: Option<At<String>>,
    pub pem: Option<At<String>>,
}

/// `--k3s-arg ARG@server`, `ARG@agent` and `ARG` (all nodes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sArgs {
    pub server: Option<Vec<At<String>>>,
    pub agent: Option<Vec<At<String>>>,
    pub all: Option<Vec<At<String>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vm {
    /// `--vm-image` (relative to the cluster file).
    pub image: Option<At<String>>,
    /// `--disk-size`.
    pub disk_size: Option<At<String>>,
    /// `--hyperv-virtual-switch`.
    pub hyperv_switch: Option<At<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ssh {
    /// `--node`, one per node, servers first.
    pub machines: Option<Vec<At<String>>>,
    /// `--ssh-key` (relative to the cluster file).
    pub key: Option<At<String>>,
    /// `--ssh-known-hosts` (relative to the cluster file).
    pub known_hosts: Option<At<String>>,
    /// `--ssh-accept-new-host-keys`.
    pub accept_new_host_keys: Option<At<bool>>,
    /// `--adopt`.
    pub adopt: Option<At<bool>>,
}

/// The file as written by `config export`: the same fields, plain values, empty ones left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub driver: String,
    pub kubernetes_version: String,
    pub servers: u32,
    pub agents: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    pub api_server: WrittenApiServer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registries: Option<WrittenRegistries>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s_args: Option<crate::distro::k3s_args::K3sArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<WrittenVm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<WrittenSsh>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenApiServer {
    pub listen_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenRegistries {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certs: Vec<WrittenPem>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WrittenPem {
    pub pem: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenVm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperv_switch: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenSsh {
    pub machines: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_new_host_keys: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
}
