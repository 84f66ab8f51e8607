//! PowerShell error records, and what they mean for the driver.
//!
//! A failed cmdlet prints (to stderr):
//!
//! ```text
//! Hyper-V\Get-VM : Hyper-V was unable to find a virtual machine with name "dev".
//! At line:1 char:1
//! + Hyper-V\Get-VM -Name $env:TIMONEL_VM_NAME
//! + ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
//!     + CategoryInfo          : InvalidArgument: (dev:String) [Get-VM], VirtualizationException
//!     + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM
//! ```
//!
//! The message and the `At line` line are localized; the category and the error id are not,
//! so those are what we classify by.

use timonel_driver::{CommandError, DriverError};

/// The parts of an error record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorRecord {
    /// The message, whitespace collapsed (it wraps at the console width), without the
    /// `<Cmdlet> : ` prefix.
    pub message: String,
    /// `InvalidArgument`, `ObjectNotFound`, `PermissionDenied`, … (from `CategoryInfo`).
    pub category: String,
    /// The cmdlet in brackets in `CategoryInfo` (`Get-VM`), often empty.
    pub activity: String,
    /// The exception type at the end of `CategoryInfo` (`VirtualizationException`).
    pub reason: String,
    /// The first part of `FullyQualifiedErrorId` (`InvalidParameter`).
    pub error_id: String,
    /// The part after the comma (`Microsoft.HyperV.PowerShell.Commands.GetVM`), often empty.
    pub source: String,
}

/// Splits `stderr` into error records and parses each. PowerShell can print several records
/// for one run (every error that does not stop the script prints its own, the one that stops it
/// prints last), and a record may lack its `FullyQualifiedErrorId` line, or both id lines (the
/// one-line `Get-VM: …` view of PowerShell 7). A new record starts at a line that is neither
/// indented nor a `+` line once the current one has reached its `+` lines, or after a blank
/// line.
pub fn parse_error_records(stderr: &str) -> Vec<ErrorRecord> {
    let stderr = stderr.trim_start_matches('\u{feff}').replace('\r', "");
    let mut chunks: Vec<Vec<&str>> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut past_message = false;
    for line in stderr.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            if !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
            }
            past_message = false;
            continue;
        }
        let starts_record = !line.starts_with(char::is_whitespace) && !trimmed.starts_with('+');
        if starts_record && past_message && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            past_message = false;
        }
        if trimmed.starts_with('+') {
            past_message = true;
        }
        current.push(line);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks.iter().map(|c| parse_chunk(c)).collect()
}

/// The first error record in `stderr` that carries a `CategoryInfo` or `FullyQualifiedErrorId`
/// line, if any.
pub fn parse_error_record(stderr: &str) -> Option<ErrorRecord> {
    parse_error_records(stderr)
        .into_iter()
        .find(ErrorRecord::has_ids)
}

impl ErrorRecord {
    /// Whether the record has a category or an error id (the unlocalized parts).
    pub fn has_ids(&self) -> bool {
        !self.category.is_empty() || !self.error_id.is_empty()
    }
}

/// One record's lines.
fn parse_chunk(lines: &[&str]) -> ErrorRecord {
    let mut rec = ErrorRecord::default();
    for line in lines {
        let Some(rest) = line.trim_start().strip_prefix('+') else {
            continue;
        };
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "CategoryInfo" if rec.category.is_empty() => {
                let (category, rest) = value.split_once(':').unwrap_or((value, ""));
                rec.category = category.trim().to_string();
                if let (Some(open), Some(close)) = (rest.rfind('['), rest.rfind(']')) {
                    if open < close {
                        rec.activity = rest[open + 1..close].trim().to_string();
                        rec.reason = rest[close + 1..].trim_start_matches(',').trim().to_string();
                    }
                }
            }
            "FullyQualifiedErrorId" if rec.error_id.is_empty() => {
                let (id, source) = value.split_once(',').unwrap_or((value, ""));
                rec.error_id = id.trim().to_string();
                rec.source = source.trim().to_string();
            }
            _ => {}
        }
    }
    // The message is everything before the position line, which is the line just before the
    // first `+ ` line (its wording is localized: `At line:1 char:1`, `En línea: 1 Carácter: 1`).
    // Without `+` lines the whole record is its message.
    let message_lines = match lines.iter().position(|l| l.trim_start().starts_with('+')) {
        Some(first_plus) => &lines[..first_plus.saturating_sub(1)],
        None => lines,
    };
    let message = message_lines.join(" ");
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    // Drop the `Hyper-V\Get-VM : ` (5.1) or `Get-VM: ` (7.x one-line view) prefix.
    rec.message = match message.split_once(": ") {
        Some((head, tail)) if !head.trim().contains(' ') && head.contains('-') => {
            if rec.activity.is_empty() {
                rec.activity = head.trim().rsplit('\\').next().unwrap_or("").to_string();
            }
            tail.trim().to_string()
        }
        _ => message,
    };
    rec
}

/// What a failed script means, independent of the language of its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The VM is not there (`Get-VM -Name` found none, or our own `timonel:vm-not-found`).
    VmNotFound,
    /// A VM of that name exists but timonel did not create it.
    ForeignVm,
    /// Several VMs carry this machine's marker.
    DuplicateVm,
    /// The Hyper-V module (or a cmdlet of it) is missing.
    ModuleMissing,
    /// PowerShell runs in ConstrainedLanguage mode (AppLocker/WDAC).
    ConstrainedLanguage,
    /// Not allowed to manage Hyper-V at all: a console that is not elevated and a user outside
    /// Hyper-V Administrators ("You do not have the required permission to complete this
    /// task…", `AccessDenied` from `Get-VM`).
    NoRights,
    /// Denied: not elevated, not in Hyper-V Administrators, or files Hyper-V cannot read.
    PermissionDenied,
    /// Hyper-V could not reach its objects: vmms stopped, or not enough rights.
    ObjectNotFound,
    /// A parameter Hyper-V refused (e.g. memory that is not an even number of MB).
    InvalidParameter,
    /// Hyper-V refused to change the VM's state ("The operation cannot be performed while the
    /// object is in its current state."): the VM hangs between states (shutting down).
    WrongState,
    /// Anything else.
    Other,
}

/// The English wordings of Hyper-V's "no rights" message (it has two: "Contact the
/// administrator of the authorization policy for the computer 'X'" and "Contact the
/// authorization policy administrator for computer 'X'"), matched when a record has no id that
/// says so. Other languages are classified by id only.
fn says_no_rights(message: &str) -> bool {
    message.contains("You do not have the required permission to complete this task")
        || message.contains("The requested operation requires elevation")
}

/// Classifies a record by its category and error id; by its (English) message only when it
/// has no id that decides.
pub fn classify(rec: &ErrorRecord) -> Failure {
    let id = rec.error_id.as_str();
    let get_vm = rec.source.ends_with(".GetVM") || rec.activity == "Get-VM";
    let start_vm = rec.source.ends_with(".StartVM") || rec.activity == "Start-VM";
    match id {
        "timonel:vm-not-found" => return Failure::VmNotFound,
        "timonel:foreign-vm" => return Failure::ForeignVm,
        "timonel:duplicate-vm" => return Failure::DuplicateVm,
        "CommandNotFoundException" => return Failure::ModuleMissing,
        "MethodInvocationNotSupportedInConstrainedLanguage" => return Failure::ConstrainedLanguage,
        "InvalidParameter" if get_vm => return Failure::VmNotFound,
        "ObjectNotFound" if rec.source.starts_with("Microsoft.HyperV.") => {
            return Failure::ObjectNotFound
        }
        _ => {}
    }
    if id.contains("VMNotFound")
        || id.contains("VirtualMachineNotFound")
        || id.contains("InvalidVMNameNotFound")
    {
        return Failure::VmNotFound;
    }
    let denied = rec.category == "PermissionDenied"
        || id == "AccessDenied"
        || id.starts_with("UnauthorizedAccess");
    if says_no_rights(&rec.message) || (denied && !start_vm) {
        // Listing or reading VMs denied: the user may not manage Hyper-V at all. (`Start-VM`'s
        // AccessDenied is often about the VM's files instead.)
        return Failure::NoRights;
    }
    if denied {
        return Failure::PermissionDenied;
    }
    if id == "InvalidParameter" || rec.category == "InvalidArgument" {
        return Failure::InvalidParameter;
    }
    if id == "InvalidState"
        || rec
            .message
            .contains("cannot be performed while the object is in its current state")
    {
        return Failure::WrongState;
    }
    if id.is_empty() && rec.category.is_empty() {
        // A record without ids (PowerShell 7's one-line view): English messages only.
        if rec
            .message
            .contains("unable to find a virtual machine with name")
        {
            return Failure::VmNotFound;
        }
        if rec
            .message
            .contains("is not recognized as the name of a cmdlet")
        {
            return Failure::ModuleMissing;
        }
    }
    Failure::Other
}

/// The failure of a run that printed `records`: every record is classified and the one that
/// explains the most wins. A missing-rights record beats a not-found one, which is often its
/// consequence (a user who may not see VMs finds none).
pub fn classify_all(records: &[ErrorRecord]) -> Option<(Failure, &ErrorRecord)> {
    const ORDER: [Failure; 11] = [
        Failure::NoRights,
        Failure::ModuleMissing,
        Failure::ConstrainedLanguage,
        Failure::ObjectNotFound,
        Failure::PermissionDenied,
        Failure::ForeignVm,
        Failure::DuplicateVm,
        Failure::WrongState,
        Failure::VmNotFound,
        Failure::InvalidParameter,
        Failure::Other,
    ];
    let classified: Vec<(Failure, &ErrorRecord)> =
        records.iter().map(|r| (classify(r), r)).collect();
    ORDER.iter().find_map(|want| {
        classified
            .iter()
            .find(|(f, r)| f == want && (*f != Failure::Other || r.has_ids()))
            .map(|(f, r)| (f.clone(), *r))
    })
}

/// What the fix is when rights are missing.
pub const RIGHTS_FIX: &str = "run timonel from an elevated console (Run as administrator), or add yourself to the Hyper-V Administrators group once, in an elevated PowerShell: `Add-LocalGroupMember -SID S-1-5-32-578 -Member $env:USERNAME`, then sign out and in again";

/// What to do about a VM Hyper-V will not even turn off (`what` names it).
pub fn stuck_fix(what: &str) -> String {
    format!(
        "{what} hangs between states (Hyper-V Manager shows it \"Stopping\" or \"Shutting down…\"): \
         wait a minute and run the command again; if it stays, end the VM's worker process in an \
         elevated PowerShell: `$id = (Hyper-V\\Get-VM -Name <its name>).VMId; Get-CimInstance \
         Win32_Process -Filter \"Name='vmwp.exe'\" | Where-Object CommandLine -match $id | \
         ForEach-Object {{ Stop-Process -Id $_.ProcessId -Force }}` (the VM goes Off), or restart \
         the Virtual Machine Management service (`Restart-Service vmms`, which touches every VM)"
    )
}

/// The fix when the Hyper-V module or feature is missing.
pub const ENABLE_FIX: &str = "enable Hyper-V in an elevated PowerShell: `Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V -All`, then reboot (Windows 10/11 Pro, Enterprise or Education); or use `--driver docker` / `--driver virtualbox`";

/// A failed PowerShell run of `op` on `what` (e.g. ``VM `dev` ``), as a typed [`DriverError`],
/// classified on all the error records it printed. Errors without a record that says anything
/// stay [`DriverError::Command`], with their output.
pub fn to_driver_error(op: &str, what: &str, err: CommandError) -> DriverError {
    if let CommandError::Timeout { after, .. } = err {
        // The run was killed: its (long) command line says nothing, Hyper-V's state might.
        return DriverError::Backend {
            op: op.to_string(),
            message: format!("PowerShell did not finish within {after:?}"),
            hint: Some(format!(
                "check that the Virtual Machine Management service answers (`Hyper-V\\Get-VM` in an elevated PowerShell); if {}",
                stuck_fix(what)
            )),
        };
    }
    let records = parse_error_records(err.stderr());
    let Some((failure, rec)) = classify_all(&records) else {
        return DriverError::Command(err);
    };
    let message = if rec.message.is_empty() {
        rec.error_id.clone()
    } else {
        rec.message.clone()
    };
    if failure == Failure::Other
        && rec.category == "NotSpecified"
        && rec.reason.contains("Virtualization")
    {
        // minikube#6732 in another language: "no rights" is NotSpecified/Unspecified.
        return DriverError::Backend {
            op: op.to_string(),
            message,
            hint: Some(format!("if this is a permission problem: {RIGHTS_FIX}")),
        };
    }
    failure_error(&failure, op, what, &message)
}

/// The typed error for a classified failure (also used for the same checks made in Rust).
pub fn failure_error(failure: &Failure, op: &str, what: &str, message: &str) -> DriverError {
    let unusable = |reason: &str, fix: &str| DriverError::NotAvailable {
        driver: "hyperv".to_string(),
        reason: reason.to_string(),
        fix: fix.to_string(),
    };
    let backend = |hint: Option<&str>| DriverError::Backend {
        op: op.to_string(),
        message: message.to_string(),
        hint: hint.map(str::to_string),
    };
    match failure {
        Failure::VmNotFound => DriverError::NotFound {
            what: what.to_string(),
        },
        Failure::ForeignVm => DriverError::AlreadyExists {
            what: format!("{what} (not created by timonel)"),
            hint: Some(
                "a Hyper-V VM of that name exists without timonel's `timonel:machine=` note; rename or remove it in Hyper-V Manager, or use another profile name (`-p`)"
                    .to_string(),
            ),
        },
        Failure::DuplicateVm => backend(Some(
            "several Hyper-V VMs carry this machine's name and timonel note; remove the extra ones in Hyper-V Manager (`Get-VM | Select Name, VMId, Notes`)",
        )),
        Failure::ModuleMissing => {
            unusable("the Hyper-V PowerShell module is not available", ENABLE_FIX)
        }
        Failure::ConstrainedLanguage => unusable(
            "PowerShell runs in ConstrainedLanguage mode (AppLocker/WDAC policy)",
            "ask your administrator to allow FullLanguage mode for timonel's PowerShell, or use `--driver docker`",
        ),
        Failure::NoRights => unusable(
            &format!("Hyper-V refused: you may not manage its VMs from this console ({message})"),
            RIGHTS_FIX,
        ),
        Failure::PermissionDenied => backend(Some(&format!(
            "Hyper-V denied access: {RIGHTS_FIX}; also check that the VM's disk and seed ISO are on a local drive the Hyper-V service can read"
        ))),
        Failure::ObjectNotFound => unusable(
            "Hyper-V could not reach its objects (the Virtual Machine Management service may be stopped, or you lack the rights)",
            &format!("start the service in an elevated PowerShell: `Start-Service vmms`; {RIGHTS_FIX}"),
        ),
        Failure::InvalidParameter => backend(Some(
            "Hyper-V refused a VM setting; memory must be an even number of MB and within what the host has (`--memory`), and the switch must exist (`--hyperv-virtual-switch`)",
        )),
        Failure::WrongState => backend(Some(&stuck_fix(what))),
        Failure::Other => backend(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timonel_driver::Hint;

    /// minikube#8970, as PowerShell prints it.
    const NOT_FOUND: &str = "Hyper-V\\Get-VM : Hyper-V was unable to find a virtual machine with name \"minikube\".\r\nAt line:1 char:3\r\n+ ( Hyper-V\\Get-VM minikube ).state\r\n+   ~~~~~~~~~~~~~~~~~~~~~~~\r\n    + CategoryInfo          : InvalidArgument: (minikube:String) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n \r\n";

    /// minikube#8512 (Spanish Windows): same ids, translated message and position line.
    const NOT_FOUND_ES: &str = "Hyper-V\\Get-VM : Hyper-V no pudo encontrar una máquina virtual con el nombre \"minikube\".\r\nEn línea: 1 Carácter: 3\r\n+ ( Hyper-V\\Get-VM minikube ).state\r\n+   ~~~~~~~~~~~~~~~~~~~~~~~\r\n    + CategoryInfo          : InvalidArgument: (minikube:String) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n";

    /// minikube#6732: not allowed, the message wrapped at the console width.
    const NO_RIGHTS: &str = "Hyper-V\\Get-VM : You do not have the required permission to complete this task. Contact the administrator of the\r\nauthorization policy for the computer 'DESKTOP-1CILTF5'.\r\nAt line:1 char:3\r\n+ ( Hyper-V\\Get-VM minikube ).state\r\n+   ~~~~~~~~~~~~~~~~~~~~~~~\r\n    + CategoryInfo          : NotSpecified: (:) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : Unspecified,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n";

    /// A non-elevated `Get-VM` on newer Windows: the other wording, `InvalidOperation` /
    /// `AccessDenied`.
    const NO_RIGHTS_ACCESS_DENIED: &str = "Hyper-V\\Get-VM : You do not have the required permission to complete this task. Contact the authorization policy\r\nadministrator for computer 'DESKTOP-1CILTF5'.\r\nAt line:1 char:1\r\n+ Hyper-V\\Get-VM\r\n+ ~~~~~~~~~~~~~~\r\n    + CategoryInfo          : InvalidOperation: (:) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : AccessDenied,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n \r\n";

    const START_DENIED: &str = "Hyper-V\\Start-VM : 'minikube' failed to start. (Virtual machine ID D43F)\r\nAt line:1 char:1\r\n+ Hyper-V\\Start-VM minikube\r\n+ ~~~~~~~~~~~~~~~~~~~~~~~~~\r\n    + CategoryInfo          : PermissionDenied: (:) [Start-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : AccessDenied,Microsoft.HyperV.PowerShell.Commands.StartVM\r\n";

    const VMMS_DOWN: &str = "Hyper-V\\Get-VM : Hyper-V encountered an error trying to access an object on computer 'X' because the object was not found.\r\nAt line:1 char:1\r\n+ Hyper-V\\Get-VM\r\n+ ~~~~~~~~~~~~~~\r\n    + CategoryInfo          : ObjectNotFound: (:) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n";

    const NO_MODULE: &str = "Hyper-V\\Get-VM : The term 'Hyper-V\\Get-VM' is not recognized as the name of a cmdlet, function, script file, or operable program.\r\nAt line:1 char:1\r\n+ Hyper-V\\Get-VM\r\n+ ~~~~~~~~~~~~~~\r\n    + CategoryInfo          : ObjectNotFound: (Hyper-V\\Get-VM:String) [], CommandNotFoundException\r\n    + FullyQualifiedErrorId : CommandNotFoundException\r\n";

    const THROWN: &str = "timonel:foreign-vm\r\nAt line:1 char:200\r\n+ ... if ($mine.Count -eq 0) { throw 'timonel:foreign-vm' }; ...\r\n+                             ~~~~~~~~~~~~~~~~~~~~~~~~~~\r\n    + CategoryInfo          : OperationStopped: (timonel:foreign-vm:String) [], RuntimeException\r\n    + FullyQualifiedErrorId : timonel:foreign-vm\r\n";

    fn exited(stderr: &str) -> CommandError {
        CommandError::Exited {
            argv: "powershell.exe -NoProfile -NonInteractive -Command …".into(),
            code: 1,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn parses_the_five_line_record() {
        let r = parse_error_record(NOT_FOUND).unwrap();
        assert_eq!(r.category, "InvalidArgument");
        assert_eq!(r.activity, "Get-VM");
        assert_eq!(r.reason, "VirtualizationException");
        assert_eq!(r.error_id, "InvalidParameter");
        assert_eq!(r.source, "Microsoft.HyperV.PowerShell.Commands.GetVM");
        assert_eq!(
            r.message,
            "Hyper-V was unable to find a virtual machine with name \"minikube\"."
        );
        let wrapped = parse_error_record(NO_RIGHTS).unwrap();
        assert!(wrapped
            .message
            .contains("administrator of the authorization policy"));
        assert_eq!(parse_error_record("some noise\r\n"), None);
        assert_eq!(parse_error_record(""), None);
    }

    #[test]
    fn classifies_by_ids_not_by_language() {
        let en = parse_error_record(NOT_FOUND).unwrap();
        let es = parse_error_record(NOT_FOUND_ES).unwrap();
        assert!(
            es.message.starts_with("Hyper-V no pudo encontrar"),
            "{}",
            es.message
        );
        assert_eq!(classify(&en), Failure::VmNotFound);
        assert_eq!(classify(&es), Failure::VmNotFound);
        let cases = [
            (START_DENIED, Failure::PermissionDenied),
            (VMMS_DOWN, Failure::ObjectNotFound),
            (NO_MODULE, Failure::ModuleMissing),
            (THROWN, Failure::ForeignVm),
            (NO_RIGHTS, Failure::NoRights),
            (NO_RIGHTS_ACCESS_DENIED, Failure::NoRights),
        ];
        for (stderr, want) in cases {
            assert_eq!(
                classify(&parse_error_record(stderr).unwrap()),
                want,
                "{stderr}"
            );
        }
    }

    #[test]
    fn splits_several_records_and_classifies_on_all_of_them() {
        // A not-found record first, the permission record after it: the permission problem is
        // the cause, whichever record comes first.
        let both = format!("{NOT_FOUND}{NO_RIGHTS_ACCESS_DENIED}");
        let records = parse_error_records(&both);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].error_id, "InvalidParameter");
        assert_eq!(records[1].error_id, "AccessDenied");
        assert_eq!(records[1].category, "InvalidOperation");
        assert_eq!(
            records[1].message,
            "You do not have the required permission to complete this task. Contact the authorization policy administrator for computer 'DESKTOP-1CILTF5'."
        );
        let (failure, rec) = classify_all(&records).unwrap();
        assert_eq!(failure, Failure::NoRights);
        assert_eq!(rec.error_id, "AccessDenied");
        let reversed = format!("{NO_RIGHTS_ACCESS_DENIED}{NOT_FOUND}");
        assert_eq!(
            classify_all(&parse_error_records(&reversed)).unwrap().0,
            Failure::NoRights
        );
        let e = to_driver_error("state", "VM `dev`", exited(&both));
        assert!(!e.is_not_found(), "{e:?}");
        assert!(matches!(e, DriverError::NotAvailable { .. }), "{e:?}");
        let hint = e.hint().unwrap();
        assert!(hint.contains("elevated console"), "{hint}");
        assert!(hint.contains("Hyper-V Administrators"), "{hint}");
        // Records without a FullyQualifiedErrorId line, or without any id line.
        let no_fqid = "Hyper-V\\Get-VM : You do not have the required permission to complete this task.\r\nAt line:1 char:1\r\n+ Hyper-V\\Get-VM\r\n+ ~~~~~~~~~~~~~~\r\n    + CategoryInfo          : InvalidOperation: (:) [Get-VM], VirtualizationException\r\n";
        let r = parse_error_records(no_fqid);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].error_id, "");
        assert_eq!(r[0].category, "InvalidOperation");
        assert_eq!(classify(&r[0]), Failure::NoRights);
        let concise = "Get-VM: Hyper-V was unable to find a virtual machine with name \"dev\".\n";
        let r = parse_error_records(concise);
        assert_eq!(r[0].activity, "Get-VM");
        assert_eq!(classify(&r[0]), Failure::VmNotFound);
        assert!(to_driver_error("state", "VM `dev`", exited(concise)).is_not_found());
        assert!(parse_error_records("").is_empty());
    }

    #[test]
    fn maps_to_typed_driver_errors_with_hints() {
        assert!(to_driver_error("state", "VM `minikube`", exited(NOT_FOUND_ES)).is_not_found());
        let e = to_driver_error("start", "VM `minikube`", exited(START_DENIED));
        assert!(matches!(e, DriverError::Backend { .. }), "{e:?}");
        assert!(e.hint().unwrap().contains("S-1-5-32-578"));
        assert!(e.to_string().contains("failed to start"), "{e}");
        let e = to_driver_error("state", "VM `x`", exited(NO_RIGHTS));
        assert!(matches!(e, DriverError::NotAvailable { .. }), "{e:?}");
        assert!(e.hint().unwrap().contains("elevated"), "{e:?}");
        // The same text in a language timonel does not read: a hint, not a verdict.
        let e = to_driver_error(
            "state",
            "VM `x`",
            exited(&NO_RIGHTS.replace(
                "You do not have the required permission to complete this task.",
                "Sie haben nicht die erforderliche Berechtigung.",
            )),
        );
        assert!(matches!(e, DriverError::Backend { .. }), "{e:?}");
        assert!(e
            .hint()
            .unwrap()
            .contains("if this is a permission problem"));
        let e = to_driver_error("state", "VM `x`", exited(NO_MODULE));
        assert!(matches!(e, DriverError::NotAvailable { .. }), "{e:?}");
        let e = to_driver_error("state", "VM `x`", exited(VMMS_DOWN));
        assert!(e.hint().unwrap().contains("Start-Service vmms"), "{e:?}");
        let e = to_driver_error("create", "VM `x`", exited(THROWN));
        assert!(matches!(e, DriverError::AlreadyExists { .. }), "{e:?}");
        // No record: the raw command error stays, with its stderr.
        let e = to_driver_error("state", "VM `x`", exited("segfault\r\n"));
        assert!(matches!(e, DriverError::Command(_)), "{e:?}");
    }
}
