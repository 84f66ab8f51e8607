//! The base VDI made by `VBoxManage convertfromraw` (`DiskImages`), against the simulator.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::process::Command;

use common::{sim_path, simulator, Sim, V61, V7};
use timonel_driver::{DiskImages, DiskSource};

fn raw_disk(path: &std::path::Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn convertfromraw_makes_the_disk_without_registering_it() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    assert_eq!(driver.disk_tool().formats, ["vdi"]);
    assert_eq!(driver.disk_tool().source, DiskSource::Raw);
    let src = sim.dir.path().join("disk.raw");
    raw_disk(&src, 2 << 20);
    let dest = sim.dir.path().join("base.vdi");
    driver.make_disk(&src, &dest, "vdi").await.unwrap();
    assert!(dest.is_file());
    let calls = sim.calls();
    assert_eq!(
        calls,
        [format!(
            "convertfromraw {} {} --format VDI",
            src.display(),
            dest.display()
        )]
    );
    let state = std::fs::read_to_string(sim.state().join("state.json")).unwrap_or_default();
    assert!(!state.contains("base.vdi"), "registered: {state}");
}

#[test]
fn the_progress_lines_go_to_stderr_from_7_0_and_to_stdout_before() {
    for (version, on_stderr) in [(V7, true), (V61, false)] {
        let sim = Sim::new(version, "");
        let src = sim.dir.path().join("disk.raw");
        raw_disk(&src, 3 << 20);
        let dest = sim.dir.path().join("d.vdi");
        let out = sim.ok(&[
            "convertfromraw",
            src.to_str().unwrap(),
            dest.to_str().unwrap(),
        ]);
        let want = format!(
            "Converting from raw image file=\"{}\" to file=\"{}\"...\nCreating dynamic image with size 3145728 bytes (3MB)...\n",
            src.display(),
            dest.display()
        );
        let (said, quiet) = if on_stderr {
            (&out.stderr, &out.stdout)
        } else {
            (&out.stdout, &out.stderr)
        };
        assert_eq!(String::from_utf8_lossy(said), want, "{version}");
        assert!(quiet.is_empty(), "{version}");
    }
}

#[tokio::test]
async fn bad_sizes_and_existing_files_fail_as_virtualbox_says_and_leave_nothing() {
    let sim = Sim::new(V7, "");
    let driver = sim.driver();
    let odd = sim.dir.path().join("odd.raw");
    raw_disk(&odd, 1000);
    let dest = sim.dir.path().join("odd.vdi");
    let err = driver.make_disk(&odd, &dest, "vdi").await.unwrap_err();
    assert!(err.to_string().contains("VERR_VD_INVALID_SIZE"), "{err}");
    assert!(!dest.exists());
    let src = sim.dir.path().join("disk.raw");
    raw_disk(&src, 1 << 20);
    let taken = sim.dir.path().join("taken.vdi");
    std::fs::write(&taken, b"mine").unwrap();
    let out = sim.vbox(&[
        "convertfromraw",
        src.to_str().unwrap(),
        taken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "VBoxManage: error: Cannot create the disk image \"{}\": VERR_ALREADY_EXISTS",
        taken.display()
    )));
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine");
    let out = sim.vbox(&[
        "convertfromraw",
        "/nonexistent/x.raw",
        taken.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Cannot open file \"/nonexistent/x.raw\": VERR_FILE_NOT_FOUND"));
}

/// With the QEMU backing the VDI is a real one, and a node disk cloned from it holds the same
/// bytes (what its guest boots).
#[test]
fn with_the_qemu_backing_the_vdi_is_real_and_clones_hold_the_disk() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and `qemu-img` is missing (apt-get install qemu-utils)"
        );
        eprintln!("skipping: `qemu-img` is missing (apt-get install qemu-utils)");
        return;
    }
    let sim = Sim::new(V7, "");
    let src = sim.dir.path().join("disk.raw");
    raw_disk(&src, 2 << 20);
    let (base, node) = (
        sim.dir.path().join("base.vdi"),
        sim.dir.path().join("node.vdi"),
    );
    let vbox = |args: &[&str]| {
        let out = Command::new(simulator())
            .args(args)
            .env("TIMONEL_VBOX_SIM_STATE", sim.state())
            .env("TIMONEL_VBOX_SIM_QEMU", "1")
            .env("PATH", sim_path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    };
    vbox(&[
        "convertfromraw",
        src.to_str().unwrap(),
        base.to_str().unwrap(),
        "--format",
        "VDI",
    ]);
    vbox(&[
        "clonemedium",
        "disk",
        base.to_str().unwrap(),
        node.to_str().unwrap(),
        "--format",
        "VDI",
    ]);
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", node.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"format\": \"vdi\""));
    let back = sim.dir.path().join("back.raw");
    let out = Command::new("qemu-img")
        .args([
            "convert",
            "-O",
            "raw",
            node.to_str().unwrap(),
            back.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::read(back).unwrap() == std::fs::read(src).unwrap());
}
