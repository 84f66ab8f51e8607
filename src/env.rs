//! Every environment variable timonel reads, in one place.

/// Where timonel keeps profiles, the artifact cache and locks (default `~/.timonel`).
pub const TIMONEL_HOME: &str = "TIMONEL_HOME";
/// The driver to use when `--driver` is not given.
pub const TIMONEL_DRIVER: &str = "TIMONEL_DRIVER";
/// Log filter for diagnostics (`debug`, `timonel=trace`, …).
pub const TIMONEL_LOG: &str = "TIMONEL_LOG";
/// Turns progress bars and spinners off.
pub const TIMONEL_NO_PROGRESS: &str = "TIMONEL_NO_PROGRESS";
/// Replaces the k3s releases download base.
pub const TIMONEL_BINARY_MIRROR: &str = "TIMONEL_BINARY_MIRROR";
/// Replaces the k3s channel server base.
pub const TIMONEL_CHANNEL_URL: &str = "TIMONEL_CHANNEL_URL";
/// How long a command waits for another command holding the same profile (e.g. `30s`).
pub const TIMONEL_LOCK_TIMEOUT: &str = "TIMONEL_LOCK_TIMEOUT";
/// Colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Set by CI systems; no progress bars.
pub const CI: &str = "CI";
/// kubectl's list of kubeconfig files.
pub const KUBECONFIG: &str = "KUBECONFIG";
/// The libvirt connection the kvm driver uses (default `qemu:///system`).
pub const TIMONEL_KVM_URI: &str = "TIMONEL_KVM_URI";
