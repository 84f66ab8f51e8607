//! The drivers this build knows, and how one is picked: `--driver` (or `TIMONEL_DRIVER`) wins;
//! otherwise every compiled-in driver is probed in a fixed order and the first usable one is
//! taken; when none is usable, each one's reason and fix is printed.

use std::sync::Arc;

use timonel_driver::{Availability, ClusterName, Driver, DriverKind};
use timonel_driver_docker::DockerDriver;
use timonel_driver_ssh::{Credentials, SshDriver, SshHost, SshNode};

use crate::error::UserError;
use crate::output::Printer;

/// Probe order.
pub const ORDER: &[DriverKind] = &[
    DriverKind::Docker,
    DriverKind::Kvm,
    DriverKind::Hyperv,
    DriverKind::Virtualbox,
];

/// A driver, shared by the tasks of one command. What a driver can do beyond the [`Driver`]
/// trait (node images, preflight, following logs) is asked of it (`as_node_images()`, …).
pub type Selected = Arc<dyn Driver>;

/// Why no driver could be had: a request that cannot be met (with its fix), or the driver's own
/// error.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Driver(#[from] timonel_driver::DriverError),
}

/// Names of the drivers compiled into this build, in probe order.
pub fn compiled_in() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "docker") {
        v.push("docker");
    }
    if cfg!(feature = "kvm") {
        v.push("kvm");
    }
    v.push("hyperv");
    v.push("virtualbox");
    v.push("ssh");
    v
}

/// Parses a driver name given on the command line.
pub fn parse_kind(s: &str) -> Result<DriverKind, String> {
    match s {
        "docker" => Ok(DriverKind::Docker),
        "kvm" | "kvm2" | "libvirt" => Ok(DriverKind::Kvm),
        "hyperv" | "hyper-v" => Ok(DriverKind::Hyperv),
        "virtualbox" | "vbox" => Ok(DriverKind::Virtualbox),
        "ssh" => Ok(DriverKind::Ssh),
        other => Err(format!(
            "`{other}` is not a driver timonel knows (drivers: docker, kvm, hyperv, virtualbox, ssh)"
        )),
    }
}

/// Builds the driver of `kind`.
pub fn make(kind: DriverKind) -> Result<Selected, ChoiceError> {
    match kind {
        DriverKind::Docker => Ok(Arc::new(DockerDriver::connect())),
        DriverKind::Kvm => kvm(),
        DriverKind::Hyperv => Ok(Arc::new(timonel_driver_hyperv::HyperVDriver::new())),
        DriverKind::Virtualbox => Ok(Arc::new(timonel_driver_virtualbox::VirtualBoxDriver::new())),
        DriverKind::Ssh => Err(UserError::new(
            "the ssh driver needs the machines to use",
            "name each one with --node user@host[:port]",
        )
        .into()),
        other => Err(UserError::new(
            format!("the {other} driver is not available in this build of timonel"),
            "use `--driver docker`",
        )
        .into()),
    }
}

/// The driver of an existing profile (the SSH driver needs the profile's machines).
pub fn for_profile(profile: &crate::profile::Profile) -> Result<Selected, ChoiceError> {
    match (profile.driver, &profile.docker_host) {
        // The engine the nodes are on; an explicit DOCKER_HOST still wins.
        (DriverKind::Docker, Some(host))
            if std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty()) =>
        {
            return Ok(Arc::new(DockerDriver::connect_with_host(host)));
        }
        (DriverKind::Ssh, _) => {}
        (kind, _) => return make(kind),
    }
    let settings = profile.ssh.clone().ok_or_else(|| {
        UserError::new(
            format!(
                "profile `{}` uses the ssh driver but has no ssh settings",
                profile.name
            ),
            format!(
                "the profile file is damaged: `timonel delete -p {}` and start it again",
                profile.name
            ),
        )
    })?;
    let nodes = profile
        .nodes
        .iter()
        .filter_map(|n| n.machine.clone().map(|m| (n.name.clone(), m, n.role)))
        .collect::<Vec<_>>();
    Ok(ssh(&profile.name, &settings, nodes))
}

/// The SSH driver of a cluster on `nodes`.
pub fn ssh(
    cluster: &ClusterName,
    settings: &crate::profile::SshSettings,
    nodes: Vec<(
        timonel_driver::MachineName,
        SshHost,
        timonel_driver::NodeRole,
    )>,
) -> Selected {
    let creds = Credentials {
        key_file: settings.key_file.clone(),
        known_hosts: settings.known_hosts.clone(),
        accept_new_host_keys: settings.accept_new_host_keys,
        ..Default::default()
    }
    .with_env();
    let nodes = nodes
        .into_iter()
        .map(|(name, host, role)| {
            let unit = crate::distro::k3s::unit_name(role).to_string();
            (name, SshNode { host, role, unit })
        })
        .collect();
    Arc::new(SshDriver::new(
        cluster.clone(),
        settings.cluster_id.clone(),
        nodes,
        creds,
        settings.adopt,
    ))
}

#[cfg(feature = "kvm")]
fn kvm() -> Result<Selected, ChoiceError> {
    let uri = std::env::var(crate::env::TIMONEL_KVM_URI)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| timonel_driver_kvm_proxy::DEFAULT_URI.to_string());
    // Nothing starts here: the `timonel-kvm` helper is looked for and started on the first
    // call (probe included), so commands that never touch kvm never run it. One driver, hence
    // one helper, per process: `delete --all` and `delete` by labels ask for it more than once.
    static KVM: std::sync::OnceLock<Selected> = std::sync::OnceLock::new();
    Ok(KVM
        .get_or_init(|| Arc::new(timonel_driver_kvm_proxy::KvmDriver::new(uri)))
        .clone())
}

#[cfg(not(feature = "kvm"))]
fn kvm() -> Result<Selected, ChoiceError> {
    Err(timonel_driver::DriverError::NotCompiledIn {
        driver: "kvm".to_string(),
        feature: "kvm".to_string(),
    }
    .into())
}

/// Drivers whose resources carry the profile's labels, so `delete` can find them without a
/// profile file.
pub fn label_capable() -> Vec<DriverKind> {
    ORDER.to_vec()
}

/// The clusters a shared backend has (by label), each with the ids of the timonel homes that
/// created its objects (`None`: objects from before homes were labelled). Only the Docker
/// daemon is shared between homes: VM and machine drivers keep their clusters under the home
/// (disks, profiles) and are not listed. Empty when the daemon does not answer. Only lists
/// labels: no probe of the engine (`start` has just probed it; `delete --all` needs none).
pub async fn clusters_by_home(
) -> std::collections::BTreeMap<ClusterName, std::collections::BTreeSet<Option<String>>> {
    DockerDriver::connect()
        .clusters_by_home()
        .await
        .unwrap_or_default()
}

/// The driver `start` uses: the requested one (which must be usable), else the first usable
/// one in [`ORDER`].
pub async fn select(
    requested: Option<DriverKind>,
    printer: &Printer,
) -> Result<Selected, ChoiceError> {
    if let Some(kind) = requested {
        let selected = make(kind)?;
        return match selected.probe().await {
            Availability::Ready { version, notes } => {
                printer.done(&format!("Using the {kind} driver ({version})"), None);
                for n in notes {
                    printer.info(&format!("  {kind}: {n}"));
                }
                Ok(selected)
            }
            Availability::Unusable { reason, fix } => Err(UserError::new(
                format!("the {kind} driver is not usable: {reason}"),
                fix,
            )
            .into()),
        };
    }
    let mut reasons = Vec::new();
    for kind in ORDER {
        let Ok(selected) = make(*kind) else {
            reasons.push(format!("  {kind}: not available in this build"));
            continue;
        };
        match selected.probe().await {
            Availability::Ready { version, notes } => {
                printer.done(&format!("Using the {kind} driver ({version})"), None);
                for n in notes {
                    printer.info(&format!("  {kind}: {n}"));
                }
                return Ok(selected);
            }
            Availability::Unusable { reason, fix } => {
                reasons.push(format!("  {kind}: {reason}\n    fix: {fix}"))
            }
        }
    }
    Err(UserError::new(
        format!(
            "no driver is usable on this machine:\n{}",
            reasons.join("\n")
        ),
        "fix one of the drivers above, or pick one with `--driver`",
    )
    .into())
}
