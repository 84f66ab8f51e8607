//! Checksum files as cloud images publish them, and streaming verification of a file.
//!
//! Accepted line formats (blank lines and `#` comments are skipped):
//! - GNU binary mode, as in Ubuntu's `SHA256SUMS`: `<hex> *<file>`
//! - GNU text mode, as in Debian's `SHA512SUMS`: `<hex>  <file>`
//! - BSD tagged, as in Fedora's `CHECKSUM`: `SHA256 (<file>) = <hex>`
//!
//! The algorithm follows from the length of the hash (64 hex digits: SHA-256, 128: SHA-512).

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::error::VmError;

/// A hash algorithm of a checksum file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    /// The algorithm whose hex digest is `len` characters long.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a checksum file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumEntry {
    /// The file name as listed (may contain a directory part, e.g. `./x.img`).
    pub file: String,
    pub algorithm: HashAlgorithm,
    /// Lowercase hex.
    pub hex: String,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One line of a checksum file in any of the accepted formats: `None` for blank and comment
/// lines, an error saying what is wrong with a malformed one. The one checksum-line parser of
/// timonel (k3s's `sha256sum-<arch>.txt` and the cloud images' files alike).
pub fn parse_line(line: &str) -> Result<Option<ChecksumEntry>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    // BSD: `SHA256 (file) = hex`
    if let Some((tag, rest)) = trimmed.split_once(" (") {
        if let Some((file, hex)) = rest.rsplit_once(") = ") {
            let hex = hex.trim();
            let algorithm = HashAlgorithm::from_hex_len(hex.len())
                .filter(|_| is_hex(hex))
                .ok_or_else(|| format!("`{hex}` is not a SHA-256 or SHA-512 hash"))?;
            let tagged = match tag.to_ascii_uppercase().as_str() {
                "SHA256" => HashAlgorithm::Sha256,
                "SHA512" => HashAlgorithm::Sha512,
                other => return Err(format!("unsupported algorithm `{other}`")),
            };
            if tagged != algorithm {
                return Err(format!("a {algorithm} hash is tagged {tag}"));
            }
            return Ok(Some(ChecksumEntry {
                file: file.to_string(),
                algorithm,
                hex: hex.to_ascii_lowercase(),
            }));
        }
    }
    // GNU: `hex *file` or `hex  file`
    let (hex, rest) = trimmed
        .split_once(' ')
        .ok_or_else(|| format!("`{trimmed}` has no file name"))?;
    let file = rest
        .strip_prefix('*')
        .or_else(|| rest.strip_prefix(' '))
        .unwrap_or(rest);
    if file.is_empty() {
        return Err(format!("`{trimmed}` has no file name"));
    }
    let algorithm = HashAlgorithm::from_hex_len(hex.len())
        .filter(|_| is_hex(hex))
        .ok_or_else(|| format!("`{hex}` is not a SHA-256 or SHA-512 hash"))?;
    Ok(Some(ChecksumEntry {
        file: file.to_string(),
        algorithm,
        hex: hex.to_ascii_lowercase(),
    }))
}

/// Parses a whole checksum file. Any malformed line is an error naming its line number.
pub fn parse_checksums(text: &str) -> Result<Vec<ChecksumEntry>, VmError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(message) => {
                return Err(VmError::Parse {
                    what: format!("line {} of the checksum file", i + 1),
                    message,
                })
            }
        }
    }
    Ok(entries)
}

/// The entry for `file_name` (compared on the last path component, so `./x.img` matches `x.img`).
pub fn find_checksum(text: &str, file_name: &str) -> Result<ChecksumEntry, VmError> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let wanted = base(file_name);
    parse_checksums(text)?
        .into_iter()
        .find(|e| base(&e.file) == wanted)
        .ok_or(VmError::ChecksumNotListed { file: wanted })
}

/// The hex digest of a file, read in 1 MiB chunks (blocking: call it from `spawn_blocking`).
pub fn hash_file(path: &Path, algorithm: HashAlgorithm) -> Result<String, VmError> {
    digest_file(path, algorithm)
        .map(|(hex, _)| hex)
        .map_err(|e| VmError::io(format!("could not read `{}`", path.display()), e))
}

/// The hex digest and the size of a file, streamed in 1 MiB chunks: the one file hasher of
/// timonel (blocking: call it from `spawn_blocking`).
pub fn digest_file(path: &Path, algorithm: HashAlgorithm) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        match algorithm {
            HashAlgorithm::Sha256 => sha256.update(&buf[..n]),
            HashAlgorithm::Sha512 => sha512.update(&buf[..n]),
        }
    }
    let hex = match algorithm {
        HashAlgorithm::Sha256 => hex::encode(sha256.finalize()),
        HashAlgorithm::Sha512 => hex::encode(sha512.finalize()),
    };
    Ok((hex, size))
}

/// Checks `path` against `entry` (blocking: call it from `spawn_blocking`).
pub fn verify_file(path: &Path, entry: &ChecksumEntry) -> Result<(), VmError> {
    let actual = hash_file(path, entry.algorithm)?;
    if actual == entry.hex {
        Ok(())
    } else {
        Err(VmError::ChecksumMismatch {
            path: path.to_path_buf(),
            algorithm: entry.algorithm.to_string(),
            expected: entry.hex.clone(),
            actual,
        })
    }
}

/// Checks `path` against the line for its file name in the checksum file `checksums`.
pub fn verify_file_against(path: &Path, checksums: &str, file_name: &str) -> Result<(), VmError> {
    let entry = find_checksum(checksums, file_name)?;
    verify_file(path, &entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "6f0c8fd4dc2bb5ab2f2d86a5ec7cd30fcef3bc1d1d2f0a1d14c09f1d9d2a7b01";

    fn h512() -> String {
        "ab".repeat(64)
    }

    #[test]
    fn ubuntu_binary_mode_lines() {
        let text = format!(
            "{H256} *noble-server-cloudimg-amd64.img\n{H256} *noble-server-cloudimg-amd64.vmdk\n"
        );
        let e = find_checksum(&text, "noble-server-cloudimg-amd64.img").unwrap();
        assert_eq!(e.algorithm, HashAlgorithm::Sha256);
        assert_eq!(e.hex, H256);
        assert_eq!(e.file, "noble-server-cloudimg-amd64.img");
    }

    #[test]
    fn debian_text_mode_lines() {
        let text = format!(
            "{}  debian-12-generic-amd64.qcow2\r\n{}  debian-12-generic-amd64.raw\n",
            h512().to_uppercase(),
            h512()
        );
        let entries = parse_checksums(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].algorithm, HashAlgorithm::Sha512);
        assert_eq!(entries[0].hex, h512());
        assert_eq!(entries[0].file, "debian-12-generic-amd64.qcow2");
    }

    #[test]
    fn bsd_tagged_lines_and_comments() {
        let text = format!(
            "# Fedora-Cloud-41\n\nSHA256 (Fedora-Cloud-Base.qcow2) = {H256}\nSHA512 (x (1).img) = {}\n",
            h512()
        );
        let entries = parse_checksums(&text).unwrap();
        assert_eq!(entries[0].file, "Fedora-Cloud-Base.qcow2");
        assert_eq!(entries[0].algorithm, HashAlgorithm::Sha256);
        assert_eq!(entries[1].file, "x (1).img");
        assert_eq!(entries[1].algorithm, HashAlgorithm::Sha512);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_checksums("abc *x.img\n").is_err());
        assert!(parse_checksums(&format!("{H256}\n")).is_err());
        assert!(parse_checksums(&format!("SHA512 (x) = {H256}\n")).is_err());
        assert!(matches!(
            find_checksum(&format!("{H256} *a.img\n"), "b.img"),
            Err(VmError::ChecksumNotListed { .. })
        ));
    }

    #[test]
    fn verifies_a_file_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.qcow2");
        std::fs::write(&path, b"hello\n").unwrap();
        // sha256("hello\n")
        let good = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        verify_file_against(&path, &format!("{good} *image.qcow2\n"), "image.qcow2").unwrap();
        let sha512 = hash_file(&path, HashAlgorithm::Sha512).unwrap();
        verify_file_against(&path, &format!("{sha512}  ./image.qcow2\n"), "image.qcow2").unwrap();
        let err = verify_file_against(&path, &format!("{H256} *image.qcow2\n"), "image.qcow2")
            .unwrap_err();
        assert!(matches!(err, VmError::ChecksumMismatch { .. }), "{err}");
    }
}
