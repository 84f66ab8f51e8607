//! `MachineSpec.options` keys every VM driver understands.

/// Directory of the profile's SSH key (see [`crate::keys::SshKey::ensure`]). When set, the
/// driver writes the NoCloud seed itself, with the key's public half.
pub const SSH_KEY_DIR: &str = "vm.ssh_key_dir";
/// The user to log in as (`ubuntu`, `debian`, `root`). Default: `root` (the seed gives root the
/// key too). A user other than root runs commands with `sudo -n`.
pub const SSH_USER: &str = "vm.ssh_user";
/// The default of [`SSH_USER`].
pub const DEFAULT_SSH_USER: &str = "root";
