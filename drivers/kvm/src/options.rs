//! The KVM driver's settings: `MachineSpec.options` keys, environment variables, and how the
//! accelerator is chosen.

use std::fmt;
use std::str::FromStr;

use crate::xml::DomainType;

/// `MachineSpec.options` key: `tcg`, `kvm` or `auto`.
pub const OPT_ACCEL: &str = "kvm.accel";
/// Environment: `tcg`, `kvm` or `auto`, when the spec does not say.
pub const ENV_ACCEL: &str = "TIMONEL_KVM_ACCEL";
/// Environment: `1` forces TCG (software emulation) when nothing else says.
pub const ENV_FORCE_TCG: &str = "TIMONEL_KVM_FORCE_TCG";

/// The note shown when timonel falls back to software emulation.
pub const TCG_NOTE: &str = "KVM unavailable: using software emulation (TCG), slow";

/// Which accelerator VMs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM when libvirt offers it, else TCG.
    Auto,
}

impl FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Self::Kvm),
            "tcg" | "qemu" => Ok(Self::Tcg),
            "auto" | "" => Ok(Self::Auto),
            other => Err(format!(
                "`{other}` is not an accelerator; use tcg, kvm or auto"
            )),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
            Self::Auto => "auto",
        })
    }
}

/// The accelerator asked for: the spec's option, else the driver's setting, else
/// `TIMONEL_KVM_ACCEL`, else `TIMONEL_KVM_FORCE_TCG=1`, else auto.
pub fn requested_accel(
    spec_option: Option<&str>,
    driver_default: Option<Accel>,
    env_accel: Option<&str>,
    env_force_tcg: Option<&str>,
) -> Result<Accel, String> {
    if let Some(v) = spec_option {
        return v.parse();
    }
    if let Some(a) = driver_default {
        return Ok(a);
    }
    if let Some(v) = env_accel.filter(|v| !v.trim().is_empty()) {
        return v.parse();
    }
    if env_force_tcg.is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes")) {
        return Ok(Accel::Tcg);
    }
    Ok(Accel::Auto)
}

/// The domain type for `accel` given whether libvirt offers KVM, with a note for the user when
/// it falls back to TCG. Asking for KVM where there is none is an error.
pub fn resolve_accel(
    accel: Accel,
    kvm_available: bool,
) -> Result<(DomainType, Option<&'static str>), String> {
    match (accel, kvm_available) {
        (Accel::Kvm, true) | (Accel::Auto, true) => Ok((DomainType::Kvm, None)),
        (Accel::Kvm, false) => Err(
            "KVM was asked for but libvirt offers no `kvm` domain here (no /dev/kvm, or no access to it)"
                .to_string(),
        ),
        (Accel::Tcg, _) => Ok((DomainType::Qemu, None)),
        (Accel::Auto, false) => Ok((DomainType::Qemu, Some(TCG_NOTE))),
    }
}

/// Reads the accelerator environment variables of this process.
pub fn env_accel() -> (Option<String>, Option<String>) {
    (
        std::env::var(ENV_ACCEL).ok(),
        std::env::var(ENV_FORCE_TCG).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_beats_driver_beats_env() {
        assert_eq!(
            requested_accel(Some("tcg"), Some(Accel::Kvm), Some("kvm"), None),
            Ok(Accel::Tcg)
        );
        assert_eq!(
            requested_accel(None, Some(Accel::Kvm), Some("tcg"), Some("1")),
            Ok(Accel::Kvm)
        );
        assert_eq!(
            requested_accel(None, None, Some("TCG"), None),
            Ok(Accel::Tcg)
        );
        assert_eq!(requested_accel(None, None, None, Some("1")), Ok(Accel::Tcg));
        assert_eq!(
            requested_accel(None, None, Some(""), Some("0")),
            Ok(Accel::Auto)
        );
        assert!(requested_accel(Some("hvf"), None, None, None).is_err());
    }

    #[test]
    fn auto_falls_back_to_tcg_with_a_note() {
        assert_eq!(
            resolve_accel(Accel::Auto, true),
            Ok((DomainType::Kvm, None))
        );
        assert_eq!(
            resolve_accel(Accel::Auto, false),
            Ok((DomainType::Qemu, Some(TCG_NOTE)))
        );
        assert_eq!(
            resolve_accel(Accel::Tcg, true),
            Ok((DomainType::Qemu, None))
        );
        assert!(resolve_accel(Accel::Kvm, false).is_err());
    }
}
