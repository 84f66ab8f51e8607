//! `pause` and `unpause`: every node of a cluster frozen in place (its processes get no CPU; its
//! memory, disks, addresses and ports stay) and thawed again, without a restart. The driver does
//! the freezing (`Driver::pause`); this is the whole-cluster view: all nodes or none, agents
//! frozen before servers and servers thawed before agents, idempotent, a stopped cluster refused.
//!
//! Nothing is recorded in the profile: whether a cluster is paused is read from its nodes, so a
//! node paused or unpaused behind timonel's back is seen as it is.

use std::time::Duration;

use timonel_driver::{Driver, MachineName, MachineState, NodeRole};

use super::cancel::Cancel;
use super::ctx::Ctx;
use super::error::Result;
use crate::error::UserError;
use crate::profile::{Phase, Profile};

/// How long `unpause` waits for the API server to answer again.
const API_WAIT: Duration = Duration::from_secs(60);

/// What `pause`/`unpause` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseOutcome {
    /// These nodes changed.
    Changed(Vec<MachineName>),
    /// Every node was already so: nothing ran.
    Already,
}

/// Pauses every node of the profile. A node that is not running (or paused) refuses the whole
/// pause before any node changes.
pub async fn pause(ctx: &Ctx) -> anyhow::Result<PauseOutcome> {
    change_cluster(ctx, true, None).await
}

/// Unpauses every paused node of the profile, then waits (up to a minute, or until `cancel`)
/// for the API server to answer again.
pub async fn unpause(ctx: &Ctx, cancel: &Cancel) -> anyhow::Result<PauseOutcome> {
    change_cluster(ctx, false, Some(cancel)).await
}

/// `pause` (`to_paused`) or `unpause`; `wait` is where an unpause waits for the API server.
async fn change_cluster(
    ctx: &Ctx,
    to_paused: bool,
    wait: Option<&Cancel>,
) -> anyhow::Result<PauseOutcome> {
    let _lock = ctx.lock_profile()?;
    let profile = ctx.store.load(&ctx.profile)?;
    let driver = ctx.driver_for(&profile)?;
    let todo = nodes_to_change(&profile, driver.as_ref(), to_paused).await?;
    let name = &profile.name;
    if todo.is_empty() {
        ctx.printer.info(&if to_paused {
            format!("profile `{name}` is already paused")
        } else {
            format!("profile `{name}` is not paused; nothing to do")
        });
        return Ok(PauseOutcome::Already);
    }
    let n = todo.len();
    let verb = if to_paused { "pausing" } else { "unpausing" };
    let step = ctx.printer.step(&format!("{verb} {n} node(s)"));
    if to_paused {
        // Agents first: the servers they report to are the last to freeze.
        for role in [NodeRole::Agent, NodeRole::Server] {
            change(driver.as_ref(), &todo, role, true).await?;
        }
        step.finish(&format!(
            "Paused profile `{name}` ({n} node(s)); `timonel unpause -p {name}` lets it run on"
        ));
    } else {
        thaw(driver.as_ref(), &todo).await?;
        step.finish(&format!("Unpaused {n} node(s)"));
    }
    if let Some(cancel) = wait {
        wait_for_api(ctx, &profile, cancel).await;
    }
    Ok(PauseOutcome::Changed(names(&todo)))
}

/// For `start` on an existing profile: unpauses the nodes that are paused, saying so. Returns
/// how many there were.
pub(crate) async fn unpause_for_start(
    ctx: &Ctx,
    driver: &dyn Driver,
    profile: &Profile,
) -> Result<usize> {
    let mut paused = Vec::new();
    for (node, role, state) in node_states(profile, driver).await {
        if state? == MachineState::Paused {
            paused.push((node, role));
        }
    }
    if !paused.is_empty() {
        ctx.printer.info(&format!(
            "profile `{}` is paused: unpausing {} node(s)",
            profile.name,
            paused.len()
        ));
        thaw(driver, &paused).await?;
    }
    Ok(paused.len())
}

/// Refuses `what` (a change of the cluster's nodes) while a node of `profile` is paused: a
/// frozen API server would only make it time out.
pub(crate) async fn refuse_when_paused(
    driver: &dyn Driver,
    profile: &Profile,
    what: &str,
) -> Result<()> {
    for (node, _, state) in node_states(profile, driver).await {
        if matches!(state, Ok(MachineState::Paused)) {
            let name = &profile.name;
            return Err(UserError::new(
                format!("cannot {what}: profile `{name}` is paused (node `{node}` is frozen)"),
                format!("`timonel unpause -p {name}` first"),
            )
            .into());
        }
    }
    Ok(())
}

/// The nodes `pause` (`to_paused`) or `unpause` has to change, with their state; empty when
/// all are there already. Any other state refuses the command, naming the nodes.
async fn nodes_to_change(
    profile: &Profile,
    driver: &dyn Driver,
    to_paused: bool,
) -> Result<Vec<(MachineName, NodeRole)>> {
    let name = &profile.name;
    let verb = if to_paused { "pause" } else { "unpause" };
    if profile.phase == Phase::Creating {
        return Err(UserError::new(
            format!("cannot {verb} profile `{name}`: its `start` did not finish"),
            format!("`timonel start -p {name}` finishes it, `timonel delete -p {name}` removes it"),
        )
        .into());
    }
    let (from, to) = if to_paused {
        (MachineState::Running, MachineState::Paused)
    } else {
        (MachineState::Paused, MachineState::Running)
    };
    let mut todo = Vec::new();
    let mut refused = Vec::new();
    for (node, role, state) in node_states(profile, driver).await {
        let state = state?;
        if state == from {
            todo.push((node, role));
        } else if state != to {
            refused.push(format!("`{node}` is {state}"));
        }
    }
    if !refused.is_empty() {
        let stopped = profile.phase == Phase::Stopped;
        return Err(UserError::new(
            if stopped {
                format!("cannot {verb} profile `{name}`: it is stopped")
            } else {
                format!(
                    "cannot {verb} profile `{name}`: every node must be running or paused, and {}",
                    refused.join(", ")
                )
            },
            format!(
                "`timonel start -p {name}` starts it{}",
                if to_paused { ", then pause it" } else { "" }
            ),
        )
        .into());
    }
    Ok(todo)
}

/// A node, its role, and its state as the driver reports it.
type NodeState = (
    MachineName,
    NodeRole,
    std::result::Result<MachineState, timonel_driver::DriverError>,
);

/// Every node's state, asked at once, in the profile's order.
async fn node_states(profile: &Profile, driver: &dyn Driver) -> Vec<NodeState> {
    let states =
        futures_util::future::join_all(profile.nodes.iter().map(|n| driver.state(&n.name))).await;
    profile
        .nodes
        .iter()
        .zip(states)
        .map(|(n, s)| (n.name.clone(), n.role, s))
        .collect()
}

/// Servers first: the agents find their server running when they thaw.
async fn thaw(driver: &dyn Driver, todo: &[(MachineName, NodeRole)]) -> Result<()> {
    for role in [NodeRole::Server, NodeRole::Agent] {
        change(driver, todo, role, false).await?;
    }
    Ok(())
}

/// Pauses or unpauses the nodes of `todo` that have `role`, at once. Every node is tried; the
/// first error is returned.
async fn change(
    driver: &dyn Driver,
    todo: &[(MachineName, NodeRole)],
    role: NodeRole,
    to_paused: bool,
) -> Result<()> {
    let nodes = todo
        .iter()
        .filter(|(_, r)| *r == role)
        .map(|(n, _)| async move {
            if to_paused {
                driver.pause(n).await
            } else {
                driver.unpause(n).await
            }
        });
    for result in futures_util::future::join_all(nodes).await {
        result?;
    }
    Ok(())
}

fn names(todo: &[(MachineName, NodeRole)]) -> Vec<MachineName> {
    todo.iter().map(|(n, _)| n.clone()).collect()
}

/// Waits until an API server of the profile answers (ready), saying so; a warning past
/// [`API_WAIT`], nothing when interrupted.
async fn wait_for_api(ctx: &Ctx, profile: &Profile, cancel: &Cancel) {
    let Ok(creds) = super::saved_credentials(&ctx.store, &profile.name) else {
        return;
    };
    let step = ctx.printer.step("waiting for the API server");
    let answered = cancel
        .or_cancel(timonel_driver::poll_until(
            "the API server to answer",
            API_WAIT,
            Duration::from_millis(250),
            || async {
                Ok::<_, std::convert::Infallible>(match super::live_api(profile, &creds).await {
                    Some((_, url)) => Ok(url),
                    None => Err("not answering".to_string()),
                })
            },
        ))
        .await;
    match answered {
        Ok(Ok(url)) => {
            step.finish(&format!("The API server answers at {url}"));
        }
        Ok(Err(_)) => {
            drop(step);
            ctx.printer.warn(&format!(
                "the API server did not answer within {}s of the unpause; `timonel status -p {}` shows what runs",
                API_WAIT.as_secs(),
                profile.name
            ));
        }
        Err(_) => drop(step),
    }
}
