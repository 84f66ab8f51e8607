//! `timonel addons list|enable|disable`: k3s's packaged components, switched with `disable:` in
//! each server's config.yaml. The profile's `disable` list is the truth: a resume or a recreated
//! node gets its config.yaml from it, and `enable`/`disable` rewrite the servers' config.yaml
//! from it and restart the servers so k3s applies the change (k3s removes a component it is told
//! to disable and deploys one no longer disabled).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use timonel_driver::{FilePlacement, NodeRole, StopMode};

use super::ctx::Ctx;
use super::saved_credentials;
use super::spec::{cluster_settings, join_url, machine_spec};
use crate::distro::k3s;
use crate::distro::ready::{self, ApiClient, WaitFor};
use crate::error::UserError;
use crate::profile::{NodeRecord, Phase, Profile};

/// The components, with what they do. (k3s's `runtimes` is not an addon: it only registers
/// RuntimeClasses.)
pub const ADDONS: &[(&str, &str)] = &[
    ("traefik", "ingress controller (Traefik)"),
    (
        "servicelb",
        "LoadBalancer services on the nodes' ports (ServiceLB/Klipper)",
    ),
    (
        "metrics-server",
        "resource metrics for `kubectl top` and autoscaling",
    ),
    (
        "local-storage",
        "the default StorageClass (local-path provisioner)",
    ),
    ("coredns", "cluster DNS"),
];

/// One line of `addons list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddonRow {
    pub name: String,
    pub enabled: bool,
    pub description: String,
}

/// Every addon and whether the profile has it.
pub fn addon_rows(profile: &Profile) -> Vec<AddonRow> {
    ADDONS
        .iter()
        .map(|(name, description)| AddonRow {
            name: name.to_string(),
            enabled: !profile.disable.iter().any(|d| d == name),
            description: description.to_string(),
        })
        .collect()
}

fn check_name(name: &str) -> Result<&'static str, UserError> {
    ADDONS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == name)
        .ok_or_else(|| {
            UserError::new(
                format!("`{name}` is not an addon timonel knows"),
                format!(
                    "the addons are: {}",
                    ADDONS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// The `disable` list with `addon` switched on or off, in k3s's documented order.
pub fn switched(disable: &[String], addon: &str, enable: bool) -> Vec<String> {
    let mut out: Vec<String> = disable.iter().filter(|d| *d != addon).cloned().collect();
    if !enable {
        out.push(addon.to_string());
    }
    out.sort_by_key(|d| k3s::DISABLEABLE.iter().position(|x| x == d));
    out
}

/// config.yaml of a server of `profile`, exactly as `start` writes it.
fn server_config(profile: &Profile, node: &NodeRecord) -> anyhow::Result<FilePlacement> {
    let first = profile
        .server()
        .ok_or_else(|| anyhow!("profile `{}` has no server node", profile.name))?;
    let join = if first.name == node.name {
        None
    } else {
        let ip = first
            .ip
            .ok_or_else(|| anyhow!("the address of server `{}` is not known", first.name))?;
        Some(join_url(ip))
    };
    let spec = machine_spec(
        profile,
        node,
        &cluster_settings(profile),
        join.as_deref(),
        None,
    )?;
    spec.files
        .into_iter()
        .find(|f| f.path == k3s::CONFIG_PATH)
        .ok_or_else(|| anyhow!("the install plan of `{}` has no config.yaml", node.name))
}

/// Turns `addon` on or off. Returns false when it already was.
pub async fn set_addon(
    ctx: &Ctx,
    addon: &str,
    enable: bool,
    wait_timeout: Duration,
) -> anyhow::Result<bool> {
    let addon = check_name(addon)?;
    let _lock = ctx.lock_profile()?;
    let mut profile = ctx.store.load(&ctx.profile)?;
    let name = profile.name.clone();
    let enabled = !profile.disable.iter().any(|d| d == addon);
    if enabled == enable {
        return Ok(false);
    }
    let disable = switched(&profile.disable, addon, enable);
    if profile.phase == Phase::Creating {
        bail!(UserError::new(
            format!("profile `{name}` is still being created (or its `start` did not finish)"),
            format!("run `timonel start -p {name}` first"),
        ));
    }
    let mut changed = profile.clone();
    changed.disable = disable;
    let servers: Vec<NodeRecord> = changed
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Server)
        .cloned()
        .collect();
    // Everything that can fail on our side, before a node is touched.
    let configs = servers
        .iter()
        .map(|s| server_config(&changed, s))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let ops = super::node::ops(ctx.driver_for(&profile)?, &ctx.home);
    let driver = ops.driver().clone();
    let running = profile.phase == Phase::Running;
    let verb = if enable { "enabling" } else { "disabling" };
    // config.yaml first (k3s reads it only when it starts; a stopped container takes files
    // too), then the profile, then the restart: every step leaves the profile and the nodes
    // agreeing on the next start.
    for (server, config) in servers.iter().zip(configs) {
        let access = ops
            .access(&profile, server, Duration::from_secs(60))
            .await?;
        access
            .copy_in(&[config])
            .await
            .with_context(|| format!("cannot write the k3s configuration of {}", server.name))?;
    }
    profile.disable = changed.disable.clone();
    ctx.store.save(&profile)?;
    if !running {
        ctx.printer.info(&format!(
            "profile `{name}` is stopped: the change applies when it starts (`timonel start -p {name}`)"
        ));
        return Ok(true);
    }
    let step = ctx.printer.step(&format!(
        "{verb} {addon}: restarting {} server(s)",
        servers.len()
    ));
    // All servers together: some settings must match on every server.
    let stops = servers.iter().map(|s| {
        let driver = driver.clone();
        async move {
            driver
                .stop(&s.name, StopMode::graceful(Duration::from_secs(30)))
                .await
        }
    });
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    let starts = servers.iter().map(|s| {
        let driver = driver.clone();
        async move { driver.start(&s.name).await }
    });
    for r in futures_util::future::join_all(starts).await {
        r.with_context(|| {
            format!("the servers did not start again; `timonel start -p {name}` retries")
        })?;
    }
    let creds = saved_credentials(&ctx.store, &name)?;
    let api = ApiClient::new(&creds, &creds.server)?;
    let nodes: Vec<String> = profile.nodes.iter().map(|n| n.name.to_string()).collect();
    let waited = ready::wait(&api, WaitFor::Ready, &nodes, wait_timeout, &mut |s| {
        timonel_driver::Reporter::step(&ctx.printer, s)
    })
    .await;
    if let Err(e) = waited {
        drop(step);
        if let Some(first) = servers.first() {
            let logs = ops.logs(&profile, first, 20).await.unwrap_or_default();
            if !logs.is_empty() {
                ctx.printer.info(&format!(
                    "last lines of the k3s log on {}:\n{logs}",
                    first.name
                ));
            }
        }
        return Err(e.into());
    }
    step.finish(&format!(
        "{} {addon} (servers restarted, cluster ready)",
        if enable { "Enabled" } else { "Disabled" }
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_keeps_the_list_tidy() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(switched(&d(&[]), "traefik", false), d(&["traefik"]));
        assert_eq!(
            switched(&d(&["traefik"]), "servicelb", false),
            d(&["servicelb", "traefik"])
        );
        assert_eq!(
            switched(&d(&["traefik", "servicelb"]), "traefik", true),
            d(&["servicelb"])
        );
        assert_eq!(
            switched(&d(&["traefik"]), "traefik", false),
            d(&["traefik"])
        );
        assert!(check_name("trafik")
            .unwrap_err()
            .hint
            .unwrap()
            .contains("traefik"));
        assert!(check_name("runtimes").is_err());
    }
}
