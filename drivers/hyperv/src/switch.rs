//! Choosing the virtual switch the VM's network adapter connects to.

use timonel_driver::DriverError;

use crate::parse::{SwitchType, VmSwitch};

/// The `MachineSpec.options` key naming the switch (`--hyperv-virtual-switch NAME`).
pub const SWITCH_OPTION: &str = "hyperv.switch";

/// The Default Switch's fixed Id (Windows 10 1709 and later).
pub const DEFAULT_SWITCH_ID: &str = "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444";

/// What the user should know when the Default Switch is used.
pub fn default_switch_warning() -> &'static str {
    "using Hyper-V's Default Switch: Windows picks its subnet at boot, so the node's IP address can change after a reboot (timonel re-reads it on every start); pass `--hyperv-virtual-switch <External switch>` for a stable LAN address"
}

/// The switch picked, and a warning for the user when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchChoice {
    pub name: String,
    pub is_default_switch: bool,
    pub warning: Option<String>,
}

fn is_default(s: &VmSwitch) -> bool {
    s.id.eq_ignore_ascii_case(DEFAULT_SWITCH_ID)
}

fn describe(switches: &[VmSwitch]) -> String {
    if switches.is_empty() {
        return "no virtual switch exists".to_string();
    }
    let list: Vec<String> = switches
        .iter()
        .map(|s| {
            if is_default(s) {
                format!("`{}` (Default Switch)", s.name)
            } else {
                format!("`{}` ({})", s.name, s.switch_type)
            }
        })
        .collect();
    format!("found {}", list.join(", "))
}

const CREATE_FIX: &str = "create an External switch bound to your network adapter, in an elevated PowerShell: `New-VMSwitch -Name timonel -NetAdapterName <adapter from Get-NetAdapter> -AllowManagementOS $true`, then pass `--hyperv-virtual-switch timonel`; or use the Default Switch (Windows 10 1709 and later). An Internal switch (`New-VMSwitch -Name timonel -SwitchType Internal`) is not enough: it has no DHCP nor NAT, so the VM never gets an address unless you add `New-NetNat` and a DHCP server yourself";

fn no_switch(reason: String) -> DriverError {
    DriverError::NotAvailable {
        driver: "hyperv".to_string(),
        reason,
        fix: CREATE_FIX.to_string(),
    }
}

/// Picks the switch: the one named by the user, else the Default Switch, else the only External
/// switch. Internal switches other than the Default Switch (no DHCP) and Private switches (no
/// host connectivity) are never picked automatically.
pub fn choose_switch(
    wanted: Option<&str>,
    switches: &[VmSwitch],
) -> Result<SwitchChoice, DriverError> {
    if let Some(wanted) = wanted {
        let Some(s) = switches.iter().find(|s| s.name == wanted) else {
            return Err(no_switch(format!(
                "virtual switch `{wanted}` does not exist ({})",
                describe(switches)
            )));
        };
        let default = is_default(s);
        let warning = match s.switch_type {
            _ if default => Some(default_switch_warning().to_string()),
            SwitchType::External => None,
            SwitchType::Private => {
                return Err(no_switch(format!(
                    "virtual switch `{wanted}` is Private: the host cannot reach VMs on it"
                )))
            }
            _ => Some(format!(
                "virtual switch `{wanted}` is {}: the VM gets an address only if NAT and a DHCP server serve that switch",
                s.switch_type
            )),
        };
        return Ok(SwitchChoice {
            name: s.name.clone(),
            is_default_switch: default,
            warning,
        });
    }
    if let Some(s) = switches.iter().find(|s| is_default(s)) {
        return Ok(SwitchChoice {
            name: s.name.clone(),
            is_default_switch: true,
            warning: Some(default_switch_warning().to_string()),
        });
    }
    let external: Vec<&VmSwitch> = switches
        .iter()
        .filter(|s| s.switch_type == SwitchType::External)
        .collect();
    match external.as_slice() {
        [one] => Ok(SwitchChoice {
            name: one.name.clone(),
            is_default_switch: false,
            warning: None,
        }),
        [] => Err(no_switch(format!(
            "no usable virtual switch: no Default Switch and no External switch ({})",
            describe(switches)
        ))),
        _ => Err(DriverError::Backend {
            op: "choose a virtual switch".to_string(),
            message: format!(
                "several External switches and no Default Switch ({})",
                describe(switches)
            ),
            hint: Some("pick one with `--hyperv-virtual-switch <name>`".to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timonel_driver::Hint;

    fn sw(id: &str, name: &str, t: SwitchType) -> VmSwitch {
        VmSwitch {
            id: id.to_string(),
            name: name.to_string(),
            switch_type: t,
        }
    }

    fn default_switch() -> VmSwitch {
        sw(DEFAULT_SWITCH_ID, "Default Switch", SwitchType::Internal)
    }

    #[test]
    fn prefers_the_default_switch_and_warns() {
        let c = choose_switch(
            None,
            &[sw("1", "LAN", SwitchType::External), default_switch()],
        )
        .unwrap();
        assert_eq!(c.name, "Default Switch");
        assert!(c.is_default_switch);
        assert!(c.warning.unwrap().contains("reboot"));
    }

    #[test]
    fn falls_back_to_the_single_external_switch() {
        let c = choose_switch(
            None,
            &[
                sw("1", "priv", SwitchType::Internal),
                sw("2", "LAN", SwitchType::External),
            ],
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.warning), ("LAN", None));
        let e = choose_switch(
            None,
            &[
                sw("1", "A", SwitchType::External),
                sw("2", "B", SwitchType::External),
            ],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("`A` (External), `B` (External)"),
            "{e}"
        );
    }

    #[test]
    fn refuses_internal_only_and_explains_how_to_fix() {
        let e = choose_switch(
            None,
            &[
                sw("1", "minikube", SwitchType::Internal),
                sw("2", "lab", SwitchType::Private),
            ],
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`minikube` (Internal), `lab` (Private)"),
            "{text}"
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("New-VMSwitch -Name timonel -SwitchType Internal`) is not enough"),
            "{hint}"
        );
        assert!(hint.contains("External"));
        let e = choose_switch(None, &[]).unwrap_err();
        assert!(e.to_string().contains("no virtual switch exists"), "{e}");
    }

    #[test]
    fn honours_the_named_switch() {
        let all = [
            default_switch(),
            sw("1", "LAN", SwitchType::External),
            sw("2", "nat", SwitchType::Internal),
            sw("3", "lab", SwitchType::Private),
        ];
        assert_eq!(choose_switch(Some("LAN"), &all).unwrap().name, "LAN");
        let nat = choose_switch(Some("nat"), &all).unwrap();
        assert!(nat.warning.unwrap().contains("DHCP"));
        assert!(choose_switch(Some("lab"), &all).is_err());
        let e = choose_switch(Some("nope"), &all).unwrap_err();
        assert!(e.to_string().contains("`nope` does not exist"), "{e}");
        assert!(
            choose_switch(Some("Default Switch"), &all)
                .unwrap()
                .is_default_switch
        );
    }
}
