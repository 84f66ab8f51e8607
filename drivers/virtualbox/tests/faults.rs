//! Faults and awkward states, against the VBoxManage simulator.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Sim, V7};
use timonel_driver::{Driver, DriverError, Hint, MachineState, SilentReporter, StopMode};
use timonel_driver_virtualbox::HostNetworkMode;

fn name() -> timonel_driver::MachineName {
    "dev".parse().unwrap()
}

/// Sets a VM's raw `VMState` in the simulator's world.
fn force_state(sim: &Sim, vm: &str, state: &str) {
    let path = sim.state().join("state.json");
    // The world is the simulator's JSON; edit it with the same python.
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys; p=sys.argv[1]; w=json.load(open(p)); w['vms'][sys.argv[2]]['state']=sys.argv[3]; json.dump(w, open(p,'w'))",
        ])
        .arg(&path)
        .args([vm, state])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn transient_errors_are_retried_until_they_pass() {
    let sim = Sim::new(V7, r#""not_ready": {"startvm": 2}"#);
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    driver.start(&name()).await.unwrap();
    let starts = sim
        .calls()
        .iter()
        .filter(|c| c.starts_with("startvm"))
        .count();
    assert_eq!(starts, 3, "two refusals, then success");
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Running);
}

#[tokio::test]
async fn a_lock_that_never_clears_fails_typed_after_a_few_tries() {
    let sim = Sim::new(V7, r#""locked": {"controlvm": 100}"#);
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    driver.start(&name()).await.unwrap();
    let err = driver.stop(&name(), StopMode::Force).await.unwrap_err();
    assert!(matches!(err, DriverError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("already locked"), "{err}");
    assert!(err.hint().unwrap().contains("session"), "{:?}", err.hint());
    let tries = sim
        .calls()
        .iter()
        .filter(|c| c.starts_with("controlvm"))
        .count();
    assert_eq!(tries, 5);
}

#[tokio::test]
async fn the_host_only_range_refusal_says_how_to_fix_it() {
    // A networks.conf that does not allow 192.168.56.0/21.
    let sim = Sim::new(V7, r#""hostonly_allowed": ["10.0.0.0/8"]"#);
    let err = sim.create_error().await;
    assert!(err.to_string().contains("E_ACCESSDENIED"), "{err}");
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("192.168.56.0/21") && hint.contains("/etc/vbox/networks.conf"),
        "{hint}"
    );
    assert!(!sim.calls().iter().any(|c| c.starts_with("createvm")));
}

#[test]
fn the_simulator_prints_the_documented_error_shapes() {
    let sim = Sim::new("6.1.50r161033", "");
    assert!(sim.vbox(&["hostonlyif", "create"]).status.success());
    let out = sim.vbox(&[
        "hostonlyif",
        "ipconfig",
        "vboxnet0",
        "--ip",
        "192.168.99.1",
        "--netmask",
        "255.255.255.0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "VBoxManage: error: Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)\n\
         VBoxManage: error: Context: \"EnableStaticIPConfig(Bstr(pszIp).raw(), Bstr(pszNetmask).raw())\" at line 242 of file VBoxManageHostonly.cpp\n"
    );
    let out = sim.vbox(&["showvminfo", "nope", "--machinereadable"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "VBoxManage: error: Could not find a registered machine named 'nope'\n\
         VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n\
         VBoxManage: error: Context: \"FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())\" at line 2621 of file VBoxManageInfo.cpp\n"
    );
    // 6.1.26 predates the range restriction.
    let old = Sim::new("6.1.26r145957", "");
    assert!(old.vbox(&["hostonlyif", "create"]).status.success());
    assert!(old
        .vbox(&["hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.99.1"])
        .status
        .success());
}

#[tokio::test]
async fn an_interface_outside_the_range_is_not_used() {
    let sim = Sim::new(V7, r#""hostonly_range_check": false"#);
    assert!(sim.vbox(&["hostonlyif", "create"]).status.success());
    assert!(sim
        .vbox(&["hostonlyif", "ipconfig", "vboxnet0", "--ip", "192.168.99.1"])
        .status
        .success());
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    assert!(sim
        .calls()
        .iter()
        .any(|c| c == "hostonlyif ipconfig vboxnet1 --ip 192.168.56.1 --netmask 255.255.255.0"));
    let info =
        String::from_utf8(sim.vbox(&["showvminfo", "dev", "--machinereadable"]).stdout).unwrap();
    assert!(info.contains("hostonlyadapter2=\"vboxnet1\""), "{info}");
}

#[tokio::test]
async fn a_create_that_fails_but_makes_the_interface_removes_it() {
    let sim = Sim::new(V7, r#""hostonlyif_create_fails": true"#);
    // What VBoxManage does: progress, the error, and an interface left behind.
    let probe = Sim::new(V7, r#""hostonlyif_create_fails": true"#);
    let out = probe.vbox(&["hostonlyif", "create"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n\
         VBoxManage: error: Failed to create the host-only adapter\n\
         VBoxManage: error: Code NS_ERROR_FAILURE (0x80004005) - Operation failed (extended info not available)\n\
         VBoxManage: error: Context: \"RTEXITCODE handleCreate(HandlerArg *)\" at line 95 of file VBoxManageHostonly.cpp\n"
    );
    let left = String::from_utf8(probe.vbox(&["list", "hostonlyifs"]).stdout).unwrap();
    assert!(left.starts_with("Name:            vboxnet0\n"), "{left}");

    let err = sim.create_error().await;
    let text = err.to_string();
    assert!(
        text.contains("Failed to create the host-only adapter"),
        "{text}"
    );
    assert!(text.contains("(`vboxnet0`) was removed"), "{text}");
    assert!(
        err.hint().unwrap().contains("try again"),
        "{:?}",
        err.hint()
    );
    let calls = sim.calls();
    assert!(
        calls.iter().any(|c| c == "hostonlyif remove vboxnet0"),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("createvm")),
        "{calls:?}"
    );
    let ifs = String::from_utf8(sim.vbox(&["list", "hostonlyifs"]).stdout).unwrap();
    assert_eq!(ifs, "", "nothing of the failed create is left");
}

#[tokio::test]
async fn seven_on_macos_uses_a_host_only_network() {
    // No /dev/vboxnetctl: `hostonlyif create` fails; the driver falls back to `hostonlynet`.
    let sim = Sim::new(V7, r#""host_os": "darwin""#);
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    assert!(sim.calls().iter().any(|c| c.starts_with(
        "hostonlynet add --name timonel-192.168.56.0 --netmask 255.255.255.0 --lower-ip 192.168.56.100"
    )));
    let info =
        String::from_utf8(sim.vbox(&["showvminfo", "dev", "--machinereadable"]).stdout).unwrap();
    assert!(
        info.contains("hostonly-network2=\"timonel-192.168.56.0\""),
        "{info}"
    );
    assert!(info.contains("nic2=\"hostonlynetwork\""), "{info}");
    driver.start(&name()).await.unwrap();
    assert_eq!(
        driver.ip(&name()).await.unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100))
    );
    // A second node reuses the network.
    driver
        .create(&sim.spec("dev", 2, 45023), &SilentReporter)
        .await
        .unwrap();
    let adds = sim
        .calls()
        .iter()
        .filter(|c| c.starts_with("hostonlynet add"))
        .count();
    assert_eq!(adds, 1);

    // Asked for explicitly, a host-only network is used without trying an interface.
    let sim = Sim::new(V7, r#""host_os": "darwin""#);
    sim.driver()
        .with_host_network(HostNetworkMode::Network)
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    assert!(!sim.calls().iter().any(|c| c.starts_with("hostonlyif")));
}

#[tokio::test]
async fn vt_x_problems_come_with_a_hint() {
    let sim = Sim::new(V7, r#""startvm_vtx": true"#);
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    let err = driver.start(&name()).await.unwrap_err();
    assert!(err.to_string().contains("VERR_VMX_NO_VMX"), "{err}");
    assert!(err.hint().unwrap().contains("BIOS"), "{:?}", err.hint());
}

#[tokio::test]
async fn documented_states_map_through_the_driver() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    for (raw, want) in [
        (
            "gurumeditation",
            MachineState::Error {
                raw: "gurumeditation".into(),
            },
        ),
        ("aborted-saved", MachineState::Suspended),
        ("aborted", MachineState::Stopped),
        ("saving", MachineState::Stopping),
        (
            "onlinesnapshotting",
            MachineState::Unknown {
                raw: "onlinesnapshotting".into(),
            },
        ),
        ("restoring", MachineState::Starting),
    ] {
        force_state(&sim, "dev", raw);
        assert_eq!(driver.state(&name()).await.unwrap(), want, "{raw}");
    }
    // A VM stuck in a passing state makes start wait, then time out typed.
    force_state(&sim, "dev", "snapshotting");
    let slow = sim
        .driver()
        .with_timings(timonel_driver_virtualbox::Timings {
            settle_timeout: Duration::from_millis(200),
            ..Sim::fast_timings()
        });
    match slow.start(&name()).await {
        Err(DriverError::Timeout { last_state, .. }) => assert_eq!(last_state, "snapshotting"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn paused_and_saved_vms_start_and_stop() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    driver
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    driver.start(&name()).await.unwrap();
    assert!(sim.vbox(&["controlvm", "dev", "pause"]).status.success());
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Paused);
    driver
        .stop(&name(), StopMode::graceful(Duration::from_secs(5)))
        .await
        .unwrap();
    let calls = sim.calls();
    let resume = calls
        .iter()
        .position(|c| c == "controlvm dev resume")
        .unwrap();
    let acpi = calls
        .iter()
        .position(|c| c == "controlvm dev acpipowerbutton")
        .unwrap();
    assert!(
        resume < acpi,
        "a paused VM is resumed before the power button"
    );
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Stopped);

    driver.start(&name()).await.unwrap();
    assert!(sim
        .vbox(&["controlvm", "dev", "savestate"])
        .status
        .success());
    assert_eq!(
        driver.state(&name()).await.unwrap(),
        MachineState::Suspended
    );
    driver.start(&name()).await.unwrap();
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Running);
}

#[tokio::test]
async fn missing_machines_are_typed() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    assert!(driver.start(&name()).await.unwrap_err().is_not_found());
    assert!(driver
        .stop(&name(), StopMode::Force)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(driver.ip(&name()).await.unwrap_err().is_not_found());
    assert!(driver
        .endpoint(&name(), 22)
        .await
        .unwrap_err()
        .is_not_found());
    driver.delete(&name()).await.unwrap();
    assert!(driver
        .delete_cluster(&"dev".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
}
