//! The Docker driver of timonel: nodes are containers.
//!
//! Talks to the daemon through bollard (the `DOCKER_HOST` variable, else the default unix socket
//! or, on Windows, the default named pipe; on unix without Docker's socket, Podman's). Any
//! engine serving the Docker API will do: [`Engine`] names it (Docker, Docker Desktop, Podman;
//! rootful or rootless) for the driver line and refuses one k3s cannot run on. Every object it creates (containers, volumes, the
//! per-cluster network) carries the `dev.timonel.cluster` label, so a cluster can be removed by
//! label even when timonel's own records are gone, and the `dev.timonel.home` label of the home
//! that created it (`MachineSpec::owner`).
//!
//! ```ignore
//! let driver = DockerDriver::connect();
//! let source = NodeImageSource { version: "v1.31.2+k3s1", binary: &k3s, binary_sha256: None,
//!     airgap: None, airgap_sha256: None };
//! let image = driver.ensure_node_image(&source, &report).await?;
//! ```

mod answers;
mod archive;
mod balancer;
mod client;
mod config;
mod driver;
mod engine;
mod exec;
mod image;
mod logs;
mod network;
mod objects;
mod pause;
mod raw;
mod security;

pub use balancer::{
    balancer_container, BACKENDS_FILE, BALANCER_IMAGE_REPO, ENV_PROGRAM as ENV_BALANCER_PROGRAM,
    LABEL_BALANCER,
};
pub use client::{DockerDriver, DEFAULT_HOST, START_WAIT};
pub use config::{container_config, SecurityProfile, CAPABILITIES, OPTIONAL_CAPABILITIES};
pub use engine::Engine;
pub use exec::DockerExec;
pub use image::{
    node_image_ref, rootfs_entries, write_rootfs, RootfsAirgap, AIRGAP_LINK_DIR, AIRGAP_STORE,
    NO_AIRGAP, ROOTFS_DIRS,
};
pub use logs::HostImage;
pub use network::{pick_subnet, Subnet, FIRST_SUBNET};
pub use security::PROBE_IMAGE;

/// Label on every object timonel creates: the cluster (profile) it belongs to.
pub const LABEL_CLUSTER: &str = "dev.timonel.cluster";
/// Label on every object timonel creates: the identity of the timonel home (`$TIMONEL_HOME`)
/// that created it, so homes sharing a daemon tell their clusters apart. Objects from before it
/// existed have none.
pub const LABEL_HOME: &str = "dev.timonel.home";
/// Label on containers and volumes: the machine (node) name.
pub const LABEL_NODE: &str = "dev.timonel.node";
/// Label on containers: `server` or `agent`.
pub const LABEL_ROLE: &str = "dev.timonel.role";
/// Label on containers: a digest of the settings the container was created from, so that
/// creating it again with the same spec is Ok and with a different one is refused.
pub const LABEL_SPEC: &str = "dev.timonel.spec";
/// Label on containers: the security profile they run with (`privileged` or `capabilities`).
pub const LABEL_SECURITY: &str = "dev.timonel.security";
/// Label on node images: always `node`.
pub const LABEL_IMAGE: &str = "dev.timonel.image";
/// Label on node images: the k3s version inside.
pub const LABEL_K3S_VERSION: &str = "dev.timonel.k3s-version";
/// Label on node images: the sha256 of the k3s binary inside.
pub const LABEL_K3S_SHA256: &str = "dev.timonel.k3s-sha256";
/// Label on node images: the sha256 of the airgap images tarball inside, or `none`.
pub const LABEL_AIRGAP_SHA256: &str = "dev.timonel.airgap-sha256";

/// `spec.options` key: `privileged` or `capabilities`, forcing the security profile instead of
/// probing whether the daemon accepts privileged containers.
pub const OPTION_SECURITY: &str = "docker.security";
/// `MachineSpec.options` key: a JSON file where the security profile a daemon accepted is
/// remembered (by daemon ID and image), so later runs skip the probe containers.
pub const OPTION_SECURITY_CACHE: &str = "docker.security_cache";

/// Prefix of container, network and volume names.
pub const NAME_PREFIX: &str = "timonel-";

/// The container of a machine: `timonel-<machine>`.
pub fn container_name(machine: &str) -> String {
    format!("{NAME_PREFIX}{machine}")
}

/// The network of a cluster: `timonel-<cluster>`.
pub fn network_name(cluster: &str) -> String {
    format!("{NAME_PREFIX}{cluster}")
}
