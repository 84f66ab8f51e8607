//! `timonel start`: create a cluster, or resume an existing one, as a list of steps sharing one
//! [`Run`]. Each step is its own file:
//!
//! | step        | file            | what it does                                              |
//! |-------------|-----------------|-----------------------------------------------------------|
//! | plan        | `plan.rs`       | the driver, the machines' preflight, host resources, roles, ports, profile |
//! | artifacts   | `artifacts.rs`  | the k3s version, binary, airgap images, VM base image     |
//! | node image  | `node_image.rs` | the container image built from the binary (if the driver has one) |
//! | nodes       | `nodes.rs`      | containers: the first server, the others made meanwhile and started after the credentials; VMs: all at once; machines: the first server, then the others |
//! | install     | `install.rs`    | k3s into the nodes this run created (VMs, over SSH)       |
//! | credentials | `credentials.rs`| the admin kubeconfig k3s wrote, with host-reachable URLs   |
//! | balancer    | `balancer.rs`   | the load balancer in front of several servers             |
//! | wait        | `wait.rs`       | readiness to `--wait`                                     |
//! | kubeconfig  | `kubeconfig.rs` | merge into the user's kubeconfig, mark the profile running |
//!
//! `resume.rs` checks that a `start` on an existing profile asks for nothing it would change.
//! `timonel node add` runs the same nodes, install and wait steps for one node.

mod artifacts;
mod balancer;
mod credentials;
mod install;
mod kubeconfig;
mod node_image;
pub(crate) mod nodes;
mod options;
mod plan;
mod resume;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

use timonel_driver::{MachineName, NodeKind};

pub(crate) use artifacts::ensure_binary;
pub(crate) use balancer::{of as balancer_of, set_backends};
pub(crate) use install::node_install;
pub use options::{SshStart, StartOptions};
pub(crate) use plan::free_ports;
pub use resume::conflicts;

use super::cancel::Cancel;
use super::ctx::Ctx;
use super::error::{Error, Result};
use super::node::NodeOps;
use crate::kubeconfig::ClusterCredentials;
use crate::profile::{Phase, Profile};

/// What this run installs: the binary (VMs and machines get it over SSH; containers run an
/// image made from it) and the airgap images.
#[derive(Debug, Clone, Default)]
pub struct Install {
    pub binary: Option<PathBuf>,
    pub airgap: Option<PathBuf>,
}

/// What every step of one `start` shares.
pub(crate) struct Run<'a> {
    pub ctx: &'a Ctx,
    pub cancel: &'a Cancel,
    pub nodes: Box<dyn NodeOps>,
    pub profile: Profile,
    /// `None` on a resume: the nodes have the distribution already.
    pub install: Option<Install>,
    pub wait_timeout: Duration,
    /// Nodes this run created (they get the distribution installed).
    pub fresh: Vec<MachineName>,
    /// The admin credentials, once fetched.
    pub creds: Option<ClusterCredentials>,
    /// The kubeconfig this run merged its context into.
    pub merged: Option<PathBuf>,
}

impl Run<'_> {
    fn save(&self) -> Result<()> {
        Ok(self.ctx.store.save(&self.profile)?)
    }
}

/// What a failed fresh start has to undo.
#[derive(Debug, Default)]
struct Created {
    profile_saved: bool,
    kubeconfig: Option<PathBuf>,
}

/// Starts (creates or resumes) the profile in `ctx`. The first signal on `cancel` stops at the
/// next safe point and removes what this start created; the result is then
/// [`Error::Interrupted`].
pub async fn start(ctx: &Ctx, opts: StartOptions, cancel: &Cancel) -> Result<()> {
    let _lock = ctx.lock_profile()?;
    let name = ctx.profile.clone();
    match ctx.store.try_load(&name)? {
        Some(p) if p.phase != Phase::Creating => return resume::run(ctx, p, &opts, cancel).await,
        Some(p) => {
            ctx.printer.warn(&format!(
                "a previous `start` of profile `{name}` did not finish; removing what it left and starting over"
            ));
            let ops = super::node::ops(ctx.driver_for(&p)?, &ctx.home);
            remove_everything(ctx, ops.as_ref(), p.kubeconfig.as_deref()).await?;
        }
        None => {}
    }
    let (driver, ssh) = plan::driver(ctx, &opts).await?;
    plan::not_foreign(ctx, driver.kind()).await?;
    let mut created = Created::default();
    let ops = super::node::ops(driver.clone(), &ctx.home);
    let result = create(ctx, &opts, cancel, ops, ssh, &mut created).await;
    match result {
        Ok(()) => Ok(()),
        Err(err) => {
            let ops = super::node::ops(driver, &ctx.home);
            rollback(ctx, &opts, ops.as_ref(), &created, &err).await;
            Err(err)
        }
    }
}

/// A fresh cluster: every step in order.
async fn create(
    ctx: &Ctx,
    opts: &StartOptions,
    cancel: &Cancel,
    nodes: Box<dyn NodeOps>,
    ssh: Option<crate::profile::SshSettings>,
    created: &mut Created,
) -> Result<()> {
    let driver = nodes.driver().clone();
    let kind = driver.capabilities().nodes;
    plan::host_folders(opts, driver.as_ref())?;
    let arch = plan::preflight(ctx, opts, driver.as_ref(), cancel).await?;
    plan::resources(ctx, opts, driver.as_ref()).await?;
    let balanced = balancer::ready(ctx, opts, driver.as_ref()).await?;
    let fetched = async {
        let arts = artifacts::fetch(ctx, opts, driver.as_ref(), kind, arch, cancel).await?;
        let node_image = node_image::ensure(ctx, opts, driver.as_ref(), &arts).await?;
        Ok::<_, Error>((arts, node_image))
    };
    // Joined, not raced: the driver's probe removes what it made before it returns, even
    // when the download fails or is interrupted.
    let (fetched, ()) = tokio::join!(fetched, learn_ahead(ctx, driver.as_ref()));
    let (arts, node_image) = fetched?;
    cancel.check()?;
    let ports = plan::ports(opts, kind, balanced)?;
    let profile = plan::profile(ctx, opts, driver.kind(), &arts, node_image, ssh, &ports)?;
    let mut run = Run {
        ctx,
        cancel,
        nodes,
        profile,
        install: Some(arts.install),
        wait_timeout: opts.wait_timeout,
        fresh: Vec::new(),
        creds: None,
        merged: None,
    };
    // Saved before anything is created, so `delete` always finds it.
    run.save()?;
    created.profile_saved = true;
    let result = bring_up(&mut run, opts).await;
    created.kubeconfig = run.merged.take();
    result
}

/// What the driver can learn before the first node is made, beside the download and the
/// image build (the Docker driver: which privileges the engine accepts, a probe of up to a
/// second on a new home). A failure here is only logged: the node's create asks again and
/// reports it in its own words.
async fn learn_ahead(ctx: &Ctx, driver: &dyn timonel_driver::Driver) {
    let Some(images) = driver.as_node_images() else {
        return;
    };
    let Ok(owner) = ctx.home_id() else {
        return;
    };
    let spec = super::spec::ahead_spec(&ctx.profile, owner);
    if let Err(e) = images.learn_ahead(&spec).await {
        tracing::debug!(error = %timonel_driver::error_chain(&e), "learning ahead failed; the create asks again");
    }
}

/// Creates (idempotently) and starts every node, installs, waits, writes the kubeconfig, and
/// records the profile as running. Shared by a fresh start and a resume.
async fn bring_up(run: &mut Run<'_>, opts: &StartOptions) -> Result<()> {
    match run.nodes.driver().capabilities().nodes {
        NodeKind::Container => {
            // The others are made while the server starts, and started once it answers.
            let first_ip = nodes::first(run).await?;
            nodes::others(run, first_ip, nodes::Stage::Create).await?;
            credentials::run(run).await?;
            nodes::others(run, first_ip, nodes::Stage::Start).await?;
            install::run(run).await?;
        }
        NodeKind::Vm => {
            // Every guest boots at once; k3s goes in over SSH after.
            nodes::all_at_once(run).await?;
            install::run(run).await?;
            credentials::run(run).await?;
        }
        // Machines get k3s placed at create, where agents need the server's address.
        NodeKind::Machine => {
            let first_ip = nodes::first(run).await?;
            nodes::others(run, first_ip, nodes::Stage::Up).await?;
            install::run(run).await?;
            credentials::run(run).await?;
        }
    }
    // After the credentials step, which records each server's host-reachable URL (the host
    // process's backends); before the wait, which asks the API through it.
    balancer::run(run).await?;
    wait::run(run, opts.wait).await?;
    kubeconfig::run(run, opts.keep_context)
}

/// Undoes a failed fresh start, unless `--keep-on-failure` asks to keep it for debugging.
async fn rollback(
    ctx: &Ctx,
    opts: &StartOptions,
    nodes: &dyn NodeOps,
    created: &Created,
    err: &Error,
) {
    let name = &ctx.profile;
    let interrupted = matches!(err, Error::Interrupted);
    if !created.profile_saved {
        return;
    }
    if opts.keep_on_failure && !interrupted {
        ctx.printer.warn(&format!(
            "kept what was created (--keep-on-failure); `timonel delete -p {name}` removes it"
        ));
        return;
    }
    let step = ctx.printer.step("cleaning up");
    match remove_everything(ctx, nodes, created.kubeconfig.as_deref()).await {
        Ok(()) => {
            step.finish("Removed everything this start created");
        }
        Err(e) => {
            drop(step);
            ctx.printer.warn(&format!(
                "cleanup failed ({}); `timonel delete -p {name}` removes what is left",
                timonel_driver::error_chain(&e)
            ));
        }
    }
}

/// Removes the cluster's nodes, its kubeconfig entry and its profile.
async fn remove_everything(
    ctx: &Ctx,
    nodes: &dyn NodeOps,
    kubeconfig_path: Option<&std::path::Path>,
) -> Result<()> {
    crate::cluster::host_lb::HostBalancer::at(ctx.store.dir(&ctx.profile)).stop()?;
    nodes.remove_cluster(&ctx.profile).await?;
    if let Some(path) = kubeconfig_path {
        crate::kubeconfig::remove(path, ctx.profile.as_str(), &Default::default())?;
    }
    ctx.store.remove(&ctx.profile)?;
    Ok(())
}

#[cfg(test)]
mod pause_tests;
#[cfg(test)]
mod tests;
