//! Step 4, nodes: create (idempotently) and start the first server, then the other servers
//! and the agents in parallel; record each node's address. Container nodes make the others
//! while the first server starts and start them once it has written its kubeconfig, so an
//! agent's first join finds the server answering (k3s retries a failed join only after 2 s).

use std::net::IpAddr;
use std::time::Duration;

use timonel_driver::{MachineSpec, MachineState, Reporter};

use super::{Install, Run};
use crate::cluster::error::{Error, Result};
use crate::cluster::node::{NodeOps, Prepare};
use crate::cluster::spec::{cluster_settings, join_url, machine_spec};
use crate::distro::ClusterSettings;
use crate::profile::{NodeRecord, Profile};

/// How far [`others`] brings the nodes after the first server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Created (when missing) and started.
    Up,
    /// Created when missing, not started.
    Create,
    /// Started (created earlier by [`Stage::Create`]).
    Start,
}

/// Brings the first server up (created when missing, started) and records its address, which
/// every other node joins.
pub(super) async fn first(run: &mut Run<'_>) -> Result<IpAddr> {
    let printer = &run.ctx.printer;
    let server = first_server(run)?;
    let base = JobBase::of(run)?;
    let step = printer.step(&format!("starting node {}", server.name));
    let first = base.job(run, None).up(&server, printer).await?;
    step.finish(&format!("Node {} running ({})", server.name, first.ip));
    record(run, &server, first);
    run.save()?;
    run.cancel.check()?;
    Ok(first.ip)
}

/// The other servers and the agents, in parallel, joining the first server at `first_ip`.
pub(super) async fn others(run: &mut Run<'_>, first_ip: IpAddr, stage: Stage) -> Result<()> {
    let printer = &run.ctx.printer;
    let server = first_server(run)?;
    let others = others_of(&run.profile, &server);
    if others.is_empty() {
        return Ok(());
    }
    let join = join_url(first_ip);
    let base = JobBase::of(run)?;
    let job = base.job(run, Some(&join));
    let silent = &timonel_driver::SilentReporter;
    if stage == Stage::Create {
        let made =
            futures_util::future::join_all(others.iter().map(|node| job.create(node, silent)))
                .await;
        for (node, made) in others.iter().zip(made) {
            if made? {
                run.fresh.push(node.name.clone());
            }
        }
        run.cancel.check()?;
        return Ok(());
    }
    let step = printer.step(&format!("starting {} more node(s)", others.len()));
    let started = futures_util::future::join_all(others.iter().map(|node| async {
        match stage {
            Stage::Start => job.start(node).await.map(|ip| Started { ip, fresh: false }),
            _ => job.up(node, silent).await,
        }
    }))
    .await;
    record_all(run, &others, started)?;
    step.finish(&format!("{} more node(s) running", others.len()));
    run.cancel.check()?;
    Ok(())
}

/// Every node at once, the first server among them: for VMs, whose creation needs no other
/// node's address (k3s goes in over SSH afterwards, and agents retry their join until the
/// server answers), so the guests boot side by side instead of the server's boot first.
pub(super) async fn all_at_once(run: &mut Run<'_>) -> Result<()> {
    let printer = &run.ctx.printer;
    let server = first_server(run)?;
    if run.profile.nodes.len() == 1 {
        first(run).await?;
        return Ok(());
    }
    // The first server, then the others in the profile's order.
    let mut order = vec![server.clone()];
    order.extend(others_of(&run.profile, &server));
    let base = JobBase::of(run)?;
    // Not in a VM's create: the join URL reaches the agents with the install.
    let job = base.job(run, None);
    let step = printer.step(&format!("starting {} nodes", order.len()));
    let silent = &timonel_driver::SilentReporter;
    // The server is made first: its creation sets up what the cluster's machines share (a
    // network, a host-only interface). The others are then made side by side.
    let mut fresh = vec![job.create(&order[0], printer).await?];
    for made in
        futures_util::future::join_all(order[1..].iter().map(|n| job.create(n, silent))).await
    {
        fresh.push(made?);
    }
    run.cancel.check()?;
    // Then every guest boots at once.
    let addresses = futures_util::future::join_all(order.iter().map(|n| job.start(n))).await;
    let started = addresses
        .into_iter()
        .zip(fresh)
        .map(|(ip, fresh)| ip.map(|ip| Started { ip, fresh }))
        .collect();
    record_all(run, &order, started)?;
    step.finish(&format!("{} nodes running", order.len()));
    run.cancel.check()?;
    Ok(())
}

/// Every node of `profile` but `server`, in the profile's order.
fn others_of(profile: &Profile, server: &NodeRecord) -> Vec<NodeRecord> {
    profile
        .nodes
        .iter()
        .filter(|n| n.name != server.name)
        .cloned()
        .collect()
}

/// What the [`NodeJob`]s of one step share, owned: the profile as the step began (the run's
/// copy gets each node's address as it is recorded), its k3s settings and this home's id.
struct JobBase {
    profile: Profile,
    settings: ClusterSettings,
    owner: String,
}

impl JobBase {
    fn of(run: &Run<'_>) -> Result<Self> {
        Ok(Self {
            profile: run.profile.clone(),
            settings: cluster_settings(&run.profile),
            owner: run.ctx.home_id()?,
        })
    }

    /// A job on `run`'s nodes; `join` is the first server's URL for the nodes that join it
    /// at create.
    fn job<'a>(&'a self, run: &'a Run<'_>, join: Option<&'a str>) -> NodeJob<'a> {
        NodeJob {
            nodes: run.nodes.as_ref(),
            profile: &self.profile,
            settings: &self.settings,
            install: run.install.as_ref(),
            join,
            owner: &self.owner,
            address_timeout: run.wait_timeout,
        }
    }
}

fn first_server(run: &Run<'_>) -> Result<NodeRecord> {
    run.profile.server().cloned().ok_or_else(|| {
        Error::internal(format!("profile `{}` has no server node", run.profile.name))
    })
}

/// Records every node's result (the first error stops it) and saves the profile.
fn record_all(
    run: &mut Run<'_>,
    nodes: &[NodeRecord],
    started: Vec<Result<Started>>,
) -> Result<()> {
    for (node, result) in nodes.iter().zip(started) {
        record(run, node, result?);
    }
    run.save()
}

fn record(run: &mut Run<'_>, node: &NodeRecord, started: Started) {
    record_ip(&mut run.profile, node, started.ip);
    if started.fresh {
        run.fresh.push(node.name.clone());
    }
}

/// Sets a node's address in the profile.
pub(crate) fn record_ip(profile: &mut Profile, node: &NodeRecord, ip: IpAddr) {
    if let Some(n) = profile.nodes.iter_mut().find(|n| n.name == node.name) {
        n.ip = Some(ip);
    }
}

/// A node that runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub ip: IpAddr,
    /// This command created it.
    pub fresh: bool,
}

/// What bringing one node up needs: shared by `start` and `node add`.
pub(crate) struct NodeJob<'a> {
    pub nodes: &'a dyn NodeOps,
    pub profile: &'a Profile,
    pub settings: &'a ClusterSettings,
    pub install: Option<&'a Install>,
    /// The first server's URL, for every node but the first server.
    pub join: Option<&'a str>,
    /// This home's id, which the nodes are labelled with.
    pub owner: &'a str,
    /// How long a started node may take to report its address (`--wait-timeout`).
    pub address_timeout: Duration,
}

impl NodeJob<'_> {
    /// The node's spec as the profile and the install plan make it, completed for its kind.
    pub fn spec(&self, node: &NodeRecord, fresh: bool) -> Result<MachineSpec> {
        let airgap = self.install.and_then(|i| i.airgap.as_deref());
        let mut spec = machine_spec(self.profile, node, self.settings, self.join, airgap)?;
        spec.owner = Some(self.owner.to_string());
        let binary = self.install.and_then(|i| i.binary.as_deref());
        self.nodes
            .prepare(self.profile, node, &mut spec, Prepare { fresh, binary })?;
        Ok(spec)
    }

    /// Creates the node when it does not exist; true when this call created it. The node's
    /// kind prepares it either way (a VM's folders and key, a machine's unit).
    pub async fn create(&self, node: &NodeRecord, report: &dyn Reporter) -> Result<bool> {
        let driver = self.nodes.driver().as_ref();
        let fresh = driver.state(&node.name).await? == MachineState::NotCreated;
        let spec = self.spec(node, fresh)?;
        if fresh {
            driver.create(&spec, report).await?;
        }
        Ok(fresh)
    }

    /// Starts a created node (thaws a paused one: it runs on where it was, not restarted);
    /// its address.
    pub async fn start(&self, node: &NodeRecord) -> Result<IpAddr> {
        let driver = self.nodes.driver().as_ref();
        match driver.state(&node.name).await? {
            MachineState::Paused => driver.unpause(&node.name).await?,
            state if !state.is_running() => driver.start(&node.name).await?,
            _ => {}
        }
        Ok(driver.wait_ip(&node.name, self.address_timeout).await?)
    }

    /// Creates the node when it does not exist, starts it when it is not running.
    pub async fn up(&self, node: &NodeRecord, report: &dyn Reporter) -> Result<Started> {
        let fresh = self.create(node, report).await?;
        Ok(Started {
            ip: self.start(node).await?,
            fresh,
        })
    }
}
