//! What the real VBoxManage does in odd corners, reproduced by the simulator, and how the driver
//! copes (docs/hypervisor-tools.md, "VBoxManage").
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Sim, V7};
use timonel_driver::{contract, Driver, DriverError, MachineState, StopMode};
use timonel_driver_virtualbox::{VirtualBoxDriver, IP_PROPERTY};

fn name() -> timonel_driver::MachineName {
    "dev".parse().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_stopped_vm_has_no_address_whatever_its_stale_property_says() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    let ip = driver.ip(&name()).await.unwrap();
    assert_eq!(ip, IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100)));
    driver.stop(&name(), StopMode::Force).await.unwrap();
    // VirtualBox keeps the property after power-off.
    let out = sim.vbox(&["guestproperty", "get", "dev", IP_PROPERTY]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "Value: 192.168.56.100\n");
    let before = sim.count();
    match driver.ip(&name()).await {
        Err(DriverError::InvalidState { state, action, .. }) => {
            assert_eq!(state, "stopped");
            assert_eq!(action, "reading its address");
        }
        other => panic!("a stopped VM must have no address, got {other:?}"),
    }
    // The state is read first; the stale property is not even asked for.
    let calls = sim.calls()[before..].to_vec();
    assert_eq!(calls, ["showvminfo dev --machinereadable"]);
    // The endpoint of a port that is not forwarded needs the address: refused the same way.
    assert!(matches!(
        driver.endpoint(&name(), 10250).await,
        Err(DriverError::InvalidState { .. })
    ));
}

#[tokio::test]
async fn the_host_only_interface_address_is_never_the_guest_address() {
    // The guest reports its address only after 3 polls; until then the property holds the
    // host's own address on vboxnet0 (192.168.56.1).
    let sim = Sim::new(V7, r#""ip_after_polls": 3"#);
    let driver = sim.running().await;
    let set = sim.vbox(&["guestproperty", "set", "dev", IP_PROPERTY, "192.168.56.1"]);
    assert!(set.status.success());
    assert_eq!(stdout(&set), "");
    assert_eq!(
        stdout(&sim.vbox(&["guestproperty", "get", "dev", IP_PROPERTY])),
        "Value: 192.168.56.1\n"
    );
    let before = sim.count();
    let ip = driver.ip(&name()).await.unwrap();
    assert_eq!(ip, IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100)));
    let calls = sim.calls()[before..].to_vec();
    // The host-only interfaces are listed once, however many polls saw the host's address.
    assert_eq!(
        calls.iter().filter(|c| *c == "list hostonlyifs").count(),
        1,
        "{calls:?}"
    );

    // A guest that keeps reporting the host's address times out saying so.
    let sim = Sim::new(V7, r#""ip_after_polls": 100000"#);
    let driver = sim.running().await.with_timings(Sim::short_ip_timeout());
    sim.ok(&["guestproperty", "set", "dev", IP_PROPERTY, "192.168.56.1"]);
    match driver.ip(&name()).await {
        Err(DriverError::Timeout { last_state, .. }) => {
            assert!(last_state.contains("192.168.56.1"), "{last_state}");
            assert!(last_state.contains("host's own address"), "{last_state}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn seven_zero_zero_port_forwards_come_from_the_human_readable_showvminfo() {
    let sim = Sim::new("7.0.0r154191", "");
    let driver = sim.running().await;
    let machine = stdout(&sim.vbox(&["showvminfo", "dev", "--machinereadable"]));
    assert!(machine.contains("nic1=\"nat\"\n"), "{machine}");
    assert!(
        !machine.contains("Forwarding("),
        "7.0.0 prints no Forwarding lines: {machine}"
    );
    let human = stdout(&sim.vbox(&["showvminfo", "dev"]));
    assert!(
        human.contains(
            "NIC 1 Rule(0):   name = tcp-22-45022, protocol = tcp, host ip = 127.0.0.1, host port = 45022, guest ip = , guest port = 22\n"
        ),
        "{human}"
    );
    assert_eq!(
        driver.endpoint(&name(), 22).await.unwrap(),
        "127.0.0.1:45022".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        driver.endpoint(&name(), 6443).await.unwrap(),
        "127.0.0.1:46022".parse::<SocketAddr>().unwrap()
    );
    assert!(sim.calls().iter().any(|c| c == "showvminfo dev"));

    // Versions that print the lines need no second look.
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    driver.endpoint(&name(), 22).await.unwrap();
    assert!(!sim.calls().iter().any(|c| c == "showvminfo dev"));
}

#[tokio::test]
async fn errors_without_the_prefix_are_classified_the_same() {
    let sim = Sim::new(V7, r#""error_prefix": false"#);
    let out = sim.vbox(&["showvminfo", "ghost", "--machinereadable"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Could not find a registered machine named 'ghost'\n\
         Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n\
         Context: \"FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())\" at line 2621 of file VBoxManageInfo.cpp\n"
    );
    let driver = sim.driver();
    let ghost = "ghost".parse().unwrap();
    assert_eq!(
        driver.state(&ghost).await.unwrap(),
        MachineState::NotCreated
    );
    assert!(driver.start(&ghost).await.unwrap_err().is_not_found());
    driver.delete(&ghost).await.unwrap();
    contract::suite(&driver, &sim.spec("dev", 1, 45022)).await;
}

/// Someone else presses the power button of the running node `dev`, then the driver stops it
/// gracefully. Returns the driver and the VBoxManage calls of its stop.
async fn stop_after_another_press(sim: &Sim) -> (VirtualBoxDriver, Vec<String>) {
    let driver = sim.running().await;
    sim.ok(&["controlvm", "dev", "acpipowerbutton"]);
    let before = sim.count();
    driver
        .stop(&name(), StopMode::graceful(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Stopped);
    (driver, sim.calls()[before..].to_vec())
}

#[tokio::test]
async fn the_power_button_on_a_vm_already_stopping_waits_for_power_off() {
    // Someone else pressed the button: the guest runs on for one look, then is `stopping`.
    let sim = Sim::new(V7, r#""acpi_polls": 1, "stopping_polls": 2"#);
    // What VBoxManage says to a second press while the VM is stopping.
    let probe = Sim::new(V7, r#""acpi_polls": 0, "stopping_polls": 5"#);
    probe.running().await;
    probe.vbox(&["controlvm", "dev", "acpipowerbutton"]);
    let out = probe.vbox(&["controlvm", "dev", "acpipowerbutton"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "VBoxManage: error: Invalid machine state: Stopping\n\
         VBoxManage: error: Details: code VBOX_E_INVALID_VM_STATE (0x80bb0002), component ConsoleWrap, interface IConsole, callee nsISupports\n\
         VBoxManage: error: Context: \"PowerButton()\" at line 1209 of file VBoxManageControlVM.cpp\n"
    );

    let (_, calls) = stop_after_another_press(&sim).await;
    assert_eq!(calls[0], "showvminfo dev --machinereadable", "{calls:?}");
    assert_eq!(calls[1], "controlvm dev acpipowerbutton", "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.ends_with("poweroff")),
        "waited, not forced: {calls:?}"
    );
}

#[tokio::test]
async fn the_power_button_on_a_vm_that_just_went_off_is_fine() {
    // The guest powers off between the driver's look and its press.
    let sim = Sim::new(V7, r#""acpi_polls": 1, "stopping_polls": 0"#);
    let (driver, calls) = stop_after_another_press(&sim).await;
    assert!(
        !calls.iter().any(|c| c.ends_with("poweroff")),
        "waited, not forced: {calls:?}"
    );
    let out = sim.vbox(&["controlvm", "dev", "acpipowerbutton"]);
    assert_eq!(
        stderr(&out),
        "VBoxManage: error: Machine 'dev' is not currently running.\n"
    );
    assert_eq!(driver.state(&name()).await.unwrap(), MachineState::Stopped);
}

#[tokio::test]
async fn an_interface_without_a_dhcp_server_gets_one() {
    let sim = Sim::new(V7, "");
    sim.host_only_interface("192.168.57.1");
    assert_eq!(stdout(&sim.vbox(&["list", "dhcpservers"])), "");
    let driver = sim.running().await;
    assert!(sim.calls().iter().any(|c| c
        == "dhcpserver add --netname HostInterfaceNetworking-vboxnet0 --ip 192.168.57.2 --netmask 255.255.255.0 --lowerip 192.168.57.100 --upperip 192.168.57.254 --enable"));
    // The interface itself is reused, not replaced nor reconfigured.
    let after_setup = sim
        .calls()
        .iter()
        .position(|c| c.starts_with("hostonlyif ipconfig"))
        .unwrap();
    assert!(!sim.calls()[after_setup + 1..]
        .iter()
        .any(|c| c.starts_with("hostonlyif")));
    assert_eq!(
        stdout(&sim.vbox(&["list", "dhcpservers"])),
        "NetworkName:    HostInterfaceNetworking-vboxnet0\n\
         Dhcpd IP:       192.168.57.2\n\
         LowerIPAddress: 192.168.57.100\n\
         UpperIPAddress: 192.168.57.254\n\
         NetworkMask:    255.255.255.0\n\
         Enabled:        Yes\n\
         Global Configuration:\n    \
             minLeaseTime:     default\n    \
             defaultLeaseTime: default\n    \
             maxLeaseTime:     default\n    \
             Forced options:   None\n    \
             Suppressed opts.: None\n        \
                 1/legacy: 255.255.255.0\n\
         Groups:               None\n\
         Individual Configs:   None\n"
    );
    assert_eq!(
        driver.ip(&name()).await.unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 57, 100))
    );
}

#[tokio::test]
async fn without_a_dhcp_server_the_guest_never_gets_an_address() {
    // The simulator's guest, like a real one, gets no lease without a DHCP server.
    let sim = Sim::new(V7, r#""ip_after_polls": 0"#);
    let driver = sim.running().await;
    assert!(sim
        .vbox(&[
            "dhcpserver",
            "remove",
            "--netname",
            "HostInterfaceNetworking-vboxnet0"
        ])
        .status
        .success());
    let driver = driver.with_timings(Sim::short_ip_timeout());
    assert!(matches!(
        driver.ip(&name()).await,
        Err(DriverError::Timeout { .. })
    ));
    let out = sim.vbox(&[
        "dhcpserver",
        "remove",
        "--netname",
        "HostInterfaceNetworking-vboxnet0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "VBoxManage: error: DHCP server does not exist\n"
    );
}

#[tokio::test]
async fn a_disabled_dhcp_server_is_enabled() {
    let sim = Sim::new(V7, "");
    sim.host_only_interface("192.168.58.1");
    sim.dhcp_server("192.168.58.100", "192.168.58.101", "192.168.58.254", false);
    let driver = sim.running().await;
    assert!(sim.calls().iter().any(|c| c
        .starts_with("dhcpserver modify --netname HostInterfaceNetworking-vboxnet0")
        && c.ends_with("--enable")));
    assert!(driver.ip(&name()).await.unwrap().is_ipv4());
}

#[tokio::test]
async fn a_dhcp_range_with_no_usable_address_is_a_clear_error() {
    let sim = Sim::new(V7, "");
    sim.host_only_interface("192.168.59.1");
    // The range holds only the server's own address.
    sim.dhcp_server("192.168.59.2", "192.168.59.2", "192.168.59.2", true);
    let err = sim.create_error().await;
    let text = err.to_string();
    assert!(text.contains("host-only interface `vboxnet0`"), "{text}");
    assert!(text.contains("guests can get no address on it"), "{text}");
    assert!(text.contains("192.168.59.2–192.168.59.2"), "{text}");
    let hint = timonel_driver::Hint::hint(&err).unwrap();
    assert!(
        hint.contains("VBoxManage dhcpserver modify --netname HostInterfaceNetworking-vboxnet0 --lowerip 192.168.59.100 --upperip 192.168.59.254 --enable"),
        "{hint}"
    );
    assert!(!sim.calls().iter().any(|c| c.starts_with("createvm")));
}

#[tokio::test]
async fn a_host_only_network_with_no_usable_address_is_a_clear_error() {
    let sim = Sim::new(V7, r#""host_os": "darwin""#);
    // The host takes the network's first address, which is the whole range here.
    assert!(sim
        .vbox(&[
            "hostonlynet",
            "add",
            "--name",
            "tight",
            "--netmask",
            "255.255.255.0",
            "--lower-ip",
            "192.168.60.1",
            "--upper-ip",
            "192.168.60.1",
            "--enable"
        ])
        .status
        .success());
    let listed = stdout(&sim.vbox(&["list", "hostonlynets"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "Name:            tight");
    assert!(lines[1].starts_with("GUID:            "), "{listed}");
    assert_eq!(
        lines[2..],
        [
            "",
            "State:           Enabled",
            "NetworkMask:     255.255.255.0",
            "LowerIP:         192.168.60.1",
            "UpperIP:         192.168.60.1",
            "VBoxNetworkName: hostonly-tight",
            "",
        ]
    );
    let err = sim.create_error().await;
    let text = err.to_string();
    assert!(text.contains("host-only network `tight`"), "{text}");
    assert!(text.contains("holds no free address"), "{text}");
    assert!(timonel_driver::Hint::hint(&err)
        .unwrap()
        .contains("VBoxManage hostonlynet remove --name tight"));
    assert!(!sim.calls().iter().any(|c| c.starts_with("createvm")));
}

#[tokio::test]
async fn an_orphan_dhcp_server_of_a_reused_interface_name_is_reconfigured() {
    // VirtualBox keeps a removed interface's DHCP server; the next `vboxnet0` inherits its name.
    let sim = Sim::new(V7, "");
    sim.dhcp_server("10.9.9.2", "10.9.9.100", "10.9.9.200", true);
    let driver = sim.running().await;
    assert!(sim.calls().iter().any(|c| c
        == "dhcpserver modify --netname HostInterfaceNetworking-vboxnet0 --ip 192.168.56.2 --netmask 255.255.255.0 --lowerip 192.168.56.100 --upperip 192.168.56.254 --enable"));
    assert_eq!(
        driver.ip(&name()).await.unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100))
    );
}

#[tokio::test]
async fn a_restarted_vm_never_answers_its_last_runs_address() {
    let sim = Sim::new(V7, "");
    let driver = sim.running().await;
    assert_eq!(
        driver.ip(&name()).await.unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 56, 100))
    );
    driver.stop(&name(), StopMode::Force).await.unwrap();
    // The next boot gets another lease: the server now hands out .150 and up.
    sim.ok(&[
        "dhcpserver",
        "modify",
        "--netname",
        "HostInterfaceNetworking-vboxnet0",
        "--lowerip",
        "192.168.56.150",
        "--upperip",
        "192.168.56.254",
    ]);
    assert_eq!(
        stdout(&sim.vbox(&["guestproperty", "get", "dev", IP_PROPERTY])),
        "Value: 192.168.56.100\n",
        "VirtualBox keeps the last run's address"
    );
    let before = sim.count();
    driver.start(&name()).await.unwrap();
    let calls = sim.calls()[before..].to_vec();
    let clear = calls
        .iter()
        .position(|c| *c == format!("guestproperty set dev {IP_PROPERTY}"))
        .unwrap_or_else(|| panic!("the stale address is deleted: {calls:?}"));
    let boot = calls
        .iter()
        .position(|c| c == "startvm dev --type headless")
        .unwrap();
    assert!(clear < boot, "{calls:?}");
    // Until the guest's VBoxService reports again there is no address, not the old one.
    assert_eq!(
        stdout(&sim.vbox(&["guestproperty", "get", "dev", IP_PROPERTY])),
        "No value set!\n"
    );
    assert_eq!(
        driver.ip(&name()).await.unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 56, 150))
    );
}
