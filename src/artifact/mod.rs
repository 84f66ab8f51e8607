//! The artifact cache: everything timonel installs (the k3s binary, the airgap images) comes
//! through here, verified by the sha256 the release publishes.
//!
//! - [`resolve_version`] turns `--kubernetes-version` into a k3s release (channel server, with
//!   the last answers cached for offline use).
//! - [`ensure_k3s`] makes sure the release's files for one architecture are in the cache and
//!   returns their paths. A verified cached file makes no request at all.
//! - [`ensure_cloud_image`] does the same for the VM drivers' cloud images, verified against
//!   the publisher's `SHA256SUMS`/`SHA512SUMS`, converted once when needed (by the hypervisor's own
//!   tool for Hyper-V and VirtualBox, docs/vm-disks.md; else `qemu-img`).
//! - [`commands`] holds the data side of `timonel cache list|download|clean`.
//!
//! Layout and locking are described in [`cache`]; resumable, verified downloads live in the
//! private `download` module.

pub mod cache;
pub mod channel;
pub mod checksum;
pub mod cloud;
pub mod commands;
mod download;
mod ensure;
pub mod error;
pub mod sources;
pub mod version;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use cache::{ArtifactCache, AssetMeta};
pub use channel::{resolve_version, Resolved};
pub use checksum::Checksums;
pub use cloud::ensure_cloud_image;
pub use ensure::{ensure_k3s, K3sArtifacts};
pub use error::ArtifactError;
pub use sources::{NetworkSettings, Sources, DEFAULT_CHANNEL_URL, DEFAULT_RELEASES_URL};
pub use version::{K3sVersion, VersionSpec, DEFAULT_CHANNEL};

/// Replaces the k3s release download base (`--binary-mirror`).
pub const ENV_BINARY_MIRROR: &str = crate::env::TIMONEL_BINARY_MIRROR;
/// Replaces the channel server base (`--channel-url`).
pub const ENV_CHANNEL_URL: &str = crate::env::TIMONEL_CHANNEL_URL;
/// Allows plain `http://` mirrors on other hosts than loopback (`--insecure-mirror`).
pub const ENV_INSECURE_MIRROR: &str = "TIMONEL_INSECURE_MIRROR";
/// Uses only the cache (`--offline`).
pub const ENV_OFFLINE: &str = "TIMONEL_OFFLINE";

/// A CPU architecture k3s publishes binaries for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
    /// 32-bit ARM (armhf).
    Arm,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Amd64, Arch::Arm64, Arch::Arm];

    /// The architecture of this machine.
    pub fn host() -> Result<Self, ArtifactError> {
        std::env::consts::ARCH.parse()
    }

    /// The name in checksum and airgap file names: `amd64`, `arm64`, `arm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
            Self::Arm => "arm",
        }
    }

    /// The release asset of the binary: `k3s`, `k3s-arm64`, `k3s-armhf`.
    pub fn binary_asset(self) -> &'static str {
        match self {
            Self::Amd64 => "k3s",
            Self::Arm64 => "k3s-arm64",
            Self::Arm => "k3s-armhf",
        }
    }

    /// `sha256sum-<arch>.txt` (`sha256sum-arm.txt` for armhf).
    pub fn checksum_asset(self) -> String {
        format!("sha256sum-{}.txt", self.as_str())
    }

    /// The zstd airgap images tarball: `k3s-airgap-images-<arch>.tar.zst`.
    pub fn airgap_asset(self) -> String {
        format!("k3s-airgap-images-{}.tar.zst", self.as_str())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" => Ok(Self::Amd64),
            "arm64" | "aarch64" => Ok(Self::Arm64),
            "arm" | "armhf" | "armv7" | "armv7l" => Ok(Self::Arm),
            _ => Err(ArtifactError::UnsupportedArch {
                arch: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_asset_names_follow_the_release() {
        assert_eq!(Arch::Amd64.binary_asset(), "k3s");
        assert_eq!(Arch::Arm64.binary_asset(), "k3s-arm64");
        assert_eq!(Arch::Arm.binary_asset(), "k3s-armhf");
        assert_eq!(Arch::Arm.checksum_asset(), "sha256sum-arm.txt");
        assert_eq!(
            Arch::Arm64.airgap_asset(),
            "k3s-airgap-images-arm64.tar.zst"
        );
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert!("s390x".parse::<Arch>().is_err());
        assert!(Arch::host().is_ok() || !matches!(std::env::consts::ARCH, "x86_64" | "aarch64"));
    }
}
