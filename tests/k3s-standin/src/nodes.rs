//! The node registry: what `kubectl get nodes` lists. The first server keeps it in
//! `${data-dir}/server/standin-nodes.json`; agents and joining servers register
//! through the stand-in's supervisor endpoint (see [`REGISTER_PATH`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::http;
use crate::net::HttpsUrl;
pub use crate::replica::Replica;

/// `POST`: register or heartbeat a node. Basic auth `node:<password>` or `server:<password>`.
pub const REGISTER_PATH: &str = "/v1-k3s/standin/register";
/// `GET`: the node records as JSON; `DELETE <NODES_PATH>/<name>`: remove one.
pub const NODES_PATH: &str = "/v1-k3s/standin/nodes";
/// `GET`: the cluster CA files, for joining servers (basic auth `server:<password>`).
pub const BOOTSTRAP_PATH: &str = "/v1-k3s/standin/bootstrap";

/// A node not heard from for longer than this shows `NotReady`.
pub const STALE_AFTER_SECS: u64 = 15;
/// How often agents and servers re-register.
pub const HEARTBEAT_SECS: u64 = 3;

/// The exact message k3s gives when a node name is reused with another password.
pub const PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

/// A registration or heartbeat, sent as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub name: String,
    pub node_password: String,
    /// Role labels without the `node-role.kubernetes.io/` prefix.
    pub roles: Vec<String>,
    pub internal_ip: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
    pub ready: bool,
    pub kubelet_version: String,
    #[serde(default)]
    pub kernel_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub name: String,
    /// Whether the cluster runs embedded etcd (joining servers then get the etcd role).
    pub etcd: bool,
}

/// A stored node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub uid: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub internal_ip: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    pub created_at: u64,
    pub kubelet_version: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub last_seen: u64,
    #[serde(default)]
    pub reported_ready: bool,
}

impl NodeRecord {
    pub fn is_ready(&self, now: u64) -> bool {
        self.reported_ready && now.saturating_sub(self.last_seen) <= STALE_AFTER_SECS
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The node password does not match (HTTP 403).
    Rejected(String),
    /// The registry could not be reached or answered oddly.
    Unavailable(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Rejected(m) | NodeError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for NodeError {}

/// The first server's registry, persisted as JSON.
#[derive(Debug)]
pub struct NodeStore {
    path: Option<PathBuf>,
    nodes: BTreeMap<String, NodeRecord>,
    pub etcd: bool,
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    nodes: Vec<NodeRecord>,
}

impl NodeStore {
    /// Loads the registry from `path` (missing file = empty).
    pub fn load(path: Option<PathBuf>, etcd: bool) -> Result<Self, String> {
        let mut nodes = BTreeMap::new();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => {
                    let file: StoreFile = serde_json::from_slice(&bytes)
                        .map_err(|e| format!("corrupt node registry `{}`: {e}", p.display()))?;
                    for n in file.nodes {
                        nodes.insert(n.name.clone(), n);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read `{}`: {e}", p.display())),
            }
        }
        Ok(Self { path, nodes, etcd })
    }

    fn save(&self) -> Result<(), NodeError> {
        let Some(p) = &self.path else { return Ok(()) };
        let file = StoreFile {
            nodes: self.nodes.values().cloned().collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| NodeError::Unavailable(e.to_string()))?;
        fsutil::write_atomic(p, &bytes, 0o600)
            .map_err(|e| NodeError::Unavailable(format!("cannot save node registry: {e}")))
    }

    /// Registers or refreshes a node. A known name with another password is rejected.
    /// Returns whether the node is new.
    pub fn register(&mut self, req: &RegisterRequest, now: u64) -> Result<bool, NodeError> {
        let hash = fsutil::sha256_hex(req.node_password.as_bytes());
        let is_new = match self.nodes.get_mut(&req.name) {
            Some(existing) => {
                if existing.password_hash != hash {
                    return Err(NodeError::Rejected(PASSWORD_REJECTED.to_string()));
                }
                existing.roles = req.roles.clone();
                existing.internal_ip = req.internal_ip.clone();
                existing.labels = req.labels.clone();
                existing.taints = req.taints.clone();
                existing.kubelet_version = req.kubelet_version.clone();
                existing.kernel_version = req.kernel_version.clone();
                existing.last_seen = now;
                existing.reported_ready = req.ready;
                false
            }
            None => {
                let uid = uid_for(&req.name, now);
                self.nodes.insert(
                    req.name.clone(),
                    NodeRecord {
                        name: req.name.clone(),
                        uid,
                        password_hash: hash,
                        roles: req.roles.clone(),
                        internal_ip: req.internal_ip.clone(),
                        labels: req.labels.clone(),
                        taints: req.taints.clone(),
                        created_at: now,
                        kubelet_version: req.kubelet_version.clone(),
                        kernel_version: req.kernel_version.clone(),
                        last_seen: now,
                        reported_ready: req.ready,
                    },
                );
                true
            }
        };
        self.save()?;
        Ok(is_new)
    }

    pub fn list(&self) -> Vec<NodeRecord> {
        self.nodes.values().cloned().collect()
    }

    /// Deletes a node (and its password entry). Returns whether it existed.
    pub fn delete(&mut self, name: &str) -> Result<bool, NodeError> {
        let existed = self.nodes.remove(name).is_some();
        if existed {
            self.save()?;
        }
        Ok(existed)
    }
}

/// A Kubernetes-looking UID derived from the name and creation time.
pub fn uid_for(name: &str, created: u64) -> String {
    let h = fsutil::sha256_hex(format!("{name}/{created}").as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Talks to a server's supervisor endpoints with basic auth.
#[derive(Clone)]
pub struct UpstreamClient {
    pub url: HttpsUrl,
    pub config: Arc<ClientConfig>,
    pub user: String,
    pub password: String,
}

impl UpstreamClient {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<http::ClientResponse, NodeError> {
        let auth = http::basic_auth_header(&self.user, &self.password);
        http::request(
            self.config.clone(),
            &self.url,
            method,
            path,
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json".to_string()),
            ],
            body,
        )
        .map_err(|e| {
            NodeError::Unavailable(format!(
                "cannot reach server https://{}:{}: {e}",
                self.url.host, self.url.port
            ))
        })
    }

    fn unexpected(resp: &http::ClientResponse) -> NodeError {
        match resp.status {
            403 => NodeError::Rejected(resp.text().trim().to_string()),
            s => NodeError::Unavailable(format!("server answered {s}: {}", resp.text().trim())),
        }
    }

    pub fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let resp = self.call("POST", REGISTER_PATH, &body)?;
        if resp.status != 200 {
            return Err(Self::unexpected(&resp));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| NodeError::Unavailable(format!("bad registration answer: {e}")))
    }

    pub fn list(&self) -> Result<Vec<NodeRecord>, NodeError> {
        let resp = self.call("GET", NODES_PATH, b"")?;
        if resp.status != 200 {
            return Err(Self::unexpected(&resp));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| NodeError::Unavailable(format!("bad node list: {e}")))
    }

    pub fn delete(&self, name: &str) -> Result<bool, NodeError> {
        let resp = self.call("DELETE", &format!("{NODES_PATH}/{name}"), b"")?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::unexpected(&resp)),
        }
    }
}

/// Where a server keeps its nodes: locally (first server) or on the server it joined, with a
/// copy of what that server last said. k3s servers share their state through embedded etcd, so
/// any live server answers for the nodes when another is gone; the stand-in models that with
/// the copy: while the server it joined does not answer, a joined server lists the nodes it
/// last saw and refreshes its own and known nodes' heartbeats there.
pub enum Nodes {
    Local(Mutex<NodeStore>),
    Upstream(UpstreamClient, Replica),
}

impl Nodes {
    pub fn register(
        &self,
        req: &RegisterRequest,
        now: u64,
    ) -> Result<(RegisterResponse, bool), NodeError> {
        match self {
            Nodes::Local(store) => {
                let mut store = store
                    .lock()
                    .map_err(|_| NodeError::Unavailable("node registry poisoned".into()))?;
                let is_new = store.register(req, now)?;
                Ok((
                    RegisterResponse {
                        name: req.name.clone(),
                        etcd: store.etcd,
                    },
                    is_new,
                ))
            }
            Nodes::Upstream(client, replica) => {
                if replica.up() {
                    match client.register(req) {
                        Ok(r) => return Ok((r, false)),
                        Err(NodeError::Unavailable(_)) => replica.went_down(),
                        Err(e) => return Err(e),
                    }
                }
                Ok((replica.heartbeat(req, now)?, false))
            }
        }
    }

    pub fn list(&self) -> Result<Vec<NodeRecord>, NodeError> {
        match self {
            Nodes::Local(store) => Ok(store
                .lock()
                .map_err(|_| NodeError::Unavailable("node registry poisoned".into()))?
                .list()),
            Nodes::Upstream(client, replica) => {
                if replica.up() {
                    match client.list() {
                        Ok(list) => {
                            replica.keep(&list);
                            return Ok(list);
                        }
                        Err(NodeError::Unavailable(_)) => replica.went_down(),
                        Err(e) => return Err(e),
                    }
                }
                Ok(replica.list())
            }
        }
    }

    pub fn delete(&self, name: &str) -> Result<bool, NodeError> {
        match self {
            Nodes::Local(store) => store
                .lock()
                .map_err(|_| NodeError::Unavailable("node registry poisoned".into()))?
                .delete(name),
            Nodes::Upstream(client, _) => client.delete(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, pw: &str) -> RegisterRequest {
        RegisterRequest {
            name: name.into(),
            node_password: pw.into(),
            roles: vec![],
            internal_ip: "10.0.0.2".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            ready: true,
            kubelet_version: "v1.31.2+k3s1".into(),
            kernel_version: String::new(),
        }
    }

    #[test]
    fn rejects_other_password_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let mut store = NodeStore::load(Some(path.clone()), false).unwrap();
        assert!(store.register(&req("a", "pw1"), 100).unwrap());
        assert!(!store.register(&req("a", "pw1"), 105).unwrap());
        assert_eq!(
            store.register(&req("a", "pw2"), 106),
            Err(NodeError::Rejected(PASSWORD_REJECTED.into()))
        );
        let reloaded = NodeStore::load(Some(path), false).unwrap();
        let nodes = reloaded.list();
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].is_ready(110));
        assert!(!nodes[0].is_ready(105 + STALE_AFTER_SECS + 1));
    }

    #[test]
    fn a_joined_server_answers_from_its_copy_while_the_first_is_gone() {
        let client = UpstreamClient {
            // Nothing listens on port 1: refused at once.
            url: HttpsUrl::parse("https://127.0.0.1:1").unwrap(),
            config: crate::tls::insecure_client_config().unwrap(),
            user: "server".into(),
            password: "pw".into(),
        };
        let mut store = NodeStore::load(None, true).unwrap();
        store.register(&req("s1", "pw1"), 100).unwrap();
        store.register(&req("s2", "pw2"), 100).unwrap();
        let replica = Replica::default();
        replica.keep(&store.list());
        let nodes = Nodes::Upstream(client, replica);
        let listed = nodes.list().unwrap();
        assert_eq!(listed.len(), 2);
        // Its own heartbeat is kept; a stranger or a wrong password is not taken.
        nodes.register(&req("s2", "pw2"), 200).unwrap();
        let s2 = nodes
            .list()
            .unwrap()
            .into_iter()
            .find(|n| n.name == "s2")
            .unwrap();
        assert_eq!(s2.last_seen, 200);
        assert!(matches!(
            nodes.register(&req("s2", "other"), 201),
            Err(NodeError::Rejected(_))
        ));
        assert!(matches!(
            nodes.register(&req("new", "pw"), 201),
            Err(NodeError::Unavailable(_))
        ));
    }

    #[test]
    fn delete_forgets_password() {
        let mut store = NodeStore::load(None, false).unwrap();
        store.register(&req("a", "pw1"), 1).unwrap();
        assert!(store.delete("a").unwrap());
        assert!(!store.delete("a").unwrap());
        assert!(store.register(&req("a", "pw2"), 2).unwrap());
    }
}
