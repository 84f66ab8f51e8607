//! The driver contract against libvirt's built-in `test:///default` connection: no daemon, no
//! QEMU. What differs from a real host, and how:
//! - the domain type is `test` (chosen from the URI);
//! - `qemu-img` does not run: a scripted runner checks the command;
//! - there are no DHCP leases: `ip` answers from the static DHCP entry (`IpSource::Static`);
//! - nothing boots, so `access` (SSH) is not part of this run (see tests/e2e.rs).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

use std::path::Path;
use std::sync::Arc;

use timonel_driver::scripted::ScriptedRunner;
use timonel_driver::{
    ClusterName, Driver, DriverError, MachineName, MachineSpec, MachineState, NodeRole,
    SilentReporter, StopMode, VmDisk,
};
use timonel_driver_kvm::KvmDriver;
use timonel_driver_vm::options::{SSH_KEY_DIR, SSH_USER};

fn spec(dir: &Path, cluster: &str, node: &str, index: u32) -> MachineSpec {
    let base = dir.join("base.qcow2");
    std::fs::write(&base, b"not really qcow2").unwrap();
    let mut spec = MachineSpec::new(
        node.parse::<MachineName>().unwrap(),
        cluster.parse::<ClusterName>().unwrap(),
        NodeRole::Server,
        index,
    );
    spec.vm_disk = Some(VmDisk {
        base_image: base,
        size_mib: 4096,
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

fn qemu_img(dir: &Path, node: &str) -> Vec<String> {
    let base = std::fs::canonicalize(dir.join("base.qcow2")).unwrap();
    vec![
        "qemu-img".into(),
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "qcow2".into(),
        "-b".into(),
        base.display().to_string(),
        dir.join(node).join("disk.qcow2").display().to_string(),
        "4096M".into(),
    ]
}

#[tokio::test]
async fn contract_on_libvirt_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "ct", "ct-node", 1);
    let runner = ScriptedRunner::new()
        .expect(qemu_img(dir.path(), "ct-node"))
        .returns_ok();
    let driver = KvmDriver::new("test:///default").with_runner(Arc::new(runner.clone()));
    assert!(driver.probe().await.is_ready());
    timonel_driver::contract::suite(&driver, &spec).await;
    runner.assert_done();
    // The seed was written by the driver, and delete removed the node's files.
    assert!(
        !dir.path().join("ct-node").exists(),
        "state dir left behind"
    );
    assert!(dir.path().join("keys/id_ed25519").exists());
    driver.delete_cluster(&"ct".parse().unwrap()).await.unwrap();
}

#[tokio::test]
async fn cluster_network_addresses_and_delete_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        spec(dir.path(), "dc", "dc-a", 1),
        spec(dir.path(), "dc", "dc-b", 2),
    );
    let runner = ScriptedRunner::new()
        .expect(qemu_img(dir.path(), "dc-a"))
        .returns_ok()
        .expect(qemu_img(dir.path(), "dc-b"))
        .returns_ok();
    let driver = KvmDriver::new("test:///default").with_runner(Arc::new(runner.clone()));
    driver.create(&a, &SilentReporter).await.unwrap();
    driver.create(&b, &SilentReporter).await.unwrap();
    driver.start(&a.name).await.unwrap();
    driver.start(&b.name).await.unwrap();
    let ip_a = driver.ip(&a.name).await.unwrap();
    let ip_b = driver.ip(&b.name).await.unwrap();
    assert!(ip_a.to_string().ends_with(".11"), "{ip_a}");
    assert!(ip_b.to_string().ends_with(".12"), "{ip_b}");
    assert_eq!(
        driver.endpoint(&a.name, 6443).await.unwrap().to_string(),
        format!("{ip_a}:6443")
    );
    // Same address after a restart.
    driver.stop(&a.name, StopMode::Force).await.unwrap();
    assert!(matches!(
        driver.ip(&a.name).await,
        Err(DriverError::InvalidState { .. })
    ));
    driver.start(&a.name).await.unwrap();
    assert_eq!(driver.ip(&a.name).await.unwrap(), ip_a);

    let removed = driver.delete_cluster(&"dc".parse().unwrap()).await.unwrap();
    assert!(
        removed.contains(&"domain timonel-dc-a".to_string()),
        "{removed:?}"
    );
    assert!(
        removed.contains(&"domain timonel-dc-b".to_string()),
        "{removed:?}"
    );
    assert!(
        removed.contains(&"network timonel-dc".to_string()),
        "{removed:?}"
    );
    assert_eq!(
        driver.state(&a.name).await.unwrap(),
        MachineState::NotCreated
    );
    assert!(driver
        .delete_cluster(&"dc".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    runner.assert_done();
}
