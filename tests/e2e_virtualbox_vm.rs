//! `timonel start --driver virtualbox` end to end on real guests: the VBoxManage simulator with
//! its QEMU backing (TIMONEL_VBOX_SIM_QEMU=1) boots a TCG guest from the disk and seed the driver
//! attached, forwards the driver's NAT rules on 127.0.0.1, and stands for the host-only
//! interface with a bridge and dnsmasq this test owns. The k3s stand-in is installed over SSH;
//! kubectl judges the cluster. One cluster of two nodes made in parallel (`--nodes 2`), one boot
//! sequence: start, ssh/logs/addons/image load, stop/start, node delete. (`node add` on a VM
//! driver is exercised by the Hyper-V e2e, on the same VM node path.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::qemu_backing;
use support::sandbox::*;

/// Free space the test needs where its homes live: the image as VMDK and two nodes' VDIs (each
/// about the image's 750 MiB of data).
const NEEDS_MIB: u64 = 4 * 1024;

fn simulator() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/simulators/vboxmanage/VBoxManage")
}

/// The simulator's world, owned by this test: on drop, whatever QEMU guest, bridge or DHCP
/// server is still there goes (through the simulator's own VBoxManage commands).
struct SimWorld {
    dir: tempfile::TempDir,
}

impl SimWorld {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"version": "7.0.14r161095", "ip_after_polls": 0}"#,
        )
        .unwrap();
        Self { dir }
    }

    fn vbox(&self, args: &[&str]) -> String {
        let out = Command::new(simulator()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self) -> serde_json::Value {
        let path = self.dir.path().join("state.json");
        std::fs::read(path)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for SimWorld {
    fn drop(&mut self) {
        for name in self.state()["vms"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            self.vbox(&["controlvm", &name, "poweroff"]);
        }
        for h in self.state()["hostonlyifs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = h["name"].as_str().unwrap_or("").to_string();
            self.vbox(&["hostonlyif", "remove", &name]);
        }
    }
}

#[test]
#[ignore = "needs QEMU, dnsmasq, root and the test VM image"]
fn a_virtualbox_cluster_on_real_guests() {
    let Some(image) = qemu_backing::require(NEEDS_MIB) else {
        return;
    };
    let _guests = qemu_backing::guests_lock();
    let world = SimWorld::new();
    // Every timonel, kubectl and simulator this test runs sees the simulator.
    std::env::set_var("TIMONEL_VBOXMANAGE", simulator());
    std::env::set_var("TIMONEL_VBOX_SIM_STATE", world.dir.path());
    std::env::set_var("TIMONEL_VBOX_SIM_QEMU", "1");
    let sb = Sandbox::new("vbq");
    let image = image.display().to_string();
    // The image's own disk size: no copy to grow it, and little of the host's disk used.
    let args = support::vm_image::vm_start_args(
        "virtualbox",
        &image,
        "1",
        &["--disk-size", "2g", "--nodes", "2"],
    );
    let out = sb.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "start on virtualbox (QEMU) failed");
    // The agent joined the server over the host-only network.
    let both = [sb.profile.clone(), format!("{}-m02", sb.profile)];
    assert_eq!(sb.ready_nodes(), both);
    assert_eq!(
        qemu_backing::qemu_pids(world.dir.path()).len(),
        2,
        "two guests run"
    );

    // ip: the guest's DHCP lease on the host-only network, not the host's own address there.
    let ip: std::net::Ipv4Addr = sb.ok(&["ip"]).trim().parse().unwrap();
    let host_side = world.state()["hostonlyifs"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(ip.to_string(), host_side);
    assert!(sb.run(&["status"]).status.success());
    // The API and SSH are reached through the driver's NAT forwards on loopback.
    let kc = read_yaml(&sb.kubeconfig);
    let server = kc["clusters"][0]["cluster"]["server"].as_str().unwrap();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");

    // ssh, logs, addons over SSH, image load into the guest.
    qemu_backing::everyday_commands(&sb);

    // stop: the guest powers off (its QEMU exits); start: the same lease comes back.
    assert!(sb.run(&["stop"]).status.success());
    assert_eq!(sb.run(&["status"]).status.code(), Some(3));
    assert!(
        qemu_backing::qemu_pids(world.dir.path()).is_empty(),
        "a guest still runs after stop"
    );
    assert!(
        sb.run(&["start", "--wait-timeout", "10m"]).status.success(),
        "resume on virtualbox (QEMU) failed"
    );
    assert_eq!(sb.ok(&["ip"]).trim(), ip.to_string(), "the address changed");
    assert_eq!(sb.ready_nodes(), both);

    // node delete: the agent's guest and VM go; the server stays Ready.
    assert!(sb.run(&["node", "delete", &both[1]]).status.success());
    assert_eq!(sb.ready_nodes(), std::slice::from_ref(&sb.profile));
    assert_eq!(qemu_backing::qemu_pids(world.dir.path()).len(), 1);
    let vms = world.vbox(&["list", "vms"]);
    assert_eq!(vms.trim().lines().count(), 1, "{vms}");

    // delete: no VM, disk, seed, port forward or guest left.
    assert!(sb.run(&["delete"]).status.success());
    sb.mark_deleted();
    assert_eq!(world.vbox(&["list", "vms"]).trim(), "", "VMs left");
    let media = world.state()["media"].clone();
    assert!(
        media.as_array().unwrap().iter().all(|m| !m["path"]
            .as_str()
            .unwrap()
            .contains(sb.home.path().to_str().unwrap())),
        "media left: {media}"
    );
    assert!(
        qemu_backing::qemu_pids(world.dir.path()).is_empty(),
        "guests left"
    );
    assert!(
        !sb.timonel_home()
            .join("machines")
            .join(&sb.profile)
            .exists(),
        "disks left"
    );
    // The driver keeps the host-only interface and its DHCP server for the next cluster (as
    // VirtualBox users share one); the world's drop removes them, which the next lines check.
    let links = qemu_backing::links(world.dir.path());
    assert!(
        links.iter().all(|l| l.starts_with("tvb")),
        "taps left: {links:?}"
    );
    let made = world.dir.path().join("qemu/links.log");
    assert!(made.exists(), "the QEMU backing made no bridge");
    let bridges_of = world.dir.path().to_path_buf();
    drop(world);
    assert!(!bridges_of.exists());
    let left: Vec<_> = links
        .iter()
        .filter(|l| Path::new("/sys/class/net").join(l).exists())
        .collect();
    assert!(left.is_empty(), "bridges left: {left:?}");
    // Nor the FORWARD rule that let the guests on the bridge reach each other.
    let rules = qemu_backing::forward_rules_of(&links);
    assert!(rules.is_empty(), "firewall rules left: {rules:?}");
}
