//! What PowerShell and Hyper-V really print in odd corners, reproduced by the simulator, and how
//! the driver copes (docs/hypervisor-tools.md, "PowerShell and Hyper-V").
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{Recorder, Sim};
use serde_json::json;
use timonel_driver::{Availability, Driver, DriverError, Hint, HostRunner, Runner, SilentReporter};
use timonel_driver_hyperv::script::{self, VmRef};
use timonel_driver_hyperv::Timing;

/// Runs a driver script against the simulator, as the driver would.
async fn run(
    sim: &Sim,
    s: script::PsScript,
) -> Result<timonel_driver::Output, timonel_driver::CommandError> {
    HostRunner
        .run(&s.to_cmd(sim.powershell.to_str().unwrap()))
        .await
}

#[tokio::test]
async fn a_non_elevated_get_vm_is_a_permission_problem_across_several_records() {
    let sim = Sim::new(json!({
        "admin": false, "hyperv_admin": false,
        "rights_record": "access_denied", "records_before": ["not_found"]
    }));
    let err = run(&sim, script::state(&VmRef::Name(common::name("dev"))))
        .await
        .unwrap_err();
    let stderr = err.stderr().replace('\r', "");
    let records: Vec<&str> = stderr.split("\n \n").filter(|r| !r.is_empty()).collect();
    assert_eq!(records.len(), 2, "{stderr}");
    assert!(records[0].starts_with(
        "Hyper-V\\Get-VM : Hyper-V was unable to find a virtual machine with name \"dev\".\nAt line:1 char:"
    ), "{stderr}");
    assert!(records[0].ends_with(
        "    + CategoryInfo          : InvalidArgument: (dev:String) [Get-VM], VirtualizationException\n    + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    ), "{stderr}");
    assert!(records[1].starts_with(
        "Hyper-V\\Get-VM : You do not have the required permission to complete this task. Contact the authorization policy administrator for computer 'DESKTOP-1CILTF5'.\nAt line:1 char:"
    ), "{stderr}");
    assert!(records[1].ends_with(
        "    + CategoryInfo          : InvalidOperation: (:) [Get-VM], VirtualizationException\n    + FullyQualifiedErrorId : AccessDenied,Microsoft.HyperV.PowerShell.Commands.GetVM"
    ), "{stderr}");

    // The not-found record comes first, but the run is a permission problem: not "not created".
    let driver = sim.driver();
    let err = driver.state(&common::name("dev")).await.unwrap_err();
    assert!(matches!(err, DriverError::NotAvailable { .. }), "{err:?}");
    assert!(err.to_string().contains("required permission"), "{err}");
    let fix = err.hint().unwrap();
    assert!(fix.contains("elevated console"), "{fix}");
    assert!(fix.contains("Hyper-V Administrators"), "{fix}");
    assert!(
        driver.delete(&common::name("dev")).await.is_err(),
        "never 'already gone'"
    );
}

#[tokio::test]
async fn records_without_a_fully_qualified_error_id_are_classified() {
    let sim = Sim::new(json!({
        "admin": false, "hyperv_admin": false, "rights_record": "access_denied",
        "error_view": "no_fqid"
    }));
    let err = run(&sim, script::state(&VmRef::Name(common::name("dev"))))
        .await
        .unwrap_err();
    assert!(
        !err.stderr().contains("FullyQualifiedErrorId"),
        "{}",
        err.stderr()
    );
    assert!(err.stderr().contains(
        "    + CategoryInfo          : InvalidOperation: (:) [Get-VM], VirtualizationException\r\n"
    ));
    let e = sim.driver().state(&common::name("dev")).await.unwrap_err();
    assert!(matches!(e, DriverError::NotAvailable { .. }), "{e:?}");

    // PowerShell 7's one-line view has no ids at all: the English message still says it.
    let sim = Sim::new(json!({ "error_view": "concise" }));
    let err = run(&sim, script::state(&VmRef::Name(common::name("ghost"))))
        .await
        .unwrap_err();
    assert_eq!(
        err.stderr(),
        "Get-VM: Hyper-V was unable to find a virtual machine with name \"ghost\".\r\n"
    );
    assert_eq!(
        sim.driver().state(&common::name("ghost")).await.unwrap(),
        timonel_driver::MachineState::NotCreated
    );
}

#[tokio::test]
async fn no_powershell_answering_is_not_a_rights_problem() {
    let sim = Sim::new(json!({ "silent": true }));
    let out = run(&sim, script::probe()).await.unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "")
    );
    match sim.driver().probe().await {
        Availability::Unusable { reason, fix } => {
            let ps = sim.powershell.to_str().unwrap();
            assert_eq!(
                reason,
                format!("`{ps}` printed nothing for the Hyper-V check and exited 0: no PowerShell answered")
            );
            assert!(
                fix.contains("-NoProfile -NonInteractive -Command \"'ok'\"` must print ok"),
                "{fix}"
            );
            assert!(fix.contains("TIMONEL_POWERSHELL"), "{fix}");
            assert!(!fix.contains("elevated"), "elevation is not the fix: {fix}");
            assert!(!fix.contains("Hyper-V Administrators"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_switch_without_dhcp_is_named_when_no_address_comes() {
    let sim = Sim::new(json!({ "switches": [
        {"Id": "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444", "Name": "Default Switch", "SwitchType": 1},
        {"Id": "11111111-0000-4000-8000-000000000001", "Name": "minikube", "SwitchType": 1}
    ]}));
    let spec = sim.spec_on_switch("dev", 1, "minikube");
    let report = Recorder::default();
    // The driver's own wait is long: `wait_ip` (what `start` asks, with `--wait-timeout`)
    // holds the caller's deadline instead.
    let driver = sim.driver().with_timing(Timing {
        ip_timeout: Duration::from_secs(300),
        ..common::fast()
    });
    driver.create(&spec, &report).await.unwrap();
    assert!(report.warnings.lock().unwrap()[0].contains("`minikube` is Internal"));
    driver.start(&spec.name).await.unwrap();

    // What Hyper-V reports for a guest without a lease: its link-local IPv6 address only.
    let out = run(&sim, script::ip(&VmRef::Name(spec.name.clone())))
        .await
        .unwrap();
    let id = sim.vms()[0]["VMId"].as_str().unwrap().to_string();
    assert_eq!(
        out.stdout,
        format!("{{\"VMId\":\"{id}\",\"State\":\"Running\",\"IPAddresses\":[\"fe80::215:5dff:fe45:a\"],\"SwitchName\":\"minikube\"}}\r\n")
    );

    let started = std::time::Instant::now();
    let err = driver
        .wait_ip(&spec.name, Duration::from_millis(400))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline holds"
    );
    assert_eq!(
        err.to_string(),
        "wait for the IPv4 address of Hyper-V VM `dev` failed: none after 400ms on virtual switch `minikube` (Internal: no DHCP server unless you set up NAT and one yourself): the guest is up but reported only fe80::215:5dff:fe45:a (no DHCP lease)"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("--hyperv-virtual-switch <name>"), "{hint}");
    assert!(hint.contains("Default Switch"), "{hint}");

    // The same VM on a switch with DHCP gets its address.
    let sim = Sim::new(json!({ "switches": [
        {"Id": "11111111-0000-4000-8000-000000000002", "Name": "LAN", "SwitchType": 2, "Dhcp": false}
    ]}));
    let spec = sim.spec("dev", 1);
    let driver = sim.driver().with_timing(Timing {
        ip_timeout: Duration::from_millis(300),
        ..common::fast()
    });
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    let err = driver.ip(&spec.name).await.unwrap_err();
    assert!(
        err.to_string().contains("virtual switch `LAN` (External: addresses come from the DHCP server of the network it is bridged to)"),
        "{err}"
    );
}

/// A created and started node `dev` (cluster `dev`, the first node) on the simulator.
async fn running(
    sim: &Sim,
) -> (
    timonel_driver_hyperv::HyperVDriver,
    timonel_driver::MachineSpec,
) {
    let spec = sim.spec("dev", 1);
    let driver = sim.driver();
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    (driver, spec)
}

/// Puts every simulated VM in `state`, as Hyper-V would show it.
fn set_state(sim: &Sim, state: &str) {
    let mut world = sim.world();
    for vm in world["vms"].as_array_mut().unwrap() {
        vm["State"] = json!(state);
    }
    sim.set_world(&world);
}

#[tokio::test]
async fn a_graceful_stop_of_a_vm_already_shutting_down_waits_instead_of_cutting_power() {
    // The guest shuts itself down (someone ran `shutdown 0` in its console, or another console
    // stopped it): Hyper-V shows it `Stopping` until it is off.
    let sim = Sim::default();
    let (driver, spec) = running(&sim).await;
    set_state(&sim, "Stopping");
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        timonel_driver::MachineState::Stopping
    );
    let out = run(
        &sim,
        script::stop_graceful(&VmRef::Name(spec.name.clone()), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let id = sim.vms()[0]["VMId"].as_str().unwrap().to_string();
    assert_eq!(
        out.stdout,
        format!("{{\"VMId\":\"{id}\",\"State\":\"Off\",\"Forced\":false}}\r\n"),
        "waited for the guest, did not turn it off"
    );

    set_state(&sim, "Stopping");
    driver
        .stop(
            &spec.name,
            timonel_driver::StopMode::graceful(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        timonel_driver::MachineState::Stopped
    );
}

#[tokio::test]
async fn a_vm_that_hangs_while_stopping_is_a_clear_error_with_the_fix() {
    // minikube's Hyper-V users saw `stop` run for ever while Hyper-V Manager showed the VM
    // "Shutting down"; here Hyper-V even refuses to turn it off.
    let sim = Sim::new(json!({ "stuck_stopping": true }));
    let (driver, spec) = running(&sim).await;
    let err = run(
        &sim,
        script::stop_graceful(&VmRef::Name(spec.name.clone()), Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    let stderr = err.stderr().replace('\r', "");
    assert!(
        stderr.starts_with(
            "Hyper-V\\Stop-VM : 'dev' failed to change state.\nThe operation cannot be performed while the object is in its current state.\nAt line:1 char:"
        ),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(
            "    + CategoryInfo          : InvalidOperation: (:) [Stop-VM], VirtualizationException\n    + FullyQualifiedErrorId : InvalidState,Microsoft.HyperV.PowerShell.Commands.StopVM\n \n"
        ),
        "{stderr}"
    );
    assert_eq!(sim.vms()[0]["State"], "Stopping", "the VM stays as it was");

    let started = std::time::Instant::now();
    let err = driver
        .stop(
            &spec.name,
            timonel_driver::StopMode::graceful(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "stop ends");
    match &err {
        DriverError::Backend { op, message, .. } => {
            assert_eq!(op, "stop Hyper-V VM `dev`");
            assert_eq!(message, "'dev' failed to change state. The operation cannot be performed while the object is in its current state.");
        }
        other => panic!("{other:?}"),
    }
    let fix = err.hint().unwrap();
    assert!(fix.contains("hangs between states"), "{fix}");
    assert!(fix.contains("vmwp.exe"), "{fix}");
    assert!(fix.contains("Restart-Service vmms"), "{fix}");
    // A forced stop and delete meet the same refusal, and say the same.
    for err in [
        driver
            .stop(&spec.name, timonel_driver::StopMode::Force)
            .await
            .unwrap_err(),
        driver.delete(&spec.name).await.unwrap_err(),
    ] {
        assert!(err.hint().unwrap().contains("vmwp.exe"), "{err:?}");
    }
    assert_eq!(sim.vms().len(), 1, "nothing removed");

    // Once the worker process is ended the VM is off, and delete works.
    set_state(&sim, "Off");
    driver.delete(&spec.name).await.unwrap();
    assert!(sim.vms().is_empty());
}

#[tokio::test]
async fn a_refused_state_change_is_classified_in_any_language() {
    let sim = Sim::new(json!({ "stuck_stopping": true, "locale": "es" }));
    let (driver, spec) = running(&sim).await;
    set_state(&sim, "Stopping");
    let err = driver
        .stop(&spec.name, timonel_driver::StopMode::Force)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("No se pudo cambiar el estado"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("vmwp.exe"), "{err:?}");
}

#[tokio::test]
async fn an_external_switch_the_host_does_not_share_is_warned_about() {
    // An External switch bound to an adapter the host gave up (AllowManagementOS off): the guest
    // gets a lease from the LAN, but the host may have no way to reach it.
    let sim = Sim::new(json!({ "switches": [
        {"Id": "11111111-0000-4000-8000-000000000003", "Name": "VM LAN", "SwitchType": 2,
         "AllowManagementOS": false}
    ]}));
    let out = run(&sim, script::inspect(&common::name("dev")))
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        "{\"Switches\":[{\"Id\":\"11111111-0000-4000-8000-000000000003\",\"Name\":\"VM LAN\",\"SwitchType\":2,\"AllowManagementOS\":false}],\"VMs\":[]}\r\n"
    );
    let report = Recorder::default();
    sim.driver()
        .create(&sim.spec("dev", 1), &report)
        .await
        .unwrap();
    let warnings = report.warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("`VM LAN` is External but not shared with this computer"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("Set-VMSwitch -Name 'VM LAN' -AllowManagementOS $true"),
        "{warnings:?}"
    );
}

#[test]
fn a_powershell_run_that_never_ends_is_a_short_clear_error() {
    let script = script::stop_graceful(&VmRef::Name(common::name("dev")), Duration::from_secs(30));
    let argv = script.to_cmd("powershell.exe").argv().join(" ");
    let err = timonel_driver_hyperv::record::to_driver_error(
        "stop Hyper-V VM `dev`",
        "Hyper-V VM `dev`",
        timonel_driver::CommandError::Timeout {
            argv,
            after: Duration::from_secs(150),
        },
    );
    assert_eq!(
        err.to_string(),
        "stop Hyper-V VM `dev` failed: PowerShell did not finish within 150s"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("Hyper-V VM `dev` hangs between states"),
        "{hint}"
    );
    assert!(hint.contains("vmwp.exe"), "{hint}");
}

#[tokio::test]
async fn start_waits_for_a_vm_still_shutting_down() {
    // `stop` was answered by the guest's own `shutdown`, or someone shut it down from inside,
    // and `start` comes while Hyper-V still shows it `Stopping`.
    let sim = Sim::default();
    let (driver, spec) = running(&sim).await;
    set_state(&sim, "Stopping");
    driver.start(&spec.name).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        timonel_driver::MachineState::Running
    );
    let start = script::start(&VmRef::Name(spec.name.clone()));
    assert!(start
        .env()
        .contains(&("TIMONEL_WAIT_SECONDS".to_string(), "60".to_string())));

    // A VM that never leaves `Stopping` is refused by Start-VM: the error says what to do.
    let sim = Sim::new(json!({ "stuck_stopping": true }));
    let (driver, spec) = running(&sim).await;
    set_state(&sim, "Stopping");
    let err = driver.start(&spec.name).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "start Hyper-V VM `dev` failed: 'dev' failed to change state. The operation cannot be performed while the object is in its current state."
    );
    assert!(err.hint().unwrap().contains("vmwp.exe"), "{err:?}");
}
