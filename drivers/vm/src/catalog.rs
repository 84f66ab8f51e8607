//! The cloud images timonel supports, from `images/vm-images.toml` (embedded at build time).
//!
//! Downloading is the artifact cache's job; this module says what to download (URL, checksum
//! file URL, algorithm, file name) and which format each driver gets.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::checksum::HashAlgorithm;
use crate::error::VmError;

/// The catalog as shipped.
pub const VM_IMAGES_TOML: &str = include_str!("../../../images/vm-images.toml");

/// The image used when the user names none.
pub const DEFAULT_IMAGE: &str = "ubuntu-24.04";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct CatalogFile {
    image: Vec<CloudImage>,
}

/// One distribution release, in the formats the drivers need.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CloudImage {
    /// `ubuntu-24.04`, `debian-12`.
    pub id: String,
    pub name: String,
    pub arch: String,
    /// The user cloud-init creates (`ubuntu`, `debian`); timonel logs in as this user over SSH.
    pub default_user: String,
    /// The directory holding the files and the checksum file; ends with `/`.
    pub base_url: String,
    /// `SHA256SUMS`, `SHA512SUMS`.
    pub checksum_file: String,
    pub algorithm: HashAlgorithm,
    /// By driver kind (`kvm`, `hyperv`, `virtualbox`).
    drivers: BTreeMap<String, DriverFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct DriverFile {
    file: String,
    format: String,
    #[serde(default)]
    convert_to: Option<String>,
}

/// What to download for one driver, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub image_id: String,
    /// The download's file name, as listed in the checksum file.
    pub file_name: String,
    pub url: String,
    pub checksum_url: String,
    pub algorithm: HashAlgorithm,
    /// The downloaded file's disk format (`qcow2`, `vmdk`).
    pub format: String,
    /// The format the driver needs, when the download must be converted first (`vhdx`, `vdi`).
    pub convert_to: Option<String>,
    pub default_user: String,
}

impl CloudImage {
    /// The file a driver (`kvm`, `hyperv`, `virtualbox`) boots, if this image supports it.
    pub fn for_driver(&self, driver: &str) -> Option<ImageFile> {
        let d = self.drivers.get(driver)?;
        Some(ImageFile {
            image_id: self.id.clone(),
            file_name: d.file.clone(),
            url: format!("{}{}", self.base_url, d.file),
            checksum_url: format!("{}{}", self.base_url, self.checksum_file),
            algorithm: self.algorithm,
            format: d.format.clone(),
            convert_to: d.convert_to.clone(),
            default_user: self.default_user.clone(),
        })
    }
}

/// The list of supported cloud images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImageCatalog {
    images: Vec<CloudImage>,
}

impl VmImageCatalog {
    /// The catalog embedded in this build.
    pub fn builtin() -> Result<Self, VmError> {
        Self::parse(VM_IMAGES_TOML)
    }

    pub fn parse(text: &str) -> Result<Self, VmError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| VmError::Parse {
            what: "the VM image catalog".to_string(),
            message: e.to_string(),
        })?;
        for image in &file.image {
            if !image.base_url.ends_with('/') {
                return Err(VmError::Parse {
                    what: "the VM image catalog".to_string(),
                    message: format!("base_url of `{}` must end with `/`", image.id),
                });
            }
        }
        Ok(Self { images: file.image })
    }

    pub fn images(&self) -> &[CloudImage] {
        &self.images
    }

    pub fn get(&self, id: &str) -> Result<&CloudImage, VmError> {
        self.images
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| VmError::UnknownImage { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_ubuntu_and_debian_for_every_driver() {
        let catalog = VmImageCatalog::builtin().unwrap();
        let ubuntu = catalog.get("ubuntu-24.04").unwrap();
        let kvm = ubuntu.for_driver("kvm").unwrap();
        assert_eq!(
            kvm.url,
            "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
        );
        assert_eq!(
            kvm.checksum_url,
            "https://cloud-images.ubuntu.com/noble/current/SHA256SUMS"
        );
        assert_eq!(kvm.algorithm, HashAlgorithm::Sha256);
        assert_eq!(kvm.format, "qcow2");
        assert_eq!(kvm.default_user, "ubuntu");

        let debian = catalog.get("debian-12").unwrap();
        let kvm = debian.for_driver("kvm").unwrap();
        assert_eq!(kvm.file_name, "debian-12-generic-amd64.qcow2");
        assert_eq!(kvm.algorithm, HashAlgorithm::Sha512);
        assert!(kvm.checksum_url.ends_with("/bookworm/latest/SHA512SUMS"));
        assert_eq!(
            debian.for_driver("hyperv").unwrap().convert_to.as_deref(),
            Some("vhdx")
        );
        for image in catalog.images() {
            for driver in ["kvm", "hyperv", "virtualbox"] {
                assert!(image.for_driver(driver).is_some(), "{} {driver}", image.id);
            }
        }
        assert!(catalog.get(DEFAULT_IMAGE).is_ok());
        assert!(catalog.get("nope").is_err());
    }
}
