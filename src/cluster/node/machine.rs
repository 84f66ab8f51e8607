//! Existing machines (the ssh driver): the driver places the spec's files — the binary and the
//! systemd unit added here — and enables the unit at create; it reaches the machine itself.

use std::sync::Arc;

use async_trait::async_trait;
use timonel_driver::{Driver, MachineSpec};

use super::{endpoint_url, NodeOps, Prepare};
use crate::cluster::error::Result;
use crate::distro::{k3s, InstallPlan};
use crate::error::UserError;
use crate::profile::{NodeRecord, Profile};

pub(super) struct Machines {
    pub driver: Arc<dyn Driver>,
}

#[async_trait]
impl NodeOps for Machines {
    fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    fn prepare(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        spec: &mut MachineSpec,
        how: Prepare<'_>,
    ) -> Result<()> {
        match how.binary {
            Some(binary) => {
                let plan = InstallPlan {
                    files: spec.files.clone(),
                    service: spec.service.clone().unwrap_or_default(),
                };
                spec.files
                    .extend(k3s::service_files(&plan, binary, node.role));
                Ok(())
            }
            None if how.fresh => Err(UserError::new(
                format!(
                    "k3s is no longer installed on the machine of node `{}`",
                    node.name
                ),
                format!(
                    "`timonel delete -p {}` and start again to reinstall the cluster",
                    profile.name
                ),
            )
            .into()),
            None => Ok(()),
        }
    }

    async fn api_url(&self, node: &NodeRecord) -> Result<Option<String>> {
        Ok(Some(endpoint_url(self.driver.as_ref(), node).await?))
    }
}
