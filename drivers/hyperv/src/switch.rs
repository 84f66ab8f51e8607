//! Choosing the virtual switch the VM's network adapter connects to.

use std::time::Duration;

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

/// The warning for an External switch this computer does not share (`AllowManagementOS` off):
/// the VM gets an address from the network, but the host reaches it only through another
/// adapter on that network, so SSH may never connect.
fn not_shared_warning(s: &VmSwitch) -> Option<String> {
    (!s.allow_management_os).then(|| {
        format!(
            "virtual switch `{name}` is External but not shared with this computer (AllowManagementOS is off): timonel reaches the VM only if this computer has another network adapter on that network; if the node's SSH never answers, share it in an elevated PowerShell (`Set-VMSwitch -Name '{name}' -AllowManagementOS $true`) or pick another switch with `--hyperv-virtual-switch <name>`",
            name = s.name
        )
    })
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
            SwitchType::External => not_shared_warning(s),
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
            warning: not_shared_warning(one),
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

/// How a switch is described in the no-address error.
fn kind_of(found: Option<&VmSwitch>) -> String {
    match found {
        None => "a switch timonel could not look up".to_string(),
        Some(s) if is_default(s) => "the Default Switch".to_string(),
        Some(s) => match s.switch_type {
            SwitchType::External => {
                "External: addresses come from the DHCP server of the network it is bridged to"
                    .to_string()
            }
            SwitchType::Internal => {
                "Internal: no DHCP server unless you set up NAT and one yourself".to_string()
            }
            SwitchType::Private => "Private: no DHCP, and the host cannot reach it".to_string(),
            other => other.to_string(),
        },
    }
}

/// The error when a VM got no IPv4 address before the deadline: it names the VM's switch and
/// says how to pick another. A guest that reported only link-local addresses (`fe80::…`,
/// `169.254.…`) is up and reporting through KVP, so the switch gave it no lease; a guest that
/// reported nothing may also lack `hv_kvp_daemon`.
pub fn no_address_error(
    vm: &str,
    after: Duration,
    last: &str,
    switch: &str,
    found: Option<&VmSwitch>,
    reported: &[String],
) -> DriverError {
    let pick = "pick a switch that hands out addresses with `--hyperv-virtual-switch <name>`: the Default Switch, or an External switch on a network with a DHCP server (`Get-VMSwitch | Select-Object Name, SwitchType` lists them)";
    if switch.is_empty() {
        return DriverError::Backend {
            op: format!("wait for the IPv4 address of Hyper-V VM `{vm}`"),
            message: format!(
                "none after {after:?}: its network adapter is not connected to any virtual switch (last seen: {last})"
            ),
            hint: Some(format!("connect it, or delete the node and create it again; {pick}")),
        };
    }
    let on = format!("virtual switch `{switch}` ({})", kind_of(found));
    let (message, hint) = if reported.is_empty() {
        (
            format!("none after {after:?} on {on}; the guest reported no address at all (last seen: {last})"),
            format!("if the switch is the problem, {pick}; otherwise the guest may not run hv_kvp_daemon, which reports its addresses to Hyper-V (install hyperv-daemons or linux-cloud-tools in the image)"),
        )
    } else {
        (
            format!(
                "none after {after:?} on {on}: the guest is up but reported only {} (no DHCP lease)",
                reported.join(", ")
            ),
            format!("the switch gave the VM no address: {pick}"),
        )
    };
    DriverError::Backend {
        op: format!("wait for the IPv4 address of Hyper-V VM `{vm}`"),
        message,
        hint: Some(hint),
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
            allow_management_os: t != SwitchType::Private,
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
    fn no_address_names_the_switch_and_how_to_pick_another() {
        let internal = sw("1", "minikube", SwitchType::Internal);
        let e = no_address_error(
            "dev",
            Duration::from_secs(300),
            "running, only fe80::215:5dff:fe45:3110",
            "minikube",
            Some(&internal),
            &["fe80::215:5dff:fe45:3110".to_string()],
        );
        assert_eq!(
            e.to_string(),
            "wait for the IPv4 address of Hyper-V VM `dev` failed: none after 300s on virtual switch `minikube` (Internal: no DHCP server unless you set up NAT and one yourself): the guest is up but reported only fe80::215:5dff:fe45:3110 (no DHCP lease)"
        );
        let hint = e.hint().unwrap();
        assert!(hint.starts_with("the switch gave the VM no address: pick a switch that hands out addresses with `--hyperv-virtual-switch <name>`"), "{hint}");
        let silent = no_address_error("dev", Duration::from_secs(5), "running", "LAN", None, &[]);
        assert!(silent
            .to_string()
            .contains("`LAN` (a switch timonel could not look up)"));
        assert!(silent.hint().unwrap().contains("hv_kvp_daemon"));
        let unplugged = no_address_error("dev", Duration::from_secs(5), "running", "", None, &[]);
        assert!(unplugged
            .to_string()
            .contains("not connected to any virtual switch"));
    }

    #[test]
    fn warns_of_an_external_switch_the_host_does_not_share() {
        let lan = VmSwitch {
            allow_management_os: false,
            ..sw("1", "VM LAN", SwitchType::External)
        };
        for c in [
            choose_switch(Some("VM LAN"), std::slice::from_ref(&lan)).unwrap(),
            choose_switch(None, std::slice::from_ref(&lan)).unwrap(),
        ] {
            assert_eq!(c.name, "VM LAN");
            let w = c.warning.unwrap();
            assert!(w.contains("not shared with this computer"), "{w}");
            assert!(
                w.contains("`Set-VMSwitch -Name 'VM LAN' -AllowManagementOS $true`"),
                "{w}"
            );
        }
        let shared = sw("1", "LAN", SwitchType::External);
        assert_eq!(choose_switch(Some("LAN"), &[shared]).unwrap().warning, None);
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
