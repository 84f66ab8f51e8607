//! Pausing a node: Docker freezes the container's processes with the cgroup freezer
//! (`docker pause`) and thaws them (`docker unpause`); the container keeps its memory, network
//! and published ports, and is not restarted.

use timonel_driver::{DriverError, MachineName, MachineState};

use crate::client::{map_err, DockerDriver};
use crate::container_name;
use crate::objects::{machine_state, machine_what};

impl DockerDriver {
    /// Pauses (`to_paused`) or unpauses the node. Already there is Ok; a container that is
    /// neither running nor paused is `InvalidState`. The daemon refuses a change that raced
    /// with another (409 "is already paused", "is not paused"): then the state is looked at again.
    pub(crate) async fn set_paused(
        &self,
        name: &MachineName,
        to_paused: bool,
    ) -> Result<(), DriverError> {
        let (from, to, verb) = if to_paused {
            (MachineState::Running, MachineState::Paused, "pausing")
        } else {
            (MachineState::Paused, MachineState::Running, "unpausing")
        };
        let state = machine_state(&self.inspect_ours(name.as_str()).await?);
        if state == to {
            return Ok(());
        }
        if state != from {
            return Err(DriverError::InvalidState {
                what: machine_what(name.as_str()),
                state: state.to_string(),
                action: verb.to_string(),
            });
        }
        let docker = self.client().await?;
        let cname = container_name(name.as_str());
        let result = if to_paused {
            docker.pause_container(&cname).await
        } else {
            docker.unpause_container(&cname).await
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let now = machine_state(&self.inspect_ours(name.as_str()).await?);
                if now == to {
                    Ok(())
                } else {
                    Err(map_err(verb, &machine_what(name.as_str()), e))
                }
            }
        }
    }
}
