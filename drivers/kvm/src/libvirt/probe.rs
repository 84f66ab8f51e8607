//! Reading libvirt's capabilities document and the host.

/// What the capabilities say about x86_64 guests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapsFacts {
    pub qemu_x86_64: bool,
    pub kvm: bool,
}

pub fn parse_caps(xml: &str) -> CapsFacts {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return CapsFacts::default();
    };
    let mut facts = CapsFacts::default();
    for arch in doc
        .descendants()
        .filter(|n| n.has_tag_name("arch") && n.attribute("name") == Some("x86_64"))
    {
        if arch.children().any(|c| c.has_tag_name("emulator")) {
            facts.qemu_x86_64 = true;
        }
        if arch
            .children()
            .any(|c| c.has_tag_name("domain") && c.attribute("type") == Some("kvm"))
        {
            facts.kvm = true;
        }
    }
    facts
}

/// The CPU says it runs under a hypervisor (`hypervisor` flag in /proc/cpuinfo).
pub fn running_under_hypervisor() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_emulator_and_kvm_from_capabilities() {
        let xml = r#"<capabilities><guest><os_type>hvm</os_type>
          <arch name="x86_64"><wordsize>64</wordsize><emulator>/usr/bin/qemu-system-x86_64</emulator>
          <domain type="qemu"/><domain type="kvm"/></arch></guest></capabilities>"#;
        assert_eq!(
            parse_caps(xml),
            CapsFacts {
                qemu_x86_64: true,
                kvm: true
            }
        );
        let tcg_only = xml.replace(r#"<domain type="kvm"/>"#, "");
        assert_eq!(
            parse_caps(&tcg_only),
            CapsFacts {
                qemu_x86_64: true,
                kvm: false
            }
        );
        assert_eq!(parse_caps("<capabilities/>"), CapsFacts::default());
    }
}
