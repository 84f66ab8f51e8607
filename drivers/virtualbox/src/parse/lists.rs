//! `list vms`, `guestproperty get`, `list hostonlyifs`, `list hostonlynets`, `hostonlyif create`.

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
    /// The host's own address on the network, which `list hostonlynets` does not print: the
    /// network's first address (the lower bound masked, plus one).
    pub fn host_address(&self) -> Option<Ipv4Addr> {
        let lower = u32::from(self.lower_ip?);
        let mask = u32::from(self.netmask?);
        Some(Ipv4Addr::from((lower & mask) + 1))
    }
}

/// Splits `Key:   value` lines at the first colon into records, each starting at `Name:`.
/// (Blank lines cannot delimit records: `list hostonlynets` has one inside each block.)
fn records(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out: Vec<Vec<(&str, &str)>> = Vec::new();
    for line in lines(text) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "Name" {
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
    records(text)
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
    records(text)
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
