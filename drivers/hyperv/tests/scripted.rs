//! The driver against recorded PowerShell outputs (ScriptedRunner): runs on every OS.
#![allow(clippy::unwrap_used)] // helpers of tests

use std::sync::Arc;
use std::time::Duration;

use timonel_driver::scripted::ScriptedRunner;
use timonel_driver::{Availability, Driver, MachineName, MachineState, StopMode};
use timonel_driver_hyperv::script::{self, VmRef};
use timonel_driver_hyperv::{HyperVDriver, Timing};

const PS: &str = "powershell.exe";
const ID: &str = "d43f1c2e-8a4b-4c1e-9f00-2b6d0e0d2a11";

fn dev() -> MachineName {
    "dev".parse().unwrap()
}

fn argv(s: script::PsScript) -> Vec<String> {
    s.to_cmd(PS)
        .argv()
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn driver(runner: &ScriptedRunner) -> HyperVDriver {
    HyperVDriver::with_runner(Arc::new(runner.clone()))
        .with_powershell(PS)
        .with_timing(Timing {
            ip_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(1),
            file_release_timeout: Duration::from_secs(1),
        })
}

#[tokio::test]
async fn state_by_name_then_by_id() {
    let runner = ScriptedRunner::new()
        .expect(argv(script::state(&VmRef::Name(dev()))))
        .returns(format!(
            "{{\"VMId\":\"{ID}\",\"Name\":\"dev\",\"State\":\"Saved\"}}\r\n"
        ))
        .expect(argv(script::state(&VmRef::Id(ID.to_string()))))
        .returns(format!(
            "{{\"VMId\":\"{ID}\",\"Name\":\"dev\",\"State\":\"RunningCritical\"}}\r\n"
        ));
    let d = driver(&runner);
    assert_eq!(d.state(&dev()).await.unwrap(), MachineState::Suspended);
    assert_eq!(
        d.state(&dev()).await.unwrap(),
        MachineState::Error {
            raw: "RunningCritical".into()
        }
    );
    runner.assert_done();
    let cmds = runner.commands();
    assert!(cmds[0]
        .env
        .contains(&("TIMONEL_VM_NAME".into(), "dev".into())));
    assert!(cmds[1].env.contains(&("TIMONEL_VM_ID".into(), ID.into())));
    assert_eq!(
        cmds[0].args[..3],
        ["-NoProfile", "-NonInteractive", "-Command"]
    );
}

#[tokio::test]
async fn unknown_state_is_never_running() {
    let runner = ScriptedRunner::new()
        .expect(argv(script::state(&VmRef::Name(dev()))))
        .returns(format!(
            "{{\"VMId\":\"{ID}\",\"Name\":\"dev\",\"State\":\"Other\"}}"
        ));
    let s = driver(&runner).state(&dev()).await.unwrap();
    assert_eq!(
        s,
        MachineState::Unknown {
            raw: "Other".into()
        }
    );
    assert!(!s.is_running());
}

#[tokio::test]
async fn ip_polls_until_ipv4() {
    let by_name = argv(script::ip(&VmRef::Name(dev())));
    let by_id = argv(script::ip(&VmRef::Id(ID.to_string())));
    let runner = ScriptedRunner::new()
        .expect(by_name)
        .returns(format!("{{\"VMId\":\"{ID}\",\"State\":\"Starting\",\"IPAddresses\":[]}}\r\n"))
        .expect(by_id.clone())
        .returns(format!("{{\"VMId\":\"{ID}\",\"State\":\"Running\",\"IPAddresses\":[\"fe80::215:5dff:fe45:3110\"]}}\r\n"))
        .expect(by_id)
        .returns(format!("{{\"VMId\":\"{ID}\",\"State\":\"Running\",\"IPAddresses\":[\"fe80::215:5dff:fe45:3110\",\"172.29.80.7\"]}}\r\n"));
    let ip = driver(&runner).ip(&dev()).await.unwrap();
    assert_eq!(ip.to_string(), "172.29.80.7");
    runner.assert_done();
}

#[tokio::test]
async fn probe_reads_one_recorded_answer() {
    let runner = ScriptedRunner::new()
        .expect(argv(script::probe()))
        .returns("{\"Module\":true,\"ModuleVersion\":\"2.0.0.0\",\"Hypervisor\":true,\"Admin\":false,\"HyperVAdmin\":false,\"Vmms\":\"Running\",\"Windows\":\"10.0.22631.0\"}\r\n");
    match driver(&runner).probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("S-1-5-32-578"), "{reason}");
            assert!(fix.contains("Add-LocalGroupMember"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    runner.assert_done();

    let runner = ScriptedRunner::new()
        .expect(argv(script::probe()))
        .returns("{\"Module\":true,\"ModuleVersion\":\"2.0.0.0\",\"Hypervisor\":true,\"Admin\":true,\"HyperVAdmin\":false,\"Vmms\":\"Running\",\"Windows\":\"10.0.22631.0\"}\r\n");
    assert_eq!(
        driver(&runner).probe().await,
        Availability::Ready {
            version: "Hyper-V 2.0.0.0 on Windows 10.0.22631.0".into(),
            notes: vec![]
        }
    );
}

#[tokio::test]
async fn stop_that_had_to_force_is_ok() {
    let runner = ScriptedRunner::new()
        .expect(argv(script::stop_graceful(
            &VmRef::Name(dev()),
            Duration::from_secs(7),
        )))
        .returns(format!(
            "{{\"VMId\":\"{ID}\",\"State\":\"Off\",\"Forced\":true}}\r\n"
        ));
    driver(&runner)
        .stop(&dev(), StopMode::graceful(Duration::from_secs(7)))
        .await
        .unwrap();
    runner.assert_done();
    assert!(runner.commands()[0]
        .env
        .contains(&("TIMONEL_STOP_SECONDS".into(), "7".into())));
}

#[tokio::test]
async fn deleting_a_missing_vm_is_ok_and_empty_cluster_output_is_empty() {
    let not_found = "Hyper-V\\Get-VM : Hyper-V was unable to find a virtual machine with name \"dev\".\r\nAt line:1 char:125\r\n+ ... $vms = @(Hyper-V\\Get-VM -Name $env:TIMONEL_VM_NAME); ...\r\n+              ~~~~~~~~~~~~~~\r\n    + CategoryInfo          : InvalidArgument: (dev:String) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n \r\n";
    let runner = ScriptedRunner::new()
        .expect(argv(script::delete(&VmRef::Name(dev()))))
        .fails(1, not_found)
        .expect(argv(script::delete_cluster("dev")))
        .returns("")
        .expect(argv(script::delete_cluster("dev")))
        .returns("[]\r\n");
    let d = driver(&runner);
    d.delete(&dev()).await.unwrap();
    assert!(d
        .delete_cluster(&"dev".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    assert!(d
        .delete_cluster(&"dev".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
    runner.assert_done();
}

/// `--mount` is refused on Hyper-V with why and what to do instead, without running anything.
#[test]
fn host_folders_are_unsupported_with_a_way_out() {
    let runner = ScriptedRunner::new();
    match driver(&runner).host_folders() {
        timonel_driver::HostFolders::Unsupported { why, instead } => {
            assert!(why.contains("Linux"), "{why}");
            assert!(
                instead.contains("SMB") && instead.contains("docker"),
                "{instead}"
            );
        }
        other => panic!("{other:?}"),
    }
    runner.assert_done();
}
