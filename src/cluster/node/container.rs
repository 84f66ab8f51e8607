//! Container nodes: the driver places the install plan's files and runs its service as the
//! container's command; commands run through the driver's own access.

use std::sync::Arc;

use async_trait::async_trait;
use timonel_driver::{Driver, MachineSpec};

use super::{NodeOps, Prepare};
use crate::cluster::error::Result;
use crate::distro::k3s;
use crate::profile::{NodeRecord, Profile};

pub(super) struct Containers {
    pub driver: Arc<dyn Driver>,
}

#[async_trait]
impl NodeOps for Containers {
    fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// A node image timonel built carries the airgap images (and links them into the images
    /// folder of every new node): the nodes get no copy of them.
    fn prepare(
        &self,
        profile: &Profile,
        _: &NodeRecord,
        spec: &mut MachineSpec,
        _: Prepare<'_>,
    ) -> Result<()> {
        if carries_airgap(profile, spec) {
            let dir = format!("{}/", k3s::AIRGAP_DIR);
            spec.files.retain(|f| !f.path.starts_with(&dir));
        }
        Ok(())
    }

    async fn api_url(&self, _: &NodeRecord) -> Result<Option<String>> {
        Ok(None)
    }
}

/// The node runs the image timonel builds for the profile's version (`--node-image` not given),
/// which holds the airgap images the artifacts step fetched.
fn carries_airgap(profile: &Profile, spec: &MachineSpec) -> bool {
    match (
        &spec.image,
        timonel_driver_docker::node_image_ref(&profile.version),
    ) {
        (Some(image), Ok(ours)) => *image == ours,
        _ => false,
    }
}
