//! An in-memory driver for tests of the code above the drivers: container-like nodes whose
//! state, files and calls live in memory, with failures injected where a test asks. It runs no
//! process and talks to no daemon, so start, rollback and resume are tested in milliseconds.

#![allow(clippy::expect_used)] // a test double: a poisoned lock is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::access::{FilePlacement, FileSource, NodeAccess};
use crate::capability::{HostCapacity, HostResources, NodeImages};
use crate::driver::{
    Availability, Capabilities, Driver, DriverKind, MachineSpec, NodeKind, NodeRole, Reporter,
};
use crate::error::{CommandError, DriverError};
use crate::name::{ClusterName, MachineName};
use crate::runner::{Cmd, Output, Runner};
use crate::state::{MachineState, StopMode};

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

#[derive(Debug)]
struct FakeNode {
    spec: MachineSpec,
    running: bool,
    /// Frozen by `pause` (while `running`).
    paused: bool,
    files: Files,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<MachineName, FakeNode>,
    fail_create: BTreeSet<MachineName>,
    /// Files a server gets when it starts (what the distribution would write).
    on_server_start: BTreeMap<String, Vec<u8>>,
    calls: Vec<String>,
    /// What `host_resources` reports; no such capability when `None`.
    host: Option<HostCapacity>,
}

/// The fake driver. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeDriver {
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake driver state")
    }

    /// `create` of `node` fails (as a daemon refusing it would).
    pub fn fail_create(&self, node: &MachineName) {
        self.lock().fail_create.insert(node.clone());
    }

    /// Every server gets `path` with `content` when it starts.
    pub fn write_on_server_start(&self, path: &str, content: &[u8]) {
        self.lock()
            .on_server_start
            .insert(path.to_string(), content.to_vec());
    }

    /// The driver reports `host` as its nodes' host (CPUs, memory, disk).
    pub fn set_host(&self, host: HostCapacity) {
        self.lock().host = Some(host);
    }

    /// The nodes that exist, with whether they run.
    pub fn nodes(&self) -> BTreeMap<MachineName, bool> {
        self.lock()
            .nodes
            .iter()
            .map(|(n, f)| (n.clone(), f.running))
            .collect()
    }

    /// The spec a node was created with.
    pub fn spec(&self, node: &MachineName) -> Option<MachineSpec> {
        self.lock().nodes.get(node).map(|n| n.spec.clone())
    }

    /// A file in a node.
    pub fn file(&self, node: &MachineName, path: &str) -> Option<Vec<u8>> {
        let files = self.lock().nodes.get(node)?.files.clone();
        let got = files.lock().expect("fake files").get(path).cloned();
        got
    }

    /// Every call so far, as `op node`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn record(&self, op: &str, node: &str) {
        self.lock().calls.push(format!("{op} {node}"));
    }

    /// Pauses or unpauses a running node; a stopped one is refused, as real backends do.
    fn set_paused(&self, name: &MachineName, paused: bool) -> Result<(), DriverError> {
        let mut state = self.lock();
        let node = state
            .nodes
            .get_mut(name)
            .ok_or_else(|| Self::missing(name))?;
        if !node.running {
            return Err(DriverError::InvalidState {
                what: format!("fake node `{name}`"),
                state: "stopped".to_string(),
                action: if paused { "pause" } else { "unpause" }.to_string(),
            });
        }
        node.paused = paused;
        Ok(())
    }

    fn missing(node: &MachineName) -> DriverError {
        DriverError::NotFound {
            what: format!("fake node `{node}`"),
        }
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Fake
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Container,
            ..Default::default()
        }
    }

    async fn probe(&self) -> Availability {
        Availability::Ready {
            version: "fake".to_string(),
            notes: Vec::new(),
        }
    }

    async fn create(&self, spec: &MachineSpec, _: &dyn Reporter) -> Result<(), DriverError> {
        self.record("create", spec.name.as_str());
        let mut state = self.lock();
        if state.fail_create.contains(&spec.name) {
            return Err(DriverError::backend(
                format!("creating fake node `{}`", spec.name),
                "refused by the test",
            ));
        }
        if state.nodes.contains_key(&spec.name) {
            return Ok(());
        }
        let mut files = BTreeMap::new();
        for f in &spec.files {
            let bytes = match &f.source {
                FileSource::Bytes(b) => b.clone(),
                FileSource::HostPath(p) => std::fs::read(p)
                    .map_err(|e| DriverError::io(format!("reading `{}`", p.display()), e))?,
            };
            files.insert(f.path.clone(), bytes);
        }
        state.nodes.insert(
            spec.name.clone(),
            FakeNode {
                spec: spec.clone(),
                running: false,
                paused: false,
                files: Arc::new(Mutex::new(files)),
            },
        );
        Ok(())
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        self.record("start", name.as_str());
        let mut state = self.lock();
        let on_start = state.on_server_start.clone();
        let node = state
            .nodes
            .get_mut(name)
            .ok_or_else(|| Self::missing(name))?;
        node.running = true;
        node.paused = false;
        if node.spec.role == NodeRole::Server {
            node.files.lock().expect("fake files").extend(on_start);
        }
        Ok(())
    }

    async fn stop(&self, name: &MachineName, _: StopMode) -> Result<(), DriverError> {
        self.record("stop", name.as_str());
        let mut state = self.lock();
        let node = state
            .nodes
            .get_mut(name)
            .ok_or_else(|| Self::missing(name))?;
        node.running = false;
        node.paused = false;
        Ok(())
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.record("pause", name.as_str());
        self.set_paused(name, true)
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.record("unpause", name.as_str());
        self.set_paused(name, false)
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        self.record("delete", name.as_str());
        self.lock().nodes.remove(name);
        Ok(())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        self.record("delete_cluster", cluster.as_str());
        let mut state = self.lock();
        let gone: Vec<MachineName> = state
            .nodes
            .iter()
            .filter(|(_, n)| &n.spec.cluster == cluster)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            state.nodes.remove(name);
        }
        Ok(gone.iter().map(|n| format!("fake node {n}")).collect())
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        Ok(match self.lock().nodes.get(name) {
            None => MachineState::NotCreated,
            Some(n) if n.running && n.paused => MachineState::Paused,
            Some(n) if n.running => MachineState::Running,
            Some(_) => MachineState::Stopped,
        })
    }

    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        let state = self.lock();
        let node = state.nodes.get(name).ok_or_else(|| Self::missing(name))?;
        if !node.running || node.paused {
            return Err(DriverError::InvalidState {
                what: format!("fake node `{name}`"),
                state: if node.running { "paused" } else { "stopped" }.to_string(),
                action: "reading its address".to_string(),
            });
        }
        let index = u8::try_from(node.spec.index).unwrap_or(u8::MAX);
        Ok(IpAddr::V4(Ipv4Addr::new(10, 99, 0, index)))
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        let state = self.lock();
        let node = state.nodes.get(name).ok_or_else(|| Self::missing(name))?;
        node.spec
            .ports
            .iter()
            .find(|p| p.node_port == port)
            .map(|p| SocketAddr::new(p.host_ip, p.host_port))
            .ok_or_else(|| DriverError::NotFound {
                what: format!("port {port} of fake node `{name}`"),
            })
    }

    async fn access(&self, name: &MachineName) -> Result<Arc<dyn NodeAccess>, DriverError> {
        let state = self.lock();
        let node = state.nodes.get(name).ok_or_else(|| Self::missing(name))?;
        Ok(Arc::new(FakeAccess {
            files: node.files.clone(),
        }))
    }

    async fn logs(&self, name: &MachineName, _: usize) -> Result<String, DriverError> {
        Ok(format!("fake log of {name}\n"))
    }

    fn as_node_images(&self) -> Option<&dyn NodeImages> {
        Some(self)
    }

    fn as_host_resources(&self) -> Option<&dyn HostResources> {
        if self.lock().host.is_some() {
            Some(self)
        } else {
            None
        }
    }
}

#[async_trait]
impl HostResources for FakeDriver {
    async fn host_resources(&self) -> Result<HostCapacity, DriverError> {
        self.record("host_resources", "-");
        Ok(self.lock().host.clone().unwrap_or_default())
    }
}

#[async_trait]
impl NodeImages for FakeDriver {
    async fn ensure_node_image(
        &self,
        source: &crate::NodeImageSource<'_>,
        _: &dyn Reporter,
    ) -> Result<String, DriverError> {
        self.record("ensure_node_image", source.version);
        Ok(format!("fake/k3s:{}", source.version))
    }
}

/// Files and commands in a fake node: commands succeed and print nothing.
struct FakeAccess {
    files: Files,
}

#[async_trait]
impl Runner for FakeAccess {
    async fn run(&self, _: &Cmd) -> Result<Output, CommandError> {
        Ok(Output::ok(""))
    }
    fn target(&self) -> &str {
        "fake node"
    }
}

#[async_trait]
impl NodeAccess for FakeAccess {
    async fn copy_in(&self, files: &[FilePlacement]) -> Result<(), DriverError> {
        let mut held = self.files.lock().expect("fake files");
        for f in files {
            if let FileSource::Bytes(b) = &f.source {
                held.insert(f.path.clone(), b.clone());
            }
        }
        Ok(())
    }
    async fn copy_out(&self, path: &str) -> Result<Vec<u8>, DriverError> {
        self.files
            .lock()
            .expect("fake files")
            .get(path)
            .cloned()
            .ok_or_else(|| DriverError::NotFound {
                what: format!("`{path}` in the fake node"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_driver_contract() {
        let name: MachineName = "fake-1".parse().expect("a name");
        let spec = MachineSpec::new(name, "fake".parse().expect("a name"), NodeRole::Server, 1);
        crate::contract::suite(&FakeDriver::new(), &spec).await;
    }
}
