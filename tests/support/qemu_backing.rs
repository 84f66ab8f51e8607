//! What the end-to-end tests on the simulators' QEMU backings share (tests/e2e_virtualbox_vm.rs,
//! tests/e2e_hyperv_vm.rs): the prerequisites, a host-wide lock that runs those tests one at a
//! time, a look at the QEMU processes, links and firewall rules a simulator's world made, and the
//! everyday commands checked on a cluster of real guests.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::sandbox::{stdout, Sandbox};

/// The test image when QEMU, dnsmasq, root (bridges, taps) and `needs_mib` of free space in the
/// temporary directory are there; `None` after skipping (or failing under CI=true) with the
/// reason.
pub fn require(needs_mib: u64) -> Option<PathBuf> {
    let missing = [
        "qemu-system-x86_64",
        "qemu-img",
        "dnsmasq",
        "ip",
        "iptables",
        "python3",
    ]
    .into_iter()
    .find(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p} || test -x /usr/sbin/{p}")])
            .output()
            .map_or(true, |o| !o.status.success())
    });
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let free_mib = Command::new("df")
        .args(["--output=avail", "-BM"])
        .arg(std::env::temp_dir())
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .last()?
                .trim()
                .trim_end_matches('M')
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let why = match (missing, root) {
        (Some(p), _) => format!("`{p}` is not installed"),
        (None, false) => "not root: the QEMU backing makes bridges and taps".to_string(),
        (None, true) if free_mib < needs_mib => format!(
            "{} has {free_mib} MiB free; the nodes' disks need {needs_mib} MiB",
            std::env::temp_dir().display()
        ),
        (None, true) => match super::vm_image::test_vm_image() {
            Ok(path) => return Some(path),
            Err(why) => why,
        },
    };
    super::vm_image::skip_or_fail(&why);
    None
}

/// Held by a test whose simulator boots QEMU guests, for its whole run: such tests run one at a
/// time on a host (each boots up to two TCG guests, and VirtualBox's host-only network puts the
/// same 192.168.56.1 on the host in every world), whatever runs them (nextest's processes).
pub struct GuestsLock(#[allow(dead_code)] std::fs::File);

pub fn guests_lock() -> GuestsLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("timonel-qemu-guests.lock"))
        .unwrap();
    f.lock().unwrap();
    GuestsLock(f)
}

/// The QEMU processes of a simulator's world still running (its `qemu/*.pid` files name them).
pub fn qemu_pids(world: &Path) -> Vec<u32> {
    pid_files(world, ".pid")
        .into_iter()
        .filter(|(_, pid)| comm_is(*pid, "qemu-system"))
        .map(|(_, pid)| pid)
        .collect()
}

/// The dnsmasq processes of a simulator's world still running.
pub fn dnsmasq_pids(world: &Path) -> Vec<u32> {
    pid_files(world, ".dnsmasq.pid")
        .into_iter()
        .filter(|(_, pid)| comm_is(*pid, "dnsmasq"))
        .map(|(_, pid)| pid)
        .collect()
}

fn comm_is(pid: u32, prefix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(prefix))
}

fn pid_files(world: &Path, suffix: &str) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(world.join("qemu")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.path(), pid))
        })
        .collect()
}

/// The taps and bridges a world made (its simulator notes each in `qemu/links.log`) that still
/// exist.
pub fn links(world: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(world.join("qemu/links.log")).unwrap_or_default();
    let mut names: Vec<String> = log
        .lines()
        .filter(|n| Path::new("/sys/class/net").join(n).exists())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every link a world's log names, gone or not.
pub fn links_made(world: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(world.join("qemu/links.log")).unwrap_or_default();
    let mut names: Vec<String> = log.lines().map(str::to_string).collect();
    names.sort();
    names.dedup();
    names
}

/// The FORWARD rules naming any of `links`.
pub fn forward_rules_of(links: &[String]) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|r| links.iter().any(|l| r.contains(l.as_str())))
        .map(str::to_string)
        .collect()
}

/// Removes what a world left when a test failed half-way: its QEMU guests and dnsmasq, its
/// FORWARD rules, its bridges and taps. Only what the world's own files name.
pub fn sweep(world: &Path, forward_comment: &str) {
    for pid in qemu_pids(world).into_iter().chain(dnsmasq_pids(world)) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    for link in links_made(world) {
        let rule = [
            "FORWARD",
            "-i",
            &link,
            "-o",
            &link,
            "-j",
            "ACCEPT",
            "-m",
            "comment",
            "--comment",
            forward_comment,
        ];
        while Command::new("iptables")
            .arg("-D")
            .args(rule)
            .output()
            .is_ok_and(|o| o.status.success())
        {}
        if Path::new("/sys/class/net").join(&link).exists() {
            let _ = Command::new("ip").args(["link", "del", &link]).status();
        }
    }
}

/// The everyday commands on a running one-node VM cluster: `ssh`, `logs`, `addons`
/// disable/enable (the server's config over SSH), and `image load` of an archive (the k3s
/// stand-in records what it imported).
pub fn everyday_commands(sb: &Sandbox) {
    let out = sb.run(&["ssh", "--", "uname", "-s"]);
    assert_eq!(stdout(&out).trim(), "Linux");
    let out = sb.run(&["logs"]);
    assert!(
        stdout(&out).contains("k3s is up and running"),
        "{}",
        stdout(&out)
    );

    sb.ok(&["addons", "disable", "traefik"]);
    let config = sb.ok(&["ssh", "--", "cat", "/etc/rancher/k3s/config.yaml"]);
    assert!(config.contains("traefik"), "{config}");
    sb.ok(&["addons", "enable", "traefik"]);
    let config = sb.ok(&["ssh", "--", "cat", "/etc/rancher/k3s/config.yaml"]);
    assert!(!config.contains("traefik"), "{config}");

    let tag = format!("timonel-test/{}:vm", sb.profile);
    let archive = image_archive(sb.home.path(), &tag);
    let out = sb.run(&["image", "load", archive.to_str().unwrap()]);
    assert!(out.status.success(), "image load into the guest failed");
    let imported = sb.ok(&[
        "ssh",
        "--",
        "cat",
        "/var/lib/rancher/k3s/agent/standin-images.json",
    ]);
    assert!(
        imported.contains(&format!("\"docker.io/{tag}\"")),
        "{imported}"
    );
}

/// A `docker save`-layout archive of an empty image named `tag` (manifest.json, config, no
/// layers), written with tar under `dir`.
fn image_archive(dir: &Path, tag: &str) -> PathBuf {
    let src = dir.join("image-src");
    std::fs::create_dir_all(&src).unwrap();
    let config =
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    std::fs::write(src.join("config.json"), config).unwrap();
    std::fs::write(
        src.join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":[]}}]"#),
    )
    .unwrap();
    let archive = dir.join("image.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .args(["manifest.json", "config.json"])
        .status()
        .unwrap();
    assert!(ok.success(), "tar failed");
    archive
}
