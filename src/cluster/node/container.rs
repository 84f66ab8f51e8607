//! Container nodes: the driver places the install plan's files and runs its service as the
//! container's command; commands run through the driver's own access.

use std::sync::Arc;

use async_trait::async_trait;
use timonel_driver::{Driver, MachineSpec};

use super::{NodeOps, Prepare};
use crate::cluster::error::Result;
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

    async fn api_url(&self, _: &NodeRecord) -> Result<Option<String>> {
        Ok(None)
    }
}
