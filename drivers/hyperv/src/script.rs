//! The PowerShell scripts the driver runs, one per operation.
//!
//! Every script is constant text: values (VM names, ids, paths, switch names) never become part
//! of the code. They travel as environment variables of the PowerShell process (`$env:TIMONEL_*`)
//! and PowerShell reads them as data, so a path holding `'`, `"`, `;`, `$(…)`, a backtick or a
//! newline cannot change what the script does. The scripts also never use double quotes, so
//! Windows' re-quoting of the `-Command` argument cannot mangle them.

use std::time::Duration;

use timonel_driver::{Cmd, MachineName};

/// Environment variables that carry values into the scripts.
pub mod vars {
    pub const VM_NAME: &str = "TIMONEL_VM_NAME";
    pub const VM_ID: &str = "TIMONEL_VM_ID";
    pub const CLUSTER: &str = "TIMONEL_CLUSTER";
    pub const SWITCH: &str = "TIMONEL_SWITCH";
    pub const VHD_PARENT: &str = "TIMONEL_VHD_PARENT";
    pub const VHD_PATH: &str = "TIMONEL_VHD_PATH";
    pub const VHD_SOURCE: &str = "TIMONEL_VHD_SOURCE";
    pub const DISK_MB: &str = "TIMONEL_DISK_MB";
    pub const SEED_ISO: &str = "TIMONEL_SEED_ISO";
    pub const VM_DIR: &str = "TIMONEL_VM_DIR";
    pub const MEMORY_MB: &str = "TIMONEL_MEMORY_MB";
    pub const CPUS: &str = "TIMONEL_CPUS";
    pub const NOTES: &str = "TIMONEL_NOTES";
    pub const STOP_SECONDS: &str = "TIMONEL_STOP_SECONDS";
    pub const WAIT_SECONDS: &str = "TIMONEL_WAIT_SECONDS";
}

/// The first statements of every script: UTF-8 output without a BOM (switch and VM names can be
/// non-ASCII), every error terminating, no progress records.
const PRELUDE: &[&str] = &[
    "[Console]::OutputEncoding = [Text.UTF8Encoding]::new($false)",
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
];

/// How a script finds the VM it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRef {
    /// By `VMId`, once known: names are not unique in Hyper-V.
    Id(String),
    /// By name, keeping only VMs whose Notes carry `timonel:machine=<name>`.
    Name(MachineName),
}

/// The statements that set `$vm`.
///
/// By name this is `Get-VM -Name`, whose not-found error record is well documented
/// (`InvalidParameter,…GetVM`). By id it filters the list instead of calling `Get-VM -Id`, whose
/// not-found record is not documented, and throws its own, unlocalized id.
fn lookup(vm: &VmRef) -> &'static [&'static str] {
    match vm {
        VmRef::Id(_) => &[
            "$vm = @(Hyper-V\\Get-VM | Where-Object { $_.VMId.ToString() -eq $env:TIMONEL_VM_ID })",
            "if ($vm.Count -ne 1) { throw 'timonel:vm-not-found' }",
            "$vm = $vm[0]",
        ],
        VmRef::Name(_) => &[
            "$vms = @(Hyper-V\\Get-VM -Name $env:TIMONEL_VM_NAME)",
            "$mine = @($vms | Where-Object { @([string]$_.Notes -split '\\s+') -contains ('timonel:machine=' + $env:TIMONEL_VM_NAME) })",
            "if ($mine.Count -eq 0) { throw 'timonel:foreign-vm' }",
            "if ($mine.Count -gt 1) { throw 'timonel:duplicate-vm' }",
            "$vm = $mine[0]",
        ],
    }
}

/// The usual answer about one VM.
const EMIT_VM: &str = "[pscustomobject]@{ VMId = $vm.VMId.ToString(); Name = $vm.Name; State = $vm.State.ToString() } | ConvertTo-Json -Compress";

/// One PowerShell run: constant script text plus the values it reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsScript {
    statements: Vec<&'static str>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl PsScript {
    pub(crate) fn new(body: &[&'static str]) -> Self {
        let mut statements = PRELUDE.to_vec();
        statements.extend_from_slice(body);
        Self {
            statements,
            env: Vec::new(),
            timeout: Duration::from_secs(120),
        }
    }

    fn with_lookup(vm: &VmRef, body: &[&'static str]) -> Self {
        let mut script = Self::new(lookup(vm));
        script.statements.extend_from_slice(body);
        match vm {
            VmRef::Id(id) => script.set(vars::VM_ID, id.clone()),
            VmRef::Name(name) => script.set(vars::VM_NAME, name.to_string()),
        }
    }

    pub(crate) fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The script text: the statements on one line, separated by `; ` (so error records point at
    /// `line:1` and no comment can swallow code).
    pub fn text(&self) -> String {
        self.statements.join("; ")
    }

    /// The values the script reads, as environment variables.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// `<powershell> -NoProfile -NonInteractive -Command <script>` with the values in the env.
    pub fn to_cmd(&self, powershell: &str) -> Cmd {
        let mut cmd = Cmd::new(powershell)
            .args(["-NoProfile", "-NonInteractive", "-Command"])
            .arg(self.text())
            .timeout(self.timeout);
        for (k, v) in &self.env {
            cmd = cmd.env(k.clone(), v.clone());
        }
        cmd
    }
}

/// The whole preflight in one process: module, hypervisor, rights, vmms, versions.
pub fn probe() -> PsScript {
    PsScript::new(&[
        "$r = [ordered]@{ Module = $false; ModuleVersion = ''; Hypervisor = $false; Admin = $false; HyperVAdmin = $false; Vmms = ''; Windows = [Environment]::OSVersion.Version.ToString() }",
        "$m = @(Get-Module -ListAvailable -Name Hyper-V)",
        "if ($m.Count -gt 0) { $r.Module = $true; $r.ModuleVersion = $m[0].Version.ToString() }",
        "$r.Hypervisor = [bool](Get-CimInstance -ClassName Win32_ComputerSystem).HypervisorPresent",
        "$p = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()",
        "$r.Admin = $p.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)",
        "$r.HyperVAdmin = $p.IsInRole([Security.Principal.SecurityIdentifier]::new('S-1-5-32-578'))",
        "$s = Get-Service -Name vmms -ErrorAction SilentlyContinue",
        "if ($s) { $r.Vmms = $s.Status.ToString() }",
        "[pscustomobject]$r | ConvertTo-Json -Compress",
    ])
}

/// Before creating: the virtual switches, and the VMs already named like the machine.
/// `Get-VM` without `-Name` so that "none" is an empty list, not an error.
pub fn inspect(name: &MachineName) -> PsScript {
    PsScript::new(&[
        "$sw = @(Hyper-V\\Get-VMSwitch | ForEach-Object { [pscustomobject]@{ Id = $_.Id.ToString(); Name = $_.Name; SwitchType = [int]$_.SwitchType; AllowManagementOS = [bool]$_.AllowManagementOS } })",
        "$vms = @(Hyper-V\\Get-VM | Where-Object { $_.Name -eq $env:TIMONEL_VM_NAME } | ForEach-Object { [pscustomobject]@{ VMId = $_.VMId.ToString(); Name = $_.Name; State = $_.State.ToString(); Notes = [string]$_.Notes } })",
        "ConvertTo-Json -Compress -Depth 4 -InputObject ([pscustomobject]@{ Switches = $sw; VMs = $vms })",
    ])
    .set(vars::VM_NAME, name.to_string())
}

/// What `create` needs, already validated and rounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateParams {
    pub name: MachineName,
    pub switch: String,
    pub base_image: String,
    pub disk_path: String,
    pub disk_mib: u64,
    pub seed_iso: String,
    pub vm_dir: String,
    /// An even number of MiB (Hyper-V refuses odd values).
    pub memory_mib: u64,
    pub cpus: u32,
    /// `timonel:cluster=<c> timonel:machine=<m> …`
    pub notes: String,
}

/// Creates the differencing disk and the Generation 2 VM in one process. If any step fails the
/// half-made VM and disk are removed and the original error is rethrown.
///
/// - Disk: a differencing child of the shared base VHDX (instant, small; the base is never
///   written), grown with `Resize-VHD` when `size_mib` is larger than the base.
/// - Secure Boot is turned off rather than switched to the `MicrosoftUEFICertificateAuthority`
///   template: that template only boots shim-signed kernels, so custom or test images (and
///   unsigned kernel modules) would fail to boot, and its name varies across Windows builds.
///   A throwaway local cluster VM gains little from Secure Boot; multipass, Vagrant and Packer
///   make the same choice.
/// - Dynamic memory off (Kubernetes misbehaves when memory moves), automatic checkpoints off
///   (they would pin the disk chain), the seed ISO in a DVD drive, `timonel:` marks in Notes.
pub fn create(p: &CreateParams) -> PsScript {
    PsScript::new(&[
        "if (Test-Path -LiteralPath $env:TIMONEL_VHD_PATH) { Remove-Item -LiteralPath $env:TIMONEL_VHD_PATH -Force }",
        "$vm = $null",
        "try { \
$null = Hyper-V\\New-VHD -Path $env:TIMONEL_VHD_PATH -ParentPath $env:TIMONEL_VHD_PARENT -Differencing; \
$bytes = [int64]$env:TIMONEL_DISK_MB * 1MB; \
if ((Hyper-V\\Get-VHD -Path $env:TIMONEL_VHD_PATH).Size -lt $bytes) { Hyper-V\\Resize-VHD -Path $env:TIMONEL_VHD_PATH -SizeBytes $bytes }; \
$vm = Hyper-V\\New-VM -Name $env:TIMONEL_VM_NAME -Generation 2 -MemoryStartupBytes ([int64]$env:TIMONEL_MEMORY_MB * 1MB) -SwitchName $env:TIMONEL_SWITCH -VHDPath $env:TIMONEL_VHD_PATH -Path $env:TIMONEL_VM_DIR -BootDevice VHD; \
Hyper-V\\Set-VM -VM $vm -Notes $env:TIMONEL_NOTES; \
Hyper-V\\Set-VMMemory -VM $vm -DynamicMemoryEnabled $false; \
Hyper-V\\Set-VMProcessor -VM $vm -Count ([int]$env:TIMONEL_CPUS); \
Hyper-V\\Set-VMFirmware -VM $vm -EnableSecureBoot Off; \
Hyper-V\\Add-VMDvdDrive -VM $vm -Path $env:TIMONEL_SEED_ISO; \
if ((Get-Command -Name Hyper-V\\Set-VM).Parameters.ContainsKey('AutomaticCheckpointsEnabled')) { Hyper-V\\Set-VM -VM $vm -AutomaticCheckpointsEnabled $false } \
} catch { \
if ($vm) { Hyper-V\\Remove-VM -VM $vm -Force -ErrorAction SilentlyContinue }; \
Remove-Item -LiteralPath $env:TIMONEL_VHD_PATH -Force -ErrorAction SilentlyContinue; \
throw \
}",
        EMIT_VM,
    ])
    .set(vars::VM_NAME, p.name.to_string())
    .set(vars::SWITCH, p.switch.clone())
    .set(vars::VHD_PARENT, p.base_image.clone())
    .set(vars::VHD_PATH, p.disk_path.clone())
    .set(vars::DISK_MB, p.disk_mib.to_string())
    .set(vars::SEED_ISO, p.seed_iso.clone())
    .set(vars::VM_DIR, p.vm_dir.clone())
    .set(vars::MEMORY_MB, p.memory_mib.to_string())
    .set(vars::CPUS, p.cpus.to_string())
    .set(vars::NOTES, p.notes.clone())
}

/// `{VMId, Name, State}` of one VM.
pub fn state(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(vm, &[EMIT_VM])
}

/// `{VMId, State, IPAddresses, SwitchName}`: the state, every address the guest's KVP daemon
/// reported, and the virtual switch the adapter is connected to (several joined by `,`; empty
/// when unconnected), so a VM that never gets an address can be blamed on its switch.
pub fn ip(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "$nics = @(Hyper-V\\Get-VMNetworkAdapter -VM $vm)",
            "$ips = @($nics | ForEach-Object { $_.IPAddresses } | Where-Object { $_ })",
            "$sw = @($nics | ForEach-Object { $_.SwitchName } | Where-Object { $_ }) -join ','",
            "[pscustomobject]@{ VMId = $vm.VMId.ToString(); State = $vm.State.ToString(); IPAddresses = $ips; SwitchName = $sw } | ConvertTo-Json -Compress",
        ],
    )
}

/// How long `start` waits for a VM that is still `Stopping` before it starts it again.
pub const START_WAIT: Duration = Duration::from_secs(60);

/// Starts (or resumes) the VM; a running VM is left alone. A VM still `Stopping` (its guest
/// shutting itself down: Hyper-V refuses to start it then) is waited for, up to [`START_WAIT`].
pub fn start(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "$deadline = [DateTime]::UtcNow.AddSeconds([int]$env:TIMONEL_WAIT_SECONDS)",
            WAIT_STOPPING,
            "if ($vm.State.ToString() -eq 'Paused') { Hyper-V\\Resume-VM -VM $vm } elseif ($vm.State.ToString() -ne 'Running') { Hyper-V\\Start-VM -VM $vm }",
            "$vm = Hyper-V\\Get-VM -Id $vm.VMId",
            EMIT_VM,
        ],
    )
    .set(vars::WAIT_SECONDS, START_WAIT.as_secs().to_string())
}

/// Pauses the VM (`Suspend-VM`: its vCPUs stop, its memory stays; not a save to disk) when it
/// runs, and answers its state: the driver refuses a VM that ends neither `Paused` nor `Running`
/// here, so the cmdlet is never asked to pause a VM in a state it would refuse.
pub fn pause(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "if ($vm.State.ToString() -eq 'Running') { Hyper-V\\Suspend-VM -VM $vm; $vm = Hyper-V\\Get-VM -Id $vm.VMId }",
            EMIT_VM,
        ],
    )
}

/// Resumes the VM (`Resume-VM`) when it is paused, and answers its state.
pub fn unpause(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "if ($vm.State.ToString() -eq 'Paused') { Hyper-V\\Resume-VM -VM $vm; $vm = Hyper-V\\Get-VM -Id $vm.VMId }",
            EMIT_VM,
        ],
    )
}

/// Turns `$vm` off unless it is off or saved, and refreshes it.
const TURN_OFF: &str = "if (@('Off', 'Saved', 'FastSaved') -notcontains $vm.State.ToString()) { Hyper-V\\Stop-VM -VM $vm -TurnOff -Force; $forced = $true; $vm = Hyper-V\\Get-VM -Id $vm.VMId }";

/// Waits while `$vm` is `Stopping`, up to `$deadline`, refreshing it.
const WAIT_STOPPING: &str = "while ($vm.State.ToString() -eq 'Stopping' -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 500; $vm = Hyper-V\\Get-VM -Id $vm.VMId }";

/// Graceful stop: the Shutdown integration service, as a job bounded by `timeout`; a VM that is
/// (or is left) `Stopping` (its guest shuts itself down: someone ran `shutdown` in it, or another
/// console stopped it) is waited for until the same deadline; a VM still not off then is turned
/// off. Answers `{VMId, State, Forced}`.
pub fn stop_graceful(vm: &VmRef, timeout: Duration) -> PsScript {
    let secs = timeout.as_secs().max(1);
    PsScript::with_lookup(
        vm,
        &[
            "$forced = $false",
            "$deadline = [DateTime]::UtcNow.AddSeconds([int]$env:TIMONEL_STOP_SECONDS)",
            "if ($vm.State.ToString() -eq 'Paused') { Hyper-V\\Resume-VM -VM $vm; $vm = Hyper-V\\Get-VM -Id $vm.VMId }",
            "if ($vm.State.ToString() -eq 'Running') { \
$job = Hyper-V\\Stop-VM -VM $vm -Force -AsJob; \
$null = Wait-Job -Job $job -Timeout ([int]$env:TIMONEL_STOP_SECONDS); \
Stop-Job -Job $job; Remove-Job -Job $job -Force; \
$vm = Hyper-V\\Get-VM -Id $vm.VMId \
}",
            WAIT_STOPPING,
            TURN_OFF,
            "[pscustomobject]@{ VMId = $vm.VMId.ToString(); State = $vm.State.ToString(); Forced = $forced } | ConvertTo-Json -Compress",
        ],
    )
    .set(vars::STOP_SECONDS, secs.to_string())
    .timeout(timeout + Duration::from_secs(120))
}

/// Power off at once. Answers `{VMId, State, Forced}`.
pub fn stop_force(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "$forced = $false",
            TURN_OFF,
            "[pscustomobject]@{ VMId = $vm.VMId.ToString(); State = $vm.State.ToString(); Forced = $forced } | ConvertTo-Json -Compress",
        ],
    )
}

/// The statements that turn `$vm` off, remove it, and add `{VMId, Name, Files}` to `$out`.
/// `Remove-VM` leaves disks in place, so the files attached to the VM are returned for the
/// driver to delete.
const REMOVE_VM: &str = "$files = @(@(Hyper-V\\Get-VMHardDiskDrive -VM $vm) + @(Hyper-V\\Get-VMDvdDrive -VM $vm) | ForEach-Object { $_.Path } | Where-Object { $_ }); \
if ($vm.State.ToString() -ne 'Off') { Hyper-V\\Stop-VM -VM $vm -TurnOff -Force }; \
Hyper-V\\Remove-VM -VM $vm -Force; \
$out += [pscustomobject]@{ VMId = $vm.VMId.ToString(); Name = $vm.Name; Files = $files }";

/// Removes one VM. Answers a one-element array of `{VMId, Name, Files}`.
pub fn delete(vm: &VmRef) -> PsScript {
    PsScript::with_lookup(
        vm,
        &[
            "$out = @()",
            REMOVE_VM,
            "ConvertTo-Json -Compress -Depth 4 -InputObject @($out)",
        ],
    )
}

/// Removes every VM whose Notes carry `timonel:cluster=<cluster>`. Answers an array (possibly
/// empty, which PowerShell may print as `[]` or as nothing) of `{VMId, Name, Files}`.
pub fn delete_cluster(cluster: &str) -> PsScript {
    PsScript::new(&[
        "$out = @()",
        "foreach ($vm in @(Hyper-V\\Get-VM | Where-Object { @([string]$_.Notes -split '\\s+') -contains ('timonel:cluster=' + $env:TIMONEL_CLUSTER) })) { ",
        REMOVE_VM,
        " }",
        "ConvertTo-Json -Compress -Depth 4 -InputObject @($out)",
    ])
    .set(vars::CLUSTER, cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> MachineName {
        s.parse().unwrap()
    }

    fn params(path: &str, switch: &str) -> CreateParams {
        CreateParams {
            name: name("dev"),
            switch: switch.to_string(),
            base_image: format!("{path}\\base.vhdx"),
            disk_path: format!("{path}\\dev.vhdx"),
            disk_mib: 20480,
            seed_iso: format!("{path}\\seed.iso"),
            vm_dir: path.to_string(),
            memory_mib: 2048,
            cpus: 2,
            notes: "timonel:cluster=dev timonel:machine=dev".to_string(),
        }
    }

    fn all_scripts() -> Vec<PsScript> {
        let by_name = VmRef::Name(name("dev"));
        let by_id = VmRef::Id("4a5f0b52-0000-4000-8000-000000000001".to_string());
        let mut v = vec![
            probe(),
            inspect(&name("dev")),
            create(&params("C:\\t", "Default Switch")),
            delete_cluster("dev"),
        ];
        for vm in [&by_name, &by_id] {
            v.push(state(vm));
            v.push(ip(vm));
            v.push(start(vm));
            v.push(stop_graceful(vm, Duration::from_secs(30)));
            v.push(stop_force(vm));
            v.push(pause(vm));
            v.push(unpause(vm));
            v.push(delete(vm));
        }
        v
    }

    #[test]
    fn every_script_has_the_prelude_and_no_double_quotes() {
        for s in all_scripts() {
            let text = s.text();
            assert!(
                text.starts_with("[Console]::OutputEncoding = [Text.UTF8Encoding]::new($false); $ErrorActionPreference = 'Stop'"),
                "{text}"
            );
            assert!(
                !text.contains('"'),
                "double quotes expand `$` and get re-quoted: {text}"
            );
            assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
            assert!(
                !text.contains('#'),
                "a comment would swallow the rest of the line: {text}"
            );
        }
    }

    #[test]
    fn hyperv_cmdlets_are_module_qualified() {
        let cmdlets = [
            "Get-VM ",
            "Get-VMSwitch",
            "New-VM ",
            "Start-VM",
            "Stop-VM",
            "Remove-VM",
            "Resume-VM",
            "Suspend-VM",
            "Set-VM ",
            "Set-VMMemory",
            "Set-VMProcessor",
            "Set-VMFirmware",
            "Add-VMDvdDrive",
            "New-VHD",
            "Get-VHD",
            "Resize-VHD",
            "Get-VMNetworkAdapter",
            "Get-VMHardDiskDrive",
            "Get-VMDvdDrive",
        ];
        for s in all_scripts() {
            let text = s.text();
            for c in cmdlets {
                for (i, _) in text.match_indices(c) {
                    assert!(
                        text[..i].ends_with("Hyper-V\\"),
                        "`{}` is not module-qualified in: {text}",
                        c.trim()
                    );
                }
            }
        }
    }

    #[test]
    fn values_travel_as_data_never_as_code() {
        let evil = [
            "C:\\it's; $(Remove-Item C:\\ -Recurse) `n\"x\"\nWrite-Host pwned",
            "sw'; Stop-Computer; '",
            "a\u{2019}b\u{2018}; $(x)",
        ];
        let plain = create(&params("C:\\t", "Default Switch"));
        for e in evil {
            let s = create(&params(e, e));
            assert_eq!(
                s.text(),
                plain.text(),
                "the script text must not depend on values"
            );
            assert!(s.env().iter().any(|(k, v)| k == vars::SWITCH && v == e));
            assert!(s.env().iter().any(|(k, v)| k == vars::VM_DIR && v == e));
            let cmd = s.to_cmd("powershell.exe");
            assert_eq!(
                cmd.argv()[..4],
                [
                    "powershell.exe",
                    "-NoProfile",
                    "-NonInteractive",
                    "-Command"
                ]
            );
            assert_eq!(cmd.args.len(), 4);
            assert!(!cmd.args[3].contains(e));
        }
        assert_eq!(delete_cluster("a").text(), delete_cluster("b'; x").text());
    }

    #[test]
    fn lookups_use_the_id_when_known() {
        let by_id = state(&VmRef::Id("abc".into()));
        assert!(by_id
            .text()
            .contains("$_.VMId.ToString() -eq $env:TIMONEL_VM_ID"));
        assert!(!by_id.text().contains("-Name $env:TIMONEL_VM_NAME"));
        assert_eq!(by_id.env(), &[(vars::VM_ID.to_string(), "abc".to_string())]);
        let by_name = state(&VmRef::Name(name("dev")));
        assert!(by_name
            .text()
            .contains("Hyper-V\\Get-VM -Name $env:TIMONEL_VM_NAME"));
        assert!(by_name.text().contains("'timonel:machine='"));
    }

    #[test]
    fn create_builds_a_gen2_vm_with_a_differencing_disk() {
        let text = create(&params("C:\\t", "Default Switch")).text();
        for needle in [
            "Hyper-V\\New-VHD -Path $env:TIMONEL_VHD_PATH -ParentPath $env:TIMONEL_VHD_PARENT -Differencing",
            "Hyper-V\\Resize-VHD -Path $env:TIMONEL_VHD_PATH -SizeBytes $bytes",
            "-Generation 2",
            "-MemoryStartupBytes ([int64]$env:TIMONEL_MEMORY_MB * 1MB)",
            "Hyper-V\\Set-VMFirmware -VM $vm -EnableSecureBoot Off",
            "Hyper-V\\Add-VMDvdDrive -VM $vm -Path $env:TIMONEL_SEED_ISO",
            "Hyper-V\\Set-VMProcessor -VM $vm -Count ([int]$env:TIMONEL_CPUS)",
            "Hyper-V\\Set-VM -VM $vm -Notes $env:TIMONEL_NOTES",
            "ConvertTo-Json -Compress",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
    }

    #[test]
    fn stop_timeout_reaches_the_script_and_the_process_limit() {
        let s = stop_graceful(&VmRef::Id("x".into()), Duration::from_secs(45));
        assert!(s
            .env()
            .contains(&(vars::STOP_SECONDS.to_string(), "45".to_string())));
        let cmd = s.to_cmd("pwsh");
        assert!(cmd.timeout > Duration::from_secs(45));
        assert!(s.text().contains("-AsJob"));
        assert!(s
            .text()
            .contains("Hyper-V\\Stop-VM -VM $vm -TurnOff -Force"));
    }
}
