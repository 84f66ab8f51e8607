//! Whether Hyper-V can be used here: the probe's verdict, and what to check when PowerShell does
//! not answer like PowerShell.

use timonel_driver::Availability;

use crate::driver::ENV_POWERSHELL;
use crate::parse::ProbeReport;
use crate::record::{ENABLE_FIX, RIGHTS_FIX};

/// What to check when PowerShell does not answer the way PowerShell does: it printed nothing,
/// or something that is not the check's report, or failed without an error record.
pub fn powershell_check_fix(program: &str) -> String {
    format!(
        "check that `{program}` is Windows PowerShell: `{program} -NoProfile -NonInteractive \
         -Command \"'ok'\"` must print ok. If it prints nothing, {ENV_POWERSHELL} (or PATH) points \
         at something else (a stub, an App Execution Alias, a wrapper that drops output), or \
         security software blocks it: set {ENV_POWERSHELL} to \
         C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    )
}

/// The probe's answer, in the order a user would fix things.
pub fn probe_verdict(r: &ProbeReport) -> Availability {
    let unusable = |reason: &str, fix: &str| Availability::Unusable {
        reason: reason.to_string(),
        fix: fix.to_string(),
    };
    if !r.module {
        return unusable("the Hyper-V PowerShell module is not installed", ENABLE_FIX);
    }
    if !r.hypervisor {
        return unusable(
            "Hyper-V is not enabled: no hypervisor is running",
            ENABLE_FIX,
        );
    }
    if !r.admin && !r.hyperv_admin {
        return unusable(
            "you are neither an Administrator in an elevated console nor a member of Hyper-V Administrators (S-1-5-32-578)",
            RIGHTS_FIX,
        );
    }
    if !r.vmms.eq_ignore_ascii_case("running") {
        let status = if r.vmms.is_empty() {
            "missing"
        } else {
            r.vmms.as_str()
        };
        return unusable(
            &format!("the Hyper-V Virtual Machine Management service (vmms) is {status}"),
            "start it in an elevated PowerShell: `Start-Service vmms` (if it is missing, enable Hyper-V and reboot)",
        );
    }
    let mut notes = Vec::new();
    if !r.admin {
        notes.push("not elevated: running as a member of Hyper-V Administrators".to_string());
    }
    let module = if r.module_version.is_empty() {
        String::new()
    } else {
        format!(" {}", r.module_version)
    };
    Availability::Ready {
        version: format!("Hyper-V{module} on Windows {}", r.windows),
        notes,
    }
}
