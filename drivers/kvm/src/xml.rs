//! libvirt XML: the domain and network documents timonel defines, and the few facts it reads back.
//! Every text and attribute value goes through [`escape`].

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The XML namespace of timonel's `<metadata>` element.
pub const METADATA_NS: &str = "https://timonel.dev/xmlns/1";
pub const METADATA_PREFIX: &str = "timonel";

/// Escapes `&`, `<`, `>`, `"` and `'`, for text and for attribute values alike.
/// Control characters XML 1.0 cannot carry are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// `<domain type='…'>`: hardware virtualization, software emulation, or libvirt's test driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    Kvm,
    /// TCG: no /dev/kvm needed, 5-10x slower.
    Qemu,
    /// `test:///default` only.
    Test,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
            Self::Test => "test",
        }
    }
}

/// What timonel records in a domain's `<metadata>`, so that a later process can find the node's
/// files and log in without any other record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetadata {
    pub cluster: String,
    pub node: String,
    pub state_dir: PathBuf,
    pub seed_iso: PathBuf,
    pub ssh_user: Option<String>,
    pub ssh_key_dir: Option<PathBuf>,
}

/// Everything the domain document needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainConfig {
    pub name: String,
    pub domain_type: DomainType,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub overlay: PathBuf,
    pub seed_iso: PathBuf,
    pub network: String,
    pub mac: String,
    pub console_log: PathBuf,
    pub metadata: NodeMetadata,
    /// Host folders shared with the guest over virtio-9p.
    pub folders: Vec<SharedFolder>,
}

/// A host folder the guest mounts by `tag` (`mount -t 9p -o trans=virtio TAG DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFolder {
    pub tag: String,
    pub source: PathBuf,
    pub read_only: bool,
}

impl SharedFolder {
    /// `<filesystem>`, access mode `squash`: QEMU (libvirt's unprivileged user) reads and
    /// writes as itself, and a file the guest creates keeps the mode the guest gave it (so the
    /// host user can read it), while the guest's chown is ignored instead of failing.
    /// `mapped` would hide the guest's modes in xattrs behind 0600 files; `passthrough` needs
    /// QEMU to run as root. `<readonly/>` makes QEMU itself refuse writes.
    fn to_xml(&self) -> String {
        format!(
            "    <filesystem type=\"mount\" accessmode=\"squash\">\n      <source dir=\"{}\"/>\n      <target dir=\"{}\"/>\n{}    </filesystem>\n",
            path_str(&self.source),
            escape(&self.tag),
            if self.read_only { "      <readonly/>\n" } else { "" },
        )
    }
}

fn path_str(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy())
}

impl DomainConfig {
    pub fn to_xml(&self) -> String {
        let m = &self.metadata;
        let mut meta_attrs = format!(
            " node=\"{}\" state-dir=\"{}\" seed=\"{}\"",
            escape(&m.node),
            path_str(&m.state_dir),
            path_str(&m.seed_iso)
        );
        if let Some(user) = &m.ssh_user {
            let _ = write!(meta_attrs, " ssh-user=\"{}\"", escape(user));
        }
        if let Some(dir) = &m.ssh_key_dir {
            let _ = write!(meta_attrs, " ssh-key-dir=\"{}\"", path_str(dir));
        }
        let cpu = match self.domain_type {
            DomainType::Kvm => "  <cpu mode=\"host-passthrough\" check=\"none\"/>\n",
            _ => "",
        };
        let machine = match self.domain_type {
            DomainType::Test => String::new(),
            _ => " machine=\"pc\"".to_string(),
        };
        let folders: String = self.folders.iter().map(SharedFolder::to_xml).collect();
        format!(
            r#"<domain type="{dtype}">
  <name>{name}</name>
  <metadata>
    <{p}:cluster xmlns:{p}="{ns}"{meta_attrs}>{cluster}</{p}:cluster>
  </metadata>
  <memory unit="MiB">{memory}</memory>
  <vcpu placement="static">{vcpus}</vcpu>
  <os>
    <type arch="x86_64"{machine}>hvm</type>
    <boot dev="hd"/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
{cpu}  <clock offset="utc"/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"/>
      <source file="{overlay}"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="{seed}"/>
      <target dev="hdc" bus="ide"/>
      <readonly/>
    </disk>
    <interface type="network">
      <source network="{network}"/>
      <mac address="{mac}"/>
      <model type="virtio"/>
    </interface>
    <serial type="file">
      <source path="{console}"/>
      <target port="0"/>
    </serial>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
{folders}  </devices>
</domain>
"#,
            dtype = self.domain_type.as_str(),
            name = escape(&self.name),
            p = METADATA_PREFIX,
            ns = METADATA_NS,
            cluster = escape(&m.cluster),
            memory = self.memory_mib,
            vcpus = self.vcpus,
            overlay = path_str(&self.overlay),
            seed = path_str(&self.seed_iso),
            network = escape(&self.network),
            mac = escape(&self.mac),
            console = path_str(&self.console_log),
        )
    }
}

/// A static DHCP entry: this MAC always gets this address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

impl DhcpHost {
    pub fn to_xml(&self) -> String {
        format!(
            r#"<host mac="{}" name="{}" ip="{}"/>"#,
            escape(&self.mac),
            escape(&self.name),
            self.ip
        )
    }
}

/// A NAT network with DHCP on a /24.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub name: String,
    pub bridge: String,
    /// The first three octets of the /24.
    pub subnet: [u8; 3],
    pub hosts: Vec<DhcpHost>,
}

impl NetworkConfig {
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    pub fn to_xml(&self) -> String {
        let [a, b, c] = self.subnet;
        let mut hosts = String::new();
        for h in &self.hosts {
            let _ = writeln!(hosts, "      {}", h.to_xml());
        }
        format!(
            r#"<network>
  <name>{name}</name>
  <forward mode="nat"/>
  <bridge name="{bridge}" stp="on" delay="0"/>
  <ip address="{gw}" netmask="255.255.255.0">
    <dhcp>
      <range start="{a}.{b}.{c}.100" end="{a}.{b}.{c}.254"/>
{hosts}    </dhcp>
  </ip>
</network>
"#,
            name = escape(&self.name),
            bridge = escape(&self.bridge),
            gw = self.gateway(),
        )
    }
}

/// Why a libvirt document could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(String);

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    roxmltree::Document::parse(xml).map_err(|e| XmlError(e.to_string()))
}

/// timonel's metadata of a domain, or `None` for a domain timonel did not create.
pub fn parse_node_metadata(domain_xml: &str) -> Result<Option<NodeMetadata>, XmlError> {
    let doc = parse(domain_xml)?;
    let Some(el) = doc.descendants().find(|n| {
        n.is_element()
            && n.tag_name().name() == "cluster"
            && n.tag_name().namespace() == Some(METADATA_NS)
    }) else {
        return Ok(None);
    };
    let attr = |name: &str| el.attribute(name).map(str::to_string);
    Ok(Some(NodeMetadata {
        cluster: el.text().unwrap_or_default().trim().to_string(),
        node: attr("node").unwrap_or_default(),
        state_dir: attr("state-dir").map(PathBuf::from).unwrap_or_default(),
        seed_iso: attr("seed").map(PathBuf::from).unwrap_or_default(),
        ssh_user: attr("ssh-user"),
        ssh_key_dir: attr("ssh-key-dir").map(PathBuf::from),
    }))
}

/// The MACs of a domain's network interfaces, with the network each is on.
pub fn parse_interfaces(domain_xml: &str) -> Result<Vec<(String, String)>, XmlError> {
    let doc = parse(domain_xml)?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("interface"))
        .filter_map(|iface| {
            let mac = iface
                .children()
                .find(|c| c.has_tag_name("mac"))?
                .attribute("address")?;
            let net = iface
                .children()
                .find(|c| c.has_tag_name("source"))
                .and_then(|s| s.attribute("network"))
                .unwrap_or_default();
            Some((mac.to_ascii_lowercase(), net.to_string()))
        })
        .collect())
}

/// The files behind a domain's disks (overlay, seed).
pub fn parse_disk_files(domain_xml: &str) -> Result<Vec<PathBuf>, XmlError> {
    let doc = parse(domain_xml)?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("disk"))
        .filter_map(|d| {
            d.children()
                .find(|c| c.has_tag_name("source"))?
                .attribute("file")
                .map(PathBuf::from)
        })
        .collect())
}

/// The IPv4 networks a libvirt network uses (`address` + `netmask`/`prefix`).
pub fn parse_network_ranges(network_xml: &str) -> Result<Vec<(Ipv4Addr, u8)>, XmlError> {
    let doc = parse(network_xml)?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("ip"))
        .filter_map(|ip| {
            let addr: Ipv4Addr = ip.attribute("address")?.parse().ok()?;
            let prefix = match (ip.attribute("prefix"), ip.attribute("netmask")) {
                (Some(p), _) => p.parse().ok()?,
                (None, Some(mask)) => u32::from(mask.parse::<Ipv4Addr>().ok()?).count_ones() as u8,
                (None, None) => 24,
            };
            Some((addr, prefix))
        })
        .collect())
}

/// The static DHCP entries of a network.
pub fn parse_dhcp_hosts(network_xml: &str) -> Result<Vec<DhcpHost>, XmlError> {
    let doc = parse(network_xml)?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("host") && n.parent().is_some_and(|p| p.has_tag_name("dhcp")))
        .filter_map(|h| {
            Some(DhcpHost {
                mac: h.attribute("mac")?.to_ascii_lowercase(),
                name: h.attribute("name").unwrap_or_default().to_string(),
                ip: h.attribute("ip")?.parse().ok()?,
            })
        })
        .collect())
}

/// The first three octets of the network's /24, from its gateway address.
pub fn parse_subnet(network_xml: &str) -> Result<Option<[u8; 3]>, XmlError> {
    Ok(parse_network_ranges(network_xml)?
        .into_iter()
        .find(|(_, prefix)| *prefix == 24)
        .map(|(addr, _)| {
            let o = addr.octets();
            [o[0], o[1], o[2]]
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DomainConfig {
        DomainConfig {
            name: "timonel-dev".into(),
            domain_type: DomainType::Qemu,
            vcpus: 2,
            memory_mib: 2048,
            overlay: "/s/dev/disk.qcow2".into(),
            seed_iso: "/s/dev/seed & <x>.iso".into(),
            network: "timonel-dev".into(),
            mac: "52:54:00:aa:bb:cc".into(),
            console_log: "/s/dev/console.log".into(),
            metadata: NodeMetadata {
                cluster: "dev".into(),
                node: "dev".into(),
                state_dir: "/s/dev".into(),
                seed_iso: "/s/dev/seed & <x>.iso".into(),
                ssh_user: Some("debian".into()),
                ssh_key_dir: Some("/keys/it's".into()),
            },
            folders: Vec::new(),
        }
    }

    #[test]
    fn escape_covers_the_five_entities() {
        assert_eq!(
            escape(r#"a&b<c>"d"'e'"#),
            "a&amp;b&lt;c&gt;&quot;d&quot;&apos;e&apos;"
        );
        assert_eq!(escape("bell\u{7}"), "bell");
        assert_eq!(escape("plain/path-1.qcow2"), "plain/path-1.qcow2");
    }

    #[test]
    fn domain_xml_has_the_devices_and_reads_back() {
        let xml = config().to_xml();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("type"), Some("qemu"));
        assert!(xml.contains("<name>timonel-dev</name>"));
        assert!(xml.contains(r#"<memory unit="MiB">2048</memory>"#));
        assert!(xml.contains(r#"<vcpu placement="static">2</vcpu>"#));
        assert!(xml.contains(r#"<target dev="vda" bus="virtio"/>"#));
        assert!(xml.contains(r#"<target dev="hdc" bus="ide"/>"#));
        assert!(xml.contains(r#"<source file="/s/dev/seed &amp; &lt;x&gt;.iso"/>"#));
        assert!(xml.contains(r#"<source network="timonel-dev"/>"#));
        assert!(xml.contains(r#"<source path="/s/dev/console.log"/>"#));
        assert!(!xml.contains("host-passthrough"), "TCG gets no host CPU");
        assert!(xml.contains(
            r#"<timonel:cluster xmlns:timonel="https://timonel.dev/xmlns/1" node="dev""#
        ));

        let meta = parse_node_metadata(&xml).unwrap().unwrap();
        assert_eq!(meta, config().metadata);
        assert_eq!(
            parse_interfaces(&xml).unwrap(),
            vec![("52:54:00:aa:bb:cc".to_string(), "timonel-dev".to_string())]
        );
        assert_eq!(
            parse_disk_files(&xml).unwrap(),
            vec![
                PathBuf::from("/s/dev/disk.qcow2"),
                PathBuf::from("/s/dev/seed & <x>.iso")
            ]
        );
    }

    #[test]
    fn host_folders_are_9p_filesystems_read_only_when_asked() {
        let mut c = config();
        assert!(!c.to_xml().contains("<filesystem"));
        c.folders = vec![
            SharedFolder {
                tag: "timonel0".into(),
                source: "/home/me/src & co".into(),
                read_only: true,
            },
            SharedFolder {
                tag: "timonel1".into(),
                source: "/srv/out".into(),
                read_only: false,
            },
        ];
        let xml = c.to_xml();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let fs: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("filesystem"))
            .map(|n| {
                assert_eq!(n.parent().unwrap().tag_name().name(), "devices");
                assert_eq!(n.attribute("type"), Some("mount"));
                assert_eq!(n.attribute("accessmode"), Some("squash"));
                let child = |name: &str| n.children().find(|c| c.has_tag_name(name));
                (
                    child("source")
                        .unwrap()
                        .attribute("dir")
                        .unwrap()
                        .to_string(),
                    child("target")
                        .unwrap()
                        .attribute("dir")
                        .unwrap()
                        .to_string(),
                    child("readonly").is_some(),
                )
            })
            .collect();
        assert_eq!(
            fs,
            vec![
                ("/home/me/src & co".into(), "timonel0".into(), true),
                ("/srv/out".into(), "timonel1".into(), false),
            ]
        );
    }

    #[test]
    fn kvm_gets_the_host_cpu_and_test_no_machine() {
        let kvm = DomainConfig {
            domain_type: DomainType::Kvm,
            ..config()
        }
        .to_xml();
        assert!(kvm.starts_with(r#"<domain type="kvm">"#));
        assert!(kvm.contains("host-passthrough"));
        let test = DomainConfig {
            domain_type: DomainType::Test,
            ..config()
        }
        .to_xml();
        assert!(test.contains(r#"<type arch="x86_64">hvm</type>"#));
    }

    #[test]
    fn foreign_domains_have_no_metadata() {
        let xml = r#"<domain type="kvm"><name>other</name><metadata><x:cluster xmlns:x="urn:other">dev</x:cluster></metadata></domain>"#;
        assert_eq!(parse_node_metadata(xml).unwrap(), None);
    }

    #[test]
    fn network_xml_round_trips() {
        let net = NetworkConfig {
            name: "timonel-dev".into(),
            bridge: "tmnl-0123abcd".into(),
            subnet: [192, 168, 130],
            hosts: vec![DhcpHost {
                mac: "52:54:00:aa:bb:cc".into(),
                name: "dev".into(),
                ip: Ipv4Addr::new(192, 168, 130, 11),
            }],
        };
        let xml = net.to_xml();
        assert!(xml.contains(r#"<forward mode="nat"/>"#));
        assert!(xml.contains(r#"<ip address="192.168.130.1" netmask="255.255.255.0">"#));
        assert!(xml.contains(r#"<range start="192.168.130.100" end="192.168.130.254"/>"#));
        assert_eq!(parse_dhcp_hosts(&xml).unwrap(), net.hosts);
        assert_eq!(parse_subnet(&xml).unwrap(), Some([192, 168, 130]));
        assert_eq!(
            parse_network_ranges(r#"<network><ip address="10.0.0.1" prefix="16"/></network>"#)
                .unwrap(),
            vec![(Ipv4Addr::new(10, 0, 0, 1), 16)]
        );
    }
}
