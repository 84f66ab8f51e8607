//! Step 4b, balancer: with several servers on a driver that makes one (Docker), a load
//! balancer in front of their API, published on the listen address; the kubeconfig points at
//! it, so losing a server (the first included) needs nothing from the user. Drivers without one
//! (VMs, machines) keep each server's own URL and fail over with `kubeconfig --merge`.

use std::net::SocketAddr;

use timonel_driver::{BalancerSpec, Driver, NodeRole};

use super::{Run, StartOptions};
use crate::cluster::error::{Error, Result};
use crate::cluster::Ctx;
use crate::distro::k3s;
use crate::profile::Profile;

/// Whether the new cluster gets a balancer; checks, before anything is created, that the
/// driver can make one (Docker: its program is found). A driver that cannot is an error with
/// what to do, never a cluster that only looks highly available.
pub(super) async fn ready(_ctx: &Ctx, opts: &StartOptions, driver: &dyn Driver) -> Result<bool> {
    if opts.control_planes <= 1 {
        return Ok(false);
    }
    let Some(lb) = driver.as_api_balancer() else {
        return Ok(false);
    };
    lb.balancer_ready().await?;
    Ok(true)
}

/// Creates or starts the balancer with the servers' current addresses.
pub(super) async fn run(run: &mut Run<'_>) -> Result<()> {
    let Some(port) = run.profile.balancer_port else {
        return Ok(());
    };
    let driver = run.nodes.driver().clone();
    let lb = driver.as_api_balancer().ok_or_else(|| {
        Error::internal(format!(
            "profile `{}` has a load balancer, and the {} driver makes none",
            run.profile.name, run.profile.driver
        ))
    })?;
    let printer = &run.ctx.printer;
    let step = printer.step("starting the API load balancer");
    let spec = BalancerSpec {
        cluster: run.profile.name.clone(),
        owner: Some(run.ctx.home_id()?),
        host_ip: run.profile.listen_address,
        host_port: port,
        backends: server_backends(&run.profile),
    };
    run.cancel
        .or_cancel(lb.ensure_balancer(&spec, printer))
        .await??;
    step.finish(&format!(
        "API load balancer on {} ({} server(s) behind it)",
        run.profile.balancer_url().unwrap_or_default(),
        spec.backends.len()
    ));
    run.cancel.check()?;
    Ok(())
}

/// The servers' API addresses on the cluster network (those whose address is known).
pub(crate) fn server_backends(profile: &Profile) -> Vec<SocketAddr> {
    profile
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Server)
        .filter_map(|n| n.ip)
        .map(|ip| SocketAddr::new(ip, k3s::API_PORT))
        .collect()
}

/// Gives the balancer, when the profile has one, the servers of `profile` (after a server was
/// added or before one is deleted).
pub(crate) async fn set_backends(driver: &dyn Driver, profile: &Profile) -> Result<()> {
    if profile.balancer_port.is_none() {
        return Ok(());
    }
    if let Some(lb) = driver.as_api_balancer() {
        lb.set_backends(&profile.name, &server_backends(profile))
            .await?;
    }
    Ok(())
}
