//! Step 1, plan: which driver, whether the machines can take k3s (drivers with a preflight),
//! whether the nodes' host has the CPUs, memory and disk asked for, and the profile — roles,
//! ports, settings — saved before anything is created.

use std::net::IpAddr;

use timonel_driver::{Driver, DriverKind, NodeRole};

use super::artifacts::Fetched;
use super::StartOptions;
use crate::artifact::Arch;
use crate::cluster::cancel::Cancel;
use crate::cluster::error::{Error, Result};
use crate::cluster::Ctx;
use crate::distro::k3s;
use crate::drivers::Selected;
use crate::error::UserError;
use crate::profile::{now_unix, NodeRecord, Phase, Profile, SshSettings, SCHEMA};

/// The driver of a new cluster, with the ssh driver's settings when it is that one.
pub(super) async fn driver(
    ctx: &Ctx,
    opts: &StartOptions,
) -> Result<(Selected, Option<SshSettings>)> {
    let Some(ssh) = &opts.ssh else {
        if opts.driver == Some(DriverKind::Ssh) {
            return Err(UserError::new(
                format!("profile `{}` does not exist, and the ssh driver needs the machines to create it on", ctx.profile),
                "name each machine with --node user@host[:port], servers first",
            )
            .into());
        }
        return Ok((ctx.select_driver(opts.driver).await?, None));
    };
    if opts.node_image.is_some() || opts.vm_image.is_some() {
        return Err(UserError::new(
            "--node-image and --vm-image do not apply to the ssh driver: it installs k3s on the machines given with --node",
            "drop them",
        )
        .into());
    }
    let settings = ssh.settings();
    let nodes = ssh
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let i = i as u32 + 1;
            (ctx.profile.machine(i), m.clone(), role_of(i, opts))
        })
        .collect();
    Ok((ctx.ssh_driver(&settings, nodes), Some(settings)))
}

/// Refuses a new profile whose name another timonel home already uses on the shared Docker
/// daemon (or an older timonel left unlabelled): its nodes are not this home's to adopt.
pub(super) async fn not_foreign(ctx: &Ctx, driver: DriverKind) -> Result<()> {
    if driver != DriverKind::Docker {
        return Ok(());
    }
    let name = &ctx.profile;
    let homes = crate::drivers::clusters_by_home()
        .await
        .remove(name)
        .unwrap_or_default();
    let home = ctx.home_id()?;
    if homes.iter().all(|h| h.as_deref() == Some(home.as_str())) {
        return Ok(());
    }
    let who = if homes.iter().any(Option::is_some) {
        "another timonel home (another $TIMONEL_HOME, user or CI job sharing this daemon)"
    } else {
        "an older timonel (its objects carry no home label)"
    };
    Err(UserError::new(
        format!("the Docker daemon already has a cluster `{name}`, created by {who}, and this home has no profile for it"),
        format!("pick another name (`-p other`); `timonel delete -p {name}` removes that cluster if it is no longer used"),
    )
    .into())
}

/// The role of the `i`th node (1-based): servers first.
fn role_of(i: u32, opts: &StartOptions) -> NodeRole {
    if i <= opts.control_planes.max(1) {
        NodeRole::Server
    } else {
        NodeRole::Agent
    }
}

/// Refuses `--mount` on a driver that cannot share host folders, saying what to do instead.
pub(super) fn host_folders(opts: &StartOptions, driver: &dyn Driver) -> Result<()> {
    if opts.mounts.is_empty() {
        return Ok(());
    }
    match driver.host_folders() {
        timonel_driver::HostFolders::Unsupported { why, instead } => Err(UserError::new(
            format!(
                "--mount cannot be used with the {} driver: {why}",
                driver.kind()
            ),
            instead,
        )
        .into()),
        _ => Ok(()),
    }
}

/// Checks the machines of drivers that have a preflight, before anything changes on any, and
/// returns the architecture k3s is fetched for.
pub(super) async fn preflight(
    ctx: &Ctx,
    opts: &StartOptions,
    driver: &dyn Driver,
    cancel: &Cancel,
) -> Result<Arch> {
    if opts.node_image.is_some() && driver.as_node_images().is_none() {
        return Err(UserError::new(
            format!(
                "--node-image is a container image, and the {} driver runs VMs",
                driver.kind()
            ),
            "use --vm-image for VM drivers",
        )
        .into());
    }
    if driver.capabilities().nodes == timonel_driver::NodeKind::Container {
        let given: Vec<&str> = [
            opts.vm_image.is_some().then_some("--vm-image"),
            opts.disk_mib.is_some().then_some("--disk-size"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !given.is_empty() {
            return Err(UserError::new(
                format!(
                    "{} only apply to VM drivers, and the {} driver runs containers",
                    given.join(" and "),
                    driver.kind()
                ),
                "drop them, or choose a VM driver with --driver kvm|hyperv|virtualbox \
                 (containers share the host's disk; --node-image picks their image)",
            )
            .into());
        }
    }
    let Some(check) = driver.as_preflight() else {
        return Ok(Arch::host()?);
    };
    let step = ctx.printer.step(&format!(
        "checking {} machine(s)",
        opts.ssh.as_ref().map_or(0, |s| s.machines.len())
    ));
    let facts = cancel.or_cancel(check.preflight(&[])).await??;
    for (node, f) in &facts {
        for w in &f.warnings {
            ctx.printer.warn(&format!("{node}: {w}"));
        }
    }
    let arch: Arch = match facts.values().next() {
        Some(f) => f.arch.parse()?,
        None => Arch::host()?,
    };
    let oses: std::collections::BTreeSet<&str> = facts.values().map(|f| f.os.as_str()).collect();
    step.finish(&format!(
        "{} machine(s) ready for k3s ({}, {})",
        facts.len(),
        oses.into_iter().collect::<Vec<_>>().join(", "),
        arch.as_str()
    ));
    cancel.check()?;
    Ok(arch)
}

/// Refuses CPUs, memory or VM disks the nodes' host cannot give (and a Hyper-V switch for
/// another driver), before anything is fetched, built or created.
pub(super) async fn resources(ctx: &Ctx, opts: &StartOptions, driver: &dyn Driver) -> Result<()> {
    if opts.hyperv_switch.is_some() && driver.kind() != DriverKind::Hyperv {
        return Err(UserError::new(
            format!(
                "--hyperv-virtual-switch applies to the hyperv driver, not to {}",
                driver.kind()
            ),
            "drop it, or start with --driver hyperv",
        )
        .into());
    }
    let servers = opts.control_planes.max(1);
    let vm = driver.capabilities().nodes == timonel_driver::NodeKind::Vm;
    let request = crate::cluster::resources::Request {
        nodes: opts.nodes.max(servers),
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        disk_mib: vm.then(|| {
            opts.disk_mib
                .unwrap_or(crate::cluster::node::DEFAULT_DISK_MIB)
        }),
        adding: false,
    };
    crate::cluster::resources::check(ctx, driver, &request).await
}

/// The profile of a new cluster: nodes with their roles and ports, and the settings every
/// resume rebuilds the nodes' specs from.
pub(super) fn profile(
    ctx: &Ctx,
    opts: &StartOptions,
    driver: DriverKind,
    arts: &Fetched,
    node_image: Option<String>,
    ssh: Option<SshSettings>,
    ports: &Ports,
) -> Result<Profile> {
    let name = ctx.profile.clone();
    let servers = opts.control_planes.max(1);
    let total = opts.nodes.max(servers);
    let kubeconfig = match opts.standalone {
        true => None,
        false => Some(crate::cluster::kubeconfig_target(
            None,
            opts.kubeconfig.as_deref(),
        )?),
    };
    let mut env = opts.env.clone();
    env.extend(crate::cluster::spec::proxy_env(&name, total));
    Ok(Profile {
        schema: SCHEMA,
        name: name.clone(),
        driver,
        distribution: "k3s".to_string(),
        version: arts.version.clone(),
        node_image,
        vm_image: arts.vm_image.clone(),
        disk_mib: opts.disk_mib,
        hyperv_switch: opts.hyperv_switch.clone(),
        ssh_user: None,
        listen_address: opts.listen_address,
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        disable: opts.disable.clone(),
        env,
        ports: opts.ports.clone(),
        mounts: opts.mounts.clone(),
        ca_certs: opts.ca_certs.clone(),
        registry_mirrors: opts.registry_mirrors.clone(),
        k3s_args: opts.k3s_args.clone(),
        embedded_etcd: servers > 1,
        balancer_port: ports.balancer,
        docker_host: (driver == DriverKind::Docker)
            .then(timonel_driver_docker::DockerDriver::default_host),
        token: k3s::new_token(),
        kubeconfig,
        nodes: (1..=total)
            .map(|i| NodeRecord {
                name: name.machine(i),
                role: role_of(i, opts),
                index: i,
                ip: None,
                api_port: ports.api.get(i as usize - 1).copied(),
                ssh_port: ports.ssh.get(i as usize - 1).copied(),
                api_url: None,
                machine: opts
                    .ssh
                    .as_ref()
                    .and_then(|s| s.machines.get(i as usize - 1).cloned()),
                pending: false,
                unknown: Default::default(),
            })
            .collect(),
        ssh,
        phase: Phase::Creating,
        created_at: now_unix(),
        unknown: Default::default(),
    })
}

/// The host ports a new cluster publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Ports {
    /// One per server: its API on the listen address.
    pub api: Vec<u16>,
    /// One per node, for VMs reached through NAT: SSH forwarded from the host.
    pub ssh: Vec<u16>,
    /// The load balancer in front of several servers' API.
    pub balancer: Option<u16>,
}

/// Picks the ports for `opts`'s nodes on a driver whose nodes are `kind`; `balanced`: the
/// servers get a load balancer, whose port is `--apiserver-port` then.
pub(super) fn ports(
    opts: &StartOptions,
    kind: timonel_driver::NodeKind,
    balanced: bool,
) -> Result<Ports> {
    use timonel_driver::NodeKind;
    let servers = opts.control_planes.max(1) as usize;
    if balanced {
        let mut api = free_ports(opts.listen_address, servers + 1, opts.apiserver_port)
            .map_err(|e| Error::io("cannot find free ports for the API server", e))?;
        let balancer = api.remove(0);
        if kind == NodeKind::Machine {
            // The API is served on the machines themselves; only the balancer is here.
            api = vec![k3s::API_PORT; servers];
        }
        let ssh = match kind {
            NodeKind::Vm => free_ports(
                opts.listen_address,
                (opts.nodes as usize).max(servers),
                None,
            )
            .map_err(|e| Error::io("cannot find free ports for SSH", e))?,
            _ => Vec::new(),
        };
        return Ok(Ports {
            api,
            ssh,
            balancer: Some(balancer),
        });
    }
    let total = (opts.nodes as usize).max(servers);
    let io = |what: &str| {
        let what = what.to_string();
        move |e| Error::io(what, e)
    };
    Ok(match kind {
        // The API is served on the machines themselves.
        NodeKind::Machine => Ports {
            api: vec![k3s::API_PORT; servers],
            ssh: Vec::new(),
            balancer: None,
        },
        NodeKind::Container => Ports {
            api: free_ports(opts.listen_address, servers, opts.apiserver_port)
                .map_err(io("cannot find free ports for the API server"))?,
            ssh: Vec::new(),
            balancer: None,
        },
        NodeKind::Vm => Ports {
            api: free_ports(opts.listen_address, servers, opts.apiserver_port)
                .map_err(io("cannot find free ports for the API server"))?,
            ssh: free_ports(opts.listen_address, total, None)
                .map_err(io("cannot find free ports for SSH"))?,
            balancer: None,
        },
    })
}

/// `n` distinct free ports on `listen`, the first being `first` when given. The listeners stay
/// open until all are picked so none repeats.
pub(crate) fn free_ports(
    listen: IpAddr,
    n: usize,
    first: Option<u16>,
) -> std::io::Result<Vec<u16>> {
    let addr = if listen.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        listen
    };
    let mut held = Vec::new();
    let mut ports = Vec::new();
    if let Some(p) = first {
        ports.push(p);
    }
    while ports.len() < n {
        let l = std::net::TcpListener::bind((addr, 0))?;
        let port = l.local_addr()?.port();
        held.push(l);
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}
