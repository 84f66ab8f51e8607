//! The cache flow with the hypervisors' own tools (their simulators) and no `qemu-img`: the
//! converter's name given to the cache does not exist, so any use of it would fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use timonel_driver::{DiskImages, HostRunner, SilentReporter};
use timonel_driver_hyperv::HyperVDriver;
use timonel_driver_virtualbox::VirtualBoxDriver;
use timonel_driver_vm::{HashAlgorithm, ImageFile};
use url::Url;

use super::super::{ensure_with, image_dir, ArtifactCache, Sources};
use super::*;
use crate::artifact::checksum::sha256_hex;
use crate::artifact::cloud::vhd::tests::{info, qemu_img, to_qcow2, to_raw};

const NO_QEMU_IMG: &str = "timonel-test-no-qemu-img";

fn sims() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/simulators")
}

/// `<dir>/<name>`: an executable that runs the simulator `sim` (under tests/simulators) with its
/// state in `<dir>/<state>`, named by the environment variable `state_var`.
fn wrapper(dir: &Path, name: &str, (state_var, state): (&str, &str), sim: &str) -> PathBuf {
    let path = dir.join(name);
    let (state, sim) = (dir.join(state), sims().join(sim));
    let body = format!(
        "#!/bin/sh\n{state_var}='{}' exec python3 '{}' \"$@\"\n",
        state.display(),
        sim.display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hyperv(dir: &Path) -> HyperVDriver {
    let state = ("TIMONEL_PS_SIM_STATE", "ps-state");
    let ps = wrapper(dir, "powershell", state, "powershell/powershell-sim.py");
    HyperVDriver::with_runner(Arc::new(HostRunner)).with_powershell(ps.to_str().unwrap())
}

fn virtualbox(dir: &Path) -> VirtualBoxDriver {
    let state = ("TIMONEL_VBOX_SIM_STATE", "vbox-state");
    let vbox = wrapper(dir, "VBoxManage", state, "vboxmanage/VBoxManage");
    VirtualBoxDriver::with_runner(Arc::new(HostRunner), vbox)
}

/// A published qcow2 (compressed, as the distributions publish) of a 6 MiB disk with data at
/// both ends, its SHA256SUMS, and the disk itself.
fn publish(dir: &Path, qemu: &str, convert_to: &str) -> (ImageFile, Vec<u8>) {
    let src = dir.join("publisher");
    std::fs::create_dir_all(&src).unwrap();
    let mut disk = vec![0u8; 6 * 1024 * 1024];
    disk[..4096].fill(0xeb);
    let end = disk.len();
    disk[end - 70_000..end - 1000].fill(0x42);
    let raw = src.join("disk.raw");
    std::fs::write(&raw, &disk).unwrap();
    let img = src.join("cloud.img");
    to_qcow2(qemu, &raw, &img, "-c");
    let digest = sha256_hex(&std::fs::read(&img).unwrap());
    std::fs::write(src.join("SHA256SUMS"), format!("{digest} *cloud.img\n")).unwrap();
    let image = ImageFile {
        image_id: "test-cloud".into(),
        file_name: "cloud.img".into(),
        url: Url::from_file_path(&img).unwrap().to_string(),
        checksum_url: Url::from_file_path(src.join("SHA256SUMS"))
            .unwrap()
            .to_string(),
        algorithm: HashAlgorithm::Sha256,
        format: "qcow2".into(),
        convert_to: Some(convert_to.into()),
        default_user: "test".into(),
    };
    (image, disk)
}

/// The files in the image's cache folder, lock files left out.
fn cached(cache: &ArtifactCache, image: &ImageFile) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(image_dir(cache, image))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

async fn made_with(tool: &dyn DiskImages, format: &str, calls: &Path) {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (image, disk) = publish(dir.path(), qemu, format);
    let cache = ArtifactCache::new(dir.path().join("cache"));
    let ensure = || {
        let sources = Sources::default();
        let (cache, image) = (&cache, &image);
        async move {
            ensure_with(
                cache,
                &sources,
                image,
                (NO_QEMU_IMG, Some(tool)),
                &SilentReporter,
            )
            .await
            .unwrap()
        }
    };
    let got = ensure().await;
    assert_eq!(got.extension().unwrap(), format);
    let info = info(qemu, format, &got);
    assert_eq!(info["format"], format, "{info}");
    // The disk inside is the published one (grown to whole VHD cylinders for Hyper-V).
    let back = dir.path().join("back.raw");
    to_raw(qemu, format, &got, &back);
    let back = std::fs::read(back).unwrap();
    assert!(back[..disk.len()] == disk[..] && back[disk.len()..].iter().all(|b| *b == 0));
    // Only the download, the result and their records stay: no intermediate file.
    let stem = format!("cloud.{format}");
    assert_eq!(
        cached(&cache, &image),
        [
            "SHA256SUMS",
            "SHA256SUMS.meta.json",
            "cloud.img",
            "cloud.img.meta.json",
            stem.as_str(),
            &format!("{stem}.meta.json")
        ]
    );
    // A second run finds it in the cache: the tool is not run again.
    let before = std::fs::read_to_string(calls).unwrap();
    assert_eq!(ensure().await, got);
    assert_eq!(std::fs::read_to_string(calls).unwrap(), before);
}

#[tokio::test]
async fn hyperv_gets_a_vhdx_from_convert_vhd_without_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let driver = hyperv(dir.path());
    made_with(&driver, "vhdx", &dir.path().join("ps-state/calls.log")).await;
}

#[tokio::test]
async fn virtualbox_gets_a_vdi_from_convertfromraw_without_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let driver = virtualbox(dir.path());
    made_with(&driver, "vdi", &dir.path().join("vbox-state/calls.log")).await;
}

#[tokio::test]
async fn a_failing_tool_leaves_only_the_download() {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let driver = hyperv(dir.path());
    std::fs::create_dir_all(dir.path().join("ps-state")).unwrap();
    std::fs::write(
        dir.path().join("ps-state/scenario.json"),
        r#"{"convert_vhd_error": "sparse"}"#,
    )
    .unwrap();
    let (image, _) = publish(dir.path(), qemu, "vhdx");
    let cache = ArtifactCache::new(dir.path().join("cache"));
    let err = ensure_with(
        &cache,
        &Sources::default(),
        &image,
        (NO_QEMU_IMG, Some(&driver)),
        &SilentReporter,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ArtifactError::DiskToolFailed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Hyper-V's Convert-VHD"), "{err}");
    assert_eq!(
        cached(&cache, &image),
        [
            "SHA256SUMS",
            "SHA256SUMS.meta.json",
            "cloud.img",
            "cloud.img.meta.json"
        ]
    );
}

#[test]
fn too_little_free_space_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let err = check_space(dir.path(), u64::MAX / 4, "VHD").unwrap_err();
    assert!(matches!(err, ArtifactError::NoSpace { .. }), "{err:?}");
    assert!(err.to_string().contains("to make the VHD"), "{err}");
    check_space(dir.path(), 1, "VHD").unwrap();
}
