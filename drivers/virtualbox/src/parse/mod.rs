//! Pure parsers of VBoxManage's outputs. They never run anything; the driver feeds them stdout.

mod lists;
mod showvminfo;
mod version;

pub use lists::{
    parse_created_interface, parse_dhcpservers, parse_guestproperty, parse_hostonlyifs,
    parse_hostonlynets, parse_list_vms, usable_in_range, DhcpServer, HostOnlyIf, HostOnlyNet,
    VmEntry,
};
pub use showvminfo::{parse_human_nat_rules, parse_showvminfo, NatRule, Nic, VmInfo};
pub use version::{parse_version, VBoxVersion, SUPPORTED};

/// Output that does not have the shape the parser expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected output of `VBoxManage {what}`: {message}")]
pub struct ParseError {
    pub what: &'static str,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, message: impl Into<String>) -> Self {
        Self {
            what,
            message: message.into(),
        }
    }
}

impl From<ParseError> for timonel_driver::DriverError {
    fn from(e: ParseError) -> Self {
        Self::Parse {
            what: format!("`VBoxManage {}`", e.what),
            message: e.message,
        }
    }
}

/// Lines without the Windows `\r`.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l))
}
