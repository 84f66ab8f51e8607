//! Classifying VBoxManage failures from their error lines (docs/hypervisor-tools.md, "VBoxManage
//! errors"), and turning them into typed [`DriverError`]s with hints.
//!
//! Most errors come as `VBoxManage: error: <text>` lines, but some are printed bare (`Could not
//! find a registered machine named 'x'` with no prefix); a failed call is classified from its bare
//! lines too, so both shapes mean the same thing.

use timonel_driver::{CommandError, DriverError};

/// What kind of failure a VBoxManage error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Could not find a registered machine named '…'` / `VBOX_E_OBJECT_NOT_FOUND`.
    NotFound,
    /// `Machine settings file '…' already exists` / `VBOX_E_FILE_ERROR` from `CreateMachine`.
    AlreadyExists,
    /// `Invalid machine state: <State>`, `The machine is not mutable (state is Saved)`,
    /// `Machine '…' is not currently running`, `VBOX_E_INVALID_VM_STATE`.
    InvalidState {
        state: Option<String>,
    },
    /// A session lock or `The object is not ready`: worth retrying.
    Transient,
    /// `E_ACCESSDENIED` from `EnableStaticIPConfig`: outside the allowed host-only ranges.
    HostOnlyRange,
    /// `A NAT rule of this name already exists`.
    NatRuleExists,
    /// Deleting a NAT rule that does not exist (`RemoveRedirect`): harmless.
    NatRuleMissing,
    /// `Unknown option: --x`: this VBoxManage is a different version than expected.
    UnknownOption {
        option: String,
    },
    /// The kernel module is missing (`/dev/vboxnetctl`, `vboxdrv`).
    KernelModule,
    /// VT-x/AMD-V unavailable or taken by Hyper-V.
    Virtualization,
    Other,
}

/// A classified VBoxManage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VBoxError {
    pub kind: ErrorKind,
    /// The first error line, without the `VBoxManage: error:` prefix.
    pub message: String,
    /// Every error line, without prefixes.
    pub lines: Vec<String>,
}

/// The text after `VBoxManage: error:` / `VBoxManage.exe: error:` (any `VBoxManage…` program
/// name), if the line is an error line.
fn error_text(line: &str) -> Option<&str> {
    let line = line.trim_end_matches('\r');
    let at = line.find("VBoxManage")?;
    let rest = &line[at + "VBoxManage".len()..];
    let colon = rest.find(": error:")?;
    // Only a program-name suffix (`.exe`) may sit between the name and `: error:`.
    if !rest[..colon]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return None;
    }
    Some(rest[colon + ": error:".len()..].trim())
}

/// Classifies VBoxManage's stderr. `None` when it holds no `error:` line (progress bars,
/// warnings). Whole-text checks (the kernel module) apply even without the prefix.
pub fn classify(stderr: &str) -> Option<VBoxError> {
    let lines: Vec<String> = stderr
        .lines()
        .filter_map(error_text)
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        let lower = stderr.to_ascii_lowercase();
        if lower.contains("/dev/vboxnetctl") || lower.contains("vboxdrv kernel module") {
            return Some(VBoxError {
                kind: ErrorKind::KernelModule,
                message: stderr.trim().lines().next().unwrap_or("").to_string(),
                lines: Vec::new(),
            });
        }
        return None;
    }
    Some(classify_lines(lines))
}

/// Classifies the output of a call that failed (non-zero exit): its `error:` lines (on stderr,
/// else stdout), else every line of stderr that is not a progress bar or blank, since some
/// errors are printed without the `VBoxManage: error:` prefix.
pub fn classify_failed(stderr: &str, stdout: &str) -> Option<VBoxError> {
    classify(stderr).or_else(|| classify(stdout)).or_else(|| {
        let lines: Vec<String> = stderr
            .lines()
            .map(bare_text)
            .filter(|l| !l.is_empty() && !is_progress(l))
            .map(str::to_string)
            .collect();
        (!lines.is_empty()).then(|| classify_lines(lines))
    })
}

/// A line without a leading program name (`VBoxManage:`, `VBoxManage.exe:`) or `error:`.
fn bare_text(line: &str) -> &str {
    let mut l = line.trim_end_matches('\r').trim();
    if let Some(rest) = l.strip_prefix("VBoxManage") {
        if let Some((name, after)) = rest.split_once(':') {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                l = after.trim();
            }
        }
    }
    l.strip_prefix("error:").map_or(l, str::trim)
}

/// `0%...10%...100%`, VBoxManage's progress bar.
fn is_progress(line: &str) -> bool {
    line.contains('%')
        && line
            .chars()
            .all(|c| c.is_ascii_digit() || "%. ".contains(c))
}

/// The kind of an error from its lines (prefix already removed).
fn classify_lines(lines: Vec<String>) -> VBoxError {
    let all = lines.join("\n");
    let lower = all.to_ascii_lowercase();
    let has = |s: &str| all.contains(s);
    let kind = if has("Could not find a registered machine") || has("VBOX_E_OBJECT_NOT_FOUND") {
        ErrorKind::NotFound
    } else if has("E_ACCESSDENIED") && has("EnableStaticIPConfig") {
        ErrorKind::HostOnlyRange
    } else if has("The object is not ready")
        || has("is already locked for a session")
        || has("is already locked by a session")
        || has("VBOX_E_INVALID_OBJECT_STATE")
    {
        ErrorKind::Transient
    } else if has("already exists") && (has("Machine settings file") || has("CreateMachine")) {
        ErrorKind::AlreadyExists
    } else if has("A NAT rule of this name already exists") {
        ErrorKind::NatRuleExists
    } else if has("RemoveRedirect") {
        ErrorKind::NatRuleMissing
    } else if let Some(option) = lines
        .iter()
        .find_map(|l| l.strip_prefix("Unknown option: "))
    {
        ErrorKind::UnknownOption {
            option: option
                .split('=')
                .next()
                .unwrap_or(option)
                .trim()
                .to_string(),
        }
    } else if [
        "VERR_VMX_",
        "VERR_SVM_",
        "VERR_NEM_VM_CREATE",
        "VT-x is",
        "AMD-V is",
    ]
    .iter()
    .any(|s| has(s))
    {
        ErrorKind::Virtualization
    } else if has("Invalid machine state")
        || has("is not mutable")
        || has("VBOX_E_INVALID_VM_STATE")
        || has("is not currently running")
    {
        ErrorKind::InvalidState {
            state: invalid_state_name(&all),
        }
    } else if lower.contains("/dev/vboxnetctl") || lower.contains("kernel module") {
        ErrorKind::KernelModule
    } else {
        ErrorKind::Other
    };
    VBoxError {
        kind,
        message: lines[0].clone(),
        lines,
    }
}

/// `PoweredOff` from `Invalid machine state: PoweredOff (must be …)`, `Saved` from
/// `(state is Saved)`, `not running` from `is not currently running`.
fn invalid_state_name(text: &str) -> Option<String> {
    if let Some(rest) = text.split("Invalid machine state: ").nth(1) {
        return rest.split_whitespace().next().map(str::to_string);
    }
    if let Some(rest) = text.split("(state is ").nth(1) {
        return rest.split(')').next().map(str::to_string);
    }
    text.contains("is not currently running")
        .then(|| "not running".to_string())
}

/// The fix for the 6.1.28+ host-only range restriction.
pub const HOST_ONLY_RANGE_HINT: &str = "VirtualBox 6.1.28 and later only allow host-only \
addresses in 192.168.56.0/21; use an address in that range, or allow more ranges in \
/etc/vbox/networks.conf (for example `* 192.168.56.0/21 10.0.0.0/8`)";

/// The fix for missing hardware virtualization.
pub const VIRTUALIZATION_HINT: &str = "enable VT-x/AMD-V in the BIOS/UEFI settings (and on \
Windows turn Hyper-V off, or use `--driver hyperv`), or use `--driver docker`";

/// The fix for a broken Linux install.
pub const KERNEL_MODULE_HINT: &str = "the VirtualBox kernel modules are not loaded: reinstall \
VirtualBox and reboot, or run `sudo /sbin/vboxconfig`";

/// A VBoxManage call that failed: its command line, exit code, output and classification.
#[derive(Debug)]
pub struct CallError {
    pub argv: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the process never ran (not found, timeout, i/o).
    pub error: Option<VBoxError>,
    /// The runner's error when the process never ran.
    pub spawn: Option<CommandError>,
}

impl CallError {
    pub fn kind(&self) -> Option<&ErrorKind> {
        self.error.as_ref().map(|e| &e.kind)
    }
    pub fn is(&self, kind: &ErrorKind) -> bool {
        self.kind() == Some(kind)
    }
    pub fn is_not_found(&self) -> bool {
        self.is(&ErrorKind::NotFound)
    }

    /// A typed driver error: `what` names the object (``virtualbox machine `dev` ``), `op` the
    /// action that failed (`start`).
    pub fn into_driver(self, what: &str, op: &str) -> DriverError {
        let Some(error) = self.error else {
            return match self.spawn {
                Some(CommandError::NotFound { program }) => DriverError::NotAvailable {
                    driver: "virtualbox".into(),
                    reason: format!("`{program}` was not found"),
                    fix: NOT_INSTALLED_FIX.into(),
                },
                Some(e) => DriverError::Command(e),
                // A failure without an `error:` line: keep the raw output for the user.
                None => DriverError::Command(CommandError::Exited {
                    argv: self.argv,
                    code: self.code,
                    stdout: self.stdout,
                    stderr: self.stderr,
                }),
            };
        };
        let backend = |hint: Option<String>| DriverError::Backend {
            op: op.to_string(),
            message: error.message.clone(),
            hint,
        };
        match &error.kind {
            ErrorKind::NotFound => DriverError::NotFound { what: what.into() },
            ErrorKind::AlreadyExists => DriverError::AlreadyExists {
                what: what.into(),
                hint: Some(format!("delete it with `VBoxManage unregistervm {what_bare} --delete`, or remove its leftover settings folder", what_bare = bare(what))),
            },
            ErrorKind::InvalidState { state } => DriverError::InvalidState {
                what: what.into(),
                state: state.clone().unwrap_or_else(|| "in the wrong state".into()),
                action: op.into(),
            },
            ErrorKind::HostOnlyRange => backend(Some(HOST_ONLY_RANGE_HINT.into())),
            ErrorKind::UnknownOption { option } => DriverError::Backend {
                op: op.into(),
                message: format!("VBoxManage does not know the option `{option}`"),
                hint: Some(
                    "the VirtualBox version changed under timonel; timonel supports 6.1 and 7.x: \
                     run `VBoxManage --version` and reinstall or upgrade VirtualBox"
                        .into(),
                ),
            },
            ErrorKind::Virtualization => backend(Some(VIRTUALIZATION_HINT.into())),
            ErrorKind::KernelModule => DriverError::NotAvailable {
                driver: "virtualbox".into(),
                reason: error.message.clone(),
                fix: KERNEL_MODULE_HINT.into(),
            },
            ErrorKind::Transient => backend(Some(
                "another VirtualBox session holds the machine (the VirtualBox window or another \
                 VBoxManage); close it and retry"
                    .into(),
            )),
            ErrorKind::NatRuleExists | ErrorKind::NatRuleMissing | ErrorKind::Other => {
                DriverError::Command(CommandError::Exited {
                    argv: self.argv,
                    code: self.code,
                    stdout: self.stdout,
                    stderr: self.stderr,
                })
            }
        }
    }
}

/// The fix when VBoxManage cannot be found.
pub const NOT_INSTALLED_FIX: &str = "install VirtualBox 7 from \
https://www.virtualbox.org/wiki/Downloads, or set TIMONEL_VBOXMANAGE to the path of VBoxManage";

/// `dev` from ``virtualbox machine `dev` ``.
fn bare(what: &str) -> &str {
    what.split('`').nth(1).unwrap_or(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_FOUND: &str = "VBoxManage: error: Could not find a registered machine named 'dev'\n\
VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n\
VBoxManage: error: Context: \"FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())\" at line 2621 of file VBoxManageInfo.cpp\n";

    const RANGE: &str = "VBoxManage: error: Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)\n\
VBoxManage: error: Context: \"EnableStaticIPConfig(Bstr(pszIp).raw(), Bstr(pszNetmask).raw())\" at line 242 of file VBoxManageHostonly.cpp\n";

    fn kind(stderr: &str) -> ErrorKind {
        classify(stderr).expect("an error").kind
    }

    #[test]
    fn classifies_the_documented_errors() {
        assert_eq!(kind(NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(
            kind(&NOT_FOUND.replace("VBoxManage:", "VBoxManage.exe:")),
            ErrorKind::NotFound
        );
        assert_eq!(kind(RANGE), ErrorKind::HostOnlyRange);
        assert_eq!(
            kind("VBoxManage: error: Machine settings file '/x/dev/dev.vbox' already exists\nVBoxManage: error: Details: code VBOX_E_FILE_ERROR (0x80bb0004), component MachineWrap, interface IMachine, callee nsISupports\n"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind("VBoxManage: error: Invalid machine state: PoweredOff (must be Running, Paused or Stuck)\nVBoxManage: error: Details: code VBOX_E_INVALID_VM_STATE (0x80bb0002), component ConsoleWrap, interface IConsole\n"),
            ErrorKind::InvalidState { state: Some("PoweredOff".into()) }
        );
        assert_eq!(
            kind("VBoxManage: error: The machine is not mutable (state is Saved)\nVBoxManage: error: Details: code VBOX_E_INVALID_VM_STATE (0x80bb0002)\n"),
            ErrorKind::InvalidState { state: Some("Saved".into()) }
        );
        assert_eq!(
            kind("VBoxManage: error: Machine 'dev' is not currently running\n"),
            ErrorKind::InvalidState {
                state: Some("not running".into())
            }
        );
        assert_eq!(
            kind("VBoxManage: error: The machine 'dev' is already locked for a session (or being unlocked)\nVBoxManage: error: Details: code VBOX_E_INVALID_OBJECT_STATE (0x80bb0007), component MachineWrap, interface IMachine, callee nsISupports\n"),
            ErrorKind::Transient
        );
        // "The object is not ready" carries E_ACCESSDENIED too, but no EnableStaticIPConfig.
        assert_eq!(
            kind("VBoxManage: error: The object is not ready\nVBoxManage: error: Details: code E_ACCESSDENIED (0x80070005), component SessionMachine, interface IMachine\n"),
            ErrorKind::Transient
        );
        assert_eq!(
            kind("VBoxManage: error: A NAT rule of this name already exists\nVBoxManage: error: Details: code E_INVALIDARG (0x80070057), component NATEngineWrap, interface INATEngine, callee nsISupports\n"),
            ErrorKind::NatRuleExists
        );
        assert_eq!(
            kind("VBoxManage.exe: error: Code E_INVALIDARG (0x80070057) - One or more arguments are invalid (extended info not available)\nVBoxManage.exe: error: Context: \"RemoveRedirect(Bstr(ValueUnion.psz).raw())\" at line 2003 of file VBoxManageModifyVM.cpp\n"),
            ErrorKind::NatRuleMissing
        );
        assert_eq!(
            kind("VBoxManage: error: Unknown option: --host-only-net9=HostOnly\n"),
            ErrorKind::UnknownOption {
                option: "--host-only-net9".into()
            }
        );
        assert_eq!(
            kind("Waiting for VM \"dev\" to power on...\nVBoxManage.exe: error: VT-x is not available (VERR_VMX_NO_VMX)\n"),
            ErrorKind::Virtualization
        );
        assert_eq!(
            kind("VBoxManage: error: Call to WHvSetupPartition failed: ERROR_SUCCESS (Last=0xc000000d/87) (VERR_NEM_VM_CREATE_FAILED)\n"),
            ErrorKind::Virtualization
        );
        assert_eq!(
            kind("VBoxManage: error: failed to open /dev/vboxnetctl: No such file or directory\n"),
            ErrorKind::KernelModule
        );
        assert_eq!(kind("VBoxManage: error: something new\n"), ErrorKind::Other);
    }

    #[test]
    fn progress_and_warnings_are_not_errors() {
        assert_eq!(
            classify("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"),
            None
        );
        assert_eq!(classify(""), None);
        assert_eq!(classify("Waiting for VM \"dev\" to power on...\n"), None);
        // Not VBoxManage's own error line.
        assert_eq!(classify("grep: error: whatever\n"), None);
    }

    #[test]
    fn keeps_the_message_without_the_prefix() {
        let e = classify(RANGE).unwrap();
        assert_eq!(
            e.message,
            "Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)"
        );
        assert_eq!(e.lines.len(), 2);
    }

    /// The not-found error as some VBoxManage builds print it: no `VBoxManage: error:` prefix.
    const NOT_FOUND_BARE: &str = "Could not find a registered machine named 'x'\n\
Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n\
Context: \"FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())\" at line 2621 of file VBoxManageInfo.cpp\n";

    #[test]
    fn bare_errors_of_a_failed_call_classify_like_prefixed_ones() {
        // On its own (exit 0) bare text is not an error line...
        assert_eq!(classify(NOT_FOUND_BARE), None);
        // ...but a failed call is classified from it, the same as with the prefix.
        let e = classify_failed(NOT_FOUND_BARE, "").unwrap();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "Could not find a registered machine named 'x'");
        assert_eq!(e.lines.len(), 3);
        assert_eq!(
            classify_failed("0%...10%...100%\nInvalid machine state: Stopping\n", "")
                .unwrap()
                .kind,
            ErrorKind::InvalidState {
                state: Some("Stopping".into())
            }
        );
        // An `error:` word without the program name is stripped too.
        assert_eq!(
            classify_failed("error: Machine 'dev' is not currently running\n", "")
                .unwrap()
                .message,
            "Machine 'dev' is not currently running"
        );
        // Prefixed lines win; stdout is looked at when stderr has none.
        assert_eq!(
            classify_failed("", NOT_FOUND).unwrap().kind,
            ErrorKind::NotFound
        );
        assert_eq!(classify_failed("", ""), None);
        assert_eq!(classify_failed("0%...10%...100%\n\n", ""), None);
    }

    fn call(stderr: &str) -> CallError {
        CallError {
            argv: "VBoxManage x".into(),
            code: 1,
            stdout: String::new(),
            stderr: stderr.into(),
            error: classify(stderr),
            spawn: None,
        }
    }

    #[test]
    fn maps_to_typed_driver_errors_with_hints() {
        use timonel_driver::Hint;
        let what = "virtualbox machine `dev`";
        assert!(call(NOT_FOUND).into_driver(what, "start").is_not_found());
        let range = call(RANGE).into_driver("host-only interface `vboxnet1`", "configure");
        let hint = range.hint().unwrap();
        assert!(
            hint.contains("192.168.56.0/21") && hint.contains("networks.conf"),
            "{hint}"
        );
        let vtx = call("VBoxManage: error: VT-x is not available (VERR_VMX_NO_VMX)\n")
            .into_driver(what, "start");
        assert!(vtx.hint().unwrap().contains("BIOS"));
        assert!(vtx.to_string().contains("VERR_VMX_NO_VMX"), "{vtx}");
        let state = call("VBoxManage: error: Invalid machine state: Paused (must be Running)\n")
            .into_driver(what, "acpi shutdown");
        assert!(matches!(state, DriverError::InvalidState { ref state, .. } if state == "Paused"));
        let unknown =
            call("VBoxManage: error: Unknown option: --nat-pf1\n").into_driver(what, "create");
        assert!(unknown.to_string().contains("`--nat-pf1`"), "{unknown}");
        let other = call("VBoxManage: error: something new\n").into_driver(what, "create");
        assert!(matches!(other, DriverError::Command(_)));
        let missing = CallError {
            spawn: Some(CommandError::NotFound {
                program: "VBoxManage".into(),
            }),
            error: None,
            ..call("")
        };
        assert!(matches!(
            missing.into_driver(what, "create"),
            DriverError::NotAvailable { .. }
        ));
        let silent = CallError {
            code: 3,
            stderr: "Segmentation fault\n".into(),
            ..call("")
        };
        let err = silent.into_driver(what, "create");
        assert!(err.to_string().contains("Segmentation fault"), "{err}");
        assert!(err.to_string().contains("status 3"), "{err}");
    }
}
