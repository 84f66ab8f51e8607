//! `timonel node add|delete|list`: nodes added to or removed from a running cluster.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;
use timonel_driver::{DriverKind, MachineName, NodeRole};

use super::saved_credentials;
use super::start::{cluster_settings, ensure_running, join_url, machine_spec, record_ip};
use crate::cli::Ctx;
use crate::distro::ready::{self, ApiClient, WaitFor};
use crate::drivers;
use crate::error::UserError;
use crate::profile::{NodeRecord, Phase};

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

/// Adds a node (an agent, or a server with `control_plane`) and waits until it is Ready.
pub async fn node_add(ctx: &Ctx, add: NodeAdd) -> anyhow::Result<MachineName> {
    let NodeAdd {
        control_plane,
        machine,
        wait_timeout,
        sources,
    } = add;
    let _lock = ctx.lock_profile()?;
    let mut profile = ctx.store.load(&ctx.profile)?;
    let name = profile.name.clone();
    let ssh = profile.driver == DriverKind::Ssh;
    match (&machine, ssh) {
        (None, true) => bail!(UserError::new(
            format!("profile `{name}` runs on machines over ssh: which one should join?"),
            format!("`timonel node add -p {name} --node user@host[:port]`"),
        )),
        (Some(_), false) => bail!(UserError::new(
            format!(
                "--node names a machine for ssh clusters; profile `{name}` uses the {} driver",
                profile.driver
            ),
            "drop --node",
        )),
        (Some(m), true) => {
            if let Some(n) = profile.nodes.iter().find(|n| {
                n.machine
                    .as_ref()
                    .is_some_and(|x| x.host == m.host && x.port == m.port)
            }) {
                bail!(UserError::new(
                    format!("{m} is already node `{}` of profile `{name}`", n.name),
                    "give another machine",
                ));
            }
        }
        (None, false) => {}
    }
    if profile.phase != Phase::Running {
        bail!(UserError::new(
            format!("profile `{name}` is not running"),
            format!("start it first with `timonel start -p {name}`"),
        ));
    }
    if control_plane && !profile.embedded_etcd {
        bail!(UserError::new(
            format!("profile `{name}` has a single server with its own datastore, which more servers cannot join"),
            "create the cluster with `--control-planes 3` to be able to add servers; agents can be added to any cluster",
        ));
    }
    // Join a server whose API answers (with several servers, the first may be down).
    let creds = saved_credentials(&ctx.store, &name)?;
    let Some((api, url)) = super::live_api(&profile, &creds).await else {
        bail!(UserError::new(
            format!("no API server of profile `{name}` answers"),
            format!("`timonel status -p {name}` shows what is down; `timonel start -p {name}` brings it back"),
        ));
    };
    let server_ip = profile
        .nodes
        .iter()
        .find(|n| profile.api_url(n).as_deref() == Some(url.as_str()))
        .and_then(|n| n.ip)
        .ok_or_else(|| anyhow!("the address of the server at {url} is not known"))?;
    let index = profile.nodes.iter().map(|n| n.index).max().unwrap_or(0) + 1;
    let record = NodeRecord {
        name: name.machine(index),
        role: if control_plane {
            NodeRole::Server
        } else {
            NodeRole::Agent
        },
        index,
        ip: None,
        api_port: None,
        ssh_port: None,
        api_url: None,
        machine: None,
    };
    let mut record = record;
    record.machine = machine;
    if control_plane && ssh {
        record.api_port = Some(crate::distro::k3s::API_PORT);
    } else if control_plane {
        let l = std::net::TcpListener::bind((std::net::IpAddr::from([127, 0, 0, 1]), 0))?;
        record.api_port = Some(l.local_addr()?.port());
    }
    // The driver knows the new node (ssh: its machine).
    let mut with_new = profile.clone();
    with_new.nodes.push(record.clone());
    let selected = drivers::for_profile(&with_new)?;
    let machines = selected.driver.capabilities().existing_machines;
    if !selected.driver.capabilities().container_nodes && !machines {
        bail!(UserError::new(
            format!(
                "adding nodes to a running {} cluster is not supported yet",
                profile.driver
            ),
            "create the cluster with the number of nodes you need (`--nodes`, `--control-planes`)",
        ));
    }
    let driver = selected.driver.clone();

    // A machine is checked before anything changes on it, and gets the profile's k3s (from
    // the cache) for its architecture.
    let mut install = None;
    if let Some(ssh) = &selected.ssh {
        let step = ctx.printer.step("checking the machine");
        let facts = ssh.preflight_of(std::slice::from_ref(&record.name)).await?;
        let arch: crate::artifact::Arch = match facts.values().next() {
            Some(f) => f.machine.parse()?,
            None => crate::artifact::Arch::host()?,
        };
        step.finish("The machine is ready for k3s");
        let cache = crate::artifact::ArtifactCache::new(ctx.home.cache());
        let version: crate::artifact::K3sVersion = profile.version.parse()?;
        let arts =
            crate::artifact::ensure_k3s(&cache, &sources, &version, arch, true, &ctx.printer)
                .await?;
        install = Some(arts);
    }
    profile.nodes.push(record.clone());
    ctx.store.save(&profile)?;
    let step = ctx.printer.step(&format!("adding node {}", record.name));
    let added = async {
        let mut spec = machine_spec(
            &profile,
            &record,
            &cluster_settings(&with_new),
            Some(&join_url(server_ip)),
            install.as_ref().and_then(|a| a.airgap.as_deref()),
        )?;
        if let (true, Some(arts)) = (machines, &install) {
            let plan = crate::distro::InstallPlan {
                files: spec.files.clone(),
                service: spec.service.clone().unwrap_or_default(),
            };
            spec.files
                .extend(super::vm::service_files(&plan, &arts.binary, record.role));
        }
        ensure_running(driver.as_ref(), &spec, &ctx.printer).await?;
        let ip = driver.ip(&record.name).await?;
        ready::wait(
            &api,
            WaitFor::Ready,
            &[record.name.to_string()],
            wait_timeout,
            &mut |_| {},
        )
        .await?;
        Ok::<_, anyhow::Error>(ip)
    }
    .await;
    match added {
        Ok(ip) => {
            record_ip(&mut profile, &record.name, ip);
            ctx.store.save(&profile)?;
            step.finish(&format!(
                "Node {} ({}) joined, Ready ({ip})",
                record.name, record.role
            ));
            Ok(record.name)
        }
        Err(e) => {
            drop(step);
            // Leave the profile as it was: remove the half-added node.
            let _ = driver.delete(&record.name).await;
            profile.nodes.retain(|n| n.name != record.name);
            ctx.store.save(&profile)?;
            Err(e)
        }
    }
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
        bail!(UserError::new(
            format!(
                "`{node}` is the first server of profile `{name}`, which every other node joined"
            ),
            format!("delete the whole cluster with `timonel delete -p {name}`"),
        ));
    }
    let selected = drivers::for_profile(&profile)?;
    let step = ctx.printer.step(&format!("deleting node {node}"));
    if let Ok(creds) = saved_credentials(&ctx.store, &name) {
        let api = ApiClient::new(&creds, &creds.server)?;
        if let Err(e) = api.delete_node(node).await {
            ctx.printer.warn(&format!(
                "could not delete the Kubernetes Node object `{node}` ({e}); `kubectl delete node {node}` removes it"
            ));
        }
    }
    selected.driver.delete(&record.name).await?;
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
    let selected = drivers::for_profile(&profile)?;
    let states = futures_util::future::join_all(profile.nodes.iter().map(|n| {
        let driver = selected.driver.clone();
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
                .unwrap_or_else(|e| format!("unknown ({e})")),
            ip: n.ip.map(|i| i.to_string()),
            api_port: n.api_port,
        })
        .collect())
}
