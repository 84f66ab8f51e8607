//! The profile's NAT network and its static DHCP entries (blocking; run on `spawn_blocking`).

use std::net::Ipv4Addr;

use timonel_driver::DriverError;
use virt::connect::Connect;
use virt::network::Network;
use virt::sys;

use super::conn::{find_network, lv};
use crate::net::{
    bridge_name, network_name, parse_proc_routes, pick_host_ip, pick_subnet, UsedNet,
};
use crate::xml::{parse_dhcp_hosts, parse_network_ranges, parse_subnet, DhcpHost, NetworkConfig};

/// Networks in use: host routes and every libvirt network's ranges.
fn used_networks(conn: &Connect) -> Result<Vec<UsedNet>, DriverError> {
    let mut used = std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_routes(&t))
        .unwrap_or_default();
    let nets = conn
        .list_all_networks(0)
        .map_err(|e| lv("listing networks", e))?;
    for net in nets {
        if let Ok(xml) = net.xml_desc(0) {
            used.extend(
                parse_network_ranges(&xml)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(addr, prefix)| UsedNet { addr, prefix }),
            );
        }
    }
    Ok(used)
}

/// The cluster's network, defined on a free /24 when missing, and started.
pub fn ensure_network(conn: &Connect, cluster: &str) -> Result<Network, DriverError> {
    let name = network_name(cluster);
    let net = match find_network(conn, &name)? {
        Some(net) => net,
        None => {
            let subnet =
                pick_subnet(&used_networks(conn)?).ok_or_else(|| DriverError::Backend {
                    op: format!("creating network `{name}`"),
                    message: "no free 192.168.x.0/24 subnet".to_string(),
                    hint: Some(
                        "delete unused libvirt networks (`virsh net-list --all`)".to_string(),
                    ),
                })?;
            let config = NetworkConfig {
                name: name.clone(),
                bridge: bridge_name(cluster),
                subnet,
                hosts: Vec::new(),
            };
            tracing::debug!(network = %name, ?subnet, "defining network");
            conn.define_network_xml(&config.to_xml())
                .map_err(|e| lv(&format!("defining network `{name}`"), e))?
        }
    };
    start_network(&net, &name)?;
    Ok(net)
}

/// Starts the network when it is not active.
pub fn start_network(net: &Network, name: &str) -> Result<(), DriverError> {
    if !net
        .is_active()
        .map_err(|e| lv(&format!("checking network `{name}`"), e))?
    {
        net.create()
            .map_err(|e| lv(&format!("starting network `{name}`"), e))?;
    }
    Ok(())
}

/// The persistent definition (what DHCP host updates change), or the live one where the
/// connection cannot tell them apart (libvirt's test driver).
fn config_xml(net: &Network) -> Result<String, virt::error::Error> {
    net.xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
        .or_else(|_| net.xml_desc(0))
}

fn update_flags(net: &Network) -> sys::virNetworkUpdateFlags {
    let live = if net.is_active().unwrap_or(false) {
        sys::VIR_NETWORK_UPDATE_AFFECT_LIVE
    } else {
        0
    };
    sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG | live
}

/// The fixed address of `mac`, adding a DHCP host entry (`.10 + index`, or the first free one)
/// when it has none.
pub fn ensure_dhcp_host(
    net: &Network,
    mac: &str,
    host_name: &str,
    index: u32,
) -> Result<Ipv4Addr, DriverError> {
    let op = "reserving the node's address";
    let xml = config_xml(net).map_err(|e| lv(op, e))?;
    let hosts = parse_dhcp_hosts(&xml).map_err(|e| DriverError::backend(op, e))?;
    if let Some(h) = hosts.iter().find(|h| h.mac.eq_ignore_ascii_case(mac)) {
        return Ok(h.ip);
    }
    let subnet = parse_subnet(&xml)
        .map_err(|e| DriverError::backend(op, e))?
        .ok_or_else(|| DriverError::backend(op, "the network has no /24"))?;
    let taken: Vec<Ipv4Addr> = hosts.iter().map(|h| h.ip).collect();
    let ip = pick_host_ip(subnet, index, &taken)
        .ok_or_else(|| DriverError::backend(op, "no free address left in .2-.99"))?;
    let host = DhcpHost {
        mac: mac.to_ascii_lowercase(),
        name: host_name.to_string(),
        ip,
    };
    net.update(
        sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        &host.to_xml(),
        update_flags(net),
    )
    .map_err(|e| lv(op, e))?;
    Ok(ip)
}

/// Drops the DHCP host entry of `mac`, if any.
pub fn remove_dhcp_host(net: &Network, mac: &str) -> Result<(), DriverError> {
    let op = "releasing the node's address";
    let xml = config_xml(net).map_err(|e| lv(op, e))?;
    let hosts = parse_dhcp_hosts(&xml).map_err(|e| DriverError::backend(op, e))?;
    if let Some(h) = hosts.iter().find(|h| h.mac.eq_ignore_ascii_case(mac)) {
        net.update(
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            &h.to_xml(),
            update_flags(net),
        )
        .map_err(|e| lv(op, e))?;
    }
    Ok(())
}

/// The fixed address of `mac` on `net`, if it has one.
pub fn dhcp_host_ip(net: &Network, mac: &str) -> Result<Option<Ipv4Addr>, DriverError> {
    let xml = net.xml_desc(0).map_err(|e| lv("reading the network", e))?;
    Ok(parse_dhcp_hosts(&xml)
        .map_err(|e| DriverError::backend("reading the network", e))?
        .into_iter()
        .find(|h| h.mac.eq_ignore_ascii_case(mac))
        .map(|h| h.ip))
}

/// Stops and undefines the cluster's network. `Ok(false)` when there was none.
pub fn remove_network(conn: &Connect, cluster: &str) -> Result<bool, DriverError> {
    let name = network_name(cluster);
    let Some(net) = find_network(conn, &name)? else {
        return Ok(false);
    };
    if net.is_active().unwrap_or(false) {
        net.destroy()
            .map_err(|e| lv(&format!("stopping network `{name}`"), e))?;
    }
    net.undefine()
        .map_err(|e| lv(&format!("removing network `{name}`"), e))?;
    Ok(true)
}
