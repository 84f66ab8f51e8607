//! `list vms`, `guestproperty get`, `list hostonlyifs`, `list hostonlynets`, `list dhcpservers`,
//! `hostonlyif create`.

use std::net::Ipv4Addr;

use super::{lines, ParseError};

/// A line of `list vms`: `"name" {uuid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    pub name: String,
    pub uuid: String,
}

impl VmEntry {
    /// `"<inaccessible>" {uuid}`: the settings file cannot be read; address it by UUID.
    pub fn inaccessible(&self) -> bool {
        self.name == "<inaccessible>"
    }
}

/// Parses `list vms` (and `list runningvms`). Blank lines are skipped; any other line that is not
/// `"name" {uuid}` is an error.
pub fn parse_list_vms(text: &str) -> Result<Vec<VmEntry>, ParseError> {
    let mut out = Vec::new();
    for line in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || ParseError::new("list vms", format!("unexpected line {line:?}"));
        let rest = line.strip_prefix('"').ok_or_else(bad)?;
        let split = rest.rfind("\" {").ok_or_else(bad)?;
        let uuid = rest[split + 3..].strip_suffix('}').ok_or_else(bad)?;
        out.push(VmEntry {
            name: rest[..split].to_string(),
            uuid: uuid.to_string(),
        });
    }
    Ok(out)
}

/// Parses `guestproperty get` (and `getextradata`): `Value: …` is `Some`, `No value set!` is
/// `None`. Both come with exit code 0.
pub fn parse_guestproperty(text: &str) -> Result<Option<String>, ParseError> {
    for line in lines(text) {
        if let Some(v) = line.strip_prefix("Value: ") {
            return Ok(Some(v.to_string()));
        }
        if line.trim() == "No value set!" {
            return Ok(None);
        }
    }
    Err(ParseError::new(
        "guestproperty get",
        format!("neither `Value:` nor `No value set!` in {:?}", text.trim()),
    ))
}

/// A host-only interface (`list hostonlyifs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOnlyIf {
    pub name: String,
    pub dhcp: bool,
    /// `None` when unset or unreadable.
    pub ip: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub status: String,
    pub network_name: String,
}

impl HostOnlyIf {
    /// The Windows bug: a fresh adapter can report 0.0.0.0 / 15.0.0.0.
    pub fn configured(&self) -> bool {
        matches!(self.ip, Some(ip) if !ip.is_unspecified())
            && matches!(self.netmask, Some(m) if m != Ipv4Addr::new(15, 0, 0, 0) && !m.is_unspecified())
    }
}

/// A host-only network of VirtualBox 7 (`list hostonlynets`, macOS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOnlyNet {
    pub name: String,
    pub enabled: bool,
    pub netmask: Option<Ipv4Addr>,
    pub lower_ip: Option<Ipv4Addr>,
    pub upper_ip: Option<Ipv4Addr>,
}

impl HostOnlyNet {
    /// How many addresses guests can get from the network's `LowerIP`..`UpperIP`, without the
    /// host's own address.
    pub fn usable_leases(&self) -> u32 {
        match (
            self.lower_ip,
            self.upper_ip,
            self.netmask,
            self.host_address(),
        ) {
            (Some(lower), Some(upper), Some(mask), Some(host)) => {
                usable_in_range(lower, upper, lower, mask, &[host])
            }
            _ => 0,
        }
    }

    /// The host's own address on the network, which `list hostonlynets` does not print: the
    /// network's first address (the lower bound masked, plus one).
    pub fn host_address(&self) -> Option<Ipv4Addr> {
        let lower = u32::from(self.lower_ip?);
        let mask = u32::from(self.netmask?);
        Some(Ipv4Addr::from((lower & mask) + 1))
    }
}

/// A DHCP server (`list dhcpservers`), in the 6.1+ layout (`Dhcpd IP:`, `LowerIPAddress:`, …)
/// or the older one (`IP:`, `lowerIPAddress:`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpServer {
    /// `HostInterfaceNetworking-<interface>` for a host-only interface's server.
    pub network_name: String,
    /// The server's own address.
    pub ip: Option<Ipv4Addr>,
    pub lower_ip: Option<Ipv4Addr>,
    pub upper_ip: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub enabled: bool,
}

impl DhcpServer {
    /// The name of the server of host-only interface `interface`.
    pub fn network_name_of(interface: &str) -> String {
        format!("HostInterfaceNetworking-{interface}")
    }

    /// How many addresses the server can lease on the subnet of `host` / `netmask`: its range
    /// inside the subnet, without the network and broadcast addresses, the host's own address
    /// and the server's.
    pub fn usable_leases(&self, host: Ipv4Addr, netmask: Ipv4Addr) -> u32 {
        let (Some(lower), Some(upper)) = (self.lower_ip, self.upper_ip) else {
            return 0;
        };
        let taken: Vec<Ipv4Addr> = std::iter::once(host).chain(self.ip).collect();
        usable_in_range(lower, upper, host, netmask, &taken)
    }
}

/// The addresses of `lower..=upper` that a guest on the subnet of `any` / `netmask` can get:
/// inside the subnet, neither its network nor broadcast address, and not in `taken`.
pub fn usable_in_range(
    lower: Ipv4Addr,
    upper: Ipv4Addr,
    any: Ipv4Addr,
    netmask: Ipv4Addr,
    taken: &[Ipv4Addr],
) -> u32 {
    let mask = u32::from(netmask);
    let network = u32::from(any) & mask;
    let broadcast = network | !mask;
    let first = u32::from(lower).max(network.saturating_add(1));
    let last = u32::from(upper).min(broadcast.saturating_sub(1));
    if first > last {
        return 0;
    }
    let inside = taken
        .iter()
        .map(|t| u32::from(*t))
        .filter(|t| (first..=last).contains(t))
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u32;
    (last - first + 1).saturating_sub(inside)
}

/// Parses `list dhcpservers`, either layout. The indented `Global Configuration:` block and the
/// `Groups:` / `Individual Configs:` lines of 6.1+ are skipped.
pub fn parse_dhcpservers(text: &str) -> Vec<DhcpServer> {
    records(text, "NetworkName")
        .into_iter()
        .map(|r| {
            let either = |new: &str, old: &str| {
                let v = field(&r, new);
                if v.is_empty() {
                    field(&r, old)
                } else {
                    v
                }
            };
            DhcpServer {
                network_name: field(&r, "NetworkName").to_string(),
                ip: either("Dhcpd IP", "IP").parse().ok(),
                lower_ip: either("LowerIPAddress", "lowerIPAddress").parse().ok(),
                upper_ip: either("UpperIPAddress", "upperIPAddress").parse().ok(),
                netmask: field(&r, "NetworkMask").parse().ok(),
                enabled: field(&r, "Enabled").eq_ignore_ascii_case("yes"),
            }
        })
        .collect()
}

/// Splits `Key:   value` lines at the first colon into records, each starting at `first` (the
/// key of a record's first line). Blank lines cannot delimit records: `list hostonlynets` has
/// one inside each block.
fn records<'a>(text: &'a str, first: &str) -> Vec<Vec<(&'a str, &'a str)>> {
    let mut out: Vec<Vec<(&str, &str)>> = Vec::new();
    for line in lines(text) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == first {
            out.push(Vec::new());
        }
        if let Some(record) = out.last_mut() {
            record.push((key, value));
        }
    }
    out
}

fn field<'a>(record: &[(&str, &'a str)], key: &str) -> &'a str {
    record
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| *v)
}

/// Parses `list hostonlyifs`: the 6.1 layout and the 7.x one (which adds `Wireless:`), with
/// CRLF or not. Unknown fields are ignored.
pub fn parse_hostonlyifs(text: &str) -> Vec<HostOnlyIf> {
    records(text, "Name")
        .into_iter()
        .map(|r| HostOnlyIf {
            name: field(&r, "Name").to_string(),
            dhcp: field(&r, "DHCP").eq_ignore_ascii_case("enabled"),
            ip: field(&r, "IPAddress").parse().ok(),
            netmask: field(&r, "NetworkMask").parse().ok(),
            status: field(&r, "Status").to_string(),
            network_name: field(&r, "VBoxNetworkName").to_string(),
        })
        .collect()
}

/// Parses `list hostonlynets` (VirtualBox 7).
pub fn parse_hostonlynets(text: &str) -> Vec<HostOnlyNet> {
    records(text, "Name")
        .into_iter()
        .map(|r| HostOnlyNet {
            name: field(&r, "Name").to_string(),
            enabled: field(&r, "State").eq_ignore_ascii_case("enabled"),
            netmask: field(&r, "NetworkMask").parse().ok(),
            lower_ip: field(&r, "LowerIP").parse().ok(),
            upper_ip: field(&r, "UpperIP").parse().ok(),
        })
        .collect()
}

/// The interface name in `Interface 'vboxnet0' was successfully created`.
pub fn parse_created_interface(text: &str) -> Option<String> {
    lines(text).find_map(|l| {
        let rest = l.trim().strip_prefix("Interface '")?;
        let end = rest.rfind("' was successfully created")?;
        Some(rest[..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn lists_vms_including_inaccessible_ones() {
        let vms = parse_list_vms(&fixture("list-vms.txt")).unwrap();
        assert_eq!(vms.len(), 3);
        assert_eq!(vms[0].name, "dev");
        assert_eq!(vms[0].uuid, "0f1b4e2c-6a3d-4c1e-9b8f-2d7e5a6c4b3a");
        assert_eq!(vms[1].name, "my \"odd\" {vm}");
        assert!(vms[2].inaccessible());
        assert!(parse_list_vms("").unwrap().is_empty());
        assert!(parse_list_vms("dev {abc}\n").is_err());
        assert_eq!(parse_list_vms("\"a\" {b}\r\n").unwrap()[0].uuid, "b");
    }

    #[test]
    fn reads_guest_properties() {
        assert_eq!(
            parse_guestproperty("Value: 192.168.56.101\n").unwrap(),
            Some("192.168.56.101".to_string())
        );
        assert_eq!(parse_guestproperty("No value set!\n").unwrap(), None);
        assert_eq!(parse_guestproperty("No value set!\r\n").unwrap(), None);
        assert_eq!(
            parse_guestproperty("Value: 10.0.2.15\nTimestamp: 1523628880075172000\nFlags: \n")
                .unwrap()
                .as_deref(),
            Some("10.0.2.15")
        );
        assert!(parse_guestproperty("").is_err());
    }

    #[test]
    fn reads_hostonlyifs_six_one() {
        let ifs = parse_hostonlyifs(&fixture("list-hostonlyifs-6.1.txt"));
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].name, "vboxnet0");
        assert_eq!(ifs[0].ip, Some(Ipv4Addr::new(192, 168, 99, 1)));
        assert_eq!(ifs[0].netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert!(!ifs[0].dhcp);
        assert_eq!(ifs[0].network_name, "HostInterfaceNetworking-vboxnet0");
        assert_eq!(ifs[1].ip, Some(Ipv4Addr::new(192, 168, 56, 1)));
        assert!(ifs[1].dhcp);
        assert!(ifs[1].configured());
    }

    #[test]
    fn reads_hostonlyifs_seven_and_windows() {
        let ifs = parse_hostonlyifs(&fixture("list-hostonlyifs-7.0-windows.txt"));
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].name, "VirtualBox Host-Only Ethernet Adapter");
        assert_eq!(ifs[0].status, "Up");
        assert!(ifs[0].configured());
        // The fresh-adapter bug: 0.0.0.0 / 15.0.0.0 is not a configured interface.
        assert_eq!(ifs[1].name, "VirtualBox Host-Only Ethernet Adapter #2");
        assert!(!ifs[1].configured());
        assert!(parse_hostonlyifs("").is_empty());
    }

    #[test]
    fn reads_hostonlynets() {
        let nets = parse_hostonlynets(&fixture("list-hostonlynets-7.0.txt"));
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].name, "timonel-192.168.57.0");
        assert!(nets[0].enabled);
        assert_eq!(nets[0].lower_ip, Some(Ipv4Addr::new(192, 168, 57, 100)));
        assert_eq!(nets[1].upper_ip, Some(Ipv4Addr::new(192, 168, 61, 254)));
        assert!(!nets[1].enabled);
    }

    #[test]
    fn reads_dhcpservers_in_both_layouts() {
        let servers = parse_dhcpservers(&fixture("list-dhcpservers-7.0.txt"));
        assert_eq!(servers.len(), 2);
        let first = &servers[0];
        assert_eq!(first.network_name, "HostInterfaceNetworking-vboxnet0");
        assert_eq!(first.ip, Some(Ipv4Addr::new(192, 168, 56, 100)));
        assert_eq!(first.lower_ip, Some(Ipv4Addr::new(192, 168, 56, 101)));
        assert_eq!(first.upper_ip, Some(Ipv4Addr::new(192, 168, 56, 254)));
        assert_eq!(first.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert!(first.enabled);
        let host = Ipv4Addr::new(192, 168, 56, 1);
        let mask = Ipv4Addr::new(255, 255, 255, 0);
        assert_eq!(first.usable_leases(host, mask), 154);
        // A range holding only the server's own address has nothing to lease.
        let second = &servers[1];
        assert!(!second.enabled);
        assert_eq!(
            second.usable_leases(Ipv4Addr::new(192, 168, 57, 1), mask),
            0
        );
        let old = parse_dhcpservers(&fixture("list-dhcpservers-6.0.txt"));
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].ip, Some(Ipv4Addr::new(192, 168, 56, 100)));
        assert_eq!(old[0].lower_ip, Some(Ipv4Addr::new(192, 168, 56, 101)));
        assert_eq!(old[0].upper_ip, Some(Ipv4Addr::new(192, 168, 56, 254)));
        assert!(old[0].enabled);
        assert!(parse_dhcpservers("").is_empty());
        assert_eq!(
            DhcpServer::network_name_of("vboxnet3"),
            "HostInterfaceNetworking-vboxnet3"
        );
    }

    #[test]
    fn counts_usable_addresses_of_a_range() {
        let ip = |d: u8| Ipv4Addr::new(192, 168, 56, d);
        let mask = Ipv4Addr::new(255, 255, 255, 0);
        assert_eq!(
            usable_in_range(ip(100), ip(254), ip(1), mask, &[ip(1)]),
            155
        );
        // The broadcast and network addresses are never leased.
        assert_eq!(usable_in_range(ip(0), ip(255), ip(1), mask, &[]), 254);
        // Backwards, outside the subnet, or only taken addresses: nothing.
        assert_eq!(usable_in_range(ip(200), ip(100), ip(1), mask, &[]), 0);
        let other = Ipv4Addr::new(192, 168, 99, 100);
        assert_eq!(usable_in_range(other, other, ip(1), mask, &[]), 0);
        assert_eq!(
            usable_in_range(ip(1), ip(2), ip(1), mask, &[ip(1), ip(2)]),
            0
        );
        // A host-only network's host takes its first address.
        let net = HostOnlyNet {
            name: "n".into(),
            enabled: true,
            netmask: Some(mask),
            lower_ip: Some(ip(1)),
            upper_ip: Some(ip(1)),
        };
        assert_eq!(net.host_address(), Some(ip(1)));
        assert_eq!(net.usable_leases(), 0);
    }

    #[test]
    fn reads_the_created_interface() {
        assert_eq!(
            parse_created_interface(
                "0%...10%...100%\nInterface 'vboxnet3' was successfully created\n"
            )
            .as_deref(),
            Some("vboxnet3")
        );
        assert_eq!(
            parse_created_interface(
                "Interface 'VirtualBox Host-Only Ethernet Adapter #2' was successfully created\r\n"
            )
            .as_deref(),
            Some("VirtualBox Host-Only Ethernet Adapter #2")
        );
        assert_eq!(parse_created_interface("nothing"), None);
    }
}
