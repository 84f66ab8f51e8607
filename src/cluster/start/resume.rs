//! `start` on an existing profile: the same nodes, ports, addresses and data. A flag that would
//! change the cluster is refused instead of being ignored.

use timonel_driver::{Availability, NodeRole};

use super::{bring_up, Run, StartOptions};
use crate::cluster::cancel::Cancel;
use crate::cluster::error::Result;
use crate::cluster::Ctx;
use crate::error::UserError;
use crate::profile::Profile;

/// The flags of `opts` that would change `profile`, as the user wrote them.
pub fn conflicts(profile: &Profile, opts: &StartOptions) -> Vec<String> {
    let mut c = Vec::new();
    if let Some(d) = opts.driver.filter(|d| *d != profile.driver) {
        c.push(format!(
            "--driver {d} (the profile uses {})",
            profile.driver
        ));
    }
    if let Some(v) = opts
        .version
        .as_ref()
        .filter(|v| **v != profile.version && *v != "stable")
    {
        c.push(format!(
            "--kubernetes-version {v} (the profile runs {})",
            profile.version
        ));
    }
    if opts.cpus.is_some() && opts.cpus != profile.cpus {
        c.push("--cpus".to_string());
    }
    if opts.memory_mib.is_some() && opts.memory_mib != profile.memory_mib {
        c.push("--memory".to_string());
    }
    let servers = profile
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Server)
        .count();
    if (opts.nodes as usize != profile.nodes.len() && opts.nodes != 1)
        || (opts.control_planes > 1 && opts.control_planes as usize != servers)
    {
        c.push(format!(
            "--nodes {} (the profile has {})",
            opts.nodes,
            profile.nodes.len()
        ));
    }
    if !opts.disable.is_empty() && opts.disable != profile.disable {
        c.push("--disable".to_string());
    }
    if (!opts.ca_certs.is_empty() && opts.ca_certs != profile.ca_certs)
        || (!opts.registry_mirrors.is_empty() && opts.registry_mirrors != profile.registry_mirrors)
    {
        c.push("--ca-cert/--registry-mirror".to_string());
    }
    if !opts.k3s_args.is_empty() && opts.k3s_args != profile.k3s_args {
        c.push("--k3s-arg".to_string());
    }
    if opts.env.iter().any(|e| !profile.env.contains(e)) {
        c.push("--env".to_string());
    }
    if let Some(p) = opts.apiserver_port {
        let current = profile
            .balancer_port
            .or_else(|| profile.server().and_then(|s| s.api_port));
        if Some(p) != current {
            c.push("--apiserver-port".to_string());
        }
    }
    if let Some(image) = &opts.node_image {
        if Some(image) != profile.node_image.as_ref() {
            c.push("--node-image".to_string());
        }
    }
    if let Some(switch) = &opts.hyperv_switch {
        if Some(switch) != profile.hyperv_switch.as_ref() {
            c.push("--hyperv-virtual-switch".to_string());
        }
    }
    if !opts.ports.is_empty() && opts.ports != profile.ports {
        c.push("--ports".to_string());
    }
    if !opts.mounts.is_empty() && opts.mounts != profile.mounts {
        c.push("--mount".to_string());
    }
    c
}

/// Resumes `profile`.
pub(super) async fn run(
    ctx: &Ctx,
    profile: Profile,
    opts: &StartOptions,
    cancel: &Cancel,
) -> Result<()> {
    let name = profile.name.clone();
    let conflicts = conflicts(&profile, opts);
    if !conflicts.is_empty() {
        return Err(UserError::new(
            format!(
                "profile `{name}` already exists and these flags would change it: {}",
                conflicts.join(", ")
            ),
            format!("`timonel start -p {name}` without them resumes it as it is; to change it, `timonel delete -p {name}` first, or use another profile (`-p other`)"),
        )
        .into());
    }
    let driver = ctx.driver_for(&profile)?;
    if let Availability::Unusable { reason, fix } = driver.probe().await {
        return Err(UserError::new(
            format!(
                "cannot resume profile `{name}`: the {} driver is not usable: {reason}",
                profile.driver
            ),
            fix,
        )
        .into());
    }
    crate::cluster::pause::unpause_for_start(ctx, driver.as_ref(), &profile).await?;
    ctx.printer.info(&format!("Resuming profile `{name}`"));
    let mut run = Run {
        ctx,
        cancel,
        nodes: crate::cluster::node::ops(driver, &ctx.home),
        profile,
        install: None,
        wait_timeout: opts.wait_timeout,
        fresh: Vec::new(),
        creds: None,
        merged: None,
    };
    let dropped = drop_pending(&mut run).await?;
    bring_up(&mut run, opts).await?;
    // Their Node objects, if they had registered before the `node add` was killed.
    let api = run
        .creds
        .as_ref()
        .filter(|_| !dropped.is_empty())
        .and_then(|c| crate::distro::ready::ApiClient::new(c, &c.server).ok());
    if let Some(api) = api {
        for node in &dropped {
            let _ = api.delete_node(node.as_str()).await;
        }
    }
    Ok(())
}

/// Removes the nodes an interrupted `node add` left unfinished (the resume brings the cluster
/// back as it was before it), and returns their names.
async fn drop_pending(run: &mut Run<'_>) -> Result<Vec<timonel_driver::MachineName>> {
    let pending: Vec<_> = run
        .profile
        .nodes
        .iter()
        .filter(|n| n.pending)
        .cloned()
        .collect();
    for node in &pending {
        run.ctx.printer.warn(&format!(
            "removing node {}, which an interrupted `node add` left unfinished; `timonel node add` adds a node again",
            node.name
        ));
        run.nodes.remove(&run.profile, node).await?;
        run.profile.nodes.retain(|n| n.name != node.name);
        run.save()?;
    }
    Ok(pending.into_iter().map(|n| n.name).collect())
}
