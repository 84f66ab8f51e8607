//! Container nodes: the driver places the install plan's files and runs its service as the
//! container's command; commands run through the driver's own access.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{Driver, MachineSpec, NodeAccess};

use super::{NodeOps, Prepare};
use crate::cluster::error::Result;
use crate::distro::InstallPlan;
use crate::profile::{NodeRecord, Profile};

pub(super) struct Containers {
    pub driver: Arc<dyn Driver>,
}

#[async_trait]
impl NodeOps for Containers {
    fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    fn prepare(
        &self,
        _: &Profile,
        _: &NodeRecord,
        _: &mut MachineSpec,
        _: Prepare<'_>,
    ) -> Result<()> {
        Ok(())
    }

    async fn install(
        &self,
        _: &Profile,
        _: &NodeRecord,
        _: &InstallPlan,
        _: Option<&Path>,
        _: Duration,
    ) -> Result<()> {
        Ok(())
    }

    async fn access(
        &self,
        _: &Profile,
        node: &NodeRecord,
        _: Duration,
    ) -> Result<Arc<dyn NodeAccess>> {
        Ok(self.driver.access(&node.name).await?)
    }

    async fn logs(&self, _: &Profile, node: &NodeRecord, tail: usize) -> Result<String> {
        Ok(self.driver.logs(&node.name, tail).await?)
    }

    async fn api_url(&self, _: &NodeRecord) -> Result<Option<String>> {
        Ok(None)
    }
}
