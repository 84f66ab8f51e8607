//! `VBoxManage showvminfo <vm> --machinereadable`.
//!
//! `key=value` lines; keys with spaces are quoted; quoted values escape `"` and `\` but not
//! newlines, so a value (a description) can run over several lines. Odd lines are tolerated:
//! `VideoMode="720,400,0"@0,0 1`, `Encryption:     disabled`, ` rec_screen0`, unquoted keys
//! with spaces, a last line without a newline.

use std::collections::BTreeMap;

use super::ParseError;

/// A NAT port-forwarding rule: `name,proto,hostip,hostport,guestip,guestport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    pub name: String,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
    pub guest_ip: String,
    pub guest_port: u16,
}

impl NatRule {
    /// Parses the value of a `Forwarding(i)` line.
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.split(',').collect();
        if parts.len() != 6 {
            return None;
        }
        Some(Self {
            name: parts[0].to_string(),
            protocol: parts[1].to_string(),
            host_ip: parts[2].to_string(),
            host_port: parts[3].parse().ok()?,
            guest_ip: parts[4].to_string(),
            guest_port: parts[5].parse().ok()?,
        })
    }
}

/// The NAT port forwards in the human-readable `showvminfo <vm>` (no `--machinereadable`), by
/// adapter slot. VBoxManage prints one line per rule, right after the adapter's line:
///
/// ```text
/// NIC 1 Rule(0):   name = tcp-22-45022, protocol = tcp, host ip = 127.0.0.1, host port = 45022, guest ip = , guest port = 22
/// ```
///
/// Lines of any other shape are ignored.
pub fn parse_human_nat_rules(text: &str) -> BTreeMap<u8, Vec<NatRule>> {
    let mut out: BTreeMap<u8, Vec<NatRule>> = BTreeMap::new();
    for line in super::lines(text) {
        let Some((slot, rule)) = human_rule(line) else {
            continue;
        };
        out.entry(slot).or_default().push(rule);
    }
    out
}

/// One `NIC <n> Rule(<i>):   name = …` line.
fn human_rule(line: &str) -> Option<(u8, NatRule)> {
    let rest = line.trim().strip_prefix("NIC ")?;
    let (slot, rest) = rest.split_once(" Rule(")?;
    let slot: u8 = slot.trim().parse().ok()?;
    let (_, fields) = rest.split_once("):")?;
    // The values sit between known labels; a value may be empty (`guest ip = ,`).
    const LABELS: [&str; 6] = [
        "name = ",
        ", protocol = ",
        ", host ip = ",
        ", host port = ",
        ", guest ip = ",
        ", guest port = ",
    ];
    let mut values = Vec::with_capacity(LABELS.len());
    let mut rest = fields.trim_start();
    for (i, label) in LABELS.iter().enumerate() {
        rest = rest.strip_prefix(label)?;
        let end = match LABELS.get(i + 1) {
            Some(next) => rest.find(next)?,
            None => rest.len(),
        };
        values.push(rest[..end].trim());
        rest = &rest[end..];
    }
    Some((
        slot,
        NatRule {
            name: values[0].to_string(),
            protocol: values[1].to_string(),
            host_ip: values[2].to_string(),
            host_port: values[3].parse().ok()?,
            guest_ip: values[4].to_string(),
            guest_port: values[5].parse().ok()?,
        },
    ))
}

/// One network adapter (`nicN`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    /// `nat`, `hostonly`, `hostonlynetwork`, `bridged`, … (`none` adapters are left out).
    pub kind: String,
    /// The host-only interface or network, bridged adapter, … it is attached to.
    pub attachment: Option<String>,
    /// 12 upper-case hex digits.
    pub mac: Option<String>,
    /// `Forwarding(i)` rules (NAT adapters).
    pub forwarding: Vec<NatRule>,
}

/// What `showvminfo --machinereadable` says about a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmInfo {
    /// Every `key=value`, unescaped, in the order printed (keys can repeat, like `Forwarding(0)`).
    pub entries: Vec<(String, String)>,
    /// Adapters by slot (1-8); disabled adapters are absent.
    pub nics: BTreeMap<u8, Nic>,
}

impl VmInfo {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn name(&self) -> Option<&str> {
        self.get("name")
    }
    pub fn uuid(&self) -> Option<&str> {
        self.get("UUID")
    }
    pub fn cfg_file(&self) -> Option<&str> {
        self.get("CfgFile")
    }
    /// The raw `VMState` (`running`, `poweroff`, `aborted-saved`, …).
    pub fn vm_state(&self) -> Option<&str> {
        self.get("VMState")
    }
    pub fn description(&self) -> Option<&str> {
        self.get("description")
    }
    pub fn memory_mib(&self) -> Option<u64> {
        self.get("memory")?.parse().ok()
    }
    pub fn cpus(&self) -> Option<u32> {
        self.get("cpus")?.parse().ok()
    }
    /// `name="<inaccessible>"`: the settings file cannot be read.
    pub fn inaccessible(&self) -> bool {
        self.name() == Some("<inaccessible>")
    }
    /// The medium attached at `"<controller>-<port>-<device>"`, unless `none`/`emptydrive`.
    pub fn medium(&self, controller: &str, port: u32, device: u32) -> Option<&str> {
        self.get(&format!("{controller}-{port}-{device}"))
            .filter(|v| !matches!(*v, "none" | "emptydrive" | ""))
    }
}

/// Parses `showvminfo --machinereadable`. Fails only when nothing in it looks like `key=value`.
pub fn parse_showvminfo(text: &str) -> Result<VmInfo, ParseError> {
    let entries = parse_entries(text);
    if entries.is_empty() {
        return Err(ParseError::new(
            "showvminfo --machinereadable",
            "no `key=value` lines",
        ));
    }
    let nics = collect_nics(&entries);
    Ok(VmInfo { entries, nics })
}

/// The adapters, walking the entries in order so that each `Forwarding(i)` line (its `i` restarts
/// at 0 for every adapter) belongs to the adapter printed before it.
fn collect_nics(entries: &[(String, String)]) -> BTreeMap<u8, Nic> {
    const ATTACHMENTS: [&str; 8] = [
        "natnet",
        "bridgeadapter",
        "hostonlyadapter",
        "intnet",
        "nat-network",
        "hostonly-network",
        "generic",
        "cloud-network",
    ];
    let mut nics: BTreeMap<u8, Nic> = BTreeMap::new();
    let mut current: Option<u8> = None;
    let slot = |key: &str, prefix: &str| -> Option<u8> {
        let n: u8 = key.strip_prefix(prefix)?.parse().ok()?;
        (1..=8).contains(&n).then_some(n)
    };
    for (key, value) in entries {
        if let Some(n) = slot(key, "nic") {
            current = Some(n);
            if value == "none" {
                nics.remove(&n);
            } else {
                nics.entry(n).or_default().kind = value.clone();
            }
        } else if let Some(n) = slot(key, "macaddress") {
            nics.entry(n).or_default().mac = Some(value.clone());
        } else if let Some(n) = ATTACHMENTS.iter().find_map(|p| slot(key, p)) {
            nics.entry(n).or_default().attachment = Some(value.clone());
        } else if key.starts_with("Forwarding(") {
            if let (Some(n), Some(rule)) = (current, NatRule::parse(value)) {
                nics.entry(n).or_default().forwarding.push(rule);
            }
        }
    }
    nics.retain(|_, nic| !nic.kind.is_empty());
    nics
}

/// Reads every `key=value`, character by character, so that quoted values may span lines.
fn parse_entries(text: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut entries = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // At the start of a line.
        let (entry, next) = parse_line(&chars, i);
        if let Some(kv) = entry {
            entries.push(kv);
        }
        i = next;
    }
    entries
}

/// Parses the line starting at `start`; returns the entry (if the line has one) and the index of
/// the next line's start (after any multi-line value).
fn parse_line(chars: &[char], start: usize) -> (Option<(String, String)>, usize) {
    let end_of_line = |from: usize| -> usize {
        chars[from..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(chars.len(), |p| from + p + 1)
    };
    let mut i = start;
    let key = if chars.get(i) == Some(&'"') {
        match read_quoted(chars, i + 1, false) {
            Some((k, after)) => {
                i = after;
                k
            }
            None => return (None, end_of_line(start)),
        }
    } else {
        let mut k = String::new();
        while i < chars.len() && chars[i] != '=' && chars[i] != '\n' {
            k.push(chars[i]);
            i += 1;
        }
        k
    };
    if chars.get(i) != Some(&'=') || key.trim().is_empty() {
        // `Encryption:     disabled`, ` rec_screen0`, blank lines: nothing to keep.
        return (None, end_of_line(i.min(chars.len())));
    }
    i += 1;
    let key = key.trim_end_matches('\r').to_string();
    if chars.get(i) == Some(&'"') {
        match read_quoted(chars, i + 1, true) {
            Some((value, after)) => (Some((key, value)), end_of_line(after)),
            // An unterminated quote: keep what there is rather than nothing.
            None => {
                let rest: String = chars[i + 1..].iter().collect();
                (Some((key, rest.trim_end().to_string())), chars.len())
            }
        }
    } else {
        let next = end_of_line(i);
        let value: String = chars[i..next].iter().collect();
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        (Some((key, value)), next)
    }
}

/// Reads a quoted string whose opening quote is just before `from`, unescaping `\"` and `\\`.
/// Returns the text and the index after the closing quote. A newline ends an unterminated key
/// but not a value (`multiline`).
fn read_quoted(chars: &[char], from: usize, multiline: bool) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() && matches!(chars[i + 1], '"' | '\\') => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '"' => return Some((out, i + 1)),
            '\n' if !multiline => return None,
            '\r' if chars.get(i + 1) == Some(&'\n') => i += 1, // CRLF inside a value: keep `\n`
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn reads_a_running_vm() {
        let info = parse_showvminfo(&fixture("showvminfo-running-7.0.txt")).unwrap();
        assert_eq!(info.name(), Some("dev"));
        assert_eq!(info.vm_state(), Some("running"));
        assert_eq!(info.memory_mib(), Some(2048));
        assert_eq!(info.cpus(), Some(2));
        assert_eq!(info.uuid(), Some("0f1b4e2c-6a3d-4c1e-9b8f-2d7e5a6c4b3a"));
        // Escaped quotes and backslashes are unescaped.
        assert_eq!(
            info.cfg_file(),
            Some(r#"C:\Users\dev\.timonel\machines\dev "main"\dev\dev.vbox"#)
        );
        // The multi-line description keeps its newlines, and the `VMState=` inside it is not
        // the VM's state.
        assert_eq!(
            info.description(),
            Some("timonel cluster=dev\nVMState=\"poweroff\"\nrole=server")
        );
        // `VideoMode="720,400,0"@0,0 1` keeps the quoted part only.
        assert_eq!(info.get("VideoMode"), Some("720,400,0"));
        // Unquoted key with spaces.
        assert_eq!(
            info.get("GuestAdditionsFacility_VirtualBox Base Driver"),
            Some("50,1550641065785")
        );
        // `Encryption:     disabled` and ` rec_screen0` are skipped, not mistaken for entries.
        assert!(info.entries.iter().all(|(k, _)| !k.contains("Encryption")));
        assert!(info.entries.iter().all(|(k, _)| !k.contains("rec_screen0")));
        // The last line has no newline.
        assert_eq!(info.get("cpuid"), Some("00000001 00000000 000306a9"));
        // Quoted keys with spaces.
        assert_eq!(info.get("IDE Controller-1-0"), Some("none"));
        assert_eq!(
            info.medium("SATA", 1, 0),
            Some("/home/dev/.timonel/machines/dev/dev-seed.iso")
        );
        assert_eq!(info.medium("SATA", 2, 0), None);
    }

    #[test]
    fn reads_nics_and_their_forwarding_rules() {
        let info = parse_showvminfo(&fixture("showvminfo-running-7.0.txt")).unwrap();
        let nat = &info.nics[&1];
        assert_eq!(nat.kind, "nat");
        assert_eq!(nat.mac.as_deref(), Some("080027E5FA8F"));
        assert_eq!(nat.forwarding.len(), 2);
        assert_eq!(
            nat.forwarding[0],
            NatRule {
                name: "tcp-22".into(),
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                host_port: 45123,
                guest_ip: String::new(),
                guest_port: 22,
            }
        );
        assert_eq!(nat.forwarding[1].guest_port, 6443);
        let host_only = &info.nics[&2];
        assert_eq!(host_only.kind, "hostonly");
        assert_eq!(host_only.attachment.as_deref(), Some("vboxnet0"));
        assert!(host_only.forwarding.is_empty());
        // NIC 3 is NAT too: its `Forwarding(0)` is its own, not NIC 1's.
        assert_eq!(info.nics[&3].forwarding[0].guest_port, 80);
        assert!(
            !info.nics.contains_key(&4),
            "disabled adapters are left out"
        );
    }

    #[test]
    fn reads_a_powered_off_six_one_vm() {
        let info = parse_showvminfo(&fixture("showvminfo-poweroff-6.1.txt")).unwrap();
        assert_eq!(info.vm_state(), Some("poweroff"));
        assert_eq!(info.description(), Some(""));
        assert_eq!(info.nics[&2].kind, "hostonlynetwork");
        assert_eq!(info.nics[&2].attachment.as_deref(), Some("timonel-net"));
    }

    #[test]
    fn state_only_counts_at_line_start_outside_values() {
        let text =
            "name=\"x\"\ndescription=\"first\nVMState=\"running\"\nlast\"\nVMState=\"saved\"\n";
        let info = parse_showvminfo(text).unwrap();
        assert_eq!(info.vm_state(), Some("saved"));
        let none =
            parse_showvminfo("name=\"x\"\ndescription=\"VMState=\\\"running\\\"\"\n").unwrap();
        assert_eq!(none.vm_state(), None);
        assert_eq!(none.description(), Some("VMState=\"running\""));
    }

    #[test]
    fn reads_port_forwards_from_the_human_readable_form() {
        // VirtualBox 7.0.0 prints no `Forwarding(i)` lines with --machinereadable; the plain
        // `showvminfo` still lists the rules.
        let rules = parse_human_nat_rules(&fixture("showvminfo-human-7.0.0.txt"));
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(
            rules[&1],
            [
                NatRule {
                    name: "tcp-22-45022".into(),
                    protocol: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: 45022,
                    guest_ip: String::new(),
                    guest_port: 22,
                },
                NatRule {
                    name: "tcp-6443-46022".into(),
                    protocol: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: 46022,
                    guest_ip: String::new(),
                    guest_port: 6443,
                },
            ]
        );
        assert_eq!(rules[&3][0].host_ip, "");
        assert_eq!(rules[&3][0].guest_ip, "10.0.2.15");
        assert_eq!(rules[&3][0].protocol, "udp");
        // CRLF, and lines that only look similar.
        let crlf = "NIC 1 Rule(0):   name = ssh, protocol = tcp, host ip = , host port = 2222, guest ip = , guest port = 22\r\n\
                    NIC 1 Settings:  MTU: 0\r\nNIC 2 Rule(0):   name = x\r\n";
        let rules = parse_human_nat_rules(crlf);
        assert_eq!(rules[&1][0].host_port, 2222);
        assert!(!rules.contains_key(&2));
        assert!(parse_human_nat_rules("").is_empty());
    }

    #[test]
    fn reads_crlf_and_inaccessible_vms() {
        let info = parse_showvminfo("name=\"<inaccessible>\"\r\nUUID=\"abc\"\r\n").unwrap();
        assert!(info.inaccessible());
        assert_eq!(info.uuid(), Some("abc"));
        let crlf = parse_showvminfo("memory=1024\r\nVMState=\"poweroff\"\r\n").unwrap();
        assert_eq!(crlf.memory_mib(), Some(1024));
        assert_eq!(crlf.vm_state(), Some("poweroff"));
    }

    #[test]
    fn tolerates_garbage_but_not_emptiness() {
        assert!(parse_showvminfo("").is_err());
        assert!(parse_showvminfo("Encryption:     disabled\n").is_err());
        let odd =
            parse_showvminfo("\"broken key\nname=\"ok\"\ndescription=\"never closed\n").unwrap();
        assert_eq!(odd.name(), Some("ok"));
        assert_eq!(odd.description(), Some("never closed"));
    }
}
