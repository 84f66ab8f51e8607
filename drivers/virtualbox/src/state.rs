//! VirtualBox's `VMState` values (docs/hypervisor-tools.md, "`showvminfo`") and how they map to
//! [`MachineState`].

use timonel_driver::MachineState;

/// What a `VMState` value means for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStateKind {
    /// `poweroff`, `aborted`, `teleported`.
    Off,
    /// `saved`, `aborted-saved`.
    Saved,
    Running,
    Paused,
    /// `starting`, `restoring`, `teleportingin`.
    Starting,
    /// `stopping`, `saving`.
    Stopping,
    /// Snapshot work, teleporting, `settingup`: wait and look again.
    Transitional,
    /// `gurumeditation` (and `stuck`, its old name).
    Error,
    /// Empty, missing or unknown: never assumed to be running.
    Unknown,
}

/// Classifies a raw `VMState` value.
pub fn classify_vm_state(raw: Option<&str>) -> VmStateKind {
    match raw.unwrap_or("") {
        "poweroff" | "aborted" | "teleported" => VmStateKind::Off,
        "saved" | "aborted-saved" => VmStateKind::Saved,
        "running" => VmStateKind::Running,
        "paused" => VmStateKind::Paused,
        "starting" | "restoring" | "teleportingin" => VmStateKind::Starting,
        "stopping" | "saving" => VmStateKind::Stopping,
        "livesnapshotting"
        | "onlinesnapshotting"
        | "snapshotting"
        | "deletingsnapshot"
        | "deletingsnapshotlive"
        | "deletingsnapshotlivepaused"
        | "restoringsnapshot"
        | "teleporting"
        | "teleportingpausedvm"
        | "settingup"
        | "faulttolerantsyncing" => VmStateKind::Transitional,
        "gurumeditation" | "stuck" => VmStateKind::Error,
        _ => VmStateKind::Unknown,
    }
}

/// The driver-level state of a raw `VMState` value.
pub fn map_vm_state(raw: Option<&str>) -> MachineState {
    let text = raw.unwrap_or("").to_string();
    match classify_vm_state(raw) {
        VmStateKind::Off => MachineState::Stopped,
        VmStateKind::Saved => MachineState::Suspended,
        VmStateKind::Running => MachineState::Running,
        VmStateKind::Paused => MachineState::Paused,
        VmStateKind::Starting => MachineState::Starting,
        VmStateKind::Stopping => MachineState::Stopping,
        // No transitional variant in MachineState: report the raw value, never "running".
        VmStateKind::Transitional | VmStateKind::Unknown => MachineState::Unknown { raw: text },
        VmStateKind::Error => MachineState::Error { raw: text },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_documented_state() {
        let cases: &[(&str, MachineState)] = &[
            ("running", MachineState::Running),
            ("paused", MachineState::Paused),
            ("saved", MachineState::Suspended),
            ("aborted-saved", MachineState::Suspended),
            ("poweroff", MachineState::Stopped),
            ("aborted", MachineState::Stopped),
            ("teleported", MachineState::Stopped),
            ("starting", MachineState::Starting),
            ("restoring", MachineState::Starting),
            ("teleportingin", MachineState::Starting),
            ("stopping", MachineState::Stopping),
            ("saving", MachineState::Stopping),
            (
                "gurumeditation",
                MachineState::Error {
                    raw: "gurumeditation".into(),
                },
            ),
            ("", MachineState::Unknown { raw: String::new() }),
            (
                "weird",
                MachineState::Unknown {
                    raw: "weird".into(),
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&map_vm_state(Some(raw)), want, "{raw}");
        }
        assert_eq!(
            map_vm_state(None),
            MachineState::Unknown { raw: String::new() }
        );
        for raw in [
            "livesnapshotting",
            "onlinesnapshotting",
            "snapshotting",
            "deletingsnapshot",
            "deletingsnapshotlive",
            "deletingsnapshotlivepaused",
            "restoringsnapshot",
            "teleporting",
            "teleportingpausedvm",
            "settingup",
        ] {
            assert_eq!(
                classify_vm_state(Some(raw)),
                VmStateKind::Transitional,
                "{raw}"
            );
            let mapped = map_vm_state(Some(raw));
            assert!(!mapped.is_running(), "{raw} must never count as running");
            assert_eq!(mapped, MachineState::Unknown { raw: raw.into() });
        }
    }
}
