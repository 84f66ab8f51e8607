//! [`HyperVDriver`]: the [`Driver`] implementation. Every Hyper-V action is one PowerShell run.

mod address;
mod leftovers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    poll_until, Availability, Capabilities, ClusterName, CommandError, Driver, DriverError,
    DriverKind, HostRunner, MachineName, MachineSpec, MachineState, NodeKind, Reporter, Runner,
    StopMode, WaitError,
};

use crate::files::{path_string, write_vmid};
use crate::parse::{
    parse_json, parse_json_list, parse_vm_state, Inspect, ProbeReport, Removed, StopReport, VmInfo,
};
use crate::probe::{powershell_check_fix, probe_verdict};
use crate::record::{failure_error, to_driver_error, Failure};
use crate::script::{self, CreateParams, PsScript, VmRef};
use crate::settings::has_marker;
use crate::settings::{even_memory_mib, vm_notes, whole_cpus};
use crate::switch::{choose_switch, SWITCH_OPTION};

/// The environment variable naming the PowerShell executable (`powershell.exe`, `pwsh`, or a
/// simulator in tests).
pub const ENV_POWERSHELL: &str = "TIMONEL_POWERSHELL";
/// The file in `VmDisk::state_dir` holding the VM's `VMId`.
pub const VMID_FILE: &str = "hyperv-vmid";
/// Defaults when the spec leaves them open.
pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u64 = 2048;

/// How long the driver waits, and how often it polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long `ip` waits for the guest's KVP daemon to report an IPv4 address.
    pub ip_timeout: Duration,
    /// The pause between two polls.
    pub poll_interval: Duration,
    /// How long `delete` retries removing files Hyper-V still holds open.
    pub file_release_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ip_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(2),
            file_release_timeout: Duration::from_secs(30),
        }
    }
}

/// The Hyper-V driver: PowerShell through an injected [`Runner`].
pub struct HyperVDriver {
    runner: Arc<dyn Runner>,
    /// `None` when there is no PowerShell to run (not Windows, no override).
    powershell: Option<String>,
    timing: Timing,
    /// `VMId`s learned by create and lookups: names are not unique in Hyper-V.
    ids: Mutex<HashMap<MachineName, String>>,
}

impl std::fmt::Debug for HyperVDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperVDriver")
            .field("runner", &self.runner.target())
            .field("powershell", &self.powershell)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

fn env_powershell() -> Option<String> {
    std::env::var(ENV_POWERSHELL).ok().filter(|s| !s.is_empty())
}

fn needs_windows() -> (String, String) {
    (
        "Hyper-V needs Windows".to_string(),
        "use `--driver docker` or `--driver kvm`".to_string(),
    )
}

impl HyperVDriver {
    /// Runs PowerShell on the host: `$TIMONEL_POWERSHELL`, else `powershell.exe` on Windows.
    /// Elsewhere, without the override, the driver is unusable (probe says why).
    pub fn new() -> Self {
        let powershell =
            env_powershell().or_else(|| cfg!(windows).then(|| "powershell.exe".to_string()));
        Self {
            runner: Arc::new(HostRunner),
            powershell,
            timing: Timing::default(),
            ids: Mutex::default(),
        }
    }

    /// Runs PowerShell (`$TIMONEL_POWERSHELL`, else `powershell.exe`) through `runner`.
    pub fn with_runner(runner: Arc<dyn Runner>) -> Self {
        Self {
            runner,
            powershell: Some(env_powershell().unwrap_or_else(|| "powershell.exe".to_string())),
            timing: Timing::default(),
            ids: Mutex::default(),
        }
    }

    /// Uses this PowerShell executable.
    pub fn with_powershell(mut self, program: impl Into<String>) -> Self {
        self.powershell = Some(program.into());
        self
    }

    /// Uses these timeouts and poll interval (tests make them short).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The PowerShell program, for messages.
    fn powershell_name(&self) -> &str {
        self.powershell.as_deref().unwrap_or("powershell.exe")
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<MachineName, String>> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn vm_ref(&self, name: &MachineName) -> VmRef {
        match self.ids().get(name) {
            Some(id) => VmRef::Id(id.clone()),
            None => VmRef::Name(name.clone()),
        }
    }

    fn remember(&self, name: &MachineName, id: &str) {
        if !id.is_empty() {
            self.ids().insert(name.clone(), id.to_string());
        }
    }

    fn forget(&self, name: &MachineName) {
        self.ids().remove(name);
    }

    /// Runs one script; a failure becomes a typed error about `what`.
    pub(crate) async fn run(
        &self,
        op: &str,
        what: &str,
        script: PsScript,
    ) -> Result<String, DriverError> {
        let Some(ps) = &self.powershell else {
            let (reason, fix) = needs_windows();
            return Err(DriverError::NotAvailable {
                driver: "hyperv".to_string(),
                reason,
                fix,
            });
        };
        let cmd = script.to_cmd(ps);
        match self.runner.run(&cmd).await {
            Ok(out) => Ok(out.stdout),
            Err(e) => Err(to_driver_error(op, what, e)),
        }
    }

    /// Pauses (`Suspend-VM`) or resumes (`Resume-VM`) the VM. The script only calls the cmdlet
    /// in the state it accepts and answers the state after: already there is Ok, anything else
    /// (off, saved, starting) is `InvalidState`.
    async fn set_paused(&self, name: &MachineName, to_paused: bool) -> Result<(), DriverError> {
        let what = vm_what(name);
        let (script, want, action) = if to_paused {
            (
                script::pause(&self.vm_ref(name)),
                MachineState::Paused,
                "pause",
            )
        } else {
            (
                script::unpause(&self.vm_ref(name)),
                MachineState::Running,
                "unpause",
            )
        };
        let out = self.run(&format!("{action} {what}"), &what, script).await?;
        let vm: VmInfo = parse_json("the VM state", &out)?;
        self.remember(name, &vm.vm_id);
        match parse_vm_state(&vm.state) {
            state if state == want => Ok(()),
            state => Err(DriverError::InvalidState {
                what,
                state: state.to_string(),
                action: action.to_string(),
            }),
        }
    }
}

impl Default for HyperVDriver {
    fn default() -> Self {
        Self::new()
    }
}

fn vm_what(name: &MachineName) -> String {
    format!("Hyper-V VM `{name}`")
}

#[async_trait]
impl Driver for HyperVDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Hyperv
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Vm,
            needs_admin: true,
            disk_format: Some("vhdx".to_string()),
        }
    }

    fn as_host_resources(&self) -> Option<&dyn timonel_driver::HostResources> {
        Some(self)
    }

    /// The base VHDX is made by Hyper-V's own `Convert-VHD` (crate::disk): no `qemu-img`.
    fn as_disk_images(&self) -> Option<&dyn timonel_driver::DiskImages> {
        Some(self)
    }

    /// Hyper-V shares no host folder with a Linux guest: its folder sharing goes through
    /// Enhanced Session (RDP), for Windows guests only.
    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::Unsupported {
            why: "Hyper-V has no way to share a host folder with a Linux VM (its folder sharing is Enhanced Session, for Windows guests)".into(),
            instead: "share the folder over SMB (New-SmbShare) and mount it in the node yourself (`timonel ssh -- mount -t cifs …`), or use the docker driver, which bind-mounts host folders; drop --mount".into(),
        }
    }

    async fn probe(&self) -> Availability {
        let unusable = |reason: String, fix: String| Availability::Unusable { reason, fix };
        if self.powershell.is_none() {
            let (reason, fix) = needs_windows();
            return unusable(reason, fix);
        }
        let out = match self.run("check Hyper-V", "Hyper-V", script::probe()).await {
            Ok(out) => out,
            Err(DriverError::Command(CommandError::NotFound { program })) => {
                return unusable(
                    format!("`{program}` was not found"),
                    "put Windows PowerShell on PATH, or set TIMONEL_POWERSHELL to its path"
                        .to_string(),
                )
            }
            Err(DriverError::NotAvailable { reason, fix, .. }) => return unusable(reason, fix),
            Err(e) => {
                // A failure without an error record that explains it (no rights would have
                // one) is PowerShell misbehaving, not a rights problem.
                let fix = timonel_driver::Hint::hint(&e)
                    .unwrap_or_else(|| powershell_check_fix(self.powershell_name()));
                return unusable(format!("checking Hyper-V failed: {e}"), fix);
            }
        };
        let report: ProbeReport = match parse_json("the Hyper-V check", &out) {
            Ok(r) => r,
            Err(_) if out.trim_start_matches('\u{feff}').trim().is_empty() => {
                return unusable(
                    format!(
                        "`{}` printed nothing for the Hyper-V check and exited 0: no PowerShell \
                         answered",
                        self.powershell_name()
                    ),
                    powershell_check_fix(self.powershell_name()),
                )
            }
            Err(e) => {
                return unusable(
                    format!(
                        "`{}` answered the Hyper-V check with something else than its report \
                         ({e})",
                        self.powershell_name()
                    ),
                    powershell_check_fix(self.powershell_name()),
                )
            }
        };
        probe_verdict(&report)
    }

    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        let name = &spec.name;
        let what = vm_what(name);
        let disk = spec.vm_disk.as_ref().ok_or_else(|| DriverError::Backend {
            op: format!("create {what}"),
            message: "the spec has no VM disk".to_string(),
            hint: None,
        })?;
        let is_vhdx = disk
            .base_image
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("vhdx"));
        if !is_vhdx {
            return Err(DriverError::Backend {
                op: format!("create {what}"),
                message: format!(
                    "base image `{}` is not a VHDX; Generation 2 VMs boot only from VHDX",
                    disk.base_image.display()
                ),
                hint: Some("convert it in an elevated PowerShell: `Convert-VHD -Path <image>.vhd -DestinationPath <image>.vhdx -VHDType Dynamic` (a qcow2 image: leave out --vm-image and timonel makes the VHDX from its default cloud image)".to_string()),
            });
        }

        let out = self
            .run("inspect Hyper-V", &what, script::inspect(name))
            .await?;
        let seen: Inspect = parse_json("the virtual switches and VMs", &out)?;
        let mine: Vec<&VmInfo> = seen
            .vms
            .iter()
            .filter(|v| has_marker(&v.notes, name))
            .collect();
        match mine.as_slice() {
            [one] => {
                // Created before (same name, our marker): Ok, as the contract says.
                self.remember(name, &one.vm_id);
                std::fs::create_dir_all(&disk.state_dir).map_err(|e| {
                    DriverError::io(
                        format!("could not create `{}`", disk.state_dir.display()),
                        e,
                    )
                })?;
                return write_vmid(&disk.state_dir, &one.vm_id);
            }
            [] if !seen.vms.is_empty() => {
                return Err(failure_error(&Failure::ForeignVm, "create", &what, ""))
            }
            [] => {}
            _ => {
                let message = format!("{} VMs are marked as `{name}`", mine.len());
                return Err(failure_error(
                    &Failure::DuplicateVm,
                    "create",
                    &what,
                    &message,
                ));
            }
        }

        let choice = choose_switch(
            spec.options.get(SWITCH_OPTION).map(String::as_str),
            &seen.switches,
        )?;
        if let Some(w) = &choice.warning {
            report.warn(w);
        }

        std::fs::create_dir_all(&disk.state_dir).map_err(|e| {
            DriverError::io(
                format!("could not create `{}`", disk.state_dir.display()),
                e,
            )
        })?;
        let params = CreateParams {
            name: name.clone(),
            switch: choice.name.clone(),
            base_image: path_string("the base image path", &disk.base_image)?,
            disk_path: path_string(
                "the disk path",
                &disk.state_dir.join(format!("{name}.vhdx")),
            )?,
            disk_mib: disk.size_mib,
            seed_iso: path_string("the seed ISO path", &disk.seed_iso)?,
            vm_dir: path_string("the state directory", &disk.state_dir)?,
            memory_mib: even_memory_mib(spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB)),
            cpus: spec.cpus.map(whole_cpus).unwrap_or(DEFAULT_CPUS),
            notes: vm_notes(&spec.cluster, name),
        };
        report.step(&format!(
            "creating Hyper-V VM `{name}` on switch `{}`",
            choice.name
        ));
        let out = self
            .run(&format!("create {what}"), &what, script::create(&params))
            .await?;
        let vm: VmInfo = parse_json("the new VM", &out)?;
        self.remember(name, &vm.vm_id);
        write_vmid(&disk.state_dir, &vm.vm_id)
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        let what = vm_what(name);
        let out = self
            .run(
                &format!("start {what}"),
                &what,
                script::start(&self.vm_ref(name)),
            )
            .await?;
        let vm: VmInfo = parse_json("the started VM", &out)?;
        self.remember(name, &vm.vm_id);
        Ok(())
    }

    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError> {
        let what = vm_what(name);
        let vm = self.vm_ref(name);
        let script = match how {
            StopMode::Force => script::stop_force(&vm),
            StopMode::Graceful { timeout } => script::stop_graceful(&vm, timeout),
        };
        let out = self.run(&format!("stop {what}"), &what, script).await?;
        let report: StopReport = parse_json("the stopped VM", &out)?;
        self.remember(name, &report.vm_id);
        if let (true, StopMode::Graceful { timeout }) = (report.forced, how) {
            tracing::warn!(
                vm = %name,
                "the guest did not shut down within {timeout:?} of Hyper-V's shutdown request \
                 (it ignored it, or runs no Shutdown integration service); turned it off with \
                 Stop-VM -TurnOff"
            );
        }
        Ok(())
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name, true).await
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name, false).await
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        let what = vm_what(name);
        let out = match self
            .run(
                &format!("delete {what}"),
                &what,
                script::delete(&self.vm_ref(name)),
            )
            .await
        {
            Ok(out) => out,
            Err(e) if e.is_not_found() => {
                self.forget(name);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.forget(name);
        let removed: Vec<Removed> = parse_json_list("the removed VM", &out)?;
        for r in &removed {
            self.remove_leftovers(r).await?;
        }
        Ok(())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        let what = format!("Hyper-V VMs of cluster `{cluster}`");
        let out = self
            .run(
                &format!("delete {what}"),
                &what,
                script::delete_cluster(cluster.as_str()),
            )
            .await?;
        let removed: Vec<Removed> = parse_json_list("the removed VMs", &out)?;
        let mut lines = Vec::new();
        for r in &removed {
            if let Ok(name) = r.name.parse::<MachineName>() {
                self.forget(&name);
            }
            lines.push(format!("removed Hyper-V VM `{}` ({})", r.name, r.vm_id));
            for f in self.remove_leftovers(r).await? {
                lines.push(format!("removed file `{}`", f.display()));
            }
        }
        Ok(lines)
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        let what = vm_what(name);
        match self
            .run(
                "read the VM state",
                &what,
                script::state(&self.vm_ref(name)),
            )
            .await
        {
            Ok(out) => {
                let vm: VmInfo = parse_json("the VM state", &out)?;
                self.remember(name, &vm.vm_id);
                Ok(parse_vm_state(&vm.state))
            }
            Err(e) if e.is_not_found() => {
                self.forget(name);
                Ok(MachineState::NotCreated)
            }
            Err(e) => Err(e),
        }
    }

    /// Polls until the guest reports an IPv4 address, up to `ip_timeout`. Past it, the error
    /// names the VM's virtual switch: a switch without DHCP (an Internal one other than the
    /// Default Switch, or an External one on a network without DHCP) never gives an address.
    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        self.ip_within(name, self.timing.ip_timeout).await
    }

    /// As [`Self::ip`], waiting `timeout` instead of the driver's own.
    async fn wait_ip(&self, name: &MachineName, timeout: Duration) -> Result<IpAddr, DriverError> {
        self.ip_within(name, timeout).await
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        // Guests are reached directly on the switch.
        Ok(SocketAddr::new(self.ip(name).await?, port))
    }
}

impl HyperVDriver {
    /// Polls until the guest reports an IPv4 address, up to `timeout`; past it, the error
    /// names the VM's virtual switch.
    async fn ip_within(
        &self,
        name: &MachineName,
        timeout: Duration,
    ) -> Result<IpAddr, DriverError> {
        let what = format!("IPv4 address of {}", vm_what(name));
        let seen = Mutex::new(None);
        match poll_until(&what, timeout, self.timing.poll_interval, || {
            self.ip_once(name, &seen)
        })
        .await
        {
            Ok(ip) => Ok(ip),
            Err(WaitError::Failed(e)) => Err(e),
            Err(WaitError::Timeout { after, last, .. }) => {
                let report = seen
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Err(self.no_address(name, after, &last, report).await)
            }
        }
    }
}

/// The hypervisor runs here: this machine's CPUs and memory.
#[async_trait]
impl timonel_driver::HostResources for HyperVDriver {
    async fn host_resources(&self) -> Result<timonel_driver::HostCapacity, DriverError> {
        Ok(timonel_driver::local_host(
            "this machine (the Hyper-V host)",
        ))
    }
}
