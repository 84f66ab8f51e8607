//! The host-only network of NIC 2, which gives each VM an address the host can reach: an existing
//! host-only interface in 192.168.56.0/21 (the range VirtualBox 6.1.28+ allows by default), or a
//! new one; on VirtualBox 7 for macOS a host-only network (`hostonlynet`) instead.

use std::net::Ipv4Addr;
use std::time::Duration;

use timonel_driver::{poll_until, DriverError, Reporter, WaitError};

use crate::error::ErrorKind;
use crate::parse::{
    parse_created_interface, parse_hostonlyifs, parse_hostonlynets, HostOnlyIf, HostOnlyNet,
    VBoxVersion,
};
use crate::vboxmanage::VBoxManage;

/// Which kind of host-only networking to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostNetworkMode {
    /// `hostonlynet` on VirtualBox 7 for macOS, else `hostonlyif` (falling back to `hostonlynet`
    /// on 7.x when the host has no `/dev/vboxnetctl`).
    #[default]
    Auto,
    /// Always a host-only interface (`hostonlyif`).
    Interface,
    /// Always a host-only network (`hostonlynet`, VirtualBox 7).
    Network,
}

/// What NIC 2 is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNetwork {
    /// `--nic2 hostonly --hostonlyadapter2 <name>`.
    Interface(String),
    /// `--nic2 hostonlynet --host-only-net2 <name>`.
    Network(String),
}

/// Whether `ip` lies in 192.168.56.0/21.
pub fn in_allowed_range(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 192 && o[1] == 168 && (56..=63).contains(&o[2])
}

/// The first /24 of 192.168.56.0/21 that none of `used` (third octets) takes.
fn free_subnet(used: &[u8]) -> Option<u8> {
    (56..=63).find(|x| !used.contains(x))
}

fn what_if(name: &str) -> String {
    format!("host-only interface `{name}`")
}

/// Finds or makes the host-only network for NIC 2.
pub async fn ensure_host_network(
    vbox: &VBoxManage,
    version: &VBoxVersion,
    mode: HostNetworkMode,
    relist_timeout: Duration,
    relist_every: Duration,
    report: &dyn Reporter,
) -> Result<HostNetwork, DriverError> {
    let use_net = match mode {
        HostNetworkMode::Network => true,
        HostNetworkMode::Interface => false,
        HostNetworkMode::Auto => cfg!(target_os = "macos") && version.major >= 7,
    };
    if use_net {
        return ensure_hostonlynet(vbox, report).await;
    }
    match ensure_hostonlyif(vbox, relist_timeout, relist_every, report).await {
        Err(Fallback::ToNetwork) if version.major >= 7 && mode == HostNetworkMode::Auto => {
            tracing::debug!("no host-only interfaces on this host; using a host-only network");
            ensure_hostonlynet(vbox, report).await
        }
        Err(Fallback::ToNetwork) => Err(DriverError::NotAvailable {
            driver: "virtualbox".into(),
            reason: "VirtualBox cannot create host-only interfaces here (/dev/vboxnetctl)".into(),
            fix: crate::error::KERNEL_MODULE_HINT.into(),
        }),
        Err(Fallback::Error(e)) => Err(e),
        Ok(net) => Ok(net),
    }
}

enum Fallback {
    ToNetwork,
    Error(DriverError),
}

impl From<DriverError> for Fallback {
    fn from(e: DriverError) -> Self {
        Self::Error(e)
    }
}

/// `list hostonlyifs`.
pub(crate) async fn list_hostonly_ifs(vbox: &VBoxManage) -> Result<Vec<HostOnlyIf>, DriverError> {
    let out = vbox
        .call(["list", "hostonlyifs"])
        .await
        .map_err(|e| e.into_driver("host-only interfaces", "list host-only interfaces"))?;
    Ok(parse_hostonlyifs(&out.stdout))
}

async fn ensure_hostonlyif(
    vbox: &VBoxManage,
    relist_timeout: Duration,
    relist_every: Duration,
    report: &dyn Reporter,
) -> Result<HostNetwork, Fallback> {
    let before = list_hostonly_ifs(vbox).await?;
    if let Some(found) = before
        .iter()
        .find(|i| i.configured() && i.ip.is_some_and(in_allowed_range))
    {
        tracing::debug!(interface = %found.name, "using existing host-only interface");
        return Ok(HostNetwork::Interface(found.name.clone()));
    }
    report.step("creating a VirtualBox host-only interface");
    let name = match vbox.call(["hostonlyif", "create"]).await {
        Ok(out) => match parse_created_interface(&out.stdout) {
            Some(name) => name,
            None => find_new_interface(vbox, &before, relist_timeout, relist_every).await?,
        },
        Err(e) if e.is(&ErrorKind::KernelModule) => return Err(Fallback::ToNetwork),
        Err(e) => {
            // Creation can fail and still create the interface (VirtualBox ticket 14040).
            tracing::debug!(error = ?e.error, "hostonlyif create failed; looking for the interface");
            match find_new_interface(vbox, &before, relist_timeout, relist_every).await {
                Ok(name) => name,
                Err(_) => {
                    return Err(Fallback::Error(e.into_driver(
                        "host-only interface",
                        "create a host-only interface",
                    )))
                }
            }
        }
    };
    let used: Vec<u8> = before
        .iter()
        .filter_map(|i| i.ip)
        .filter(|ip| in_allowed_range(*ip))
        .map(|ip| ip.octets()[2])
        .collect();
    let Some(x) = free_subnet(&used) else {
        return Err(Fallback::Error(DriverError::Backend {
            op: "configure a host-only interface".into(),
            message: "every /24 of 192.168.56.0/21 is taken by another host-only interface".into(),
            hint: Some(crate::error::HOST_ONLY_RANGE_HINT.into()),
        }));
    };
    let host_ip = Ipv4Addr::new(192, 168, x, 1);
    vbox.call([
        "hostonlyif".to_string(),
        "ipconfig".into(),
        name.clone(),
        "--ip".into(),
        host_ip.to_string(),
        "--netmask".into(),
        "255.255.255.0".into(),
    ])
    .await
    .map_err(|e| e.into_driver(&what_if(&name), "configure the host-only interface"))?;
    // A DHCP server hands the guests their addresses (.100 and up).
    let dhcp = vbox
        .call([
            "dhcpserver".to_string(),
            "add".into(),
            "--netname".into(),
            format!("HostInterfaceNetworking-{name}"),
            "--ip".into(),
            format!("192.168.{x}.2"),
            "--netmask".into(),
            "255.255.255.0".into(),
            "--lowerip".into(),
            format!("192.168.{x}.100"),
            "--upperip".into(),
            format!("192.168.{x}.254"),
            "--enable".into(),
        ])
        .await;
    if let Err(e) = dhcp {
        report.warn(&format!(
            "could not add a DHCP server to `{name}`; VMs may get no address on it ({})",
            e.error.map(|e| e.message).unwrap_or_default()
        ));
    }
    Ok(HostNetwork::Interface(name))
}

async fn find_new_interface(
    vbox: &VBoxManage,
    before: &[HostOnlyIf],
    timeout: Duration,
    every: Duration,
) -> Result<String, DriverError> {
    let known: Vec<String> = before.iter().map(|i| i.name.clone()).collect();
    poll_until("the new host-only interface", timeout, every, || {
        let known = known.clone();
        async move {
            let now = list_hostonly_ifs(vbox).await?;
            Ok(now
                .into_iter()
                .find(|i| !known.contains(&i.name))
                .map(|i| i.name)
                .ok_or_else(|| "not listed".to_string()))
        }
    })
    .await
    .map_err(|e| match e {
        WaitError::Failed(e) => e,
        WaitError::Timeout { .. } => DriverError::Backend {
            op: "create a host-only interface".into(),
            message: "the host-only adapter just created is not visible".into(),
            hint: Some("a known VirtualBox bug: reinstall VirtualBox".into()),
        },
    })
}

/// `list hostonlynets` (VirtualBox 7).
pub(crate) async fn list_hostonly_nets(vbox: &VBoxManage) -> Result<Vec<HostOnlyNet>, DriverError> {
    let out = vbox
        .call(["list", "hostonlynets"])
        .await
        .map_err(|e| e.into_driver("host-only networks", "list host-only networks"))?;
    Ok(parse_hostonlynets(&out.stdout))
}

async fn ensure_hostonlynet(
    vbox: &VBoxManage,
    report: &dyn Reporter,
) -> Result<HostNetwork, DriverError> {
    let nets = list_hostonly_nets(vbox).await?;
    if let Some(found) = nets
        .iter()
        .find(|n| n.enabled && n.lower_ip.is_some_and(in_allowed_range))
    {
        return Ok(HostNetwork::Network(found.name.clone()));
    }
    let used: Vec<u8> = nets
        .iter()
        .filter_map(|n| n.lower_ip)
        .filter(|ip| in_allowed_range(*ip))
        .map(|ip| ip.octets()[2])
        .collect();
    let x = free_subnet(&used).ok_or_else(|| DriverError::Backend {
        op: "create a host-only network".into(),
        message: "every /24 of 192.168.56.0/21 is taken by another host-only network".into(),
        hint: None,
    })?;
    let name = format!("timonel-192.168.{x}.0");
    report.step(&format!("creating VirtualBox host-only network `{name}`"));
    vbox.call([
        "hostonlynet".to_string(),
        "add".into(),
        "--name".into(),
        name.clone(),
        "--netmask".into(),
        "255.255.255.0".into(),
        "--lower-ip".into(),
        format!("192.168.{x}.100"),
        "--upper-ip".into(),
        format!("192.168.{x}.254"),
        "--enable".into(),
    ])
    .await
    .map_err(|e| {
        e.into_driver(
            &format!("host-only network `{name}`"),
            "create a host-only network",
        )
    })?;
    Ok(HostNetwork::Network(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_allowed_range() {
        assert!(in_allowed_range(Ipv4Addr::new(192, 168, 56, 1)));
        assert!(in_allowed_range(Ipv4Addr::new(192, 168, 63, 254)));
        assert!(!in_allowed_range(Ipv4Addr::new(192, 168, 64, 1)));
        assert!(!in_allowed_range(Ipv4Addr::new(192, 168, 55, 1)));
        assert!(!in_allowed_range(Ipv4Addr::new(192, 168, 99, 1)));
        assert_eq!(free_subnet(&[]), Some(56));
        assert_eq!(free_subnet(&[56, 57]), Some(58));
        assert_eq!(free_subnet(&[56, 57, 58, 59, 60, 61, 62, 63]), None);
    }
}
