//! `pause`/`unpause` against the VBoxManage simulator: `controlvm pause|resume`, the states,
//! and VBoxManage's refusals (`Already paused`, `Cannot resume …`, `… is not currently running.`).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{Sim, V61, V7};
use timonel_driver::{Driver, DriverError, MachineName, MachineState, StopMode};

#[tokio::test]
async fn pause_and_unpause_use_controlvm_and_are_idempotent() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let name: MachineName = "dev".parse().unwrap();

    driver.pause(&name).await.unwrap();
    assert!(sim.calls().last().unwrap().ends_with("controlvm dev pause"));
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Paused);
    // Paused already: one look, no controlvm.
    let before = sim.count();
    driver.pause(&name).await.unwrap();
    assert_eq!(sim.count(), before + 1, "{:?}", &sim.calls()[before..]);

    // What VBoxManage itself says to a second pause.
    let out = sim.vbox(&["controlvm", "dev", "pause"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("VBoxManage: error: Already paused\n"),
        "{text}"
    );
    assert!(
        text.contains("VBOX_E_INVALID_VM_STATE (0x80bb0002)"),
        "{text}"
    );

    driver.unpause(&name).await.unwrap();
    assert!(sim
        .calls()
        .last()
        .unwrap()
        .ends_with("controlvm dev resume"));
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Running);
    let before = sim.count();
    driver.unpause(&name).await.unwrap();
    assert_eq!(sim.count(), before + 1);
    let out = sim.vbox(&["controlvm", "dev", "resume"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "VBoxManage: error: Cannot resume the machine as it is not paused (machine state: Running)\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_stopped_vm_is_refused_typed() {
    for version in [V7, V61] {
        let sim = Sim::new(version, "");
        let driver = sim.running().await;
        let name: MachineName = "dev".parse().unwrap();
        driver.stop(&name, StopMode::Force).await.unwrap();
        for result in [driver.pause(&name).await, driver.unpause(&name).await] {
            match result {
                Err(DriverError::InvalidState { state, .. }) => assert_eq!(state, "stopped"),
                other => panic!("{version}: {other:?}"),
            }
        }
        // VBoxManage's own refusal on a VM that is off (7.x ends it with a period).
        let out = sim.vbox(&["controlvm", "dev", "pause"]);
        let period = if version == V7 { "." } else { "" };
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap(),
            format!("VBoxManage: error: Machine 'dev' is not currently running{period}")
        );
    }
}

#[tokio::test]
async fn a_paused_vm_resumes_before_the_power_button_and_deletes() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let name: MachineName = "dev".parse().unwrap();
    driver.pause(&name).await.unwrap();
    let before = sim.count();
    driver
        .stop(&name, StopMode::graceful(Duration::from_secs(5)))
        .await
        .unwrap();
    let calls = sim.calls()[before..].to_vec();
    let resume = calls
        .iter()
        .position(|c| c.ends_with("controlvm dev resume"));
    let button = calls
        .iter()
        .position(|c| c.ends_with("controlvm dev acpipowerbutton"));
    assert!(
        matches!((resume, button), (Some(r), Some(b)) if r < b),
        "{calls:?}"
    );
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Stopped);

    driver.start(&name).await.unwrap();
    driver.pause(&name).await.unwrap();
    driver.delete(&name).await.unwrap();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::NotCreated);
}
