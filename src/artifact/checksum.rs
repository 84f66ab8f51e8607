//! The release's `sha256sum-<arch>.txt`, sha256 helpers, and the streaming hasher downloads use
//! (SHA-256 for k3s, SHA-256 or SHA-512 for cloud images).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::digest::Update;
use sha2::{Digest, Sha256, Sha512};
use timonel_driver_vm::HashAlgorithm;

/// The parsed lines of a `sha256sum` file: file name → lowercase hex digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checksums {
    by_name: BTreeMap<String, String>,
}

impl Checksums {
    /// Parses `sha256sum` output: `<64 hex>  <name>` (text mode), `<64 hex> *<name>` (binary
    /// mode) or BSD's `SHA256 (<name>) = <64 hex>`. Lines that do not fit are skipped; names lose any leading directory so
    /// `dist/artifacts/k3s` matches `k3s`. Order does not matter.
    pub fn parse(text: &str) -> Self {
        let by_name = text
            .lines()
            .filter_map(|line| timonel_driver_vm::checksum::parse_line(line).ok().flatten())
            .filter(|e| e.algorithm == HashAlgorithm::Sha256)
            .filter_map(|e| {
                let name = e
                    .file
                    .rsplit('/')
                    .next()
                    .unwrap_or(&e.file)
                    .trim()
                    .to_string();
                (!name.is_empty()).then_some((name, e.hex))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A hash computed while the bytes stream by, with the algorithm the publisher uses.
#[derive(Debug, Clone)]
pub(crate) enum StreamHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl StreamHasher {
    pub(crate) fn new(algorithm: HashAlgorithm) -> Self {
        match algorithm {
            HashAlgorithm::Sha256 => Self::Sha256(Sha256::new()),
            HashAlgorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => Digest::update(h, data),
            Self::Sha512(h) => Digest::update(h, data),
        }
    }

    /// Lowercase hex of the digest.
    pub(crate) fn finalize_hex(self) -> String {
        match self {
            Self::Sha256(h) => hex::encode(h.finalize()),
            Self::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

impl Update for StreamHasher {
    fn update(&mut self, data: &[u8]) {
        StreamHasher::update(self, data);
    }
}

/// Feeds the whole file into `hasher` (a [`Sha256`], or any other hasher) and returns how many
/// bytes were read. Blocking.
pub fn hash_file_into<H: Update>(path: &Path, hasher: &mut H) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Hex sha256 and size of a file. Blocking.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_file_with(path, HashAlgorithm::Sha256)
}

/// Hex digest (with `algorithm`) and size of a file. Blocking.
pub fn hash_file_with(path: &Path, algorithm: HashAlgorithm) -> std::io::Result<(String, u64)> {
    timonel_driver_vm::digest_file(path, algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "f94b5be3aa0000000000000000000000000000000000000000000000000a08a0";
    const B: &str = "835873F3000000000000000000000000000000000000000000000000000aea3f";

    #[test]
    fn matches_by_name_not_position() {
        let text = format!(
            "{A}  k3s-airgap-images-amd64.tar.zst\n{B}  k3s\n\nnot a line\n{A} *dist/artifacts/k3s-arm64\r\n"
        );
        let sums = Checksums::parse(&text);
        assert_eq!(sums.get("k3s"), Some(B.to_ascii_lowercase().as_str()));
        assert_eq!(sums.get("k3s-airgap-images-amd64.tar.zst"), Some(A));
        assert_eq!(sums.get("k3s-arm64"), Some(A));
        assert_eq!(sums.get("k3s-armhf"), None);
        assert!(Checksums::parse("garbage\n").is_empty());
    }

    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (hex, size) = hash_file(&p).unwrap();
        assert_eq!(size, 3);
        assert_eq!(hex, sha256_hex(b"abc"));
        let (hex, size) = hash_file_with(&p, HashAlgorithm::Sha512).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            hex,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn stream_hasher_matches_one_shot_hashes() {
        let mut h = StreamHasher::new(HashAlgorithm::Sha256);
        h.update(b"a");
        let mid = h.clone();
        h.update(b"bc");
        assert_eq!(h.finalize_hex(), sha256_hex(b"abc"));
        assert_eq!(mid.finalize_hex(), sha256_hex(b"a"));
        let mut h = StreamHasher::new(HashAlgorithm::Sha512);
        h.update(b"abc");
        assert_eq!(h.finalize_hex(), hex::encode(Sha512::digest(b"abc")));
    }
}
