//! The whole lifecycle against the VBoxManage simulator, in 6.1 and 7.x modes. On Windows (under
//! Wine, scripts/test-windows.sh) `VBoxManage.exe` is a forwarder to the same simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Sim, V61, V7};
use timonel_driver::{
    contract, Availability, Driver, DriverError, Hint, MachineState, SilentReporter, StopMode,
};

#[tokio::test]
async fn contract_suite_on_7x() {
    let sim = Sim::new(V7, "");
    contract::suite(&sim.driver(), &sim.spec("dev", 1, 45022)).await;
}

#[tokio::test]
async fn contract_suite_on_6_1() {
    let sim = Sim::new(V61, "");
    contract::suite(&sim.driver(), &sim.spec("dev", 1, 45022)).await;
}

#[tokio::test]
async fn contract_suite_on_windows_prefix_and_exit_zero_errors() {
    // `VBoxManage.exe: error:` lines, and errors that come with exit code 0.
    let sim = Sim::new(
        V7,
        r#""program": "VBoxManage.exe", "errors_exit_zero": true"#,
    );
    contract::suite(&sim.driver(), &sim.spec("dev", 1, 45022)).await;
}

#[tokio::test]
async fn create_builds_the_vm_from_the_spec() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    let spec = sim.spec("dev", 1, 45022);
    driver.create(&spec, &SilentReporter).await.unwrap();
    let dir = sim.machines().join("dev");
    let disk = dir.join("dev-disk.vdi");
    let seed = dir.join("dev-seed.iso");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        b"base disk",
        "per-node disk cloned"
    );
    assert_eq!(std::fs::read(&seed).unwrap(), b"cidata", "seed ISO copied");
    assert!(
        dir.join("dev/dev.vbox").exists(),
        "settings under the state dir"
    );

    let info =
        String::from_utf8(sim.vbox(&["showvminfo", "dev", "--machinereadable"]).stdout).unwrap();
    for line in [
        "memory=2048",
        "cpus=2",
        "VMState=\"poweroff\"",
        "nic1=\"nat\"",
        "Forwarding(0)=\"tcp-22-45022,tcp,127.0.0.1,45022,,22\"",
        "Forwarding(1)=\"tcp-6443-46022,tcp,127.0.0.1,46022,,6443\"",
        "hostonlyadapter2=\"vboxnet0\"",
        "nic2=\"hostonly\"",
        "description=\"timonel cluster=dev\nrole=server index=1",
    ] {
        assert!(info.contains(line), "missing {line:?} in\n{info}");
    }
    // `--machinereadable` escapes backslashes (Windows paths).
    let quoted = |p: &std::path::Path| p.display().to_string().replace('\\', "\\\\");
    assert!(info.contains(&format!("\"SATA-0-0\"=\"{}\"", quoted(&disk))));
    assert!(info.contains(&format!("\"SATA-1-0\"=\"{}\"", quoted(&seed))));
    let extra =
        String::from_utf8(sim.vbox(&["getextradata", "dev", "timonel/cluster"]).stdout).unwrap();
    assert_eq!(extra, "Value: dev\n");

    // A host-only interface in the allowed range, with a DHCP server.
    let ifs = String::from_utf8(sim.vbox(&["list", "hostonlyifs"]).stdout).unwrap();
    assert!(ifs.contains("IPAddress:       192.168.56.1\n"), "{ifs}");
    let calls = sim.calls();
    assert!(calls
        .iter()
        .any(|c| c.contains("clonemedium disk") && c.contains("--format VDI")));
    assert!(calls
        .iter()
        .any(|c| c.contains("modifymedium disk") && c.ends_with("--resize 20480")));
    assert!(calls
        .iter()
        .any(|c| c.contains("dhcpserver add --netname HostInterfaceNetworking-vboxnet0")));
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
}

fn modifyvm_call(sim: &Sim) -> String {
    sim.calls()
        .into_iter()
        .find(|c| c.starts_with("modifyvm "))
        .expect("a modifyvm call")
}

#[tokio::test]
async fn seven_uses_kebab_case_options() {
    let sim = Sim::new(V7, "");
    sim.driver()
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    let call = modifyvm_call(&sim);
    for opt in [
        "--os-type",
        "--nat-pf1",
        "--nic-type1",
        "--host-only-adapter2",
        "--nat-localhostreachable1",
        "--rtc-use-utc",
    ] {
        assert!(call.contains(&format!("{opt} ")), "{opt} missing in {call}");
    }
    assert!(!call.contains("--natpf1"), "{call}");
}

#[tokio::test]
async fn six_one_uses_the_old_spellings_and_rejects_kebab_case() {
    let sim = Sim::new(V61, "");
    sim.driver()
        .create(&sim.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap();
    let call = modifyvm_call(&sim);
    for opt in [
        "--ostype",
        "--natpf1",
        "--nictype1",
        "--hostonlyadapter2",
        "--rtcuseutc",
    ] {
        assert!(call.contains(&format!("{opt} ")), "{opt} missing in {call}");
    }
    for kebab in [
        "--nat-pf1",
        "--os-type",
        "--nat-localhostreachable1",
        "--nic-type",
    ] {
        assert!(!call.contains(kebab), "{kebab} in {call}");
    }
    // The simulator's 6.1 mode refuses 7.x spellings, as 6.1 does.
    let out = sim.vbox(&["modifyvm", "dev", "--nat-pf1", "x,tcp,,1,,2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "VBoxManage: error: Unknown option: --nat-pf1\n"
    );
}

#[tokio::test]
async fn state_spawns_one_process_and_ip_two() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    let first = driver.ip(&name).await.unwrap();
    assert_eq!(first, IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100)));

    let before = sim.count();
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Running);
    assert_eq!(
        sim.count(),
        before + 1,
        "state: {:?}",
        &sim.calls()[before..]
    );
    assert!(sim.calls()[before].contains("showvminfo dev --machinereadable"));

    // ip: the state first (VirtualBox keeps a stopped VM's guest properties), then the
    // property; the host-only interface's own address was learned by the first call.
    let before = sim.count();
    assert_eq!(driver.ip(&name).await.unwrap(), first);
    assert_eq!(sim.count(), before + 2, "ip: {:?}", &sim.calls()[before..]);
    assert!(sim.calls()[before].contains("showvminfo dev --machinereadable"));
    assert!(sim.calls()[before + 1]
        .ends_with("guestproperty get dev /VirtualBox/GuestInfo/Net/1/V4/IP"));
}

#[tokio::test]
async fn ip_waits_for_the_guest_then_fails_typed_once_stopped() {
    let sim = Sim::new(V7, r#""ip_after_polls": 4"#);
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    let before = sim.count();
    driver.ip(&name).await.unwrap();
    let polls = sim.calls()[before..]
        .iter()
        .filter(|c| c.contains("guestproperty get"))
        .count();
    assert_eq!(polls, 5, "4 × `No value set!`, then the value");

    driver.stop(&name, StopMode::Force).await.unwrap();
    match driver.ip(&name).await {
        Err(DriverError::InvalidState { state, .. }) => assert_eq!(state, "stopped"),
        other => panic!("expected InvalidState, got {other:?}"),
    }
}

#[tokio::test]
async fn ip_times_out_with_a_typed_error_when_the_guest_never_reports() {
    let sim = Sim::new(V7, r#""ip_after_polls": 100000"#);
    let driver = sim.running().await.with_timings(Sim::short_ip_timeout());
    match driver.ip(&"dev".parse().unwrap()).await {
        Err(DriverError::Timeout { last_state, .. }) => {
            assert!(last_state.contains("No value set!"), "{last_state}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

/// `wait_ip` (what `start` asks, with `--wait-timeout`) holds the caller's deadline, not the
/// driver's own (10 s here).
#[tokio::test]
async fn wait_ip_gives_up_at_the_callers_deadline() {
    let sim = Sim::new(V7, r#""ip_after_polls": 100000"#);
    let driver = sim.running().await;
    let started = std::time::Instant::now();
    match driver
        .wait_ip(&"dev".parse().unwrap(), Duration::from_millis(300))
        .await
    {
        Err(DriverError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn endpoint_uses_the_forwarded_port_else_the_host_only_address() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    assert_eq!(
        driver.endpoint(&name, 22).await.unwrap(),
        "127.0.0.1:45022".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        driver.endpoint(&name, 6443).await.unwrap(),
        "127.0.0.1:46022".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        driver.endpoint(&name, 10250).await.unwrap(),
        "192.168.56.100:10250".parse::<SocketAddr>().unwrap()
    );
}

#[tokio::test]
async fn graceful_stop_uses_acpi_and_force_does_not() {
    let sim = Sim::new(V7, r#""acpi_polls": 3"#);
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    let before = sim.count();
    driver
        .stop(&name, StopMode::graceful(Duration::from_secs(5)))
        .await
        .unwrap();
    let calls = sim.calls()[before..].to_vec();
    assert!(calls
        .iter()
        .any(|c| c.ends_with("controlvm dev acpipowerbutton")));
    assert!(
        !calls.iter().any(|c| c.ends_with("controlvm dev poweroff")),
        "{calls:?}"
    );
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Stopped);

    driver.start(&name).await.unwrap();
    let before = sim.count();
    driver.stop(&name, StopMode::Force).await.unwrap();
    let calls = sim.calls()[before..].to_vec();
    assert!(
        !calls.iter().any(|c| c.contains("acpipowerbutton")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.ends_with("controlvm dev poweroff")));
    // Stopping a stopped VM is Ok and runs nothing but a look.
    let before = sim.count();
    driver.stop(&name, StopMode::Force).await.unwrap();
    assert_eq!(sim.count(), before + 1);
}

#[tokio::test]
async fn a_guest_that_ignores_acpi_is_powered_off_after_the_deadline() {
    let sim = Sim::new(V7, r#""ignore_acpi": true"#);
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    driver
        .stop(&name, StopMode::graceful(Duration::from_millis(200)))
        .await
        .unwrap();
    let calls = sim.calls();
    let acpi = calls
        .iter()
        .position(|c| c.contains("acpipowerbutton"))
        .unwrap();
    let off = calls
        .iter()
        .position(|c| c.ends_with("controlvm dev poweroff"))
        .unwrap();
    assert!(acpi < off);
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::Stopped);
}

#[tokio::test]
async fn delete_removes_the_vm_and_its_files() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let name = "dev".parse().unwrap();
    driver.delete(&name).await.unwrap();
    let calls = sim.calls();
    let off = calls
        .iter()
        .position(|c| c.ends_with("controlvm dev poweroff"))
        .unwrap();
    let unreg = calls
        .iter()
        .position(|c| c.ends_with("unregistervm dev --delete"))
        .unwrap();
    assert!(off < unreg, "powered off before unregistering");
    let dir = sim.machines().join("dev");
    assert!(!dir.join("dev-disk.vdi").exists());
    assert!(!dir.join("dev-seed.iso").exists());
    assert!(!dir.join("dev").exists(), "VM folder leftovers removed");
    assert_eq!(driver.state(&name).await.unwrap(), MachineState::NotCreated);
    let media = std::fs::read_to_string(sim.state().join("state.json")).unwrap();
    assert!(
        !media.contains("dev-seed.iso"),
        "seed closed in the media registry"
    );
}

#[tokio::test]
async fn delete_cluster_finds_vms_by_their_marker() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    for (cluster, index, port) in [("dev", 1, 45022), ("dev", 2, 45023), ("other", 1, 45024)] {
        driver
            .create(&sim.spec(cluster, index, port), &SilentReporter)
            .await
            .unwrap();
    }
    driver.start(&"dev-m02".parse().unwrap()).await.unwrap();
    let mut removed = driver
        .delete_cluster(&"dev".parse().unwrap())
        .await
        .unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            "deleted virtualbox machine `dev-m02`",
            "deleted virtualbox machine `dev`"
        ]
    );
    let left = String::from_utf8(sim.vbox(&["list", "vms"]).stdout).unwrap();
    assert!(left.starts_with("\"other\" {"), "{left}");
    assert_eq!(left.lines().count(), 1);
}

#[tokio::test]
async fn creating_again_with_another_spec_or_over_a_foreign_vm_is_refused() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    let mut spec = sim.spec("dev", 1, 45022);
    driver.create(&spec, &SilentReporter).await.unwrap();
    spec.memory_mib = Some(4096);
    let err = driver.create(&spec, &SilentReporter).await.unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("4096"), "{:?}", err.hint());

    // A VM timonel did not make: neither adopted by create nor removed by delete.
    let foreign = sim.vbox(&["createvm", "--name", "mine", "--register"]);
    assert!(foreign.status.success());
    let mine = sim.spec("mine", 1, 45030);
    assert!(matches!(
        driver.create(&mine, &SilentReporter).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    assert!(driver.delete(&"mine".parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn probe_reports_versions_and_install_problems() {
    let ok = Sim::new(V7, "");
    assert_eq!(
        ok.driver().probe().await,
        Availability::Ready {
            version: "VirtualBox 7.0.14".into(),
            notes: vec![]
        }
    );
    assert!(Sim::new(V61, "").driver().probe().await.is_ready());
    match Sim::new("6.0.24r139119", "").driver().probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(
                reason.starts_with(
                    "VirtualBox 6.0.24 is too old: timonel supports VirtualBox 6.1 and 7.x,"
                ),
                "{reason}"
            );
            assert!(fix.contains("VirtualBox 7"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    // 6.1.0 is the oldest release accepted; a newer major is accepted with a note.
    assert!(Sim::new("6.1.0r135406", "")
        .driver()
        .probe()
        .await
        .is_ready());
    match Sim::new("8.0.0r170000", "").driver().probe().await {
        Availability::Ready { version, notes } => {
            assert_eq!(version, "VirtualBox 8.0.0");
            assert_eq!(
                notes,
                ["VirtualBox 8.0.0 is newer than timonel was tested with (VirtualBox 6.1 and 7.x)"]
            );
        }
        other => panic!("{other:?}"),
    }
    match Sim::new(V7, r#""kernel_module_warning": true"#)
        .driver()
        .probe()
        .await
    {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("kernel module"), "{reason}");
            assert!(fix.contains("vboxconfig"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    let missing = timonel_driver_virtualbox::VirtualBoxDriver::with_runner(
        std::sync::Arc::new(timonel_driver::HostRunner),
        "/nonexistent/VBoxManage".into(),
    );
    match missing.probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("was not found"), "{reason}");
            assert!(fix.contains("TIMONEL_VBOXMANAGE"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    // Creating with a refused version fails typed, before touching anything.
    let old = Sim::new("5.2.44r139111", "");
    let err = old
        .driver()
        .create(&old.spec("dev", 1, 45022), &SilentReporter)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotAvailable { .. }), "{err:?}");
    assert!(!old.calls().iter().any(|c| c.contains("createvm")));
}

#[tokio::test]
async fn new_finds_vboxmanage_through_the_env_var() {
    let sim = Sim::new(V7, "");
    // Other tests pass the state directory per command; this one goes through the environment.
    std::env::set_var("TIMONEL_VBOXMANAGE", &sim.program);
    std::env::set_var("TIMONEL_VBOX_SIM_STATE", sim.state());
    let driver = timonel_driver_virtualbox::VirtualBoxDriver::new();
    assert_eq!(driver.program(), &sim.program);
    assert!(driver.probe().await.is_ready());
    assert_eq!(
        driver.state(&"dev".parse().unwrap()).await.unwrap(),
        MachineState::NotCreated
    );
    let calls = sim.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
}

#[tokio::test]
/// VM drivers report where SSH answers (`endpoint(node, 22)`); the host side does SSH.
async fn node_access_is_ssh_to_the_endpoint_not_the_driver() {
    let sim = Sim::new(V7, "");
    match sim.driver().access(&"dev".parse().unwrap()).await {
        Err(DriverError::Unsupported { driver, what }) => {
            assert_eq!(driver, "virtualbox");
            assert!(what.contains("SSH"), "{what}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("access must not be Ok yet"),
    }
}
