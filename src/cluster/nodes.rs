//! `timonel node add|delete|list`: nodes added to or removed from a running cluster. `node add`
//! runs the same nodes, install and wait steps as `start`, for one node.

use std::time::Duration;

use serde::Serialize;
use timonel_driver::{DriverKind, MachineName, NodeKind, NodeRole};

use super::ctx::Ctx;
use super::error::{Error, Result};
use super::node::NodeOps;
use super::start::nodes::{record_ip, NodeJob};
use super::start::Install;
use super::{saved_credentials, spec};
use crate::distro::ready::{self, ApiClient, WaitFor};
use crate::error::UserError;
use crate::profile::{NodeRecord, Phase, Profile};

/// What `node add` was asked for.
#[derive(Debug, Clone)]
pub struct NodeAdd {
    /// A server rather than an agent.
    pub control_plane: bool,
    /// ssh clusters: the machine.
    pub machine: Option<timonel_driver_ssh::SshHost>,
    pub wait_timeout: Duration,
    pub sources: crate::artifact::Sources,
}

/// Adds a node (an agent, or a server with `control_plane`) and waits until it is Ready. On a
/// failure the node is removed again and the profile is as it was. The node is recorded as
/// pending before it is created; when a killed `node add` left one so, this one finishes that
/// node (made again from scratch) instead of adding another.
pub async fn node_add(ctx: &Ctx, add: NodeAdd) -> Result<MachineName> {
    let _lock = ctx.lock_profile()?;
    let mut profile = ctx.store.load(&ctx.profile)?;
    let pending = profile.nodes.iter().find(|n| n.pending).cloned();
    match &pending {
        Some(_) => check_running(&profile)?,
        None => check_add(&profile, &add)?,
    }
    super::pause::refuse_when_paused(ctx.driver_for(&profile)?.as_ref(), &profile, "add a node")
        .await?;
    let (api, server_ip) = join_target(ctx, &profile).await?;
    let record = match pending {
        Some(p) => p,
        None => new_record(&profile, &add)?,
    };
    // The driver knows the new node (ssh: its machine).
    let mut with_new = profile.clone();
    if !record.pending {
        with_new.nodes.push(record.clone());
    }
    let nodes = super::node::ops(ctx.driver_for(&with_new)?, &ctx.home);
    check_resources(ctx, nodes.as_ref(), &with_new).await?;
    if record.pending {
        restart_pending(ctx, &api, nodes.as_ref(), &profile, &record, &add).await?;
    }
    let install = artifacts_for(ctx, &profile, &add, nodes.as_ref(), &record).await?;
    let record = NodeRecord {
        pending: true,
        ..record
    };
    // Recorded before it is created: a command killed from here on leaves it pending.
    profile.nodes.retain(|n| n.name != record.name);
    profile.nodes.push(record.clone());
    ctx.store.save(&profile)?;
    let step = ctx.printer.step(&format!("adding node {}", record.name));
    let join = spec::join_url(server_ip);
    let job = NodeJob {
        nodes: nodes.as_ref(),
        profile: &profile,
        settings: &spec::cluster_settings(&with_new),
        install: install.as_ref(),
        join: Some(&join),
        owner: &ctx.home_id()?,
        address_timeout: add.wait_timeout,
    };
    let added = bring_up(&job, &record, &api, &add).await;
    match added {
        Ok(ip) => {
            record_ip(&mut profile, &record, ip);
            if let Some(n) = profile.nodes.iter_mut().find(|n| n.name == record.name) {
                n.pending = false;
            }
            ctx.store.save(&profile)?;
            step.finish(&format!(
                "Node {} ({}) joined, Ready ({ip})",
                record.name, record.role
            ));
            if record.role == NodeRole::Server {
                if let Err(e) = super::start::set_backends(
                    nodes.driver().as_ref(),
                    &ctx.store.dir(&profile.name),
                    &profile,
                )
                .await
                {
                    ctx.printer.warn(&format!(
                        "the API load balancer was not given the new server ({}); `timonel start -p {}` gives it every server",
                        timonel_driver::error_chain(&e),
                        profile.name
                    ));
                }
            }
            Ok(record.name)
        }
        Err(e) => {
            drop(step);
            // Leave the profile as it was: remove the half-added node.
            let _ = nodes.remove(&profile, &record).await;
            profile.nodes.retain(|n| n.name != record.name);
            ctx.store.save(&profile)?;
            Err(e)
        }
    }
}

/// A server whose API answers (with several servers, the first may be down), and its address
/// on the cluster network, which the new node joins.
async fn join_target(ctx: &Ctx, profile: &Profile) -> Result<(ApiClient, std::net::IpAddr)> {
    let name = &profile.name;
    let creds =
        saved_credentials(&ctx.store, name).map_err(|e| Error::internal(format!("{e:#}")))?;
    // A server's own URL: the new node joins that server by its address.
    let Some((api, url)) = super::live_server(profile, &creds).await else {
        return Err(UserError::new(
            format!("no API server of profile `{name}` answers"),
            format!("`timonel status -p {name}` shows what is down; `timonel start -p {name}` brings it back"),
        )
        .into());
    };
    let server_ip = profile
        .nodes
        .iter()
        .find(|n| profile.api_url(n).as_deref() == Some(url.as_str()))
        .and_then(|n| n.ip)
        .ok_or_else(|| {
            Error::internal(format!("the address of the server at {url} is not known"))
        })?;
    Ok((api, server_ip))
}

/// Creates (or starts) the node, installs the distribution where the driver did not, and
/// waits until it is Ready. Returns its address.
async fn bring_up(
    job: &NodeJob<'_>,
    record: &NodeRecord,
    api: &ApiClient,
    add: &NodeAdd,
) -> Result<std::net::IpAddr> {
    let started = job.up(record, &timonel_driver::SilentReporter).await?;
    if started.fresh {
        if let Some(install) = job.install {
            super::start::node_install(
                job.nodes,
                job.profile,
                record,
                (install, job.join),
                add.wait_timeout,
            )
            .await?;
        }
    }
    ready::wait(
        api,
        WaitFor::Ready,
        &[record.name.to_string()],
        add.wait_timeout,
        &mut |_| {},
    )
    .await?;
    Ok(started.ip)
}

/// Refuses a node the host's CPUs, memory or disk cannot take beside the cluster's others.
async fn check_resources(ctx: &Ctx, nodes: &dyn NodeOps, with_new: &Profile) -> Result<()> {
    let driver = nodes.driver().as_ref();
    let vm = driver.capabilities().nodes == NodeKind::Vm;
    let request = super::resources::Request {
        nodes: u32::try_from(with_new.nodes.len()).unwrap_or(u32::MAX),
        cpus: with_new.cpus,
        memory_mib: with_new.memory_mib,
        disk_mib: vm.then(|| with_new.disk_mib.unwrap_or(super::node::DEFAULT_DISK_MIB)),
        adding: true,
    };
    super::resources::check(ctx, driver, &request).await
}

/// A node an interrupted `node add` left: its Node object and machine are removed, so it is
/// made again from scratch (a half-created node is never taken for a good one).
async fn restart_pending(
    ctx: &Ctx,
    api: &ApiClient,
    nodes: &dyn NodeOps,
    profile: &Profile,
    record: &NodeRecord,
    add: &NodeAdd,
) -> Result<()> {
    let mut note = format!(
        "finishing node {} ({}), which an interrupted `node add` left; it is made again",
        record.name, record.role
    );
    if add
        .machine
        .as_ref()
        .is_some_and(|m| Some(m) != record.machine.as_ref())
    {
        note.push_str(
            "; the machine given with --node was not added (run `node add` again for it)",
        );
    } else if add.control_plane != (record.role == NodeRole::Server) {
        note.push_str(&format!(
            "; no {} was added (run `node add` again for it)",
            if add.control_plane { "server" } else { "agent" }
        ));
    }
    ctx.printer.warn(&note);
    let _ = api.delete_node(record.name.as_str()).await;
    nodes.remove(profile, record).await
}

/// What must hold before a node is added.
fn check_add(profile: &Profile, add: &NodeAdd) -> Result<()> {
    let name = &profile.name;
    let ssh = profile.driver == DriverKind::Ssh;
    match (&add.machine, ssh) {
        (None, true) => {
            return Err(UserError::new(
                format!("profile `{name}` runs on machines over ssh: which one should join?"),
                format!("`timonel node add -p {name} --node user@host[:port]`"),
            )
            .into())
        }
        (Some(_), false) => {
            return Err(UserError::new(
                format!(
                    "--node names a machine for ssh clusters; profile `{name}` uses the {} driver",
                    profile.driver
                ),
                "drop --node",
            )
            .into())
        }
        (Some(m), true) => {
            if let Some(n) = profile.nodes.iter().find(|n| {
                n.machine
                    .as_ref()
                    .is_some_and(|x| x.host == m.host && x.port == m.port)
            }) {
                return Err(UserError::new(
                    format!("{m} is already node `{}` of profile `{name}`", n.name),
                    "give another machine",
                )
                .into());
            }
        }
        (None, false) => {}
    }
    check_running(profile)?;
    if add.control_plane && !profile.embedded_etcd {
        return Err(UserError::new(
            format!("profile `{name}` has a single server with its own datastore, which more servers cannot join"),
            "create the cluster with `--control-planes 3` to be able to add servers; agents can be added to any cluster",
        )
        .into());
    }
    Ok(())
}

fn check_running(profile: &Profile) -> Result<()> {
    let name = &profile.name;
    if profile.phase != Phase::Running {
        return Err(UserError::new(
            format!("profile `{name}` is not running"),
            format!("start it first with `timonel start -p {name}`"),
        )
        .into());
    }
    Ok(())
}

/// The new node's record: the next index, and the host ports it publishes.
fn new_record(profile: &Profile, add: &NodeAdd) -> Result<NodeRecord> {
    let index = profile.nodes.iter().map(|n| n.index).max().unwrap_or(0) + 1;
    let free = |what: &str| {
        super::start::free_ports(profile.listen_address, 1, None)
            .map(|p| p.first().copied())
            .map_err(|e| Error::io(format!("cannot find a free port for {what}"), e))
    };
    let machine = add.machine.is_some();
    let vm = profile.vm_image.is_some();
    Ok(NodeRecord {
        name: profile.name.machine(index),
        role: if add.control_plane {
            NodeRole::Server
        } else {
            NodeRole::Agent
        },
        index,
        ip: None,
        api_port: match (add.control_plane, machine) {
            (false, _) => None,
            (true, true) => Some(crate::distro::k3s::API_PORT),
            (true, false) => free("the API server")?,
        },
        // NAT'd VMs reach SSH through a forwarded host port.
        ssh_port: if vm { free("SSH")? } else { None },
        api_url: None,
        machine: add.machine.clone(),
        pending: false,
        unknown: Default::default(),
    })
}

/// The k3s binary a new VM or machine gets from the cache, for its architecture (a machine is
/// checked first). Container nodes run the profile's image: nothing to fetch.
async fn artifacts_for(
    ctx: &Ctx,
    profile: &Profile,
    add: &NodeAdd,
    nodes: &dyn NodeOps,
    record: &NodeRecord,
) -> Result<Option<Install>> {
    let driver = nodes.driver();
    if driver.capabilities().nodes == NodeKind::Container {
        return Ok(None);
    }
    let mut arch = crate::artifact::Arch::host()?;
    if let Some(check) = driver.as_preflight() {
        let step = ctx.printer.step("checking the machine");
        let facts = check.preflight(std::slice::from_ref(&record.name)).await?;
        if let Some(f) = facts.values().next() {
            arch = f.arch.parse()?;
        }
        step.finish("The machine is ready for k3s");
    }
    let install = super::start::ensure_binary(ctx, &add.sources, &profile.version, arch).await?;
    Ok(Some(install))
}

/// Deletes a node: its Kubernetes Node object (no drain), then the machine.
pub async fn node_delete(ctx: &Ctx, node: &str) -> anyhow::Result<()> {
    let _lock = ctx.lock_profile()?;
    let mut profile = ctx.store.load(&ctx.profile)?;
    let name = profile.name.clone();
    let record = profile.node(node).cloned().ok_or_else(|| {
        UserError::new(
            format!("profile `{name}` has no node `{node}`"),
            format!("`timonel node list -p {name}` shows its nodes"),
        )
    })?;
    if profile
        .server()
        .map(|s| s.name == record.name)
        .unwrap_or(false)
    {
        return Err(UserError::new(
            format!(
                "`{node}` is the first server of profile `{name}`, which every other node joined"
            ),
            format!("delete the whole cluster with `timonel delete -p {name}`"),
        )
        .into());
    }
    let nodes = super::node::ops(ctx.driver_for(&profile)?, &ctx.home);
    super::pause::refuse_when_paused(nodes.driver().as_ref(), &profile, "delete a node").await?;
    let step = ctx.printer.step(&format!("deleting node {node}"));
    if record.role == NodeRole::Server {
        // The balancer stops sending to it before it goes.
        let mut without = profile.clone();
        without.nodes.retain(|n| n.name != record.name);
        super::start::set_backends(
            nodes.driver().as_ref(),
            &ctx.store.dir(&without.name),
            &without,
        )
        .await?;
    }
    if let Ok(creds) = saved_credentials(&ctx.store, &name) {
        let api = ApiClient::new(&creds, &creds.server)?;
        if let Err(e) = api.delete_node(node).await {
            ctx.printer.warn(&format!(
                "could not delete the Kubernetes Node object `{node}` ({e}); `kubectl delete node {node}` removes it"
            ));
        }
    }
    nodes.remove(&profile, &record).await?;
    profile.nodes.retain(|n| n.name != record.name);
    ctx.store.save(&profile)?;
    step.finish(&format!("Deleted node {node}"));
    Ok(())
}

/// One row of `node list`.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub role: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
}

/// The nodes of the profile with their live state.
pub async fn node_list(ctx: &Ctx) -> anyhow::Result<Vec<NodeRow>> {
    let profile = ctx.store.load(&ctx.profile)?;
    let driver = ctx.driver_for(&profile)?;
    let states = futures_util::future::join_all(profile.nodes.iter().map(|n| {
        let driver = driver.clone();
        let name = n.name.clone();
        async move { driver.state(&name).await }
    }))
    .await;
    Ok(profile
        .nodes
        .iter()
        .zip(states)
        .map(|(n, s)| NodeRow {
            name: n.name.to_string(),
            role: n.role.to_string(),
            state: s
                .map(|s| s.to_string())
                .map(|s| {
                    if n.pending {
                        format!("{s}, pending")
                    } else {
                        s
                    }
                })
                .unwrap_or_else(|e| format!("unknown ({e})")),
            ip: n.ip.map(|i| i.to_string()),
            api_port: n.api_port,
        })
        .collect())
}
