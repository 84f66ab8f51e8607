//! How many VBoxManage processes `state`, `ip` and `endpoint` spawn for one running VM, counted
//! by the simulator (`tests/simulators/vboxmanage`, one `calls.log` line per process).
//! Prints one JSON object; used by `scripts/bench.sh`.
//!
//! cargo run -p timonel-driver-virtualbox --example virtualbox_process_count

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    ClusterName, Cmd, CommandError, Driver, HostRunner, MachineSpec, NodeRole, Output, PortMapping,
    Runner, SilentReporter, VmDisk,
};
use timonel_driver_virtualbox::{RetryPolicy, Timings, VirtualBoxDriver};

/// Runs commands on the host with the simulator's state directory in their environment.
struct SimRunner {
    state: PathBuf,
}

#[async_trait]
impl Runner for SimRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let cmd = cmd
            .clone()
            .env("TIMONEL_VBOX_SIM_STATE", self.state.to_string_lossy());
        HostRunner.run(&cmd).await
    }
    fn target(&self) -> &str {
        "host (VBoxManage simulator)"
    }
}

fn calls(state: &Path) -> usize {
    std::fs::read_to_string(state.join("calls.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("sim");
    std::fs::create_dir_all(&state)?;
    std::fs::write(
        state.join("config.json"),
        r#"{"version": "7.0.14r161095", "ip_after_polls": 0}"#,
    )?;
    std::fs::write(dir.path().join("base.vmdk"), b"base disk")?;
    std::fs::write(dir.path().join("seed.iso"), b"cidata")?;
    let simulator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/simulators/vboxmanage/VBoxManage");

    let cluster: ClusterName = "bench".parse()?;
    let name = cluster.machine(1);
    let mut spec = MachineSpec::new(name.clone(), cluster, NodeRole::Server, 1);
    spec.cpus = Some(2.0);
    spec.memory_mib = Some(2048);
    spec.vm_disk = Some(VmDisk {
        base_image: dir.path().join("base.vmdk"),
        size_mib: 20480,
        seed_iso: dir.path().join("seed.iso"),
        state_dir: dir.path().join("machines").join(name.as_str()),
    });
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    spec.ports = vec![PortMapping {
        host_ip: local,
        host_port: 45022,
        node_port: 22,
        protocol: "tcp".into(),
    }];
    let driver = VirtualBoxDriver::with_runner(
        Arc::new(SimRunner {
            state: state.clone(),
        }),
        simulator,
    )
    .with_timings(Timings {
        ip_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(10),
        settle_timeout: Duration::from_secs(5),
        relist_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            tries: 5,
            first_delay: Duration::from_millis(5),
        },
    });
    driver.create(&spec, &SilentReporter).await?;
    driver.start(&spec.name).await?;
    // The first `ip` may poll until the guest reports an address; count the steady state.
    driver.ip(&spec.name).await?;

    let before = calls(&state);
    driver.state(&spec.name).await?;
    let state_calls = calls(&state) - before;
    let before = calls(&state);
    driver.ip(&spec.name).await?;
    let ip_calls = calls(&state) - before;
    let before = calls(&state);
    driver.endpoint(&spec.name, 22).await?;
    let endpoint_calls = calls(&state) - before;
    driver.delete(&spec.name).await?;
    println!(
        "{{\"driver\":\"virtualbox\",\"state\":{state_calls},\"ip\":{ip_calls},\"endpoint\":{endpoint_calls}}}"
    );
    Ok(())
}
