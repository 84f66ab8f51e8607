//! `timonel start --driver hyperv` end to end on real guests: the PowerShell simulator with its
//! QEMU backing (TIMONEL_HYPERV_SIM_QEMU=1) boots a TCG guest from the differencing disk and the
//! seed ISO the driver attached, and stands for the virtual switch the driver chose (the Default
//! Switch) with a bridge and dnsmasq this test owns; the guest's addresses come back through
//! `Get-VMNetworkAdapter` as Hyper-V reports them. The k3s stand-in is installed over SSH; kubectl
//! judges the cluster. One cluster, one boot sequence: start, ssh/logs/addons/image load,
//! stop/start, node add, delete.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use support::qemu_backing;
use support::sandbox::*;

/// Free space the test needs where its homes live: the image as VHDX (about 750 MiB) and two
/// nodes' differencing disks, and the 2 GiB per node timonel checks for before `node add`.
const NEEDS_MIB: u64 = 4 * 1024;
/// The comment of the FORWARD rules the backing adds.
const FORWARD_COMMENT: &str = "timonel hyperv sim";

fn simulator() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/simulators/powershell/powershell-sim.py")
}

/// The simulated Hyper-V host, owned by this test: on drop, whatever QEMU guest, dnsmasq,
/// bridge or firewall rule it still has goes.
struct SimWorld {
    dir: tempfile::TempDir,
}

impl SimWorld {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The default host: an elevated console, the Default Switch (NAT and DHCP).
        std::fs::write(dir.path().join("scenario.json"), "{}").unwrap();
        Self { dir }
    }

    fn state(&self) -> serde_json::Value {
        std::fs::read(self.dir.path().join("vms.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::Value::Null)
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SimWorld {
    fn drop(&mut self) {
        qemu_backing::sweep(self.dir.path(), FORWARD_COMMENT);
    }
}

/// The test image as a dynamic VHDX (what the Hyper-V driver boots), in `dir`.
fn vhdx_image(qcow2: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let vhdx = dir.join("base.vhdx");
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "vhdx", "-o", "subformat=dynamic"])
        .arg(qcow2)
        .arg(&vhdx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    vhdx
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
#[ignore = "needs QEMU, dnsmasq, root and the test VM image"]
fn a_hyperv_cluster_on_real_guests() {
    let Some(image) = qemu_backing::require(NEEDS_MIB) else {
        return;
    };
    let _guests = qemu_backing::guests_lock();
    let world = SimWorld::new();
    let images = tempfile::tempdir().unwrap();
    let base = vhdx_image(&image, images.path());
    let base_sum = sha256_of(&base);
    // Every timonel this test runs sees the simulator as its PowerShell.
    std::env::set_var("TIMONEL_POWERSHELL", simulator());
    std::env::set_var("TIMONEL_PS_SIM_STATE", world.path());
    std::env::set_var("TIMONEL_HYPERV_SIM_QEMU", "1");
    let sb = Sandbox::new("hvq");
    let base_arg = base.display().to_string();
    let args = support::vm_image::vm_start_args("hyperv", &base_arg, "1", &["--disk-size", "2g"]);
    let out = sb.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "start on hyperv (QEMU) failed");
    assert!(stderr(&out).contains("Default Switch"), "{}", stderr(&out));
    assert_eq!(sb.ready_nodes(), std::slice::from_ref(&sb.profile));
    assert_eq!(
        qemu_backing::qemu_pids(world.path()).len(),
        1,
        "one guest runs"
    );

    // ip: the guest's DHCP lease on the switch's subnet, not the host's own address there.
    let ip: Ipv4Addr = sb.ok(&["ip"]).trim().parse().unwrap();
    let net = world.state()["qemu_switches"]["Default Switch"]["net"]
        .as_str()
        .unwrap()
        .to_string();
    let (base_ip, _) = net.split_once('/').unwrap();
    let base_ip: Ipv4Addr = base_ip.parse().unwrap();
    assert_eq!(ip.octets()[..3], base_ip.octets()[..3], "{ip} not in {net}");
    assert!(ip.octets()[3] > 1, "{ip} is the host's side of the switch");
    assert!(sb.run(&["status"]).status.success());
    // Hyper-V guests are reached directly on the switch: the API at the guest's address.
    let kc = read_yaml(&sb.kubeconfig);
    let server = kc["clusters"][0]["cluster"]["server"].as_str().unwrap();
    assert_eq!(server, format!("https://{ip}:6443"));

    // ssh, logs, addons over SSH, image load into the guest.
    qemu_backing::everyday_commands(&sb);

    // stop: the guest shuts down (its QEMU exits); start: the same lease comes back.
    assert!(sb.run(&["stop"]).status.success());
    assert_eq!(sb.run(&["status"]).status.code(), Some(3));
    assert!(
        qemu_backing::qemu_pids(world.path()).is_empty(),
        "a guest still runs after stop"
    );
    assert!(
        sb.run(&["start", "--wait-timeout", "10m"]).status.success(),
        "resume on hyperv (QEMU) failed"
    );
    assert_eq!(sb.ok(&["ip"]).trim(), ip.to_string(), "the address changed");
    assert_eq!(sb.ready_nodes(), std::slice::from_ref(&sb.profile));

    // node add: a second guest joins the server over the switch.
    let out = sb.run(&["node", "add", "--wait-timeout", "10m"]);
    assert!(out.status.success(), "node add on hyperv (QEMU) failed");
    assert_eq!(sb.ready_nodes().len(), 2);
    assert_eq!(qemu_backing::qemu_pids(world.path()).len(), 2);

    // delete: no VM, disk, seed, guest, bridge, dnsmasq or firewall rule left; the base intact.
    let made = qemu_backing::links_made(world.path());
    assert!(
        made.iter().any(|l| l.starts_with("thb")),
        "the QEMU backing made no bridge: {made:?}"
    );
    assert!(sb.run(&["delete"]).status.success());
    sb.mark_deleted();
    let vms = world.state()["vms"].clone();
    assert_eq!(vms.as_array().map(Vec::len), Some(0), "VMs left: {vms}");
    assert!(
        qemu_backing::qemu_pids(world.path()).is_empty(),
        "guests left"
    );
    assert!(
        qemu_backing::dnsmasq_pids(world.path()).is_empty(),
        "dnsmasq left"
    );
    assert!(
        !sb.timonel_home()
            .join("machines")
            .join(&sb.profile)
            .exists(),
        "disks or seeds left"
    );
    let links = qemu_backing::links(world.path());
    assert!(links.is_empty(), "bridges or taps left: {links:?}");
    let rules = qemu_backing::forward_rules_of(&made);
    assert!(rules.is_empty(), "firewall rules left: {rules:?}");
    assert_eq!(sha256_of(&base), base_sum, "the base VHDX was written");
}

/// `timonel start` of one node on the virtual switch `minikube`, against the simulator without
/// QEMU (outputs only, no guest boots), waiting `wait` at most; its output and how long it took.
fn sim_only_start_on_minikube(
    world: &SimWorld,
    sb: &Sandbox,
    wait: &str,
) -> (std::process::Output, std::time::Duration) {
    // A VHDX by name is all the simulator's New-VHD needs from the base when QEMU is off.
    let base = sb.home.path().join("base.vhdx");
    std::fs::write(&base, b"not a disk").unwrap();
    let base_arg = base.display().to_string();
    let mut args =
        support::vm_image::vm_start_args("hyperv", &base_arg, "1", &["--disk-size", "2g"]);
    let at = args.iter().position(|a| a == "--wait-timeout").unwrap();
    args[at + 1] = wait.into();
    args.extend(["--hyperv-virtual-switch".into(), "minikube".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let out = sb
        .cmd(&args)
        .env("TIMONEL_POWERSHELL", simulator())
        .env("TIMONEL_PS_SIM_STATE", world.path())
        .env_remove("TIMONEL_HYPERV_SIM_QEMU")
        .output()
        .unwrap();
    let took = started.elapsed();
    log_output("timonel", &args, &out);
    (out, took)
}

/// Nothing of a failed sim-only start is left: no VM, no disk, no profile.
fn nothing_left(world: &SimWorld, sb: &Sandbox) {
    let vms = world.state()["vms"].clone();
    assert!(vms.as_array().is_none_or(Vec::is_empty), "VMs left: {vms}");
    assert!(!sb.profile_dir().exists(), "the profile was kept");
    sb.mark_deleted();
}

/// `--hyperv-virtual-switch` reaches the driver: a switch the host does not have stops `start`
/// at create with an error naming it and the switches there are, and nothing is left (no VM,
/// no disk, no profile). The simulator models outputs only here (no guest boots).
#[test]
#[ignore = "runs timonel against the PowerShell simulator with the k3s stand-in's mirror"]
fn a_virtual_switch_the_host_lacks_is_named_in_the_error() {
    let world = SimWorld::new();
    let sb = Sandbox::new("hvs");
    let (out, _) = sim_only_start_on_minikube(&world, &sb, "10m");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "virtual switch `minikube` does not exist (found `Default Switch` (Default Switch))"
        ),
        "{err}"
    );
    assert!(err.contains("New-VMSwitch"), "{err}");
    nothing_left(&world, &sb);
}

/// A switch that hands out no address (an Internal one without NAT and DHCP): `start` gives up
/// on the guest's address at `--wait-timeout`, not after the driver's own 5 minutes, names the
/// switch, and leaves nothing. The simulator models outputs only here: the "guest" reports its
/// link-local IPv6 address and never an IPv4 one.
#[test]
#[ignore = "runs timonel against the PowerShell simulator with the k3s stand-in's mirror"]
fn no_address_on_a_switch_ends_start_at_the_wait_timeout() {
    let world = SimWorld::new();
    std::fs::write(
        world.path().join("scenario.json"),
        serde_json::json!({ "switches": [
            {"Id": "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444", "Name": "Default Switch", "SwitchType": 1},
            {"Id": "11111111-0000-4000-8000-000000000001", "Name": "minikube", "SwitchType": 1}
        ]})
        .to_string(),
    )
    .unwrap();
    let sb = Sandbox::new("hvn");
    let (out, took) = sim_only_start_on_minikube(&world, &sb, "6s");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("none after 6s on virtual switch `minikube`"),
        "{err}"
    );
    assert!(err.contains("--hyperv-virtual-switch"), "{err}");
    // The deadline, plus the simulated VM's creation and its removal; far from 5 minutes.
    assert!(took < std::time::Duration::from_secs(90), "took {took:?}");
    nothing_left(&world, &sb);
}
