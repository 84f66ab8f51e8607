//! Host folders (`--mount`) as VirtualBox shared folders, against the VBoxManage simulator:
//! one persistent `sharedfolder add` per folder before the first start, named as the guest
//! mounts it; VBoxManage's own errors stop the create and leave no VM behind.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::{Sim, V61, V7};
use timonel_driver::{Driver, GuestMount, HostFolders, Mount, SilentReporter};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn create_shares_each_folder_read_only_when_asked() {
    for version in [V7, V61] {
        let sim = Sim::new(version, "");
        let driver = sim.driver();
        assert_eq!(
            driver.host_folders(),
            HostFolders::Guest(GuestMount::vboxsf())
        );
        let mut spec = sim.spec("dev", 1, 45022);
        spec.mounts = vec![
            "/home/me/src:/src:ro".parse().unwrap(),
            "/srv/out:/out".parse().unwrap(),
        ];
        driver.create(&spec, &SilentReporter).await.unwrap();
        let calls = sim.calls();
        assert!(
            calls.contains(
                &"sharedfolder add dev --name timonel0 --hostpath /home/me/src --readonly".into()
            ),
            "{calls:?}"
        );
        assert!(calls.contains(&"sharedfolder add dev --name timonel1 --hostpath /srv/out".into()));
        let info =
            String::from_utf8(sim.ok(&["showvminfo", "dev", "--machinereadable"]).stdout).unwrap();
        for line in [
            "SharedFolderNameMachineMapping1=\"timonel0\"",
            "SharedFolderPathMachineMapping1=\"/home/me/src\"",
            "SharedFolderNameMachineMapping2=\"timonel1\"",
            "SharedFolderPathMachineMapping2=\"/srv/out\"",
        ] {
            assert!(info.contains(line), "missing {line} in\n{info}");
        }
        // No folders asked for: no call.
        let sim = Sim::new(version, "");
        sim.driver()
            .create(&sim.spec("dev", 1, 45022), &SilentReporter)
            .await
            .unwrap();
        assert!(!sim.calls().iter().any(|c| c.starts_with("sharedfolder")));
    }
}

#[tokio::test]
async fn a_refused_share_fails_the_create_and_leaves_no_vm() {
    let sim = Sim::new(V7, "");
    let mut spec = sim.spec("dev", 1, 45022);
    // Built by hand: `Mount`'s parser would refuse a relative path before any driver sees it.
    spec.mounts = vec![Mount {
        host: "relative/src".into(),
        node: "/src".into(),
        read_only: false,
    }];
    let err = sim
        .driver()
        .create(&spec, &SilentReporter)
        .await
        .unwrap_err();
    let chain = timonel_driver::error_chain(&err);
    assert!(
        chain.contains("sharedfolder add dev --name timonel0"),
        "{chain}"
    );
    assert!(
        chain.contains("Shared folder path 'relative/src' is not absolute"),
        "{chain}"
    );
    let vms = String::from_utf8(sim.ok(&["list", "vms"]).stdout).unwrap();
    assert!(vms.is_empty(), "a half-made VM is left: {vms}");
}

/// The simulator's `sharedfolder`, as docs/hypervisor-tools.md records VBoxManage's: silent
/// success, the exact errors for a taken name, a missing name and a running VM.
#[test]
fn the_simulator_speaks_vboxmanage_sharedfolder() {
    let sim = Sim::new(V7, "");
    sim.ok(&["createvm", "--name", "vm", "--register"]);
    let out = sim.ok(&[
        "sharedfolder",
        "add",
        "vm",
        "--name=data",
        "--hostpath=/srv/data",
        "--readonly",
    ]);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let again = sim.vbox(&[
        "sharedfolder",
        "add",
        "vm",
        "--name",
        "data",
        "--hostpath",
        "/x",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again).lines().next().unwrap(),
        "VBoxManage: error: Shared folder named 'data' already exists"
    );
    assert!(stderr(&again).contains("VBOX_E_OBJECT_IN_USE"));
    sim.ok(&["sharedfolder", "remove", "vm", "--name", "data"]);
    let gone = sim.vbox(&["sharedfolder", "remove", "vm", "--name", "data"]);
    assert_eq!(
        stderr(&gone).lines().next().unwrap(),
        "VBoxManage: error: Could not find a shared folder named 'data'."
    );
    // A persistent change needs the machine's lock: not while it runs.
    sim.ok(&["startvm", "vm", "--type", "headless"]);
    let running = sim.vbox(&[
        "sharedfolder",
        "add",
        "vm",
        "--name",
        "d",
        "--hostpath",
        "/x",
    ]);
    assert!(!running.status.success());
    assert!(
        stderr(&running).contains("already locked"),
        "{}",
        stderr(&running)
    );
}
