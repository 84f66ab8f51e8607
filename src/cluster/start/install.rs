//! Step 5, install: k3s into the nodes this run created, where the driver did not place it at
//! create (VMs: binary, config, airgap images and a systemd unit over SSH).

use std::time::Duration;

use super::{Install, Run};
use crate::cluster::error::{Error, Result};
use crate::cluster::node::NodeOps;
use crate::cluster::spec::{cluster_settings, join_url, machine_spec};
use crate::distro::InstallPlan;
use crate::profile::{NodeRecord, Profile};

/// Installs into every fresh node, in parallel (agents retry joining until their server
/// answers).
pub(super) async fn run(run: &mut Run<'_>) -> Result<()> {
    if !run.nodes.installs() || run.fresh.is_empty() {
        return Ok(());
    }
    let install = run.install.clone().unwrap_or_default();
    let fresh: Vec<NodeRecord> = run
        .profile
        .nodes
        .iter()
        .filter(|n| run.fresh.contains(&n.name))
        .cloned()
        .collect();
    let first = run.profile.server().cloned().ok_or_else(|| {
        Error::internal(format!("profile `{}` has no server node", run.profile.name))
    })?;
    let ip = first.ip.ok_or_else(|| {
        Error::internal(format!(
            "the address of server `{}` is not known",
            first.name
        ))
    })?;
    let join = join_url(ip);
    let step = run
        .ctx
        .printer
        .step(&format!("installing k3s on {} node(s)", fresh.len()));
    let results = futures_util::future::join_all(fresh.iter().map(|node| {
        let join = (node.name != first.name).then_some(join.as_str());
        node_install(
            run.nodes.as_ref(),
            &run.profile,
            node,
            (&install, join),
            run.wait_timeout,
        )
    }))
    .await;
    for r in results {
        r?;
    }
    step.finish(&format!("k3s installed on {} node(s)", fresh.len()));
    run.cancel.check()?;
    Ok(())
}

/// Installs k3s into one running node of `profile` that joins `join` (none: the first
/// server). Also used by `node add`.
pub(crate) async fn node_install(
    nodes: &dyn NodeOps,
    profile: &Profile,
    node: &NodeRecord,
    (install, join): (&Install, Option<&str>),
    timeout: Duration,
) -> Result<()> {
    let spec = machine_spec(
        profile,
        node,
        &cluster_settings(profile),
        join,
        install.airgap.as_deref(),
    )?;
    let plan = InstallPlan {
        files: spec.files,
        service: spec.service.unwrap_or_default(),
    };
    nodes
        .install(profile, node, &plan, install.binary.as_deref(), timeout)
        .await
}
