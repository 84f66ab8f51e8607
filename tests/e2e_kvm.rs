//! `timonel start --driver kvm` end to end on the real libvirtd + QEMU (TCG here): a VM booted
//! from the test image, k3s (the stand-in) installed over SSH with a systemd unit, judged by
//! kubectl through the merged kubeconfig; then stop/start/delete leave nothing behind. The
//! driver runs in the `timonel-kvm` helper beside the timonel under test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::sandbox::*;

/// The test image (built and cached by scripts/build-test-vm-image.sh), when libvirt answers.
/// Under CI=true anything missing fails the test; elsewhere it skips with the reason.
fn require_libvirt() -> Option<PathBuf> {
    // timonel runs the kvm driver in its helper, found beside it (scripts/test.sh builds it).
    let helper = PathBuf::from(env!("CARGO_BIN_EXE_timonel"))
        .with_file_name(format!("timonel-kvm{}", std::env::consts::EXE_SUFFIX));
    let why = if !helper.is_file() && std::env::var_os("TIMONEL_KVM_HELPER").is_none() {
        format!(
            "the kvm helper `{}` is not built (cargo build -p timonel-driver-kvm --bin timonel-kvm)",
            helper.display()
        )
    } else if !Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "libvirtd does not answer at qemu:///system (scripts/start-libvirt.sh starts it)"
            .to_string()
    } else {
        match support::vm_image::test_vm_image() {
            Ok(path) => return Some(path),
            Err(why) => why,
        }
    };
    support::vm_image::skip_or_fail(&why);
    None
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs libvirtd and the test VM image"]
fn start_a_two_node_vm_cluster_on_kvm_and_remove_it() {
    let Some(image) = require_libvirt() else {
        return;
    };
    let sb = Sandbox::new("kvm");
    // The hypervisor (libvirt's qemu user) must be able to reach the node's files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sb.home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = sb
            .cmd(args)
            .env("TIMONEL_KVM_ACCEL", "tcg")
            .output()
            .unwrap();
        eprintln!(
            "$ timonel {} -> {}\n{}",
            args.join(" "),
            out.status,
            stderr(&out)
        );
        out
    };
    let image = image.display().to_string();
    // A host folder, open to libvirt's QEMU user, shared read-only.
    let shared = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(shared.path().join("hello.txt"), "from the host\n").unwrap();
    let mount = format!("{}:/data:ro", shared.path().display());
    // The overlay is sparse, but the check wants the full size free.
    // Two nodes: the guests boot side by side, k3s goes in over SSH, the agent joins the
    // server across the cluster's libvirt network.
    let extra = [
        "--disk-size",
        "4g",
        "--mount",
        mount.as_str(),
        "--nodes",
        "2",
    ];
    let args = support::vm_image::vm_start_args("kvm", &image, "1", &extra);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "start on kvm failed");

    let both_ready = || {
        let nodes = sb.kubectl(&["get", "nodes", "--no-headers"]);
        let text = stdout(&nodes);
        let ready: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" Ready "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            ready,
            vec![sb.profile.clone(), format!("{}-m02", sb.profile)],
            "{text}"
        );
    };
    both_ready();
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&readyz).trim(), "ok");
    let ip = sb.ok(&["ip"]).trim().to_string();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
    let domain = format!("timonel-{}", sb.profile);
    let agent_domain = format!("timonel-{}-m02", sb.profile);
    let running = virsh(&["list", "--name"]);
    for d in [&domain, &agent_domain] {
        assert!(running.lines().any(|l| l.trim() == d.as_str()), "{running}");
    }

    // The kubeconfig points at the VM's own address (the API port is not forwarded).
    let kc = read_yaml(&sb.kubeconfig);
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(server, format!("https://{ip}:6443"));

    // ssh: a command over SSH as root, output passed through.
    let out = sb.run(&["ssh", "--", "uname", "-s"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "Linux");
    let out = sb.run(&["ssh", "--", "systemctl", "is-active", "k3s"]);
    assert_eq!(
        stdout(&out).trim(),
        "active",
        "k3s runs as a systemd service"
    );

    // --mount: the folder over virtio-9p, read-only.
    let cat = || stdout(&sb.run(&["ssh", "--", "cat", "/data/hello.txt"]));
    assert_eq!(cat(), "from the host\n");
    let write = sb.run(&["ssh", "--", "touch", "/data/new"]);
    assert!(!write.status.success(), "a :ro folder took a write");
    assert!(!shared.path().join("new").exists());

    // logs: the k3s service's journal in the VM.
    let out = sb.run(&["logs"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("k3s is up and running"),
        "{}",
        stdout(&out)
    );

    assert!(run(&["stop"]).status.success());
    assert_eq!(run(&["status"]).status.code(), Some(3));
    assert!(run(&["start"]).status.success(), "resume on kvm failed");
    assert_eq!(sb.ok(&["ip"]).trim(), ip, "the VM kept its address");
    assert_eq!(
        cat(),
        "from the host\n",
        "the folder is mounted again at boot"
    );
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&readyz).trim(), "ok");
    both_ready();

    assert!(run(&["delete"]).status.success());
    let all = virsh(&["list", "--all", "--name"]);
    for d in [&domain, &agent_domain] {
        assert!(
            !all.lines().any(|l| l.trim() == d.as_str()),
            "domain {d} left"
        );
    }
    let net = format!("timonel-{}", sb.profile);
    assert!(
        !virsh(&["net-list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == net),
        "network left"
    );
    assert!(
        !sb.timonel_home()
            .join("machines")
            .join(&sb.profile)
            .exists(),
        "disks left"
    );
}
