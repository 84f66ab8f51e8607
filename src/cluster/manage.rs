//! `stop`, `delete`, `status`, `ip`, `kubeconfig`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;
use timonel_driver::{ClusterName, DriverKind, MachineState};

use super::ctx::Ctx;
use super::{saved_credentials, KUBECONFIG_FILE};
use crate::distro::ready::ApiClient;
use crate::drivers;
use crate::error::UserError;
use crate::kubeconfig::{self, MergeOptions};
use crate::profile::{Phase, ProfileError};

/// Stops every node; data, addresses and ports are kept for the next `start`.
pub async fn stop(ctx: &Ctx, timeout: Duration) -> anyhow::Result<()> {
    let _lock = ctx.lock_profile()?;
    let mut profile = ctx.store.load(&ctx.profile)?;
    let driver = ctx.driver_for(&profile)?;
    let step = ctx
        .printer
        .step(&format!("stopping {} node(s)", profile.nodes.len()));
    stop_nodes(&driver, &profile, timeout).await?;
    let dir = ctx.store.dir(&profile.name);
    if let (Some(_), Some(lb)) = (
        profile.balancer_port,
        super::start::balancer_of(driver.as_ref(), &dir),
    ) {
        lb.get().stop_balancer(&profile.name).await?;
    }
    step.finish(&format!("Stopped profile `{}`", profile.name));
    profile.phase = Phase::Stopped;
    ctx.store.save(&profile)?;
    Ok(())
}

/// Deletes the profile's nodes and everything labelled with it, our kubeconfig entries, and the
/// profile folder. Works when the profile file is missing or damaged.
pub async fn delete(ctx: &Ctx, kubeconfig_flag: Option<&Path>) -> anyhow::Result<()> {
    let _lock = ctx.lock_profile()?;
    delete_one(ctx, &ctx.profile, Some(kubeconfig_flag)).await
}

/// Deletes a cluster that was never merged into a kubeconfig (`timonel run`): its nodes,
/// everything labelled with it and its profile; no kubeconfig file is read or written.
pub async fn delete_standalone(ctx: &Ctx) -> anyhow::Result<()> {
    let _lock = ctx.lock_profile()?;
    delete_one(ctx, &ctx.profile, None).await
}

/// `kubeconfig`: `Some(--kubeconfig)` removes our entries from that file (default: the one
/// `start` used); `None` touches no kubeconfig.
async fn delete_one(
    ctx: &Ctx,
    name: &ClusterName,
    kubeconfig: Option<Option<&Path>>,
) -> anyhow::Result<()> {
    let profile = match ctx.store.try_load(name) {
        Ok(p) => p,
        // A newer timonel's cluster: this build cannot know all it made, and must not remove
        // (or rewrite) the file that says.
        Err(e @ ProfileError::TooNew { .. }) => return Err(e.into()),
        Err(e) => {
            ctx.printer.warn(&format!("{e}; deleting by labels"));
            None
        }
    };
    // A host-process load balancer (VMs, machines) first: it is recorded in the profile's
    // folder, which goes below.
    super::host_lb::HostBalancer::at(ctx.store.dir(name)).stop()?;
    let kinds: Vec<DriverKind> = match &profile {
        Some(p) => vec![p.driver],
        None => drivers::label_capable(),
    };
    let step = ctx.printer.step(&format!("deleting profile `{name}`"));
    let mut removed = Vec::new();
    for kind in kinds {
        let driver = match &profile {
            Some(p) => ctx.driver_for(p)?,
            None => ctx.driver_of(kind)?,
        };
        if profile.is_none() && !driver.probe().await.is_ready() {
            continue;
        }
        let nodes = super::node::ops(driver, &ctx.home);
        removed.extend(nodes.remove_cluster(name).await?);
    }
    let outcome = match kubeconfig {
        Some(flag) => {
            let path = super::kubeconfig_target(profile.as_ref(), flag)?;
            kubeconfig::remove(&path, name.as_str(), &Default::default())?
        }
        None => kubeconfig::RemoveOutcome::nothing(),
    };
    let existed = profile.is_some() || ctx.store.dir(name).exists();
    // VM nodes' disks and seeds live outside the profile folder (a profile whose driver could
    // not be asked leaves them too).
    let machines = ctx.home.root().join("machines").join(name.as_str());
    if let Err(e) = std::fs::remove_dir_all(&machines) {
        if e.kind() != std::io::ErrorKind::NotFound {
            ctx.printer
                .warn(&format!("could not remove `{}`: {e}", machines.display()));
        }
    }
    ctx.store.remove(name)?;
    if removed.is_empty() && !existed && outcome.nothing_removed() {
        drop(step);
        ctx.printer.info(&format!(
            "profile `{name}` does not exist; nothing to delete"
        ));
    } else {
        step.finish(&format!(
            "Deleted profile `{name}` ({} resource(s))",
            removed.len()
        ));
    }
    Ok(())
}

/// Deletes every profile of this home, and clusters this home created whose profile files are
/// gone (by label). Clusters other homes created on a shared Docker daemon, and unlabelled ones
/// from older versions, are listed and left unless `include_foreign`. Profiles a newer timonel
/// wrote are left alone (see `delete_one`), and said so at the end.
pub async fn delete_all(ctx: &Ctx, purge: bool, include_foreign: bool) -> anyhow::Result<()> {
    let mut names: Vec<ClusterName> = Vec::new();
    let mut too_new: Vec<String> = Vec::new();
    for (raw, loaded) in ctx.store.list() {
        match loaded {
            Err(e @ ProfileError::TooNew { .. }) => {
                ctx.printer
                    .warn(&format!("not deleting profile `{raw}`: {e}"));
                too_new.push(raw);
            }
            _ => names.extend(raw.parse::<ClusterName>().ok()),
        }
    }
    // A home whose id cannot be read or made (read-only) owns no orphans: they are only listed.
    let home = ctx.home.id().ok();
    let mut left = Vec::new();
    for (cluster, homes) in drivers::clusters_by_home().await {
        if names.contains(&cluster) || too_new.iter().any(|n| n == cluster.as_str()) {
            continue;
        }
        let ours = home.is_some() && homes.iter().all(|h| *h == home);
        if ours {
            ctx.printer
                .info(&format!("found cluster `{cluster}` with no profile"));
        } else if include_foreign {
            ctx.printer.info(&format!(
                "found cluster `{cluster}` of {} (--include-foreign)",
                describe_homes(&homes)
            ));
        } else {
            left.push(format!("`{cluster}` ({})", describe_homes(&homes)));
            continue;
        }
        names.push(cluster);
    }
    for name in &names {
        let _lock = crate::lock::acquire(
            &ctx.home.locks(),
            name.as_str(),
            Duration::from_secs(300),
            &mut |h| {
                ctx.printer
                    .warn(&format!("profile `{name}` is in use by {h}; waiting"))
            },
        )?;
        delete_one(ctx, name, Some(None)).await?;
    }
    if names.is_empty() && too_new.is_empty() {
        ctx.printer.info("no profiles to delete");
    }
    if !left.is_empty() {
        ctx.printer.info(&format!(
            "left {} cluster(s) this home did not create: {}; `timonel delete -p NAME` removes one, `timonel delete --all --include-foreign` all of them",
            left.len(),
            left.join(", ")
        ));
    }
    if !too_new.is_empty() {
        bail!(UserError::new(
            format!(
                "kept profile(s) {} written by a newer timonel{}",
                too_new.join(", "),
                if purge {
                    ", and did not purge the home"
                } else {
                    ""
                }
            ),
            "delete them with the newer timonel that made them, or upgrade this one",
        ));
    }
    if purge {
        match std::fs::remove_dir_all(ctx.home.root()) {
            Ok(()) => ctx
                .printer
                .done(&format!("Removed {}", ctx.home.root().display()), None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot remove `{}`: {e}", ctx.home.root().display()),
        }
    }
    Ok(())
}

/// Who made a cluster found on the daemon, for people.
fn describe_homes(homes: &std::collections::BTreeSet<Option<String>>) -> String {
    let ids: Vec<&str> = homes
        .iter()
        .flatten()
        .map(|h| &h[..h.len().min(8)])
        .collect();
    match (ids.is_empty(), homes.contains(&None)) {
        (true, _) => "unlabelled: made by an older timonel".to_string(),
        (false, false) => format!("another timonel home, id {}…", ids.join("…, ")),
        (false, true) => format!(
            "another timonel home, id {}…, and unlabelled objects",
            ids.join("…, ")
        ),
    }
}

/// The address of a node on its network.
pub async fn ip(ctx: &Ctx, node: Option<&str>) -> anyhow::Result<std::net::IpAddr> {
    let profile = ctx.store.load(&ctx.profile)?;
    let record = super::pick_node(&profile, node)?;
    let driver = ctx.driver_for(&profile)?;
    match driver.ip(&record.name).await {
        Ok(ip) => Ok(ip),
        Err(e) => {
            let state = driver.state(&record.name).await.ok();
            match state {
                Some(s) if !s.is_running() => bail!(UserError::new(
                    format!("node `{}` is {s}, so it has no address", record.name),
                    format!("start it with `timonel start -p {}`", profile.name),
                )),
                _ => Err(e.into()),
            }
        }
    }
}

/// What `status` reports for one node.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    /// The machine: running, stopped, not created, …
    pub host: String,
    /// The distribution's process in the node.
    pub k3s: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Kubernetes' view of the node: Ready, NotReady, unknown; for a node an interrupted
    /// `node add` left, what finishes it.
    pub kubernetes: String,
    /// An interrupted `node add` left the node unfinished.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub profile: String,
    pub driver: String,
    pub version: String,
    /// The cluster as a whole, from its nodes: `running`, `paused`, `partly paused`,
    /// `stopped`, or `degraded` (some nodes down).
    pub state: String,
    /// `ready`, `not ready`, `unreachable`, or `paused` (every server is paused: not asked).
    pub api: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Host folders in the nodes (`--mount`), as `HOST:NODE[:ro]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// The load balancer in front of several servers' API, when the cluster has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<BalancerRow>,
    pub nodes: Vec<NodeStatus>,
}

/// What `status` reports of the API load balancer.
#[derive(Debug, Serialize)]
pub struct BalancerRow {
    /// running, stopped, not created, …
    pub state: String,
    /// Where the kubeconfig reaches it.
    pub url: String,
    /// The servers it sends connections to (`IP:PORT`: on the cluster network for Docker's
    /// container, as this machine reaches them for the host process).
    pub backends: Vec<String>,
}

impl StatusReport {
    /// The documented exit code: 0 all up, 2 paused (a node is paused, none is down; minikube
    /// also answers 2 for a paused cluster), 3 a node is not running, 4 nodes run but the API or
    /// a node is not ready.
    pub fn exit_code(&self) -> u8 {
        let balancer_down = self
            .load_balancer
            .as_ref()
            .is_some_and(|b| b.state != "running");
        if balancer_down
            || self
                .nodes
                .iter()
                .any(|n| n.host != "running" && n.host != "paused")
        {
            3
        } else if self.nodes.iter().any(|n| n.host == "paused") {
            2
        } else if self.api != "ready" || self.nodes.iter().any(|n| n.kubernetes != "Ready") {
            4
        } else {
            0
        }
    }
}

/// The state of every node and of the API, read live.
pub async fn status(ctx: &Ctx) -> anyhow::Result<StatusReport> {
    let profile = ctx.store.load(&ctx.profile)?;
    let driver = ctx.driver_for(&profile)?;
    let mut creds = saved_credentials(&ctx.store, &profile.name).ok();
    let lb_dir = ctx.store.dir(&profile.name);
    let node_states = futures_util::future::join_all(profile.nodes.iter().map(|n| {
        let driver = driver.clone();
        let name = n.name.clone();
        async move { driver.state(&name).await }
    }));
    // The nodes, the load balancer and the API are asked at once; but a paused API server would
    // only time out, so its answer is not awaited when every server is paused.
    let (states, load_balancer, (api_state, server, ready)) = {
        let mut api = std::pin::pin!(api_status(&profile, creds.as_ref()));
        let nodes_and_balancer = std::pin::pin!(async {
            tokio::join!(
                node_states,
                balancer_row(driver.as_ref(), &lb_dir, &profile)
            )
        });
        let ((states, load_balancer), early) =
            match futures_util::future::select(nodes_and_balancer, api.as_mut()).await {
                futures_util::future::Either::Left((both, _)) => (both, None),
                futures_util::future::Either::Right((answer, rest)) => (rest.await, Some(answer)),
            };
        let servers_paused = profile
            .nodes
            .iter()
            .zip(&states)
            .filter(|(n, _)| n.role == timonel_driver::NodeRole::Server)
            .all(|(_, s)| matches!(s, Ok(MachineState::Paused)));
        let api = if servers_paused {
            ("paused", None, None)
        } else if let Some(answer) = early {
            answer
        } else {
            api.await
        };
        (states, load_balancer, api)
    };
    if let (Some(c), Some(url)) = (creds.as_mut(), server) {
        c.server = url;
    }
    let mut nodes = Vec::new();
    for (record, state) in profile.nodes.iter().zip(states) {
        let state = state.unwrap_or_else(|e| MachineState::Unknown { raw: e.to_string() });
        let running = state.is_running();
        let kubernetes = match (&ready, running) {
            (Some(Ok(ready)), true) => match ready.get(record.name.as_str()) {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".to_string(),
                None => "not registered".to_string(),
            },
            _ => "unknown".to_string(),
        };
        let kubernetes = if record.pending {
            format!("{kubernetes}; pending: `timonel node add` finishes it")
        } else {
            kubernetes
        };
        nodes.push(NodeStatus {
            name: record.name.to_string(),
            role: record.role.to_string(),
            host: state.to_string(),
            // In a container node the distribution is the container's main process.
            k3s: match &state {
                MachineState::Running => "running".into(),
                // Frozen with the node: it goes on where it was on unpause.
                MachineState::Paused => "paused".into(),
                MachineState::Stopped | MachineState::NotCreated | MachineState::Suspended => {
                    "stopped".into()
                }
                // The backend cannot say (e.g. the Docker daemon is down).
                _ => "unknown".into(),
            },
            ip: record.ip.map(|i| i.to_string()),
            kubernetes,
            pending: record.pending,
        });
    }
    Ok(StatusReport {
        profile: profile.name.to_string(),
        driver: profile.driver.to_string(),
        version: profile.version.clone(),
        state: cluster_state(&nodes).to_string(),
        api: api_state.to_string(),
        api_server: creds.map(|c| c.server),
        mounts: profile.mounts.iter().map(ToString::to_string).collect(),
        load_balancer,
        nodes,
    })
}

/// The cluster's state from its nodes' (`host` of each [`NodeStatus`]).
fn cluster_state(nodes: &[NodeStatus]) -> &'static str {
    let all = |f: &dyn Fn(&str) -> bool| nodes.iter().all(|n| f(&n.host));
    if all(&|h| h == "running") {
        "running"
    } else if all(&|h| h == "paused") {
        "paused"
    } else if all(&|h| h == "running" || h == "paused") {
        "partly paused"
    } else if all(&|h| h == "stopped" || h == "not created") {
        "stopped"
    } else {
        "degraded"
    }
}

/// The load balancer's state and backends, when the profile has one.
async fn balancer_row(
    driver: &dyn timonel_driver::Driver,
    dir: &Path,
    profile: &crate::profile::Profile,
) -> Option<BalancerRow> {
    let url = profile.balancer_url()?;
    let found = match super::start::balancer_of(driver, dir) {
        Some(lb) => lb.get().balancer(&profile.name).await,
        None => Ok(None),
    };
    let (state, backends) = match found {
        Ok(Some(b)) => (b.state, b.backends),
        Ok(None) => (MachineState::NotCreated, Vec::new()),
        Err(e) => (MachineState::Unknown { raw: e.to_string() }, Vec::new()),
    };
    Some(BalancerRow {
        state: state.to_string(),
        url,
        backends: backends.iter().map(ToString::to_string).collect(),
    })
}

/// `timonel kubeconfig`: the profile's standalone kubeconfig; with `merge`, merged again into
/// the user's file.
pub async fn kubeconfig_cmd(
    ctx: &Ctx,
    merge: bool,
    path: Option<&Path>,
    keep_context: bool,
) -> anyhow::Result<String> {
    let profile = ctx.store.load(&ctx.profile)?;
    let file = ctx.store.dir(&profile.name).join(KUBECONFIG_FILE);
    if merge {
        let _lock = ctx.lock_profile()?;
        let mut creds = saved_credentials(&ctx.store, &profile.name)?;
        if let Some((_, url)) = super::live_api(&profile, &creds).await {
            if url != creds.server {
                ctx.printer.warn(&format!(
                    "the API at {} does not answer; pointing the context at {url}",
                    creds.server
                ));
                creds.server = url;
                crate::fsutil::atomic_write(
                    &file,
                    kubeconfig::standalone(profile.name.as_str(), &creds).as_bytes(),
                    0o600,
                )?;
            }
        }
        let target = super::kubeconfig_target(Some(&profile), path)?;
        kubeconfig::merge(
            &target,
            profile.name.as_str(),
            &creds,
            &MergeOptions {
                set_current: !keep_context,
                ..Default::default()
            },
        )?;
        ctx.printer.done(
            &format!(
                "Merged context `{}` into {}",
                profile.name,
                target.display()
            ),
            None,
        );
    }
    std::fs::read_to_string(&file).map_err(|e| {
        anyhow!(UserError::new(
            format!("profile `{}` has no kubeconfig yet ({e})", profile.name),
            format!("`timonel start -p {}` writes it", profile.name),
        ))
    })
}

/// What the API server says: `ready` (with the URL that answered and the nodes' readiness),
/// `not ready`, or `unreachable`.
async fn api_status(
    profile: &crate::profile::Profile,
    creds: Option<&crate::kubeconfig::ClusterCredentials>,
) -> (
    &'static str,
    Option<String>,
    Option<Result<std::collections::BTreeMap<String, bool>, String>>,
) {
    let Some(creds) = creds else {
        return ("unreachable", None, None);
    };
    if let Some((api, url)) = super::live_api(profile, creds).await {
        return ("ready", Some(url), Some(api.nodes_ready().await));
    }
    // Nothing answers ready: tell "not ready" (answers) from "unreachable".
    let answers = match ApiClient::new(creds, &creds.server) {
        Ok(a) => a.api_ready().await.is_ok(),
        Err(_) => false,
    };
    (
        if answers { "not ready" } else { "unreachable" },
        None,
        None,
    )
}

/// Stops every node of `profile`, agents first.
async fn stop_nodes(
    driver: &std::sync::Arc<dyn timonel_driver::Driver>,
    profile: &crate::profile::Profile,
    timeout: Duration,
) -> anyhow::Result<()> {
    let tasks = profile.nodes.iter().rev().map(|n| {
        let driver = driver.clone();
        let name = n.name.clone();
        async move {
            driver
                .stop(&name, timonel_driver::StopMode::graceful(timeout))
                .await
        }
    });
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}
