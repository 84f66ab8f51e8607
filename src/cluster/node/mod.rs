//! The one seam for the kinds of node. A container, a VM and an existing machine are prepared,
//! provisioned, reached and cleaned up differently; everything above this module asks a
//! [`NodeOps`] and never branches on the kind itself.
//!
//! | kind      | prepare                         | install               | access, logs            |
//! |-----------|---------------------------------|-----------------------|-------------------------|
//! | container | files and service in the spec   | at create (driver)    | the driver's own        |
//! | VM        | disk, cloud-init seed, SSH key  | over SSH, systemd unit | SSH to the endpoint    |
//! | machine   | binary and unit in the spec     | at create (driver)    | the driver's own (SSH)  |

mod container;
mod machine;
mod vm;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{ClusterName, Driver, MachineSpec, NodeAccess, NodeKind};

use super::error::Result;
use crate::distro::InstallPlan;
use crate::home::Home;
use crate::profile::{NodeRecord, Profile};

pub use vm::{key_dir, machine_dir, DEFAULT_DISK_MIB};

/// What a node's preparation knows beyond the profile.
#[derive(Debug, Clone, Copy)]
pub struct Prepare<'a> {
    /// The node does not exist yet: this command creates it.
    pub fresh: bool,
    /// The distribution's verified binary, when this command installs it.
    pub binary: Option<&'a Path>,
}

/// How nodes of one kind are prepared, provisioned, reached and cleaned up.
#[async_trait]
pub trait NodeOps: Send + Sync {
    /// The driver behind the nodes.
    fn driver(&self) -> &Arc<dyn Driver>;

    /// Completes a node's spec (made from the profile and the install plan) before the driver
    /// creates the node.
    fn prepare(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        spec: &mut MachineSpec,
        how: Prepare<'_>,
    ) -> Result<()>;

    /// Whether [`NodeOps::install`] does anything (the driver did not place the plan at create).
    fn installs(&self) -> bool {
        false
    }

    /// Installs the distribution in a node this command created, once it runs. Nothing to do
    /// where the driver placed the plan at create.
    async fn install(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        plan: &InstallPlan,
        binary: Option<&Path>,
        timeout: Duration,
    ) -> Result<()> {
        let _ = (profile, node, plan, binary, timeout);
        Ok(())
    }

    /// Commands and files in a running node, waiting up to `timeout` for it to answer. The
    /// driver's own access, unless the kind reaches its nodes another way.
    async fn access(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        timeout: Duration,
    ) -> Result<Arc<dyn NodeAccess>> {
        let _ = (profile, timeout);
        Ok(self.driver().access(&node.name).await?)
    }

    /// The last `tail` lines (0: all) of the distribution's log in the node.
    async fn logs(&self, profile: &Profile, node: &NodeRecord, tail: usize) -> Result<String> {
        let _ = profile;
        Ok(self.driver().logs(&node.name, tail).await?)
    }

    /// Where the host reaches a server's API when it is not a port published on the listen
    /// address: the VM's or machine's own address, or a NAT forward.
    async fn api_url(&self, node: &NodeRecord) -> Result<Option<String>>;

    /// Removes one node and what it left on the host.
    async fn remove(&self, profile: &Profile, node: &NodeRecord) -> Result<()> {
        let _ = profile;
        Ok(self.driver().delete(&node.name).await?)
    }

    /// Removes every node of the cluster and what they left on the host. Returns a line per
    /// resource removed.
    async fn remove_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>> {
        Ok(self.driver().delete_cluster(cluster).await?)
    }
}

/// The operations for the nodes of `driver`.
pub fn ops(driver: Arc<dyn Driver>, home: &Home) -> Box<dyn NodeOps> {
    match driver.capabilities().nodes {
        NodeKind::Container => Box::new(container::Containers { driver }),
        NodeKind::Vm => Box::new(vm::Vms {
            driver,
            home: home.clone(),
        }),
        NodeKind::Machine => Box::new(machine::Machines { driver }),
    }
}

/// The API URL of a server at `addr` (a VM's address, a machine's, a NAT forward).
async fn endpoint_url(driver: &dyn Driver, node: &NodeRecord) -> Result<String> {
    let addr = driver
        .endpoint(&node.name, crate::distro::k3s::API_PORT)
        .await?;
    Ok(timonel_driver::net::https_url(addr.ip(), addr.port()))
}
