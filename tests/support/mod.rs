//! Shared test helpers: a local release mirror, fake releases, a recording reporter; a
//! sandboxed timonel for the end-to-end tests ([`sandbox`]) and SSH test hosts ([`ssh_hosts`]).
#![allow(dead_code)]

pub mod mirror;
pub mod qemu_backing;
pub mod sandbox;
pub mod ssh_hosts;
pub mod vm_image;

use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Deterministic, non-repeating-looking content of `len` bytes.
pub fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761).rotate_left(7) as u8) ^ seed)
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The arches of a k3s release with their checksum file and asset names.
const ARCHES: [(&str, &str); 3] = [
    ("amd64", "k3s"),
    ("arm64", "k3s-arm64"),
    ("arm", "k3s-armhf"),
];

/// Writes a fake release into `root` with the real layout: `<root>/<version>/<asset>` plus a
/// `sha256sum-<arch>.txt` per arch that lists the airgap tarballs first and the binary last (as
/// the real release workflow does), in GNU `sha256sum` text format.
pub fn publish(root: &Path, version: &str, assets: &[(&str, &[u8])]) {
    let dir = root.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in assets {
        std::fs::write(dir.join(name), data).unwrap();
    }
    for (arch, binary) in ARCHES {
        let airgap_prefix = format!("k3s-airgap-images-{arch}.");
        let mut lines: Vec<String> = assets
            .iter()
            .filter(|(n, _)| n.starts_with(&airgap_prefix))
            .map(|(n, d)| format!("{}  {n}\n", sha256_hex(d)))
            .collect();
        lines.extend(
            assets
                .iter()
                .filter(|(n, _)| *n == binary)
                .map(|(n, d)| format!("{}  {n}\n", sha256_hex(d))),
        );
        if !lines.is_empty() {
            std::fs::write(dir.join(format!("sha256sum-{arch}.txt")), lines.concat()).unwrap();
        }
    }
}

/// A `Reporter` that keeps everything it is told.
#[derive(Default)]
pub struct RecordingReporter {
    pub steps: Mutex<Vec<String>>,
    pub progress: Mutex<Vec<(u64, Option<u64>)>>,
    pub warnings: Mutex<Vec<String>>,
}

impl timonel_driver::Reporter for RecordingReporter {
    fn step(&self, message: &str) {
        self.steps.lock().unwrap().push(message.to_string());
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        self.progress.lock().unwrap().push((done, total));
    }
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

impl RecordingReporter {
    pub fn steps(&self) -> Vec<String> {
        self.steps.lock().unwrap().clone()
    }
    pub fn last_progress(&self) -> Option<(u64, Option<u64>)> {
        self.progress.lock().unwrap().last().copied()
    }
}
