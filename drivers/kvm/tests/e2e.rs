//! End to end on a real libvirtd with QEMU (TCG): a node from the test image built by
//! `scripts/build-test-vm-image.sh`, through boot, SSH, a restart, and deletion.
//!
//! ```sh
//! scripts/start-libvirt.sh && scripts/build-test-vm-image.sh
//! cargo test -p timonel-driver-kvm --test e2e -- --ignored --nocapture
//! ```
//! `TIMONEL_TEST_VM_IMAGE` points at another image; `TIMONEL_TEST_CACHE` at another cache;
//! `TIMONEL_E2E_SSH_AFTER_RESTART=1` also logs in again after the restart (about a minute more).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use timonel_driver::{
    ClusterName, Cmd, Driver, DriverError, FilePlacement, MachineName, MachineSpec, MachineState,
    NodeAccess, NodeRole, Reporter, Runner, StopMode, VmDisk,
};
use timonel_driver_kvm::options::OPT_ACCEL;
use timonel_driver_kvm::{KvmDriver, DEFAULT_URI};
use timonel_driver_vm::options::{SSH_KEY_DIR, SSH_USER};

/// The image `scripts/build-test-vm-image.sh` makes (its cache key is the script's hash).
fn test_image() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TIMONEL_TEST_VM_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-vm-image.sh");
    let bytes = std::fs::read(&script).map_err(|e| format!("{}: {e}", script.display()))?;
    let key = &hex(&Sha256::digest(&bytes))[..16];
    let cache =
        std::env::var("TIMONEL_TEST_CACHE").unwrap_or_else(|_| "/var/cache/timonel-test".into());
    Ok(Path::new(&cache).join(format!("debian12-cloudinit-{key}.qcow2")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test image when libvirtd and the image are here. Otherwise: under `CI=true` a failure,
/// elsewhere `None` after saying why the test is skipped.
async fn require_libvirt() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let why = match (test_image(), KvmDriver::new(DEFAULT_URI).probe().await) {
        (Ok(image), availability) if availability.is_ready() && image.exists() => {
            return Some(image)
        }
        (Ok(image), availability) if availability.is_ready() => format!(
            "the test VM image `{}` is missing; build it with scripts/build-test-vm-image.sh",
            image.display()
        ),
        (Err(e), _) => format!("cannot locate the test VM image: {e}"),
        (_, availability) => format!(
            "libvirt is not usable ({availability:?}); start it with scripts/start-libvirt.sh"
        ),
    };
    if ci {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping the KVM end-to-end test: {why}");
    None
}

struct Steps;
impl Reporter for Steps {
    fn step(&self, m: &str) {
        eprintln!("  · {m}");
    }
    fn progress(&self, _: u64, _: Option<u64>) {}
    fn warn(&self, m: &str) {
        eprintln!("  ! {m}");
    }
}

/// Deletes the cluster even when the test panics.
struct Cleanup {
    cluster: ClusterName,
    dir: PathBuf,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(KvmDriver::new(DEFAULT_URI).delete_cluster(&cluster))
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn console_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn lap(t: &mut Instant, what: &str) {
    eprintln!("[{:>5.1}s] {what}", t.elapsed().as_secs_f64());
    *t = Instant::now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libvirtd and the test VM image"]
async fn node_lifecycle_on_real_libvirt_with_tcg() {
    let Some(image) = require_libvirt().await else {
        return;
    };
    let started = Instant::now();
    let mut t = Instant::now();
    let cluster: ClusterName = format!("e2e{}", std::process::id()).parse().unwrap();
    let name: MachineName = format!("{cluster}-n1").parse().unwrap();
    // Under /var/tmp, world-traversable: QEMU runs as libvirt-qemu.
    let dir = PathBuf::from(format!("/var/tmp/timonel-{cluster}"));
    std::fs::create_dir_all(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        dir: dir.clone(),
    };
    let state_dir = dir.join("n1");
    let console = state_dir.join(timonel_driver_kvm::CONSOLE_LOG_FILE);
    let key_dir = dir.join("keys");

    let mut spec = MachineSpec::new(name.clone(), cluster.clone(), NodeRole::Server, 1);
    spec.cpus = Some(2.0);
    spec.memory_mib = Some(1024);
    spec.vm_disk = Some(VmDisk {
        base_image: image,
        size_mib: 3072,
        seed_iso: state_dir.join("seed.iso"),
        state_dir: state_dir.clone(),
    });
    spec.options.insert(OPT_ACCEL.into(), "tcg".into());
    spec.options
        .insert(SSH_KEY_DIR.into(), key_dir.display().to_string());
    spec.options.insert(SSH_USER.into(), "debian".into());

    let driver = KvmDriver::new(DEFAULT_URI).with_ip_timeout(Duration::from_secs(150));
    let fail = |what: &str, e: DriverError| -> ! {
        panic!("{what}: {e:?}\n--- console ---\n{}", console_tail(&console))
    };

    driver.create(&spec, &Steps).await.unwrap();
    driver.create(&spec, &Steps).await.unwrap();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Stopped);
    lap(&mut t, "created");
    driver.start(&name).await.unwrap();
    let ip = driver.ip(&name).await.unwrap_or_else(|e| fail("ip", e));
    lap(&mut t, &format!("started, DHCP lease {ip}"));
    let node =
        timonel_driver_vm::vm_access(&driver, &name, &key_dir, "debian", Duration::from_secs(150))
            .await
            .unwrap_or_else(|e| fail("ssh", e));
    lap(&mut t, "ssh answers");
    // Where the boot spent its time (cloud-init prints its uptime at each stage).
    for line in std::fs::read_to_string(&console)
        .unwrap_or_default()
        .lines()
    {
        if line.contains("Cloud-init v.") {
            eprintln!("  console: {}", line.trim());
        }
    }

    let uname = node.run(&Cmd::new("uname").arg("-a")).await.unwrap();
    assert!(uname.stdout.starts_with("Linux "), "{uname:?}");
    eprintln!("  uname -a: {}", uname.stdout.trim());
    // debian + sudo -n: commands run as root; env, quoting and stdin survive the trip.
    let who = node.run(&Cmd::new("id").arg("-un")).await.unwrap();
    assert_eq!(who.stdout.trim(), "root");
    let echo = node
        .run(
            &Cmd::new("sh")
                .args(["-c", "printf '%s|' \"$GREETING\"; cat"])
                .env("GREETING", "it's a $test")
                .stdin(b"from stdin".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(echo.stdout, "it's a $test|from stdin");
    let failed = node
        .run(&Cmd::new("sh").args(["-c", "echo nope >&2; exit 7"]))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Some(7));
    assert_eq!(failed.stderr().trim(), "nope");

    // Copy in (bytes, and a 1 MiB host file streamed), then out again.
    let blob: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let host_file = dir.join("blob.bin");
    std::fs::write(&host_file, &blob).unwrap();
    node.copy_in(&[
        FilePlacement::bytes(
            "/etc/timonel/hello.txt",
            0o640,
            b"hello from the host\n".to_vec(),
        ),
        FilePlacement::host_file("/opt/timonel/blob dir/blob.bin", 0o755, &host_file),
    ])
    .await
    .unwrap();
    assert_eq!(
        node.copy_out("/etc/timonel/hello.txt").await.unwrap(),
        b"hello from the host\n"
    );
    assert!(
        node.copy_out("/opt/timonel/blob dir/blob.bin")
            .await
            .unwrap()
            == blob,
        "blob differs"
    );
    let mode = node
        .run(&Cmd::new("stat").args(["-c", "%a", "/etc/timonel/hello.txt"]))
        .await
        .unwrap();
    assert_eq!(mode.stdout.trim(), "640");
    assert!(node.copy_out("/etc/timonel/missing").await.is_err());
    lap(&mut t, "commands and copies over ssh");

    // Paused: the guest's vCPUs stop (its sshd does not answer); unpaused: the same boot goes on.
    let boot_id = Cmd::new("cat").arg("/proc/sys/kernel/random/boot_id");
    let boot = node.run(&boot_id).await.unwrap().stdout;
    driver.pause(&name).await.unwrap();
    driver.pause(&name).await.unwrap();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Paused);
    let ssh = std::net::SocketAddr::new(ip, 22);
    let mut banner = [0u8; 4];
    let answered = std::net::TcpStream::connect_timeout(&ssh, Duration::from_secs(2))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            std::io::Read::read(&mut s, &mut banner)
        })
        .is_ok_and(|n| n > 0);
    assert!(!answered, "sshd of a paused guest answered");
    driver.unpause(&name).await.unwrap();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Running);
    assert_eq!(
        node.run(&boot_id).await.unwrap().stdout,
        boot,
        "the guest rebooted"
    );
    lap(&mut t, "paused (sshd silent) and unpaused (same boot)");
    driver.pause(&name).await.unwrap();

    driver
        .stop(&name, StopMode::graceful(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        driver.state(&name).await.unwrap(),
        MachineState::Stopped,
        "a paused guest must stop"
    );
    assert!(matches!(
        driver.ip(&name).await,
        Err(DriverError::InvalidState { .. })
    ));
    lap(&mut t, "stopped");

    driver.start(&name).await.unwrap();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Running);
    let ip2 = driver
        .ip(&name)
        .await
        .unwrap_or_else(|e| fail("ip after restart", e));
    assert_eq!(ip2, ip, "the address must survive a restart");
    // A second boot costs another minute under TCG: SSH after the restart is opt-in.
    if std::env::var("TIMONEL_E2E_SSH_AFTER_RESTART").is_ok_and(|v| v == "1") {
        let node = timonel_driver_vm::vm_access(
            &driver,
            &name,
            &key_dir,
            "debian",
            Duration::from_secs(150),
        )
        .await
        .unwrap_or_else(|e| fail("ssh after restart", e));
        assert_eq!(
            node.copy_out("/etc/timonel/hello.txt").await.unwrap(),
            b"hello from the host\n"
        );
        lap(&mut t, "restarted: same address, same host key, files kept");
    } else {
        lap(&mut t, &format!("restarted, same address {ip2}"));
    }

    driver.delete(&name).await.unwrap();
    driver.delete(&name).await.unwrap();
    let removed = driver.delete_cluster(&cluster).await.unwrap();
    assert!(
        removed.iter().any(|r| r.starts_with("network ")),
        "{removed:?}"
    );
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::NotCreated);
    lap(&mut t, "deleted");

    // Nothing with the cluster's name is left: no domain, no network, no disk.
    let conn = virt::connect::Connect::open(Some(DEFAULT_URI)).unwrap();
    let domains: Vec<String> = conn
        .list_all_domains(0)
        .unwrap()
        .iter()
        .map(|d| d.name().unwrap())
        .collect();
    let networks: Vec<String> = conn
        .list_all_networks(0)
        .unwrap()
        .iter()
        .map(|n| n.name().unwrap())
        .collect();
    assert!(
        !domains.iter().any(|d| d.contains(cluster.as_str())),
        "{domains:?}"
    );
    assert!(
        !networks.iter().any(|n| n.contains(cluster.as_str())),
        "{networks:?}"
    );
    assert!(!state_dir.join(timonel_driver_kvm::OVERLAY_FILE).exists());
    assert!(
        !state_dir.exists(),
        "state dir left: {:?}",
        std::fs::read_dir(&state_dir).map(|d| d.count())
    );
    eprintln!("end to end in {:.1}s", started.elapsed().as_secs_f64());
}
