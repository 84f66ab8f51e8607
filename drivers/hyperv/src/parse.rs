//! Pure parsers for what the scripts print: `ConvertTo-Json` output (compressed, or the 5.1
//! layout), VM states and guest addresses.

use std::net::{IpAddr, Ipv4Addr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use timonel_driver::{DriverError, MachineState};

/// Removes a BOM, CRLFs and surrounding whitespace. `None` when nothing was printed.
fn clean(stdout: &str) -> Option<String> {
    let s = stdout.trim_start_matches('\u{feff}').replace('\r', "");
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Parses one JSON value printed by `ConvertTo-Json`.
pub fn parse_json<T: DeserializeOwned>(what: &str, stdout: &str) -> Result<T, DriverError> {
    let text = clean(stdout).ok_or_else(|| DriverError::Parse {
        what: what.to_string(),
        message: "PowerShell printed nothing".to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| DriverError::Parse {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Parses a JSON array printed by `ConvertTo-Json @(…)`. An empty pipeline may print `[]` or
/// nothing at all; both are an empty list. A bare object (a one-element array unrolled by a
/// pipe) is a list of one.
pub fn parse_json_list<T: DeserializeOwned>(
    what: &str,
    stdout: &str,
) -> Result<Vec<T>, DriverError> {
    if clean(stdout).is_none() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = parse_json(what, stdout)?;
    let value = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Null => return Ok(Vec::new()),
        one => serde_json::Value::Array(vec![one]),
    };
    serde_json::from_value(value).map_err(|e| DriverError::Parse {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// `null`, a string, or an array of strings: how PowerShell renders a list property.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<Option<String>>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v.into_iter().flatten().collect(),
    })
}

/// The switch types, as `ConvertTo-Json` writes them (integers), or as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchType {
    Private,
    Internal,
    External,
    Other(i64),
}

impl<'de> Deserialize<'de> for SwitchType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::N(0) => Self::Private,
            Raw::N(1) => Self::Internal,
            Raw::N(2) => Self::External,
            Raw::N(n) => Self::Other(n),
            Raw::S(s) => match s.to_ascii_lowercase().as_str() {
                "private" => Self::Private,
                "internal" => Self::Internal,
                "external" => Self::External,
                _ => Self::Other(-1),
            },
        })
    }
}

impl std::fmt::Display for SwitchType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Private => f.write_str("Private"),
            Self::Internal => f.write_str("Internal"),
            Self::External => f.write_str("External"),
            Self::Other(n) => write!(f, "type {n}"),
        }
    }
}

/// One virtual switch (`Get-VMSwitch | Select Id, Name, SwitchType, AllowManagementOS`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VmSwitch {
    pub id: String,
    pub name: String,
    pub switch_type: SwitchType,
    /// Whether this computer shares the switch's network adapter (`AllowManagementOS`): off, an
    /// External switch's network is reachable from the host only through another adapter.
    /// Absent in older answers: taken as shared.
    #[serde(rename = "AllowManagementOS", default = "shared")]
    pub allow_management_os: bool,
}

fn shared() -> bool {
    true
}

/// A VM as the scripts describe it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VmInfo {
    #[serde(rename = "VMId")]
    pub vm_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub notes: String,
}

/// What `inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    #[serde(default, deserialize_with = "null_list")]
    pub switches: Vec<VmSwitch>,
    #[serde(default, rename = "VMs", deserialize_with = "null_list")]
    pub vms: Vec<VmInfo>,
}

fn null_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(t)) => vec![t],
    })
}

/// What `ip` prints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpReport {
    #[serde(rename = "VMId")]
    pub vm_id: String,
    pub state: String,
    #[serde(rename = "IPAddresses", default, deserialize_with = "string_list")]
    pub ip_addresses: Vec<String>,
    /// The virtual switch of the VM's adapter (several joined by `,`), empty when unconnected.
    #[serde(default)]
    pub switch_name: String,
}

/// What the stop scripts print.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StopReport {
    #[serde(rename = "VMId")]
    pub vm_id: String,
    pub state: String,
    pub forced: bool,
}

/// One removed VM and the files that were attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Removed {
    #[serde(rename = "VMId")]
    pub vm_id: String,
    pub name: String,
    #[serde(default, deserialize_with = "string_list")]
    pub files: Vec<String>,
}

/// What the probe prints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeReport {
    pub module: bool,
    #[serde(default)]
    pub module_version: String,
    pub hypervisor: bool,
    pub admin: bool,
    #[serde(rename = "HyperVAdmin")]
    pub hyperv_admin: bool,
    #[serde(default)]
    pub vmms: String,
    #[serde(default)]
    pub windows: String,
}

/// Maps a Hyper-V `VMState` name to a [`MachineState`]. The numeric forms of PowerShell 5.1's
/// `ConvertTo-Json` are accepted too. Anything unknown stays `Unknown`, never running.
pub fn parse_vm_state(raw: &str) -> MachineState {
    let s = raw.trim();
    let name = match s {
        "1" => "Other",
        "2" => "Running",
        "3" => "Off",
        "4" => "Stopping",
        "6" => "Saved",
        "9" => "Paused",
        "10" => "Starting",
        "11" => "Reset",
        "32773" => "Saving",
        "32776" => "Pausing",
        "32777" => "Resuming",
        "32779" => "FastSaved",
        "32780" => "FastSaving",
        other => other,
    };
    match name.to_ascii_lowercase().as_str() {
        "running" => MachineState::Running,
        "off" => MachineState::Stopped,
        "saved" | "fastsaved" => MachineState::Suspended,
        "paused" => MachineState::Paused,
        "starting" | "resuming" | "reset" => MachineState::Starting,
        "stopping" | "saving" | "pausing" | "fastsaving" => MachineState::Stopping,
        l if l.ends_with("critical") => MachineState::Error { raw: s.to_string() },
        _ => MachineState::Unknown { raw: s.to_string() },
    }
}

/// The node address among what KVP reported: the first IPv4 address that is not link-local
/// (169.254/16) nor unspecified. IPv6 (`fe80::…` first, while DHCPv4 is still running) is skipped.
pub fn pick_ipv4(addresses: &[String]) -> Option<IpAddr> {
    addresses
        .iter()
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_link_local() && !ip.is_unspecified() && !ip.is_loopback())
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PowerShell 5.1's layout (docs/hypervisor-tools.md): 4-space indent, two spaces after the colon,
    /// integer enums.
    const SWITCHES_51: &str = "[\r\n    {\r\n        \"Id\":  \"c08cb7b8-9b3c-408e-8e30-5e16a3aeb444\",\r\n        \"Name\":  \"Default Switch\",\r\n        \"SwitchType\":  1\r\n    },\r\n    {\r\n        \"Id\":  \"1e8e6a0c-4c3a-4d53-9c35-2b6d0e0d2a11\",\r\n        \"Name\":  \"Externo (Wi-Fi)\",\r\n        \"SwitchType\":  2\r\n    }\r\n]\r\n";

    #[test]
    fn parses_the_51_layout_and_integer_enums() {
        let s: Vec<VmSwitch> = parse_json_list("switches", SWITCHES_51).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "Default Switch");
        assert_eq!(s[0].switch_type, SwitchType::Internal);
        assert_eq!(s[1].switch_type, SwitchType::External);
    }

    #[test]
    fn empty_lists_are_empty_however_printed() {
        for empty in ["", "\r\n", "[]\r\n", "\u{feff}[]", "null"] {
            let v: Vec<VmSwitch> = parse_json_list("switches", empty).unwrap();
            assert!(v.is_empty(), "{empty:?}");
        }
        // A one-element array unrolled into a bare object.
        let one = "{\"Id\":\"x\",\"Name\":\"LAN\",\"SwitchType\":\"External\"}\r\n";
        let v: Vec<VmSwitch> = parse_json_list("switches", one).unwrap();
        assert_eq!(v[0].switch_type, SwitchType::External);
        assert!(parse_json_list::<VmSwitch>("switches", "Name Id\r\n---- --").is_err());
    }

    #[test]
    fn parses_inspect_with_null_and_single_lists() {
        let i: Inspect = parse_json("inspect", "{\"Switches\":[],\"VMs\":null}\r\n").unwrap();
        assert!(i.switches.is_empty() && i.vms.is_empty());
        let i: Inspect = parse_json(
            "inspect",
            "{\"Switches\":{\"Id\":\"a\",\"Name\":\"LAN\",\"SwitchType\":2},\"VMs\":[{\"VMId\":\"id1\",\"Name\":\"dev\",\"State\":\"Off\",\"Notes\":\"timonel:machine=dev\"}]}",
        )
        .unwrap();
        assert_eq!(i.switches.len(), 1);
        assert_eq!(i.vms[0].vm_id, "id1");
        assert!(parse_json::<Inspect>("inspect", "").is_err());
    }

    #[test]
    fn ip_report_accepts_null_one_or_many() {
        let r: IpReport = parse_json(
            "ip",
            "{\"VMId\":\"x\",\"State\":\"Running\",\"IPAddresses\":null}",
        )
        .unwrap();
        assert!(r.ip_addresses.is_empty());
        let r: IpReport = parse_json(
            "ip",
            "{\"VMId\":\"x\",\"State\":\"Running\",\"IPAddresses\":\"172.20.1.5\"}",
        )
        .unwrap();
        assert_eq!(r.ip_addresses, ["172.20.1.5"]);
        let r: IpReport = parse_json(
            "ip",
            "{\"VMId\":\"x\",\"State\":\"Running\",\"IPAddresses\":[\"fe80::215:5dff:fe45:3110\",\"172.20.1.5\"]}\r\n",
        )
        .unwrap();
        assert_eq!(
            pick_ipv4(&r.ip_addresses),
            Some("172.20.1.5".parse().unwrap())
        );
    }

    #[test]
    fn picks_ipv4_and_skips_link_local_and_ipv6() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_ipv4(&v(&["fe80::215:5dff:fe45:3110"])), None);
        assert_eq!(pick_ipv4(&v(&["2001:db8::5", "169.254.3.4"])), None);
        assert_eq!(
            pick_ipv4(&v(&[
                "fe80::1",
                "169.254.3.4",
                "192.168.1.20",
                "172.20.0.9"
            ])),
            Some("192.168.1.20".parse().unwrap())
        );
        assert_eq!(pick_ipv4(&[]), None);
    }

    #[test]
    fn maps_every_documented_state() {
        use MachineState::*;
        let cases = [
            ("Running\r\n", Running),
            ("Off", Stopped),
            ("Saved", Suspended),
            ("FastSaved", Suspended),
            ("Paused", Paused),
            ("Starting", Starting),
            ("Resuming", Starting),
            ("Reset", Starting),
            ("Stopping", Stopping),
            ("Saving", Stopping),
            ("Pausing", Stopping),
            ("FastSaving", Stopping),
            ("2", Running),
            ("3", Stopped),
            ("32779", Suspended),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_vm_state(raw), want, "{raw:?}");
        }
        for critical in ["OffCritical", "RunningCritical", "SavedCritical"] {
            assert_eq!(
                parse_vm_state(critical),
                Error {
                    raw: critical.to_string()
                }
            );
        }
        for unknown in ["Other", "1", "32790", "Encendida", ""] {
            let s = parse_vm_state(unknown);
            assert!(matches!(s, Unknown { .. }), "{unknown:?} → {s}");
            assert!(!s.is_running());
        }
    }

    #[test]
    fn parses_probe_and_removed() {
        let p: ProbeReport = parse_json(
            "probe",
            "{\"Module\":true,\"ModuleVersion\":\"2.0.0.0\",\"Hypervisor\":true,\"Admin\":false,\"HyperVAdmin\":true,\"Vmms\":\"Running\",\"Windows\":\"10.0.19045.0\"}\r\n",
        )
        .unwrap();
        assert!(p.hyperv_admin && !p.admin);
        let r: Vec<Removed> = parse_json_list(
            "removed",
            "[{\"VMId\":\"a\",\"Name\":\"dev\",\"Files\":[\"C:\\\\t\\\\dev.vhdx\",\"C:\\\\t\\\\seed.iso\"]}]",
        )
        .unwrap();
        assert_eq!(r[0].files, ["C:\\t\\dev.vhdx", "C:\\t\\seed.iso"]);
    }
}
