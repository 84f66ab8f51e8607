//! The SSH test hosts harness (tests/support/ssh_hosts.rs) on the real Docker daemon: hosts boot
//! cleanly with their own host keys, the users have the sudo rights the SSH driver's tests rely
//! on, and a snapshot sees a change and its undoing. Marked ignored (it needs a daemon and the
//! test host image); scripts/test.sh runs it. Under CI=true a missing daemon or image fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::{Command, Output};
use std::time::Instant;

use support::sandbox::require_docker;
use support::ssh_hosts::{require_test_host_image, TestHosts};

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs dockerd and the test host image"]
fn test_hosts_boot_clean_with_their_own_keys_users_and_snapshots() {
    if !require_docker() || require_test_host_image().is_none() {
        return;
    }
    let started = Instant::now();
    let set = TestHosts::create("smoke", 2);
    eprintln!("2 test hosts up in {:?}", started.elapsed());
    assert_eq!(set.hosts.len(), 2);
    let (a, b) = (&set.hosts[0], &set.hosts[1]);
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.host_key, b.host_key, "every host makes its own host keys");
    assert!(a
        .known_hosts_line()
        .starts_with(&format!("{} ssh-ed25519 ", a.ip)));

    for host in &set.hosts {
        let boot = host.exec("systemctl is-system-running; systemctl --failed --no-legend");
        assert_eq!(
            String::from_utf8_lossy(&boot.stdout).trim(),
            "running",
            "{}",
            show("systemd state", &boot)
        );
    }

    let alice = a.exec_as("alice", "sudo -n true");
    assert!(
        alice.status.success(),
        "{}",
        show("alice: sudo -n true", &alice)
    );
    let root = a.exec_as("alice", "sudo -n id -u");
    assert_eq!(String::from_utf8_lossy(&root.stdout).trim(), "0");
    let bob = a.exec_as("bob", "sudo -n true");
    assert!(!bob.status.success(), "{}", show("bob: sudo -n true", &bob));

    a.authorize(
        "alice",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake test",
    );
    let keys = a.exec("stat -c '%U %a' /home/alice/.ssh /home/alice/.ssh/authorized_keys");
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout),
        "alice 700\nalice 600\n",
        "{}",
        show("authorized_keys", &keys)
    );

    let before = a.snapshot();
    for section in [
        "## files",
        "## links",
        "## mounts",
        "## unit files",
        "## iptables",
    ] {
        assert!(
            before.contains(section),
            "no {section} in the snapshot:\n{before}"
        );
    }
    assert!(before.contains("\nf /etc/ssh/sshd_config\n"));
    assert_eq!(before, a.snapshot(), "a snapshot taken twice differs");

    let touch = a.exec("touch /etc/timonel-marker");
    assert!(touch.status.success(), "{}", show("touch", &touch));
    let changed = a.snapshot();
    assert_ne!(before, changed);
    assert!(changed.contains("\nf /etc/timonel-marker\n"));
    let rm = a.exec("rm /etc/timonel-marker");
    assert!(rm.status.success(), "{}", show("rm", &rm));
    assert_eq!(
        before,
        a.snapshot(),
        "the snapshot after removing the marker"
    );

    // A real SSH login (when this machine has an OpenSSH client), pinned to the host key the
    // harness read: it works, and logging in and using sudo leave the snapshot as it was.
    if Command::new("ssh").arg("-V").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key)
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", show("ssh-keygen", &keygen));
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        a.authorize("alice", &public);
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, set.known_hosts()).unwrap();
        let before = a.snapshot();
        let login = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(&key)
            .arg(format!("alice@{}", a.ip))
            .arg("sudo -n id -u")
            .output()
            .unwrap();
        assert!(login.status.success(), "{}", show("ssh alice sudo", &login));
        assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), "0");
        assert_eq!(
            before,
            a.snapshot(),
            "an SSH login with sudo changed the snapshot"
        );
    } else {
        eprintln!("no OpenSSH client here: not trying a real SSH login");
    }

    let (network, containers): (String, Vec<String>) = (
        set.network.clone(),
        set.hosts.iter().map(|h| h.container.clone()).collect(),
    );
    drop(set);
    for name in containers.iter().chain([&network]) {
        let left = Command::new("docker")
            .args(["inspect", name])
            .output()
            .unwrap();
        assert!(!left.status.success(), "{name} is left behind");
    }
}
