//! The driver's whole lifecycle against the PowerShell simulator
//! (`tests/simulators/powershell/powershell-sim.py`), one simulated host per test.
//! On Windows (under Wine, scripts/test-windows.sh) `powershell.exe` is a forwarder to the same
//! simulator on the Linux side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{name, Recorder, Sim};
use serde_json::json;
use timonel_driver::{
    Availability, Driver, DriverError, Hint, HostRunner, MachineState, Runner, SilentReporter,
    StopMode,
};
use timonel_driver_hyperv::parse::{parse_json, StopReport};
use timonel_driver_hyperv::record::to_driver_error;
use timonel_driver_hyperv::script::{self, CreateParams, VmRef};
use timonel_driver_hyperv::{Timing, SWITCH_OPTION, VMID_FILE};

const GRACE: StopMode = StopMode::Graceful {
    timeout: Duration::from_secs(30),
};

#[tokio::test]
async fn contract_suite() {
    let sim = Sim::default();
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    timonel_driver::contract::suite(&driver, &spec).await;
    // Remove-VM leaves disks behind; the driver removed them.
    let disk = spec.vm_disk.as_ref().unwrap();
    assert!(!disk.state_dir.join("dev.vhdx").exists());
    assert!(!disk.seed_iso.exists());
    assert!(!disk.state_dir.join(VMID_FILE).exists());
    assert!(
        disk.base_image.exists(),
        "the base image must never be removed"
    );
    assert!(sim.vms().is_empty());
    assert_eq!(sim.injected(), None);
}

#[tokio::test]
async fn create_makes_a_gen2_vm_on_a_differencing_disk() {
    let sim = Sim::default();
    let driver = sim.driver();
    let mut spec = sim.spec("dev", 1);
    spec.cpus = Some(1.5);
    spec.memory_mib = Some(3001);
    let report = Recorder::default();
    driver.create(&spec, &report).await.unwrap();

    let vms = sim.vms();
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    let disk = spec.vm_disk.as_ref().unwrap();
    let vhdx = disk.state_dir.join("dev.vhdx");
    assert_eq!(vm["Name"], "dev");
    assert_eq!(vm["State"], "Off");
    assert_eq!(vm["Generation"], 2);
    assert_eq!(vm["SecureBoot"], false);
    assert_eq!(vm["ProcessorCount"], 2, "1.5 CPUs round up");
    assert_eq!(
        vm["MemoryStartupBytes"],
        3002u64 * 1024 * 1024,
        "odd MB round up"
    );
    assert_eq!(vm["DynamicMemoryEnabled"], false);
    assert_eq!(vm["AutomaticCheckpointsEnabled"], false);
    assert_eq!(vm["SwitchName"], "Default Switch");
    assert_eq!(vm["BootDevice"], "VHD");
    assert_eq!(vm["HardDisks"], json!([vhdx.to_str().unwrap()]));
    assert_eq!(vm["Dvds"], json!([disk.seed_iso.to_str().unwrap()]));
    let notes = vm["Notes"].as_str().unwrap();
    assert!(
        notes.split_whitespace().any(|w| w == "timonel:cluster=dev"),
        "{notes}"
    );
    assert!(
        notes.split_whitespace().any(|w| w == "timonel:machine=dev"),
        "{notes}"
    );

    // A differencing child of the base image, grown to size_mib.
    let world = sim.world();
    let vhd = &world["vhds"][vhdx.to_str().unwrap()];
    assert_eq!(vhd["Parent"], disk.base_image.to_str().unwrap());
    assert_eq!(vhd["Size"], 20480u64 * 1024 * 1024);
    assert!(vhdx.exists());

    // The VMId is recorded.
    let recorded = std::fs::read_to_string(disk.state_dir.join(VMID_FILE)).unwrap();
    assert_eq!(recorded.trim(), vm["VMId"].as_str().unwrap());

    // The Default Switch was chosen: the user is warned its subnet can change.
    let warnings = report.warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("reboot"), "{warnings:?}");
    // inspect + create: two processes.
    assert_eq!(sim.calls(), ["inspect lookup=-", "create lookup=-"]);
}

#[tokio::test]
async fn ip_and_state_spawn_exactly_one_process_each() {
    let sim = Sim::default();
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    sim.clear_calls();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Running
    );
    assert_eq!(sim.calls(), ["state lookup=id"]);
    sim.clear_calls();
    let ip = driver.ip(&spec.name).await.unwrap();
    assert!(ip.is_ipv4());
    assert_eq!(sim.calls(), ["ip lookup=id"]);
    sim.clear_calls();
    let endpoint = driver.endpoint(&spec.name, 6443).await.unwrap();
    assert_eq!(endpoint, std::net::SocketAddr::new(ip, 6443));
    assert_eq!(sim.calls().len(), 1);
}

#[tokio::test]
async fn acts_on_the_vmid_because_names_are_not_unique() {
    let sim = Sim::default();
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    // Someone creates a second VM with the same name and marker (New-VM allows it).
    let mut world = sim.world();
    let mut twin = world["vms"][0].clone();
    twin["VMId"] = json!("00000000-0000-4000-8000-00000000beef");
    twin["State"] = json!("Off");
    world["vms"].as_array_mut().unwrap().push(twin);
    sim.set_world(&world);

    // This driver knows the VMId: it is not confused.
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Running
    );
    driver.stop(&spec.name, StopMode::Force).await.unwrap();
    let vms = sim.vms();
    assert_eq!(vms[0]["State"], "Off");
    assert_eq!(vms[1]["VMId"], "00000000-0000-4000-8000-00000000beef");

    // A driver without records goes by name and refuses to guess.
    let fresh = sim.driver();
    let err = fresh.state(&spec.name).await.unwrap_err();
    assert!(
        err.hint().unwrap().contains("several Hyper-V VMs"),
        "{err:?}"
    );
    // delete acts on our VM only.
    driver.delete(&spec.name).await.unwrap();
    let vms = sim.vms();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["VMId"], "00000000-0000-4000-8000-00000000beef");
}

#[tokio::test]
async fn a_fresh_driver_finds_the_vm_by_name_then_uses_its_id() {
    let sim = Sim::default();
    let spec = sim.spec("dev", 1);
    sim.driver().create(&spec, &SilentReporter).await.unwrap();
    let fresh = sim.driver();
    sim.clear_calls();
    assert_eq!(
        fresh.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    assert_eq!(
        fresh.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    assert_eq!(sim.calls(), ["state lookup=name", "state lookup=id"]);
    // Creating again with a fresh driver is Ok and creates nothing.
    fresh.create(&spec, &SilentReporter).await.unwrap();
    assert_eq!(sim.vms().len(), 1);
}

#[tokio::test]
async fn a_vm_that_vanished_is_not_created() {
    let sim = Sim::default();
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    sim.set_world(&json!({"vms": [], "vhds": {}}));
    sim.clear_calls();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::NotCreated
    );
    assert_eq!(sim.calls(), ["state lookup=id"]);
    assert!(driver.ip(&spec.name).await.unwrap_err().is_not_found());
    assert!(matches!(
        driver.stop(&spec.name, GRACE).await,
        Err(DriverError::NotFound { .. })
    ));
    driver.delete(&spec.name).await.unwrap();
}

#[tokio::test]
async fn missing_vms_in_english_and_spanish() {
    for locale in ["en", "es"] {
        let sim = Sim::new(json!({ "locale": locale, "wrap": 60 }));
        let driver = sim.driver();
        let n = name("ghost");
        assert_eq!(
            driver.state(&n).await.unwrap(),
            MachineState::NotCreated,
            "{locale}"
        );
        driver.delete(&n).await.unwrap();
        let err = driver.ip(&n).await.unwrap_err();
        assert!(err.is_not_found(), "{locale}: {err:?}");
        assert!(driver.start(&n).await.unwrap_err().is_not_found());
    }
}

#[tokio::test]
async fn spanish_error_records_keep_their_ids() {
    let sim = Sim::new(json!({ "locale": "es" }));
    let cmd = script::state(&VmRef::Name(name("ghost"))).to_cmd(sim.powershell.to_str().unwrap());
    let err = HostRunner.run(&cmd).await.unwrap_err();
    let stderr = err.stderr().to_string();
    assert!(stderr.contains("no pudo encontrar"), "{stderr}");
    assert!(stderr.contains("En l\u{ed}nea: 1"), "{stderr}");
    assert!(stderr.contains("\r\n"), "CRLF line ends");
    assert!(stderr.contains(
        "FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    ));
    assert_eq!(err.code(), Some(1));
    if let timonel_driver::CommandError::Exited { stdout, .. } = &err {
        assert!(stdout.is_empty());
    }
    assert!(to_driver_error("state", "VM `ghost`", err).is_not_found());
}

#[tokio::test]
async fn ip_waits_for_the_kvp_daemon() {
    let sim = Sim::new(json!({ "ip_after_polls": 3 }));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    sim.clear_calls();
    let ip = driver.ip(&spec.name).await.unwrap();
    assert!(ip.is_ipv4());
    assert_eq!(sim.calls().len(), 4, "three empty polls, then the address");

    // With a deadline shorter than the daemon: a typed timeout that says what was seen.
    let sim = Sim::new(json!({ "ip_after_polls": 1000 }));
    let driver = sim.driver().with_timing(Timing {
        ip_timeout: Duration::from_millis(300),
        ..common::fast()
    });
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    match driver.ip(&spec.name).await {
        Err(e @ DriverError::Backend { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("on virtual switch `Default Switch` (the Default Switch)"),
                "{text}"
            );
            assert!(text.contains("hv_kvp_daemon"), "{text}");
            assert!(e.hint().unwrap().contains("hv_kvp_daemon"), "{e:?}");
        }
        other => panic!("expected the no-address error, got {other:?}"),
    }
}

#[tokio::test]
async fn ip_skips_ipv6_link_local_reported_first() {
    let sim = Sim::new(json!({ "ipv6_only_polls": 2, "ipv6_first": true }));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    sim.clear_calls();
    let ip = driver.ip(&spec.name).await.unwrap();
    assert!(ip.to_string().starts_with("172.20.16."), "{ip}");
    assert_eq!(
        sim.calls().len(),
        3,
        "two polls with only fe80::, then IPv4"
    );
}

#[tokio::test]
async fn ip_of_a_stopped_vm_is_invalid_state() {
    let sim = Sim::default();
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    sim.clear_calls();
    match driver.ip(&spec.name).await {
        Err(DriverError::InvalidState { state, .. }) => assert_eq!(state, "stopped"),
        other => panic!("expected InvalidState, got {other:?}"),
    }
    assert_eq!(sim.calls().len(), 1, "no polling on a stopped VM");
}

#[tokio::test]
async fn a_vm_refusing_graceful_stop_is_turned_off() {
    let sim = Sim::new(json!({ "refuse_graceful_stop": true }));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    sim.clear_calls();
    driver.stop(&spec.name, GRACE).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    assert_eq!(sim.calls()[0], "stop lookup=id");

    // What the script reported: it had to force.
    driver.start(&spec.name).await.unwrap();
    let ps = sim.powershell.to_str().unwrap();
    let cmd =
        script::stop_graceful(&VmRef::Name(spec.name.clone()), Duration::from_secs(5)).to_cmd(ps);
    let out = HostRunner.run(&cmd).await.unwrap();
    let report: StopReport = parse_json("stop", &out.stdout).unwrap();
    assert!(report.forced);
    assert_eq!(report.state, "Off");

    // A cooperative VM is not forced.
    sim.scenario(json!({}));
    driver.start(&spec.name).await.unwrap();
    let out = HostRunner.run(&cmd).await.unwrap();
    let report: StopReport = parse_json("stop", &out.stdout).unwrap();
    assert!(!report.forced);
}

#[tokio::test]
async fn force_stop_turns_off_at_once() {
    let sim = Sim::new(json!({ "refuse_graceful_stop": true }));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    let ps = sim.powershell.to_str().unwrap();
    let cmd = script::stop_force(&VmRef::Name(spec.name.clone())).to_cmd(ps);
    assert!(!cmd.args[3].contains("-AsJob"));
    let out = HostRunner.run(&cmd).await.unwrap();
    let report: StopReport = parse_json("stop", &out.stdout).unwrap();
    assert!(report.forced);
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
}

#[tokio::test]
async fn odd_memory_is_refused_by_hyperv_and_rounded_by_the_driver() {
    let sim = Sim::default();
    let spec = sim.spec("dev", 1);
    let disk = spec.vm_disk.clone().unwrap();
    let params = CreateParams {
        name: spec.name.clone(),
        switch: "Default Switch".to_string(),
        base_image: disk.base_image.to_str().unwrap().to_string(),
        disk_path: disk
            .state_dir
            .join("dev.vhdx")
            .to_str()
            .unwrap()
            .to_string(),
        disk_mib: 20480,
        seed_iso: disk.seed_iso.to_str().unwrap().to_string(),
        vm_dir: disk.state_dir.to_str().unwrap().to_string(),
        memory_mib: 4019,
        cpus: 2,
        notes: "timonel:cluster=dev timonel:machine=dev".to_string(),
    };
    let cmd = script::create(&params).to_cmd(sim.powershell.to_str().unwrap());
    let err = HostRunner.run(&cmd).await.unwrap_err();
    assert!(
        err.stderr().contains("('4019' MB) is not properly aligned"),
        "{}",
        err.stderr()
    );
    let err = to_driver_error("create", "VM `dev`", err);
    assert!(err.hint().unwrap().contains("even number of MB"), "{err:?}");
    // The failed create left nothing behind.
    assert!(sim.vms().is_empty());
    assert!(!disk.state_dir.join("dev.vhdx").exists());

    // Through the driver, 4019 becomes 4020.
    let mut spec = spec;
    spec.memory_mib = Some(4019);
    sim.driver().create(&spec, &SilentReporter).await.unwrap();
    assert_eq!(sim.vms()[0]["MemoryStartupBytes"], 4020u64 * 1024 * 1024);
}

#[tokio::test]
async fn picks_the_single_external_switch_without_a_default_switch() {
    let sim = Sim::new(json!({ "switches": [
        {"Id": "11111111-0000-4000-8000-000000000001", "Name": "lab", "SwitchType": 1},
        {"Id": "11111111-0000-4000-8000-000000000002", "Name": "Externo (Wi-Fi)", "SwitchType": 2}
    ]}));
    let spec = sim.spec("dev", 1);
    let report = Recorder::default();
    sim.driver().create(&spec, &report).await.unwrap();
    assert_eq!(sim.vms()[0]["SwitchName"], "Externo (Wi-Fi)");
    assert!(report.warnings.lock().unwrap().is_empty());
}

#[tokio::test]
async fn only_internal_switches_is_an_error_that_lists_them_and_creates_nothing() {
    let sim = Sim::new(json!({ "switches": [
        {"Id": "11111111-0000-4000-8000-000000000001", "Name": "minikube", "SwitchType": 1},
        {"Id": "11111111-0000-4000-8000-000000000003", "Name": "isolated", "SwitchType": 0}
    ]}));
    let spec = sim.spec("dev", 1);
    let err = sim
        .driver()
        .create(&spec, &SilentReporter)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`minikube` (Internal), `isolated` (Private)"),
        "{text}"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("is not enough"), "{hint}");
    assert!(hint.contains("External"), "{hint}");
    assert!(sim.vms().is_empty());

    let sim = Sim::new(json!({ "switches": [] }));
    let err = sim
        .driver()
        .create(&sim.spec("dev", 1), &SilentReporter)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no virtual switch exists"),
        "{err}"
    );
}

#[tokio::test]
async fn the_named_switch_wins() {
    let sim = Sim::new(json!({ "switches": [
        {"Id": "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444", "Name": "Default Switch", "SwitchType": 1},
        {"Id": "11111111-0000-4000-8000-000000000002", "Name": "LAN", "SwitchType": 2}
    ]}));
    let spec = sim.spec_on_switch("dev", 1, "LAN");
    let report = Recorder::default();
    sim.driver().create(&spec, &report).await.unwrap();
    assert_eq!(sim.vms()[0]["SwitchName"], "LAN");
    assert!(report.warnings.lock().unwrap().is_empty());
    let spec = sim.spec_on_switch("dev", 2, "nope");
    let err = sim
        .driver()
        .create(&spec, &SilentReporter)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`nope` does not exist"), "{err}");
}

#[tokio::test]
async fn values_with_quotes_and_subexpressions_stay_data() {
    let evil_switch = "Lab'; Stop-Computer; '$(Remove-Item C:\\ -Recurse)`\"x\"";
    let sim = Sim::new(json!({ "switches": [
        {"Id": "11111111-0000-4000-8000-000000000002", "Name": evil_switch, "SwitchType": 2}
    ]}));
    // Windows folder names cannot hold `"` or line breaks; the rest stays, with non-ASCII.
    let evil_dir = if cfg!(windows) {
        "it's; $(rm -rf x) `n 'q' Año ünï"
    } else {
        "it's; $(rm -rf x) `n \"q\"\nWrite-Host pwned"
    };
    let mut spec = sim.spec_in("dev", 1, evil_dir);
    spec.options
        .insert(SWITCH_OPTION.to_string(), evil_switch.to_string());
    let driver = sim.driver();
    driver.create(&spec, &SilentReporter).await.unwrap();
    assert_eq!(sim.injected(), None);
    let vm = &sim.vms()[0];
    assert_eq!(vm["SwitchName"], evil_switch);
    let disk = spec.vm_disk.as_ref().unwrap();
    assert_eq!(vm["Dvds"][0], disk.seed_iso.to_str().unwrap());
    assert!(disk.state_dir.join("dev.vhdx").exists());
    driver.start(&spec.name).await.unwrap();
    driver.delete(&spec.name).await.unwrap();
    assert!(!disk.state_dir.join("dev.vhdx").exists());
    assert_eq!(sim.injected(), None);
}

#[tokio::test]
async fn the_simulator_catches_spliced_values() {
    // What a driver that splices values into code would run: the simulator notices.
    let sim = Sim::default();
    let spliced = "[Console]::OutputEncoding = [Text.UTF8Encoding]::new($false); $ErrorActionPreference = 'Stop'; Hyper-V\\Get-VM -Name 'x'; Stop-Computer; ''";
    let cmd = timonel_driver::Cmd::new(sim.powershell.to_str().unwrap()).args([
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        spliced,
    ]);
    let err = HostRunner.run(&cmd).await.unwrap_err();
    assert!(
        err.stderr().contains("CommandNotFoundException"),
        "{}",
        err.stderr()
    );
    assert!(sim.injected().unwrap().contains("Stop-Computer"));
    // And unqualified cmdlets (shadowed by PowerCLI on real hosts).
    let sim = Sim::default();
    let bare = "[Console]::OutputEncoding = [Text.UTF8Encoding]::new($false); $ErrorActionPreference = 'Stop'; Get-VM -Name $env:X";
    let cmd = timonel_driver::Cmd::new(sim.powershell.to_str().unwrap()).args([
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        bare,
    ]);
    let err = HostRunner.run(&cmd).await.unwrap_err();
    assert!(
        err.stderr().contains("not currently connected"),
        "{}",
        err.stderr()
    );
}

#[tokio::test]
async fn probe_ready_uses_one_process() {
    let sim = Sim::default();
    match sim.driver().probe().await {
        Availability::Ready { version, notes } => {
            assert!(version.contains("Hyper-V 2.0.0.0"), "{version}");
            assert!(notes.is_empty(), "{notes:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.calls(), ["probe lookup=-"]);
    let sim = Sim::new(json!({ "admin": false, "hyperv_admin": true }));
    match sim.driver().probe().await {
        Availability::Ready { notes, .. } => assert!(notes[0].contains("Hyper-V Administrators")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_an_administrator() {
    let sim = Sim::new(json!({ "admin": false, "hyperv_admin": false, "wrap": 80 }));
    let driver = sim.driver();
    match driver.probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("Administrator"), "{reason}");
            assert!(
                reason.contains("Hyper-V Administrators (S-1-5-32-578)"),
                "{reason}"
            );
            assert!(fix.contains("elevated console"), "{fix}");
            assert!(
                fix.contains("Add-LocalGroupMember -SID S-1-5-32-578 -Member $env:USERNAME"),
                "{fix}"
            );
            assert!(fix.contains("sign out and in"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.calls().len(), 1);
    // Hyper-V cmdlets fail with the (wrapped) permission record: a hint, not "not created".
    let err = driver.state(&name("dev")).await.unwrap_err();
    assert!(!err.is_not_found());
    assert!(err.to_string().contains("required permission"), "{err}");
    assert!(err.hint().unwrap().contains("S-1-5-32-578"), "{err:?}");
}

#[tokio::test]
async fn hyperv_missing_or_disabled() {
    let sim = Sim::new(json!({ "module": false, "hypervisor": false }));
    let driver = sim.driver();
    match driver.probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("module"), "{reason}");
            assert!(fix.contains("Enable-WindowsOptionalFeature"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        driver.state(&name("dev")).await,
        Err(DriverError::NotAvailable { .. })
    ));

    let sim = Sim::new(json!({ "hypervisor": false, "locale": "es" }));
    match sim.driver().probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("not enabled"), "{reason}");
            assert!(fix.contains("reboot"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    let err = sim.driver().state(&name("dev")).await.unwrap_err();
    assert!(
        err.hint().unwrap().contains("Start-Service vmms"),
        "{err:?}"
    );

    let sim = Sim::new(json!({ "vmms": "Stopped" }));
    match sim.driver().probe().await {
        Availability::Unusable { reason, .. } => {
            assert!(reason.contains("vmms) is Stopped"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn start_denied_has_a_hint() {
    let sim = Sim::new(json!({ "deny_start": true }));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    let err = driver.start(&spec.name).await.unwrap_err();
    assert!(err.to_string().contains("failed to start"), "{err}");
    assert!(err.hint().unwrap().contains("denied"), "{err:?}");
}

#[tokio::test]
async fn a_foreign_vm_with_our_name_is_left_alone() {
    let sim = Sim::default();
    sim.set_world(&json!({"vms": [{
        "VMId": "22222222-0000-4000-8000-000000000001", "Name": "dev", "State": "Running",
        "Notes": "my own VM", "HardDisks": ["/nonexistent/mine.vhdx"], "Dvds": []
    }], "vhds": {}}));
    let driver = sim.driver();
    let spec = sim.spec("dev", 1);
    let err = driver.create(&spec, &SilentReporter).await.unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists { .. }), "{err:?}");
    let err = driver.delete(&spec.name).await.unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(sim.vms().len(), 1, "the user's VM survives");
}

#[tokio::test]
async fn delete_cluster_finds_vms_by_their_notes() {
    let sim = Sim::default();
    let driver = sim.driver();
    let a1 = sim.spec("alpha", 1);
    let a2 = sim.spec("alpha", 2);
    let b1 = sim.spec("beta", 1);
    for spec in [&a1, &a2, &b1] {
        driver.create(spec, &SilentReporter).await.unwrap();
    }
    driver.start(&a2.name).await.unwrap();
    // timonel's records are gone: a fresh driver, no hyperv-vmid files.
    for spec in [&a1, &a2] {
        std::fs::remove_file(spec.vm_disk.as_ref().unwrap().state_dir.join(VMID_FILE)).unwrap();
    }
    let lines = sim
        .driver()
        .delete_cluster(&"alpha".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("removed Hyper-V VM"))
            .count(),
        2,
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("alpha-m02.vhdx")),
        "{lines:?}"
    );
    let left: Vec<_> = sim.vms().iter().map(|v| v["Name"].clone()).collect();
    assert_eq!(left, [json!("beta")]);
    for spec in [&a1, &a2] {
        let d = spec.vm_disk.as_ref().unwrap();
        assert!(!d.state_dir.join(format!("{}.vhdx", spec.name)).exists());
        assert!(!d.seed_iso.exists());
    }
    assert!(b1
        .vm_disk
        .as_ref()
        .unwrap()
        .state_dir
        .join("beta.vhdx")
        .exists());
    assert!(sim.base_image().exists());
}

#[tokio::test]
async fn empty_results_printed_as_nothing_and_with_a_bom() {
    let sim = Sim::new(json!({ "empty_array": "empty", "bom": true }));
    let driver = sim.driver();
    let lines = driver
        .delete_cluster(&"nothing".parse().unwrap())
        .await
        .unwrap();
    assert!(lines.is_empty());
    let spec = sim.spec("dev", 1);
    driver.create(&spec, &SilentReporter).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
}

#[tokio::test]
/// VM drivers report where SSH answers (`endpoint(node, 22)`); the host side does SSH.
async fn node_access_is_ssh_to_the_endpoint_not_the_driver() {
    let sim = Sim::default();
    match sim.driver().access(&name("dev")).await {
        Err(DriverError::Unsupported { driver, what }) => {
            assert_eq!(driver, "hyperv");
            assert!(what.contains("SSH"), "{what}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("access must not pretend to work"),
    }
    assert!(sim.calls().is_empty());
    let _ = Arc::new(HostRunner);
}
