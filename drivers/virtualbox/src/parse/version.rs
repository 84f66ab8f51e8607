//! `VBoxManage --version`: `7.0.14r161095`, `6.1.26_Ubuntur145957`, `4.2.36-104064`, possibly
//! after a `WARNING:` block about the kernel module (printed on stdout, exit 0).

use std::fmt;

use super::{lines, ParseError};

/// A VirtualBox version, with what `--version` said around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VBoxVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The build revision (`161095`), when printed.
    pub revision: Option<u32>,
    /// The version line as printed.
    pub raw: String,
    /// The warning printed before the version (`WARNING: The vboxdrv kernel module is not
    /// loaded…`): VirtualBox is installed but cannot run VMs.
    pub warning: Option<String>,
}

impl VBoxVersion {
    /// 7.0 and later spell `modifyvm` options in kebab-case (`--nat-pf1`); 6.x rejects those.
    pub fn kebab_options(&self) -> bool {
        self.major >= 7
    }
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }
    /// Whether the kernel-module warning (or an incomplete install) came with the version.
    pub fn kernel_module_missing(&self) -> bool {
        self.warning.as_deref().is_some_and(|w| {
            let w = w.to_ascii_lowercase();
            w.contains("vboxdrv") || w.contains("kernel modules are not loaded")
        })
    }
    /// Why timonel refuses this version, if it does. Supported: VirtualBox 6.1 and 7.x (see
    /// [`SUPPORTED`]); anything older is refused, with the reason.
    pub fn unsupported_reason(&self) -> Option<String> {
        if (self.major, self.minor) < (6, 1) {
            Some(format!(
                "VirtualBox {self} is too old: timonel supports {SUPPORTED}, the releases whose \
                 VBoxManage options and outputs it is written and tested against (before 6.1, \
                 `list dhcpservers` for one prints another layout)"
            ))
        } else {
            None
        }
    }

    /// Newer than what timonel was tested with (8.0 and later): usable, with a note.
    pub fn newer_than_tested(&self) -> bool {
        self.major > 7
    }
}

/// The VirtualBox versions timonel supports, as said to users.
pub const SUPPORTED: &str = "VirtualBox 6.1 and 7.x";

impl fmt::Display for VBoxVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses the output of `VBoxManage --version`.
pub fn parse_version(stdout: &str) -> Result<VBoxVersion, ParseError> {
    let all: Vec<&str> = lines(stdout).collect();
    let Some(pos) = all
        .iter()
        .rposition(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
    else {
        return Err(ParseError::new(
            "--version",
            format!("no version number in {:?}", stdout.trim()),
        ));
    };
    let line = all[pos].trim();
    let warning = all[..pos]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let bad = || ParseError::new("--version", format!("cannot read version {line:?}"));
    // The numeric part ends at the first character that is neither a digit nor a dot.
    let end = line
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(line.len());
    let mut nums = line[..end].split('.').map(str::parse::<u32>);
    let major = nums.next().and_then(Result::ok).ok_or_else(bad)?;
    let minor = nums.next().and_then(Result::ok).ok_or_else(bad)?;
    let patch = nums.next().and_then(Result::ok).unwrap_or(0);
    let rest = &line[end..];
    // `r161095`, `_Ubuntur145957`, `_RC1r…`, `-104064`: the digits after the last `r` or `-`.
    let revision = rest
        .rfind(['r', '-'])
        .and_then(|i| rest[i + 1..].parse::<u32>().ok());
    Ok(VBoxVersion {
        major,
        minor,
        patch,
        revision,
        raw: line.to_string(),
        warning: (!warning.is_empty()).then_some(warning),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_shapes() {
        let cases = [
            ("7.0.14r161095\n", (7, 0, 14), Some(161095)),
            ("6.1.26_Ubuntur145957\n", (6, 1, 26), Some(145957)),
            ("7.1.12_Ubuntur169389\r\n", (7, 1, 12), Some(169389)),
            ("4.2.36-104064\n", (4, 2, 36), Some(104064)),
            ("6.1.50r161033", (6, 1, 50), Some(161033)),
            ("7.0.0_RC1r154000\n", (7, 0, 0), Some(154000)),
        ];
        for (text, (ma, mi, pa), rev) in cases {
            let v = parse_version(text).unwrap();
            assert_eq!((v.major, v.minor, v.patch), (ma, mi, pa), "{text}");
            assert_eq!(v.revision, rev, "{text}");
            assert!(v.warning.is_none());
        }
    }

    #[test]
    fn keeps_the_kernel_module_warning() {
        let v = parse_version(include_str!(
            "../../tests/fixtures/version-vboxdrv-warning.txt"
        ))
        .unwrap();
        assert_eq!(v.to_string(), "6.0.12");
        assert!(v.kernel_module_missing());
        assert!(v.warning.unwrap().contains("sudo /sbin/vboxconfig"));
    }

    #[test]
    fn supports_six_one_and_seven() {
        let ok = ["6.1.0r1", "6.1.50r161033", "7.0.14r161095", "7.2.4r170995"];
        for raw in ok {
            assert_eq!(parse_version(raw).unwrap().unsupported_reason(), None);
        }
        let old = parse_version("6.0.12r133076").unwrap();
        let why = old.unsupported_reason().unwrap();
        assert_eq!(
            why,
            "VirtualBox 6.0.12 is too old: timonel supports VirtualBox 6.1 and 7.x, the releases \
             whose VBoxManage options and outputs it is written and tested against (before 6.1, \
             `list dhcpservers` for one prints another layout)"
        );
        assert!(parse_version("8.0.0r1").unwrap().newer_than_tested());
        assert!(!parse_version("7.2.4r1").unwrap().newer_than_tested());
        assert!(parse_version("5.2.44r139111")
            .unwrap()
            .unsupported_reason()
            .is_some());
        assert!(parse_version("7.0.14r1").unwrap().kebab_options());
        assert!(!parse_version("6.1.50r1").unwrap().kebab_options());
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_version("").is_err());
        assert!(parse_version("Oracle VM VirtualBox Command Line Management Interface").is_err());
        assert!(parse_version("7.x").is_err());
    }
}
