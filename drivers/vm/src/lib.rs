//! What timonel's VM drivers (KVM, Hyper-V, VirtualBox) share:
//!
//! - [`catalog`]: the supported cloud images and their checksum files (`images/vm-images.toml`),
//! - [`checksum`]: parsing `SHA256SUMS`/`SHA512SUMS` files and verifying an image, streaming,
//! - [`seed`]: the cloud-init NoCloud seed ISO (`cidata`), written in Rust,
//! - [`keys`]: the per-profile ed25519 SSH key,
//! - [`ssh`]: SSH node access ([`SshAccess`]: a `Runner` and a `NodeAccess`): login with
//!   timonel's key, key files, ssh-agent or a password ([`SshAuth`]); host keys recorded on first
//!   connect or checked against a known_hosts file ([`HostKeyPolicy`]),
//! - [`mounts`]: host folders mounted in the guest (modules, `/etc/fstab`, mount) over SSH,
//! - [`shell`]: quoting for a POSIX shell, used to turn a `Cmd` into an SSH command line.

pub mod catalog;
pub mod checksum;
mod error;
pub mod keys;
pub mod mounts;
pub mod options;
pub mod seed;
pub mod shell;
pub mod ssh;

pub use catalog::{CloudImage, ImageFile, VmImageCatalog};
pub use checksum::{digest_file, parse_checksums, ChecksumEntry, HashAlgorithm};
pub use error::VmError;
pub use keys::{host_key_path, SshKey};
pub use seed::{CloudConfig, NicMatch, NoCloudSeed};
pub use ssh::{vm_access, wait_for_ssh, HostKeyPolicy, SshAccess, SshAuth, SshError, SshTarget};
