//! Step 6b, balancer: with several servers, a load balancer in front of their API on the
//! listen address; the kubeconfig points at it, so losing a server (the first included) needs
//! nothing from the user. The driver's own where it makes one (`as_api_balancer`: Docker's
//! container), else `timonel-lb` as a process on this machine (`host_lb`: VMs, machines).

use std::net::SocketAddr;
use std::path::Path;

use timonel_driver::{ApiBalancer, BalancerSpec, Driver, NodeKind, NodeRole};

use super::{Run, StartOptions};
use crate::cluster::error::{Error, Result};
use crate::cluster::host_lb::{host_backends, HostBalancer};
use crate::cluster::Ctx;
use crate::distro::k3s;
use crate::profile::Profile;

/// Whether the new cluster gets a balancer; checks, before anything is created, that the
/// driver can make one (Docker: its program is found). A driver that cannot is an error with
/// what to do, never a cluster that only looks highly available.
pub(super) async fn ready(ctx: &Ctx, opts: &StartOptions, driver: &dyn Driver) -> Result<bool> {
    if opts.control_planes <= 1 {
        return Ok(false);
    }
    let Some(lb) = of(driver, &ctx.store.dir(&ctx.profile)) else {
        return Ok(false);
    };
    lb.get().balancer_ready().await?;
    Ok(true)
}

/// A cluster's balancer: the driver's own, or a process on this machine.
pub(crate) enum Balancer<'a> {
    Driver(&'a dyn ApiBalancer),
    Host(HostBalancer),
}

impl Balancer<'_> {
    pub(crate) fn get(&self) -> &dyn ApiBalancer {
        match self {
            Self::Driver(lb) => *lb,
            Self::Host(lb) => lb,
        }
    }

    /// The servers' addresses as this balancer reaches them: on the cluster network from the
    /// driver's, from this machine for the host process.
    fn backends(&self, profile: &Profile) -> Vec<SocketAddr> {
        match self {
            Self::Driver(_) => server_backends(profile),
            Self::Host(_) => host_backends(profile),
        }
    }
}

/// The balancer of a cluster on `driver` whose profile folder is `dir`: the driver's own
/// (`as_api_balancer`), else, for VMs and machines (reached from this machine), `timonel-lb`
/// as a host process; `None` for drivers with neither.
pub(crate) fn of<'a>(driver: &'a dyn Driver, dir: &Path) -> Option<Balancer<'a>> {
    match (driver.as_api_balancer(), driver.capabilities().nodes) {
        (Some(lb), _) => Some(Balancer::Driver(lb)),
        (None, NodeKind::Vm | NodeKind::Machine) => Some(Balancer::Host(HostBalancer::at(dir))),
        (None, NodeKind::Container) => None,
    }
}

/// Creates or starts the balancer with the servers' current addresses.
pub(super) async fn run(run: &mut Run<'_>) -> Result<()> {
    let Some(port) = run.profile.balancer_port else {
        return Ok(());
    };
    let driver = run.nodes.driver().clone();
    let dir = run.ctx.store.dir(&run.profile.name);
    let lb = of(driver.as_ref(), &dir).ok_or_else(|| {
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
        backends: lb.backends(&run.profile),
    };
    run.cancel
        .or_cancel(lb.get().ensure_balancer(&spec, printer))
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
pub(crate) async fn set_backends(driver: &dyn Driver, dir: &Path, profile: &Profile) -> Result<()> {
    if profile.balancer_port.is_none() {
        return Ok(());
    }
    if let Some(lb) = of(driver, dir) {
        lb.get()
            .set_backends(&profile.name, &lb.backends(profile))
            .await?;
    }
    Ok(())
}
