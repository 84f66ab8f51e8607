//! The cloud-init NoCloud seed: an ISO 9660 volume labelled `cidata` holding `user-data`,
//! `meta-data` and `network-config`, written with `hadris-iso` (no genisoimage/xorriso).
//!
//! The YAML is generated here with every string emitted as a JSON string, which YAML reads back
//! unchanged, so no value can break the document.

use std::io::Write;
use std::path::Path;

use hadris_fs::{Content, NoClock, Node, Tree};
use hadris_iso::{IsoId, IsoOptions};
use hadris_storage::{BlockSize, MemDevice};

use crate::error::VmError;

/// The volume label cloud-init looks for.
pub const SEED_LABEL: &str = "cidata";

fn yaml_str(s: &str) -> String {
    // A JSON string is a valid double-quoted YAML scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

/// The `#cloud-config` user-data timonel needs: a hostname and SSH keys, password login off.
/// Everything else (k3s) is provisioned over SSH afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudConfig {
    pub hostname: String,
    /// Public keys (OpenSSH format) for the image's default user and for root.
    pub ssh_authorized_keys: Vec<String>,
}

impl CloudConfig {
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            ssh_authorized_keys: Vec::new(),
        }
    }
    pub fn authorized_key(mut self, key: impl Into<String>) -> Self {
        self.ssh_authorized_keys.push(key.into().trim().to_string());
        self
    }

    /// The user-data document.
    ///
    /// Keys listed at the top level go to the default user; with `disable_root: false`
    /// cloud-init's ssh module gives root the same keys, without the "login as …" stub.
    pub fn render(&self) -> String {
        let mut out = String::from("#cloud-config\n");
        out.push_str(&format!("hostname: {}\n", yaml_str(&self.hostname)));
        out.push_str(&format!("fqdn: {}\n", yaml_str(&self.hostname)));
        out.push_str("preserve_hostname: false\n");
        out.push_str("manage_etc_hosts: true\n");
        out.push_str("ssh_pwauth: false\n");
        out.push_str("disable_root: false\n");
        out.push_str("users:\n  - default\n");
        out.push_str("ssh_authorized_keys:\n");
        for key in &self.ssh_authorized_keys {
            out.push_str(&format!("  - {}\n", yaml_str(key)));
        }
        out
    }
}

/// How `network-config` finds the NIC to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicMatch {
    /// `52:54:00:…`, the MAC the driver gave the NIC.
    Mac(String),
    /// An interface name or glob (`eth0`, `en*`).
    Name(String),
}

/// The three files of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloudSeed {
    /// Stable per node (`iid-<cluster>-<node>`): a new id makes cloud-init run again.
    pub instance_id: String,
    pub hostname: String,
    pub user_data: String,
    /// `None`: no `network-config` file (the image's default, usually DHCP on the first NIC).
    pub nic: Option<NicMatch>,
}

impl NoCloudSeed {
    /// A seed for `node` of `cluster` with DHCP on the NIC `nic`.
    pub fn new(cluster: &str, node: &str, user_data: &CloudConfig, nic: Option<NicMatch>) -> Self {
        Self {
            instance_id: format!("iid-{cluster}-{node}"),
            hostname: user_data.hostname.clone(),
            user_data: user_data.render(),
            nic,
        }
    }

    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            yaml_str(&self.instance_id),
            yaml_str(&self.hostname)
        )
    }

    /// Netplan v2 without the top-level `network:` key, as NoCloud expects.
    pub fn network_config(&self) -> Option<String> {
        let matcher = match self.nic.as_ref()? {
            NicMatch::Mac(mac) => format!("macaddress: {}", yaml_str(&mac.to_ascii_lowercase())),
            NicMatch::Name(name) => format!("name: {}", yaml_str(name)),
        };
        Some(format!(
            "version: 2\nethernets:\n  nic0:\n    match:\n      {matcher}\n    dhcp4: true\n    dhcp6: false\n"
        ))
    }

    /// The ISO image, in memory (a seed is a few KiB).
    pub fn to_iso(&self) -> Result<Vec<u8>, String> {
        let mut tree = Tree::new();
        let mut files = vec![
            ("user-data", self.user_data.clone()),
            ("meta-data", self.meta_data()),
        ];
        if let Some(net) = self.network_config() {
            files.push(("network-config", net));
        }
        for (name, text) in files {
            tree.insert(name, Node::file(Content::bytes(text.into_bytes())))
                .map_err(|e| format!("adding `{name}`: {e}"))?;
        }
        let options = IsoOptions::default()
            .with_id(IsoId::Volume, SEED_LABEL)
            .with_joliet()
            .with_rock_ridge()
            .with_time(NoClock::TIME);
        let size = hadris_iso::plan(&tree, &options)
            .map_err(|e| format!("planning the image: {e}"))?
            .size();
        let len = usize::try_from(size).map_err(|_| format!("image of {size} bytes"))?;
        let block = BlockSize::new(2048).ok_or("bad block size")?;
        let mut dev = MemDevice::new(vec![0u8; len], block);
        hadris_iso::sync::write(&mut dev, &tree, &options)
            .map_err(|e| format!("writing the image: {e}"))?;
        Ok(dev.into_inner())
    }

    /// Writes the seed ISO to `path` atomically (temp file, fsync, rename).
    pub fn write_iso(&self, path: &Path) -> Result<(), VmError> {
        let bytes = self.to_iso().map_err(|message| VmError::Seed {
            path: path.to_path_buf(),
            message,
        })?;
        write_atomic(path, &bytes, None)
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory, with `mode` on unix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), VmError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| VmError::io(format!("could not create `{}`", dir.display()), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let ctx = |e| VmError::io(format!("could not write `{}`", path.display()), e);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(ctx)?;
    file.write_all(bytes).map_err(ctx)?;
    file.sync_all().map_err(ctx)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadris_fs::sync::Volume;
    use hadris_fs::{MountOptions, OpenOptions};
    use hadris_iso::sync::IsoFs;
    use hadris_iso::Namespace;
    use std::io::Read;

    fn seed() -> NoCloudSeed {
        let config = CloudConfig::new("dev-control-plane")
            .authorized_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE timonel@dev\n");
        NoCloudSeed::new(
            "dev",
            "dev-control-plane",
            &config,
            Some(NicMatch::Mac("52:54:00:AB:CD:EF".into())),
        )
    }

    #[test]
    fn user_data_is_cloud_config_with_keys_for_user_and_root() {
        let text = seed().user_data;
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(text.contains("hostname: \"dev-control-plane\"\n"));
        assert!(text.contains("ssh_pwauth: false\n"));
        assert!(text.contains("disable_root: false\n"));
        assert!(text.contains(
            "ssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE timonel@dev\"\n"
        ));
        // Hostile values stay strings.
        let odd = CloudConfig::new("a\": b\nc").render();
        assert!(odd.contains("hostname: \"a\\\": b\\nc\"\n"), "{odd}");
    }

    #[test]
    fn meta_and_network_config() {
        let s = seed();
        assert_eq!(
            s.meta_data(),
            "instance-id: \"iid-dev-dev-control-plane\"\nlocal-hostname: \"dev-control-plane\"\n"
        );
        let net = s.network_config().unwrap();
        assert!(net.starts_with("version: 2\n"), "{net}");
        assert!(net.contains("macaddress: \"52:54:00:ab:cd:ef\""), "{net}");
        assert!(net.contains("dhcp4: true"));
        assert!(!net.contains("network:"));
        let by_name = NoCloudSeed {
            nic: Some(NicMatch::Name("en*".into())),
            ..s
        };
        assert!(by_name.network_config().unwrap().contains("name: \"en*\""));
    }

    /// Reads the primary volume descriptor by hand: sector 16, type 1, `CD001`, label at 40..72.
    fn pvd_label(iso: &[u8]) -> String {
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(pvd[0], 1, "primary volume descriptor type");
        assert_eq!(&pvd[1..6], b"CD001");
        String::from_utf8(pvd[40..72].to_vec())
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn iso_reads_back_with_label_and_files() {
        let s = seed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.iso");
        s.write_iso(&path).unwrap();
        let mut iso = std::fs::read(&path).unwrap();
        assert_eq!(pvd_label(&iso), "cidata");

        let block = BlockSize::new(2048).unwrap();
        for ns in [Namespace::RockRidge, Namespace::Joliet] {
            let mut dev = MemDevice::new(&mut iso[..], block);
            let fs = IsoFs::mount_namespace(&mut dev, MountOptions::new(), ns).unwrap();
            assert_eq!(fs.info().id(IsoId::Volume), b"cidata");
            let vol = Volume::new(fs);
            let read = |path: &str| {
                let mut text = String::new();
                vol.open(path, OpenOptions::new().read())
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                text
            };
            assert_eq!(read("/user-data"), s.user_data, "{ns:?}");
            assert_eq!(read("/meta-data"), s.meta_data(), "{ns:?}");
            assert_eq!(
                read("/network-config"),
                s.network_config().unwrap(),
                "{ns:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        assert_eq!(seed().to_iso().unwrap(), seed().to_iso().unwrap());
    }
}
