//! A PowerShell simulator per test: a temp state dir, a scenario, and a wrapper executable
//! that points `tests/simulators/powershell/powershell-sim.py` at that state dir.

#![allow(dead_code, clippy::unwrap_used)] // test helpers: failing loudly is their job

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use timonel_driver::{
    ClusterName, HostRunner, MachineName, MachineSpec, NodeRole, Reporter, VmDisk,
};
use timonel_driver_hyperv::{HyperVDriver, Timing};

pub const SIMULATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/simulators/powershell/powershell-sim.py"
);

pub struct Sim {
    pub dir: TempDir,
    pub state: PathBuf,
    pub powershell: PathBuf,
}

pub fn fast() -> Timing {
    Timing {
        ip_timeout: Duration::from_secs(20),
        poll_interval: Duration::from_millis(10),
        file_release_timeout: Duration::from_secs(2),
    }
}

impl Sim {
    pub fn new(scenario: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("sim-state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("scenario.json"), scenario.to_string()).unwrap();
        let powershell = launcher(dir.path(), &state);
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/base.vhdx"), vec![0u8; 4096]).unwrap();
        Self {
            dir,
            state,
            powershell,
        }
    }

    pub fn default() -> Self {
        Self::new(json!({}))
    }

    pub fn driver(&self) -> HyperVDriver {
        HyperVDriver::with_runner(Arc::new(HostRunner))
            .with_powershell(self.powershell.to_str().unwrap())
            .with_timing(fast())
    }

    /// A driver whose node `dev` (cluster `dev`) is created and running.
    pub async fn running(&self) -> (HyperVDriver, MachineSpec) {
        use timonel_driver::Driver;
        let driver = self.driver();
        let spec = self.spec("dev", 1);
        driver
            .create(&spec, &timonel_driver::SilentReporter)
            .await
            .unwrap();
        driver.start(&spec.name).await.unwrap();
        (driver, spec)
    }

    pub fn base_image(&self) -> PathBuf {
        self.dir.path().join("images/base.vhdx")
    }

    /// A node spec whose state dir is `<tmp>/<dir_name>` (with a seed ISO in it).
    pub fn spec_in(&self, cluster: &str, index: u32, dir_name: &str) -> MachineSpec {
        let cluster: ClusterName = cluster.parse().unwrap();
        let name = cluster.machine(index);
        let state_dir = self.dir.path().join(dir_name);
        std::fs::create_dir_all(&state_dir).unwrap();
        let seed_iso = state_dir.join("seed.iso");
        std::fs::write(&seed_iso, b"cidata").unwrap();
        let mut spec = MachineSpec::new(name, cluster, NodeRole::Server, index);
        spec.cpus = Some(2.0);
        spec.memory_mib = Some(2048);
        spec.vm_disk = Some(VmDisk {
            base_image: self.base_image(),
            size_mib: 20480,
            seed_iso,
            state_dir,
        });
        spec
    }

    pub fn spec(&self, cluster: &str, index: u32) -> MachineSpec {
        let dir = format!("nodes/{cluster}-{index}");
        self.spec_in(cluster, index, &dir)
    }

    /// [`spec`](Self::spec) asking for virtual switch `switch` (`--hyperv-virtual-switch`).
    pub fn spec_on_switch(&self, cluster: &str, index: u32, switch: &str) -> MachineSpec {
        let mut spec = self.spec(cluster, index);
        spec.options.insert(
            timonel_driver_hyperv::SWITCH_OPTION.to_string(),
            switch.to_string(),
        );
        spec
    }

    pub fn scenario(&self, scenario: Value) {
        std::fs::write(self.state.join("scenario.json"), scenario.to_string()).unwrap();
    }

    /// One line per PowerShell process: `<op> lookup=<id|name|->`.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.state.join("calls.log"));
    }

    pub fn vms(&self) -> Vec<Value> {
        self.world()["vms"].as_array().cloned().unwrap_or_default()
    }

    pub fn world(&self) -> Value {
        match std::fs::read_to_string(self.state.join("vms.json")) {
            Ok(s) => serde_json::from_str(&s).unwrap(),
            Err(_) => json!({"vms": [], "vhds": {}}),
        }
    }

    pub fn set_world(&self, world: &Value) {
        std::fs::write(self.state.join("vms.json"), world.to_string()).unwrap();
    }

    pub fn injected(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("INJECTED")).ok()
    }
}

/// `<dir>/powershell`: runs the simulator with its state in `state`.
#[cfg(unix)]
fn launcher(dir: &Path, state: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let powershell = dir.join("powershell");
    std::fs::write(
        &powershell,
        format!(
            "#!/bin/sh\nTIMONEL_PS_SIM_STATE='{}' exec python3 '{}' \"$@\"\n",
            state.display(),
            SIMULATOR
        ),
    )
    .unwrap();
    std::fs::set_permissions(&powershell, std::fs::Permissions::from_mode(0o755)).unwrap();
    powershell
}

/// `<dir>/powershell.exe`: a Windows program that relays its runs to the simulator (tests under
/// Wine, scripts/test-windows.sh), with its state in `state`.
#[cfg(windows)]
fn launcher(dir: &Path, state: &Path) -> PathBuf {
    let state = state.to_str().unwrap();
    timonel_driver::forwarder::install(
        dir,
        "powershell",
        "powershell",
        &[("TIMONEL_PS_SIM_STATE", state)],
    )
    .unwrap()
}

pub fn name(s: &str) -> MachineName {
    s.parse().unwrap()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A Reporter that keeps what it was told.
#[derive(Default)]
pub struct Recorder {
    pub warnings: Mutex<Vec<String>>,
    pub steps: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn step(&self, message: &str) {
        self.steps.lock().unwrap().push(message.to_string());
    }
    fn progress(&self, _: u64, _: Option<u64>) {}
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}
