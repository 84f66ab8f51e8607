//! Distributions: turn (version, role, cluster settings) into an install plan — files to place
//! in a node and the service that runs — and know how to tell when the cluster is ready.
//! k3s is the first; k0s or kubeadm would sit behind the same shapes.

pub mod k3s;
pub mod k3s_args;
pub mod ready;

use timonel_driver::{FilePlacement, NodeRole, ServiceSpec};

/// Settings shared by every node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The join secret (short form); never logged.
    pub token: String,
    /// Packaged components to turn off (`traefik`, `servicelb`, …).
    pub disable: Vec<String>,
    /// Extra names and addresses the API serving certificate must carry.
    pub tls_sans: Vec<String>,
    /// Environment for the distribution's service (proxy settings).
    pub env: Vec<(String, String)>,
    /// Extra CA certificates (PEM) the nodes trust, e.g. a TLS-intercepting proxy's.
    pub ca_certs: Vec<String>,
    /// Registry mirrors for docker.io (k3s `registries.yaml`).
    pub registry_mirrors: Vec<String>,
    /// Extra `k3s server`/`k3s agent` arguments (`--k3s-arg`).
    pub k3s_args: k3s_args::K3sArgs,
}

/// One node's part in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub name: String,
    pub role: NodeRole,
    /// `https://<ip>:6443` of the server this node joins; `None` for the first server.
    pub join: Option<String>,
    /// First server of an embedded-etcd HA cluster.
    pub cluster_init: bool,
}

/// What to place in a node and what to run there.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallPlan {
    pub files: Vec<FilePlacement>,
    pub service: ServiceSpec,
}
