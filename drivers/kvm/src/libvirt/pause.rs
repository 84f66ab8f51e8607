//! Pausing a node: libvirt suspends the domain (QEMU stops its vCPUs; memory, disks and the
//! network stay) and resumes it where it was. Not `managedsave`: nothing is written to disk.

use timonel_driver::{DriverError, MachineState};
use virt::domain::Domain;

use super::conn::{domain, lv};
use super::KvmDriver;
use crate::map_domain_state;

/// The domain's state as a [`MachineState`].
pub(super) fn state_of(dom: &Domain) -> Result<MachineState, DriverError> {
    let (state, _) = dom.state().map_err(|e| lv("reading the domain state", e))?;
    let raw = match state {
        virt::enumutil::Enum::Known(s) => s as u32,
        virt::enumutil::Enum::Unknown(raw) => raw,
    };
    Ok(map_domain_state(raw))
}

impl KvmDriver {
    /// Suspends (`to_paused`) or resumes the domain. Already there is Ok; a domain that is
    /// neither running nor paused is `InvalidState`.
    pub(super) async fn set_paused(
        &self,
        dom_name: &str,
        to_paused: bool,
    ) -> Result<(), DriverError> {
        let name = dom_name.to_string();
        self.conn
            .run(move |c| {
                let dom = domain(c, &name)?;
                let (from, to, verb) = if to_paused {
                    (MachineState::Running, MachineState::Paused, "pausing")
                } else {
                    (MachineState::Paused, MachineState::Running, "unpausing")
                };
                let state = state_of(&dom)?;
                if state == to {
                    return Ok(());
                }
                if state != from {
                    return Err(DriverError::InvalidState {
                        what: format!("machine `{name}`"),
                        state: state.to_string(),
                        action: verb.to_string(),
                    });
                }
                let done = if to_paused {
                    dom.suspend()
                } else {
                    dom.resume()
                };
                match done {
                    Ok(()) => Ok(()),
                    // Changed by someone else meanwhile: fine if it is where we want it.
                    Err(_) if state_of(&dom)? == to => Ok(()),
                    Err(e) => Err(lv(&format!("{verb} `{name}`"), e)),
                }
            })
            .await
    }
}
