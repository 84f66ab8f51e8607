//! The real `timonel-kvm` helper, driven through timonel's proxy over its pipes, against
//! libvirt's built-in `test:///default` connection (no daemon; each helper process has its own).
//! What comes back must be what the in-process driver gives: results, progress, errors with
//! their variant, text and hint.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use timonel_driver::{
    error_chain, Availability, ClusterName, Driver, DriverError, Hint, MachineName, MachineSpec,
    MachineState, NodeRole, Reporter, StopMode, VmDisk,
};
use timonel_driver_kvm_proxy::KvmDriver as Proxy;
use timonel_driver_vm::options::{SSH_KEY_DIR, SSH_USER};

const HELPER: &str = env!("CARGO_BIN_EXE_timonel-kvm");

fn proxy() -> Proxy {
    Proxy::new("test:///default").with_helper(HELPER)
}

fn name(s: &str) -> MachineName {
    s.parse().unwrap()
}

/// `qemu-img`, which the helper runs for real to make the node's overlay disk. Under CI=true
/// its absence fails the test; elsewhere the test is skipped.
fn require_qemu_img() -> bool {
    if Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and `qemu-img` is missing (apt-get install qemu-utils)");
    }
    eprintln!("skipping: `qemu-img` is missing (apt-get install qemu-utils)");
    false
}

/// A spec whose base image is a real (empty) qcow2 file.
fn spec(dir: &Path, cluster: &str, node: &str) -> MachineSpec {
    let base = dir.join("base.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let mut spec = MachineSpec::new(
        name(node),
        cluster.parse::<ClusterName>().unwrap(),
        NodeRole::Server,
        1,
    );
    spec.vm_disk = Some(VmDisk {
        base_image: base,
        size_mib: 256,
        seed_iso: dir.join(node).join("seed.iso"),
        state_dir: dir.join(node),
    });
    spec.memory_mib = Some(512);
    spec.cpus = Some(1.0);
    spec.options
        .insert(SSH_KEY_DIR.into(), dir.join("keys").display().to_string());
    spec.options.insert(SSH_USER.into(), "debian".into());
    spec
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);
impl Reporter for Recorder {
    fn step(&self, m: &str) {
        self.0.lock().unwrap().push(format!("step: {m}"));
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("progress: {done}/{total:?}"));
    }
    fn warn(&self, m: &str) {
        self.0.lock().unwrap().push(format!("warn: {m}"));
    }
}

#[tokio::test]
async fn probe_and_a_missing_machine_answer_as_in_process() {
    let (proxy, direct) = (
        proxy(),
        timonel_driver_kvm::KvmDriver::new("test:///default"),
    );
    assert_eq!(proxy.probe().await, direct.probe().await);
    assert!(proxy.probe().await.is_ready());
    assert_eq!(proxy.capabilities(), direct.capabilities());
    let missing = name("nobody-here");
    assert_eq!(
        proxy.state(&missing).await.unwrap(),
        MachineState::NotCreated
    );
    let via_helper = proxy.ip(&missing).await.unwrap_err();
    let in_process = direct.ip(&missing).await.unwrap_err();
    assert!(
        matches!(via_helper, DriverError::NotFound { .. }),
        "{via_helper:?}"
    );
    assert_eq!(error_chain(&via_helper), error_chain(&in_process));
    assert_eq!(format!("{via_helper:?}"), format!("{in_process:?}"));
    // An error with a hint keeps it.
    let start_err = proxy.start(&missing).await.unwrap_err();
    let direct_err = direct.start(&missing).await.unwrap_err();
    assert_eq!(format!("{start_err:?}"), format!("{direct_err:?}"));
    assert_eq!(start_err.hint(), direct_err.hint());
    proxy.delete(&missing).await.unwrap();
}

#[tokio::test]
async fn the_driver_contract_through_the_helper() {
    if !require_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "hp", "hp-node");
    let proxy = proxy();
    assert!(proxy.probe().await.is_ready());
    timonel_driver::contract::suite(&proxy, &spec).await;
    assert!(
        !dir.path().join("hp-node").exists(),
        "state dir left behind"
    );
    assert!(dir.path().join("keys/id_ed25519").exists());
    proxy.delete_cluster(&"hp".parse().unwrap()).await.unwrap();
}

#[tokio::test]
async fn progress_comes_through_and_calls_run_at_once() {
    if !require_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "pg", "pg-node");
    let proxy = Arc::new(proxy());
    let report = Recorder::default();
    proxy.create(&spec, &report).await.unwrap();
    let seen = report.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("defining VM `timonel-pg-node`")),
        "{seen:?}"
    );
    // Many calls in flight on one helper, each answered with its own result.
    let calls = (0..16).map(|i| {
        let proxy = proxy.clone();
        let node = if i % 2 == 0 { "pg-node" } else { "pg-none" };
        async move { (node, proxy.state(&name(node)).await.unwrap()) }
    });
    for (node, state) in futures_util::future::join_all(calls).await {
        let want = if node == "pg-node" {
            MachineState::Stopped
        } else {
            MachineState::NotCreated
        };
        assert_eq!(state, want, "{node}");
    }
    proxy.start(&spec.name).await.unwrap();
    assert!(proxy.ip(&spec.name).await.is_ok());
    proxy.stop(&spec.name, StopMode::Force).await.unwrap();
    let removed = proxy.delete_cluster(&"pg".parse().unwrap()).await.unwrap();
    assert!(
        removed.contains(&"domain timonel-pg-node".to_string()),
        "{removed:?}"
    );
}

#[tokio::test]
async fn a_helper_that_dies_or_babbles_is_unusable_with_the_reason() {
    let gone = Proxy::new("test:///default").with_helper("/bin/false");
    let Availability::Unusable { reason, fix } = gone.probe().await else {
        panic!("/bin/false as helper was usable");
    };
    assert!(reason.contains("`/bin/false` ended"), "{reason}");
    assert!(reason.contains("exit status: 1"), "{reason}");
    assert!(fix.contains("--version"), "{fix}");
    // Every call then fails the same way, at once.
    let err = gone.state(&name("a")).await.unwrap_err();
    assert!(matches!(err, DriverError::NotAvailable { .. }), "{err:?}");
    assert!(err.to_string().contains("`/bin/false` ended"), "{err}");

    let babbles = Proxy::new("test:///default").with_helper("/bin/echo");
    let Availability::Unusable { reason, .. } = babbles.probe().await else {
        panic!("/bin/echo as helper was usable");
    };
    assert!(
        reason.contains("it wrote `--uri test:///default`, which is not an answer"),
        "{reason}"
    );
}

#[test]
fn the_helper_says_what_it_is() {
    let out = Command::new(HELPER).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("timonel-kvm "), "{text}");
    assert!(
        text.contains(&format!(
            "protocol {}",
            timonel_driver_kvm_proxy::protocol::PROTOCOL
        )),
        "{text}"
    );
    let bad = Command::new(HELPER).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unexpected argument `--frobnicate`"));
}
