//! The promises every [`Driver`] keeps, as one suite each driver runs against its own backend
//! (a scripted runner, a simulator, libvirt's `test:///default`, or a real daemon).
//!
//! ```ignore
//! timonel_driver::contract::suite(&driver, spec).await;
//! ```

#![allow(clippy::expect_used, clippy::panic)] // a test suite: failing loudly is its job

use std::time::Duration;

use crate::driver::{Driver, MachineSpec, SilentReporter};
use crate::error::DriverError;
use crate::state::{MachineState, StopMode};

/// Runs the whole contract on `driver` with a node described by `spec` (which must not exist yet).
/// Panics with a message naming the broken promise. Leaves nothing behind when it passes.
pub async fn suite(driver: &dyn Driver, spec: &MachineSpec) {
    let name = &spec.name;
    let report = SilentReporter;

    // A node that does not exist: state says so, delete is Ok, ip is a typed error.
    assert_eq!(
        driver
            .state(name)
            .await
            .expect("state of a missing machine"),
        MachineState::NotCreated,
        "state of a machine that was never created must be NotCreated"
    );
    driver
        .delete(name)
        .await
        .expect("deleting a missing machine must be Ok");
    assert!(
        driver.ip(name).await.is_err(),
        "ip of a missing machine must fail"
    );

    // Create twice: the second is Ok.
    driver.create(spec, &report).await.expect("create");
    driver
        .create(spec, &report)
        .await
        .expect("creating an existing machine with the same spec must be Ok");
    let created = driver.state(name).await.expect("state after create");
    assert!(
        matches!(created, MachineState::Stopped | MachineState::Running),
        "after create the state must be Stopped or Running, got {created}"
    );

    // Start → Running, with an address.
    driver.start(name).await.expect("start");
    assert_eq!(
        driver.state(name).await.expect("state after start"),
        MachineState::Running,
        "state after start"
    );
    driver.ip(name).await.expect("ip while running");

    // Pause → Paused, unpause → Running; each twice is Ok. Then a paused machine stops.
    driver.pause(name).await.expect("pause");
    assert_eq!(
        driver.state(name).await.expect("state after pause"),
        MachineState::Paused,
        "state after pause"
    );
    driver
        .pause(name)
        .await
        .expect("pausing a paused machine must be Ok");
    driver.unpause(name).await.expect("unpause");
    assert_eq!(
        driver.state(name).await.expect("state after unpause"),
        MachineState::Running,
        "state after unpause"
    );
    driver
        .unpause(name)
        .await
        .expect("unpausing a running machine must be Ok");
    driver.pause(name).await.expect("pause before stop");

    // Stop → Stopped; ip is a typed error while stopped.
    driver
        .stop(name, StopMode::graceful(Duration::from_secs(30)))
        .await
        .expect("stop");
    assert_eq!(
        driver.state(name).await.expect("state after stop"),
        MachineState::Stopped,
        "state after stop"
    );
    match driver.ip(name).await {
        Ok(ip) => panic!("ip of a stopped machine must fail, got {ip}"),
        Err(DriverError::Command(e)) => {
            panic!("ip of a stopped machine must be a typed error, not a raw command error: {e}")
        }
        Err(_) => {}
    }

    // Neither pause nor unpause of a stopped machine: a typed error, and it stays stopped.
    for (op, result) in [
        ("pause", driver.pause(name).await),
        ("unpause", driver.unpause(name).await),
    ] {
        match result {
            Err(DriverError::InvalidState { .. }) => {}
            other => panic!("{op} of a stopped machine must be InvalidState, got {other:?}"),
        }
    }
    assert_eq!(
        driver.state(name).await.expect("state after refused pause"),
        MachineState::Stopped
    );

    // Start again, pause, then delete: gone, and delete again is Ok.
    driver.start(name).await.expect("start after stop");
    assert_eq!(
        driver.state(name).await.expect("state after restart"),
        MachineState::Running
    );
    driver.pause(name).await.expect("pause before delete");
    driver
        .delete(name)
        .await
        .expect("deleting a paused machine");
    assert_eq!(
        driver.state(name).await.expect("state after delete"),
        MachineState::NotCreated,
        "state after delete"
    );
    driver
        .delete(name)
        .await
        .expect("deleting twice must be Ok");
}
