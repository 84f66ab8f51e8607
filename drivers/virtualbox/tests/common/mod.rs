//! The VBoxManage simulator (tests/simulators/vboxmanage) behind a real `HostRunner`, one state
//! directory per test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test helpers: failing loudly is their job

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    Cmd, CommandError, HostRunner, MachineSpec, NodeRole, Output, PortMapping, Runner, VmDisk,
};
use timonel_driver_virtualbox::{RetryPolicy, Timings, VirtualBoxDriver};

pub const V7: &str = "7.0.14r161095";
pub const V61: &str = "6.1.50r161033";

/// The simulator script.
pub fn simulator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/simulators/vboxmanage/VBoxManage")
}

/// A `PATH` that finds the real python3 first: a version-manager shim (pyenv) in front of it
/// costs a few hundred milliseconds per simulated VBoxManage call.
pub fn sim_path() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let old = std::env::var("PATH").unwrap_or_default();
        let real = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| PathBuf::from(s.trim()));
        match real.as_deref().and_then(Path::parent) {
            Some(dir) => format!("{}:{old}", dir.display()),
            None => old,
        }
    })
    .clone()
}

/// Runs commands on the host with the simulator's state directory in their environment.
pub struct SimRunner {
    pub state: PathBuf,
}

#[async_trait]
impl Runner for SimRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let cmd = cmd
            .clone()
            .env("TIMONEL_VBOX_SIM_STATE", self.state.to_string_lossy());
        // Under Wine the forwarder's relay runs python3 with its own PATH.
        let cmd = if cfg!(unix) {
            cmd.env("PATH", sim_path())
        } else {
            cmd
        };
        HostRunner.run(&cmd).await
    }
    fn target(&self) -> &str {
        "host (VBoxManage simulator)"
    }
}

pub struct Sim {
    pub dir: tempfile::TempDir,
    /// What the driver runs as VBoxManage: the simulator, or on Windows (under Wine,
    /// scripts/test-windows.sh) `VBoxManage.exe`, a forwarder to it.
    pub program: PathBuf,
}

/// The program the driver runs as VBoxManage (see [`Sim::program`]).
#[cfg(unix)]
fn program(_dir: &Path) -> PathBuf {
    simulator()
}

#[cfg(windows)]
fn program(dir: &Path) -> PathBuf {
    timonel_driver::forwarder::install(dir, "VBoxManage", "vboxmanage", &[]).unwrap()
}

impl Sim {
    /// A simulator of `version` with extra `config.json` keys.
    pub fn new(version: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        let config = format!(r#"{{"version": "{version}", "ip_after_polls": 2{extra}}}"#);
        std::fs::create_dir_all(dir.path().join("sim")).unwrap();
        std::fs::write(dir.path().join("sim/config.json"), config).unwrap();
        std::fs::write(dir.path().join("base.vmdk"), b"base disk").unwrap();
        std::fs::write(dir.path().join("seed.iso"), b"cidata").unwrap();
        let program = program(dir.path());
        Self { dir, program }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("sim")
    }

    pub fn fast_timings() -> Timings {
        Timings {
            ip_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(10),
            settle_timeout: Duration::from_secs(5),
            relist_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                tries: 5,
                first_delay: Duration::from_millis(5),
            },
        }
    }

    /// [`fast_timings`](Self::fast_timings) with `ip` giving up after 300 ms.
    pub fn short_ip_timeout() -> Timings {
        Timings {
            ip_timeout: Duration::from_millis(300),
            ..Self::fast_timings()
        }
    }

    /// The error of creating node `dev` (which must fail).
    pub async fn create_error(&self) -> timonel_driver::DriverError {
        use timonel_driver::Driver;
        self.driver()
            .create(&self.spec("dev", 1, 45022), &timonel_driver::SilentReporter)
            .await
            .expect_err("create must fail")
    }

    pub fn driver(&self) -> VirtualBoxDriver {
        VirtualBoxDriver::with_runner(
            Arc::new(SimRunner {
                state: self.state(),
            }),
            self.program.clone(),
        )
        .with_timings(Self::fast_timings())
    }

    /// Runs the simulator directly (to set up a world or look at it).
    pub fn vbox(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(args)
            .env("TIMONEL_VBOX_SIM_STATE", self.state())
            .env("LANG", "C");
        if cfg!(unix) {
            cmd.env("PATH", sim_path());
        }
        cmd.output().unwrap()
    }

    /// Runs the simulator directly and insists that it succeeds (setting up a world by hand).
    pub fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.vbox(args);
        assert!(
            out.status.success(),
            "VBoxManage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A host-only interface made by hand (`hostonlyif create` + `ipconfig`): `vboxnet<n>` at
    /// `ip`/24, without a DHCP server.
    pub fn host_only_interface(&self, ip: &str) {
        let out = self.ok(&["hostonlyif", "create"]);
        let created = String::from_utf8_lossy(&out.stdout);
        let name = created
            .split('\'')
            .nth(1)
            .expect("Interface '<name>' was successfully created")
            .to_string();
        self.ok(&[
            "hostonlyif",
            "ipconfig",
            &name,
            "--ip",
            ip,
            "--netmask",
            "255.255.255.0",
        ]);
    }

    /// `dhcpserver add` for `vboxnet0` with this server address and range, `--enable` or
    /// `--disable`d.
    pub fn dhcp_server(&self, server: &str, lower: &str, upper: &str, enabled: bool) {
        self.ok(&[
            "dhcpserver",
            "add",
            "--netname",
            "HostInterfaceNetworking-vboxnet0",
            "--ip",
            server,
            "--netmask",
            "255.255.255.0",
            "--lowerip",
            lower,
            "--upperip",
            upper,
            if enabled { "--enable" } else { "--disable" },
        ]);
    }

    /// A driver whose node `dev` (cluster `dev`, ssh on 45022) is created and started.
    pub async fn running(&self) -> VirtualBoxDriver {
        use timonel_driver::Driver;
        let driver = self.driver();
        let spec = self.spec("dev", 1, 45022);
        driver
            .create(&spec, &timonel_driver::SilentReporter)
            .await
            .unwrap();
        driver.start(&spec.name).await.unwrap();
        driver
    }

    /// One line per VBoxManage process so far.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.replace('\t', " "))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.calls().len()
    }

    pub fn machines(&self) -> PathBuf {
        self.dir.path().join("machines")
    }

    pub fn spec(&self, cluster: &str, index: u32, ssh_port: u16) -> MachineSpec {
        let cluster: timonel_driver::ClusterName = cluster.parse().unwrap();
        let name = cluster.machine(index);
        let mut spec = MachineSpec::new(name.clone(), cluster, NodeRole::Server, index);
        spec.cpus = Some(2.0);
        spec.memory_mib = Some(2048);
        spec.vm_disk = Some(VmDisk {
            base_image: self.dir.path().join("base.vmdk"),
            size_mib: 20480,
            seed_iso: self.dir.path().join("seed.iso"),
            state_dir: self.machines().join(name.as_str()),
        });
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        spec.ports = vec![
            PortMapping {
                host_ip: local,
                host_port: ssh_port,
                node_port: 22,
                protocol: "tcp".into(),
            },
            PortMapping {
                host_ip: local,
                host_port: ssh_port + 1000,
                node_port: 6443,
                protocol: "tcp".into(),
            },
        ];
        spec
    }
}
