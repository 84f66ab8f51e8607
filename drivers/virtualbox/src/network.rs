//! The host-only network of NIC 2, which gives each VM an address the host can reach: an existing
//! host-only interface in 192.168.56.0/21 (the range VirtualBox 6.1.28+ allows by default), or a
//! new one; on VirtualBox 7 for macOS a host-only network (`hostonlynet`) instead.

use std::net::Ipv4Addr;
use std::time::Duration;

use timonel_driver::{poll_until, DriverError, Reporter, WaitError};

use crate::error::ErrorKind;
use crate::parse::{
    parse_created_interface, parse_dhcpservers, parse_hostonlyifs, parse_hostonlynets, DhcpServer,
    HostOnlyIf, HostOnlyNet, VBoxVersion,
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

/// `list dhcpservers`.
async fn list_dhcp_servers(vbox: &VBoxManage) -> Result<Vec<DhcpServer>, DriverError> {
    let out = vbox
        .call(["list", "dhcpservers"])
        .await
        .map_err(|e| e.into_driver("DHCP servers", "list DHCP servers"))?;
    Ok(parse_dhcpservers(&out.stdout))
}

/// The DHCP server timonel gives a host-only interface at `host` / `netmask`: the server on the
/// subnet's first address that is not the host's, leases from `.100` (or the middle of a
/// smaller subnet) to the last address before the broadcast. `None` for a subnet too small.
fn dhcp_plan(host: Ipv4Addr, netmask: Ipv4Addr) -> Option<(Ipv4Addr, Ipv4Addr, Ipv4Addr)> {
    let mask = u32::from(netmask);
    let network = u32::from(host) & mask;
    let size = (!mask).checked_add(1)?;
    if size < 8 {
        return None;
    }
    let server = if network + 1 == u32::from(host) {
        network + 2
    } else {
        network + 1
    };
    let lower = network + (size / 2).min(100).max(server - network + 1);
    let upper = network + size - 2;
    (lower <= upper).then(|| {
        (
            Ipv4Addr::from(server),
            Ipv4Addr::from(lower),
            Ipv4Addr::from(upper),
        )
    })
}

/// `dhcpserver add|modify --netname … --ip … --netmask … --lowerip … --upperip … --enable`.
async fn configure_dhcp(
    vbox: &VBoxManage,
    verb: &str,
    interface: &str,
    host: Ipv4Addr,
    netmask: Ipv4Addr,
) -> Result<(), DriverError> {
    let Some((server, lower, upper)) = dhcp_plan(host, netmask) else {
        return Err(DriverError::Backend {
            op: format!("add a DHCP server to {}", what_if(interface)),
            message: format!("its subnet {host}/{netmask} is too small to lease addresses"),
            hint: Some(format!(
                "give `{interface}` a /24 (`VBoxManage hostonlyif ipconfig {interface} --ip \
                 192.168.56.1 --netmask 255.255.255.0`), or remove it"
            )),
        });
    };
    vbox.call([
        "dhcpserver".to_string(),
        verb.into(),
        "--netname".into(),
        DhcpServer::network_name_of(interface),
        "--ip".into(),
        server.to_string(),
        "--netmask".into(),
        netmask.to_string(),
        "--lowerip".into(),
        lower.to_string(),
        "--upperip".into(),
        upper.to_string(),
        "--enable".into(),
    ])
    .await
    .map(|_| ())
    .map_err(|e| e.into_driver(&what_if(interface), "set up its DHCP server"))
}

/// What an existing host-only interface needs before guests get addresses on it.
enum Lease {
    /// An enabled DHCP server with free addresses.
    Ready,
    /// No DHCP server: timonel adds one.
    NoServer,
    /// A server with free addresses, switched off: timonel enables it.
    Disabled,
    /// A server whose range has no address to give (the reason).
    Empty(String),
}

fn lease_state(interface: &HostOnlyIf, servers: &[DhcpServer]) -> Lease {
    let (Some(host), Some(mask)) = (interface.ip, interface.netmask) else {
        return Lease::NoServer;
    };
    let wanted = DhcpServer::network_name_of(&interface.name);
    let Some(server) = servers.iter().find(|s| s.network_name == wanted) else {
        return Lease::NoServer;
    };
    if server.usable_leases(host, mask) == 0 {
        let show = |ip: Option<Ipv4Addr>| ip.map_or_else(|| "?".to_string(), |ip| ip.to_string());
        return Lease::Empty(format!(
            "its DHCP server `{wanted}` leases {}–{}, which holds no free address of {host}/{mask} \
             (the host's address {host} and the server's {} are not leased)",
            show(server.lower_ip),
            show(server.upper_ip),
            show(server.ip)
        ));
    }
    if server.enabled {
        Lease::Ready
    } else {
        Lease::Disabled
    }
}

async fn ensure_hostonlyif(
    vbox: &VBoxManage,
    relist_timeout: Duration,
    relist_every: Duration,
    report: &dyn Reporter,
) -> Result<HostNetwork, Fallback> {
    let before = list_hostonly_ifs(vbox).await?;
    let candidates: Vec<&HostOnlyIf> = before
        .iter()
        .filter(|i| i.configured() && i.ip.is_some_and(in_allowed_range))
        .collect();
    let servers = list_dhcp_servers(vbox).await?;
    if !candidates.is_empty() {
        return Ok(use_existing_interface(vbox, &candidates, &servers, report).await?);
    }
    report.step("creating a VirtualBox host-only interface");
    let name = match vbox.call(["hostonlyif", "create"]).await {
        Ok(out) => match parse_created_interface(&out.stdout) {
            Some(name) => name,
            None => find_new_interface(vbox, &before, relist_timeout, relist_every).await?,
        },
        Err(e) if e.is(&ErrorKind::KernelModule) => return Err(Fallback::ToNetwork),
        Err(e) => return Err(Fallback::Error(failed_create(vbox, &before, e).await)),
    };
    let used: Vec<u8> = before
        .iter()
        .filter_map(|i| i.ip)
        .filter(|ip| in_allowed_range(*ip))
        .map(|ip| ip.octets()[2])
        .collect();
    let configured = match free_subnet(&used) {
        None => Err(DriverError::Backend {
            op: "configure a host-only interface".into(),
            message: "every /24 of 192.168.56.0/21 is taken by another host-only interface".into(),
            hint: Some(crate::error::HOST_ONLY_RANGE_HINT.into()),
        }),
        Some(x) => configure_new_interface(vbox, &name, x, &servers).await,
    };
    if let Err(e) = configured {
        // Leave nothing of this create behind: the server (if it got one), then the interface.
        let _ = vbox
            .call([
                "dhcpserver".to_string(),
                "remove".into(),
                "--netname".into(),
                DhcpServer::network_name_of(&name),
            ])
            .await;
        let _ = vbox.call(["hostonlyif", "remove", name.as_str()]).await;
        return Err(Fallback::Error(e));
    }
    Ok(HostNetwork::Interface(name))
}

/// The first in-range interface guests can get an address on: one whose DHCP server is ready,
/// else one that only lacks a server (one is added) or has it switched off (it is enabled).
/// When every candidate's server has an empty range, that is an error saying how to fix it.
async fn use_existing_interface(
    vbox: &VBoxManage,
    candidates: &[&HostOnlyIf],
    servers: &[DhcpServer],
    report: &dyn Reporter,
) -> Result<HostNetwork, DriverError> {
    let states: Vec<(&HostOnlyIf, Lease)> = candidates
        .iter()
        .map(|i| (*i, lease_state(i, servers)))
        .collect();
    if let Some((i, _)) = states.iter().find(|(_, l)| matches!(l, Lease::Ready)) {
        tracing::debug!(interface = %i.name, "using existing host-only interface");
        return Ok(HostNetwork::Interface(i.name.clone()));
    }
    for (i, lease) in &states {
        let (Some(host), Some(mask)) = (i.ip, i.netmask) else {
            continue;
        };
        let verb = match lease {
            Lease::NoServer => "add",
            Lease::Disabled => "modify",
            _ => continue,
        };
        report.step(&format!(
            "giving VirtualBox host-only interface `{}` a DHCP server",
            i.name
        ));
        configure_dhcp(vbox, verb, &i.name, host, mask).await?;
        return Ok(HostNetwork::Interface(i.name.clone()));
    }
    let (i, why) = states
        .iter()
        .find_map(|(i, l)| match l {
            Lease::Empty(why) => Some((*i, why.clone())),
            _ => None,
        })
        .ok_or_else(|| DriverError::backend("choose a host-only interface", "no candidate"))?;
    let netname = DhcpServer::network_name_of(&i.name);
    let fix =
        i.ip.zip(i.netmask)
            .and_then(|(host, mask)| dhcp_plan(host, mask))
            .map_or_else(String::new, |(_, lower, upper)| {
                format!(" --lowerip {lower} --upperip {upper}")
            });
    Err(DriverError::Backend {
        op: format!("use {}", what_if(&i.name)),
        message: format!("guests can get no address on it: {why}"),
        hint: Some(format!(
            "widen the range: `VBoxManage dhcpserver modify --netname {netname}{fix} --enable`, \
             or remove the server (`VBoxManage dhcpserver remove --netname {netname}`) and \
             timonel adds one"
        )),
    })
}

/// A new interface at `192.168.<x>.1/24` with a DHCP server leasing `.100`–`.254`. An orphan
/// server of an earlier interface of the same name (VirtualBox keeps them) is reused.
async fn configure_new_interface(
    vbox: &VBoxManage,
    name: &str,
    x: u8,
    servers: &[DhcpServer],
) -> Result<(), DriverError> {
    let host_ip = Ipv4Addr::new(192, 168, x, 1);
    let netmask = Ipv4Addr::new(255, 255, 255, 0);
    vbox.call([
        "hostonlyif".to_string(),
        "ipconfig".into(),
        name.to_string(),
        "--ip".into(),
        host_ip.to_string(),
        "--netmask".into(),
        netmask.to_string(),
    ])
    .await
    .map_err(|e| e.into_driver(&what_if(name), "configure the host-only interface"))?;
    let orphan = servers
        .iter()
        .any(|s| s.network_name == DhcpServer::network_name_of(name));
    let verb = if orphan { "modify" } else { "add" };
    configure_dhcp(vbox, verb, name, host_ip, netmask).await
}

/// `hostonlyif create` failed. It can fail and still leave an interface behind (VirtualBox
/// ticket 14040): whatever appeared since `before` is removed, and the error says so.
async fn failed_create(
    vbox: &VBoxManage,
    before: &[HostOnlyIf],
    e: crate::error::CallError,
) -> DriverError {
    let known: Vec<&str> = before.iter().map(|i| i.name.as_str()).collect();
    let mut removed = Vec::new();
    if let Ok(now) = list_hostonly_ifs(vbox).await {
        for i in now.iter().filter(|i| !known.contains(&i.name.as_str())) {
            if vbox
                .call(["hostonlyif", "remove", i.name.as_str()])
                .await
                .is_ok()
            {
                removed.push(format!("`{}`", i.name));
            }
        }
    }
    let message = e
        .error
        .as_ref()
        .map(|x| x.lines.join("; "))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| e.stderr.trim().to_string());
    let cleanup = if removed.is_empty() {
        "it left no interface behind".to_string()
    } else {
        format!(
            "the interface it left behind ({}) was removed",
            removed.join(", ")
        )
    };
    DriverError::Backend {
        op: "create a host-only interface".into(),
        message: format!("`VBoxManage hostonlyif create` failed: {message}; {cleanup}"),
        hint: Some(
            "try again; if it keeps failing, create one yourself (`VBoxManage hostonlyif create`, \
             on Windows from an elevated console, accepting the network driver prompt) or \
             reinstall VirtualBox"
                .into(),
        ),
    }
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
    let in_range: Vec<&HostOnlyNet> = nets
        .iter()
        .filter(|n| n.enabled && n.lower_ip.is_some_and(in_allowed_range))
        .collect();
    if let Some(found) = in_range.iter().find(|n| n.usable_leases() > 0) {
        return Ok(HostNetwork::Network(found.name.clone()));
    }
    if let Some(empty) = in_range.first() {
        let show = |ip: Option<Ipv4Addr>| ip.map_or_else(|| "?".to_string(), |ip| ip.to_string());
        let host = show(empty.host_address());
        return Err(DriverError::Backend {
            op: format!("use host-only network `{}`", empty.name),
            message: format!(
                "guests can get no address on it: its range {}–{} (netmask {}) holds no free \
                 address (the host takes {host})",
                show(empty.lower_ip),
                show(empty.upper_ip),
                show(empty.netmask)
            ),
            hint: Some(format!(
                "widen it (`VBoxManage hostonlynet modify --name {name} --lower-ip <first> \
                 --upper-ip <last>`), or remove it (`VBoxManage hostonlynet remove --name \
                 {name}`) and timonel creates one",
                name = empty.name
            )),
        });
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

    #[test]
    fn plans_a_dhcp_server_for_a_subnet() {
        let ip = |c: u8, d: u8| Ipv4Addr::new(192, 168, c, d);
        let mask24 = Ipv4Addr::new(255, 255, 255, 0);
        assert_eq!(
            dhcp_plan(ip(57, 1), mask24),
            Some((ip(57, 2), ip(57, 100), ip(57, 254)))
        );
        // A host that is not on .1 leaves .1 to the server.
        assert_eq!(
            dhcp_plan(ip(57, 10), mask24),
            Some((ip(57, 1), ip(57, 100), ip(57, 254)))
        );
        // A /28: leases from the middle.
        let mask28 = Ipv4Addr::new(255, 255, 255, 240);
        assert_eq!(
            dhcp_plan(ip(57, 1), mask28),
            Some((ip(57, 2), ip(57, 8), ip(57, 14)))
        );
        assert_eq!(
            dhcp_plan(ip(57, 1), Ipv4Addr::new(255, 255, 255, 252)),
            None
        );
    }
}
