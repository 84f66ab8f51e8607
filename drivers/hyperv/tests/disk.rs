//! The base VHDX made by `Convert-VHD` (`DiskImages`), against the PowerShell simulator, which
//! reads the source's VHD footer like Hyper-V and writes a real VHDX with qemu-img.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::path::Path;
use std::process::Command;

use common::Sim;
use serde_json::json;
use timonel_driver::{DiskImages, DiskSource, Hint};

/// qemu-img makes the fixed VHD the tests hand over (and the simulator needs it); missing, the
/// test is skipped (under CI=true it fails).
fn qemu_img() -> bool {
    if Command::new("qemu-img").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and `qemu-img` is missing (apt-get install qemu-utils)"
    );
    eprintln!("skipping: `qemu-img` is missing (apt-get install qemu-utils)");
    false
}

/// `qemu-img` with `args` split at spaces (temporary folders have none); it must succeed.
fn qemu(args: &str) -> String {
    let out = Command::new("qemu-img")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "qemu-img {args}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixed_vhd(path: &Path) {
    qemu(&format!(
        "create -q -f vpc -o subformat=fixed {} 8M",
        path.display()
    ));
}

#[tokio::test]
async fn convert_vhd_makes_a_dynamic_vhdx_of_the_same_size() {
    if !qemu_img() {
        return;
    }
    let sim = Sim::default();
    let driver = sim.driver();
    assert_eq!(driver.disk_tool().formats, ["vhdx"]);
    assert_eq!(driver.disk_tool().source, DiskSource::FixedVhd);
    let src = sim.dir.path().join("images/base.vhd");
    let dest = sim.dir.path().join("images/made.vhdx");
    fixed_vhd(&src);
    driver.make_disk(&src, &dest, "vhdx").await.unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&qemu(&format!("info --output=json {}", dest.display()))).unwrap();
    assert_eq!(info["format"], "vhdx");
    let src_info: serde_json::Value = serde_json::from_str(&qemu(&format!(
        "info -f vpc --output=json {}",
        src.display()
    )))
    .unwrap();
    assert_eq!(info["virtual-size"], src_info["virtual-size"]);
    assert_eq!(sim.calls(), ["convert-vhd lookup=-"]);
}

#[tokio::test]
async fn a_file_without_a_vhd_footer_is_refused_and_nothing_is_left() {
    let sim = Sim::default();
    let driver = sim.driver();
    let src = sim.dir.path().join("images/not.vhd");
    std::fs::write(&src, vec![7u8; 4096]).unwrap();
    let dest = sim.dir.path().join("images/made.vhdx");
    let err = driver.make_disk(&src, &dest, "vhdx").await.unwrap_err();
    assert!(err.to_string().contains("footer is missing"), "{err}");
    assert!(err.hint().unwrap().contains("damaged"), "{:?}", err.hint());
    assert!(!dest.exists());
}

#[tokio::test]
async fn a_sparse_or_compressed_source_is_refused_with_what_to_change() {
    if !qemu_img() {
        return;
    }
    let sim = Sim::new(json!({"convert_vhd_error": "sparse"}));
    let src = sim.dir.path().join("images/base.vhd");
    fixed_vhd(&src);
    let dest = sim.dir.path().join("images/made.vhdx");
    let err = sim
        .driver()
        .make_disk(&src, &dest, "vhdx")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0xC03A001A"), "{err}");
    assert!(
        err.hint().unwrap().contains("compact /u"),
        "{:?}",
        err.hint()
    );
    assert!(!dest.exists());
}
