//! Pausing a node: `VBoxManage controlvm <vm> pause` stops the VM's vCPUs where they are (the
//! VM stays `paused` in memory, nothing is saved to disk) and `controlvm <vm> resume` lets them
//! run on. Not `savestate`, which writes the VM out and powers it off.

use timonel_driver::DriverError;

use crate::driver::{machine, VirtualBoxDriver};
use crate::state::{classify_vm_state, map_vm_state, VmStateKind};

impl VirtualBoxDriver {
    /// Pauses (`to_paused`) or resumes the VM. Already there is Ok; a VM that is neither running
    /// nor paused is `InvalidState` (VBoxManage itself says `Machine '…' is not currently
    /// running.`). A change that raced with another (`Already paused`, `Cannot resume the
    /// machine as it is not paused`) is looked at again.
    pub(crate) async fn set_paused(&self, name: &str, to_paused: bool) -> Result<(), DriverError> {
        let (from, to, action) = if to_paused {
            (VmStateKind::Running, VmStateKind::Paused, "pause")
        } else {
            (VmStateKind::Paused, VmStateKind::Running, "resume")
        };
        let info = self.existing(name).await?;
        let kind = classify_vm_state(info.vm_state());
        if kind == to {
            return Ok(());
        }
        if kind != from {
            return Err(DriverError::InvalidState {
                what: machine(name),
                state: map_vm_state(info.vm_state()).to_string(),
                action: action.into(),
            });
        }
        match self.vbox.call(["controlvm", name, action]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let now = self.existing(name).await?;
                if classify_vm_state(now.vm_state()) == to {
                    Ok(())
                } else {
                    Err(e.into_driver(&machine(name), action))
                }
            }
        }
    }
}
