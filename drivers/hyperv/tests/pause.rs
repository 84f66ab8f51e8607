//! `pause`/`unpause` against the PowerShell simulator: `Suspend-VM`/`Resume-VM` only on the
//! state they accept, Hyper-V's `Paused` state, and a paused VM's graceful stop.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::Sim;
use timonel_driver::{Driver, DriverError, HostRunner, MachineState, Runner, StopMode};
use timonel_driver_hyperv::parse::{parse_json, StopReport};
use timonel_driver_hyperv::script::{self, VmRef};

#[tokio::test]
async fn pause_suspends_and_unpause_resumes_the_vm() {
    let sim = Sim::default();
    let (driver, spec) = sim.running().await;

    sim.clear_calls();
    driver.pause(&spec.name).await.unwrap();
    driver.pause(&spec.name).await.unwrap();
    assert_eq!(sim.calls(), ["pause lookup=id", "pause lookup=id"]);
    assert_eq!(sim.vms()[0]["State"], "Paused");
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Paused
    );

    driver.unpause(&spec.name).await.unwrap();
    driver.unpause(&spec.name).await.unwrap();
    assert_eq!(sim.vms()[0]["State"], "Running");

    // Off: both refused, typed, and nothing changed.
    driver.stop(&spec.name, StopMode::Force).await.unwrap();
    for result in [
        driver.pause(&spec.name).await,
        driver.unpause(&spec.name).await,
    ] {
        match result {
            Err(DriverError::InvalidState { state, action, .. }) => {
                assert_eq!(state, "stopped", "{action}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.vms()[0]["State"], "Off");
    assert_eq!(sim.injected(), None);
}

#[tokio::test]
async fn a_paused_vm_is_resumed_for_its_graceful_stop_not_turned_off() {
    let sim = Sim::default();
    let (driver, spec) = sim.running().await;
    driver.pause(&spec.name).await.unwrap();
    let ps = sim.powershell.to_str().unwrap();
    let cmd =
        script::stop_graceful(&VmRef::Name(spec.name.clone()), Duration::from_secs(5)).to_cmd(ps);
    let out = HostRunner.run(&cmd).await.unwrap();
    let report: StopReport = parse_json("stop", &out.stdout).unwrap();
    assert!(!report.forced, "the guest heard the shutdown request");
    assert_eq!(report.state, "Off");
}
