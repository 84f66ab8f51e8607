//! A joined server's copy of the node registry (see `Nodes::Upstream`): what the server it
//! joined last listed, served while that server does not answer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::fsutil;
use crate::nodes::{NodeError, NodeRecord, RegisterRequest, RegisterResponse, PASSWORD_REJECTED};

/// A joined server's copy of the registry, and until when the server it joined is taken for
/// down (not asked again: a dead address costs a connect timeout).
#[derive(Default)]
pub struct Replica {
    copy: Mutex<BTreeMap<String, NodeRecord>>,
    down_until: Mutex<Option<std::time::Instant>>,
}

/// How long a server that did not answer is not asked again.
const DOWN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl Replica {
    pub(crate) fn up(&self) -> bool {
        let until = self.down_until.lock().map(|d| *d).unwrap_or(None);
        until.is_none_or(|t| std::time::Instant::now() >= t)
    }
    pub(crate) fn went_down(&self) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(std::time::Instant::now() + DOWN_FOR);
        }
    }
    pub(crate) fn keep(&self, list: &[NodeRecord]) {
        if let Ok(mut c) = self.copy.lock() {
            *c = list.iter().map(|n| (n.name.clone(), n.clone())).collect();
        }
    }
    pub(crate) fn list(&self) -> Vec<NodeRecord> {
        self.copy
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }
    /// A heartbeat of a node the copy knows, with its password; others wait for the server.
    pub(crate) fn heartbeat(
        &self,
        req: &RegisterRequest,
        now: u64,
    ) -> Result<RegisterResponse, NodeError> {
        let mut c = self
            .copy
            .lock()
            .map_err(|_| NodeError::Unavailable("node registry poisoned".into()))?;
        let hash = fsutil::sha256_hex(req.node_password.as_bytes());
        match c.get_mut(&req.name) {
            Some(n) if n.password_hash == hash => {
                n.last_seen = now;
                n.reported_ready = req.ready;
                Ok(RegisterResponse {
                    name: req.name.clone(),
                    etcd: n.roles.iter().any(|r| r == "etcd"),
                })
            }
            Some(_) => Err(NodeError::Rejected(PASSWORD_REJECTED.to_string())),
            None => Err(NodeError::Unavailable(
                "the server this one joined does not answer".into(),
            )),
        }
    }
}
