//! `timonel start`: create a cluster, or resume an existing one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use timonel_driver::{
    ClusterName, Driver, DriverKind, MachineName, MachineSpec, NodeRole, PortMapping, StopMode,
};

use super::cancel::{Cancel, Interrupted};
use super::{server_url, KUBECONFIG_FILE};
use crate::artifact::{self, ArtifactCache, Sources, VersionSpec};
use crate::cli::Ctx;
use crate::distro::ready::{self, ApiClient, WaitFor};
use crate::distro::{k3s, ClusterSettings, NodeSettings};
use crate::drivers::{self, Selected};
use crate::error::UserError;
use crate::kubeconfig::{self, MergeOptions};
use crate::profile::{now_unix, NodeRecord, Phase, Profile, SshSettings, SCHEMA};

/// What `start` was asked for.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub driver: Option<DriverKind>,
    pub version: Option<String>,
    /// Total nodes (servers included).
    pub nodes: u32,
    /// Servers (control-plane nodes); more than one uses embedded etcd.
    pub control_planes: u32,
    pub cpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub wait: WaitFor,
    pub wait_timeout: Duration,
    pub keep_context: bool,
    pub kubeconfig: Option<PathBuf>,
    pub disable: Vec<String>,
    /// `KEY=VALUE` for the distribution's service in every node.
    pub env: Vec<String>,
    pub node_image: Option<String>,
    /// PEM certificates every node trusts.
    pub ca_certs: Vec<String>,
    /// docker.io registry mirrors.
    pub registry_mirrors: Vec<String>,
    /// VM drivers: a local base image (qcow2/VHDX/VMDK) instead of the default cloud image.
    pub vm_image: Option<PathBuf>,
    /// VM drivers: disk size per node.
    pub disk_mib: Option<u64>,
    pub apiserver_port: Option<u16>,
    pub listen_address: IpAddr,
    pub ports: Vec<PortMapping>,
    pub keep_on_failure: bool,
    pub preload: bool,
    pub sources: Sources,
    /// The ssh driver's machines and login settings.
    pub ssh: Option<SshStart>,
}

/// `start --driver ssh`: the machines (one per node, servers first) and how to log in.
#[derive(Debug, Clone)]
pub struct SshStart {
    pub machines: Vec<timonel_driver_ssh::SshHost>,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub adopt: bool,
}

impl SshStart {
    /// The profile's ssh settings, with a fresh cluster identity.
    fn settings(&self) -> SshSettings {
        SshSettings {
            cluster_id: k3s::new_token()[..32].to_string(),
            key_file: self.key_file.as_deref().map(absolute),
            known_hosts: self.known_hosts.as_deref().map(absolute),
            accept_new_host_keys: self.accept_new_host_keys,
            adopt: self.adopt,
        }
    }
}

/// `path` made absolute against the current folder (profiles outlive the shell's folder).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Starts (creates or resumes) the profile in `ctx`.
pub async fn start(ctx: &Ctx, opts: StartOptions) -> anyhow::Result<()> {
    let _lock = ctx.lock_profile()?;
    let name = ctx.profile.clone();
    let printer = &ctx.printer;
    let cancel = Cancel::on_signals({
        move || {
            eprintln!("interrupted: stopping at the next safe point and cleaning up (Ctrl-C again to quit at once)")
        }
    });

    match ctx.store.try_load(&name)? {
        Some(p) if p.phase != Phase::Creating => return resume(ctx, p, &opts, &cancel).await,
        Some(p) => {
            printer.warn(&format!(
                "a previous `start` of profile `{name}` did not finish; removing what it left and starting over"
            ));
            let selected = drivers::for_profile(&p)?;
            remove_everything(ctx, &selected, &name, p.kubeconfig.as_deref()).await?;
        }
        None => {}
    }

    let (selected, ssh) = match &opts.ssh {
        Some(ssh) => {
            let settings = ssh.settings();
            let servers = opts.control_planes.max(1);
            let nodes = ssh
                .machines
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let i = i as u32 + 1;
                    let role = if i <= servers {
                        NodeRole::Server
                    } else {
                        NodeRole::Agent
                    };
                    (name.machine(i), m.clone(), role)
                })
                .collect();
            (drivers::ssh(&name, &settings, nodes), Some(settings))
        }
        None if opts.driver == Some(DriverKind::Ssh) => bail!(UserError::new(
            format!("profile `{name}` does not exist, and the ssh driver needs the machines to create it on"),
            "name each machine with --node user@host[:port], servers first",
        )),
        None => (drivers::select(opts.driver, printer).await?, None),
    };
    let mut created = Created::default();
    let result = create(ctx, &selected, &opts, ssh, &cancel, &mut created).await;
    match result {
        Ok(()) => Ok(()),
        Err(err) => {
            let interrupted = err.downcast_ref::<Interrupted>().is_some();
            if created.profile_saved {
                if opts.keep_on_failure && !interrupted {
                    printer.warn(&format!(
                        "kept what was created (--keep-on-failure); `timonel delete -p {name}` removes it"
                    ));
                } else {
                    let step = printer.step("cleaning up");
                    match remove_everything(ctx, &selected, &name, created.kubeconfig.as_deref())
                        .await
                    {
                        Ok(()) => {
                            step.finish("Removed everything this start created");
                        }
                        Err(e) => {
                            drop(step);
                            printer.warn(&format!(
                                "cleanup failed ({e:#}); `timonel delete -p {name}` removes what is left"
                            ));
                        }
                    }
                }
            }
            if interrupted {
                if printer.events() {
                    crate::output::emit_error("interrupted", "INTERRUPTED", None);
                }
                std::process::exit(130);
            }
            Err(err)
        }
    }
}

#[derive(Default)]
struct Created {
    profile_saved: bool,
    kubeconfig: Option<PathBuf>,
}

async fn remove_everything(
    ctx: &Ctx,
    selected: &Selected,
    name: &ClusterName,
    kubeconfig_path: Option<&Path>,
) -> anyhow::Result<()> {
    selected.driver.delete_cluster(name).await?;
    if let Some(path) = kubeconfig_path {
        kubeconfig::remove(path, name.as_str(), &Default::default())?;
    }
    ctx.store.remove(name)?;
    Ok(())
}

async fn create(
    ctx: &Ctx,
    selected: &Selected,
    opts: &StartOptions,
    ssh: Option<SshSettings>,
    cancel: &Cancel,
    created: &mut Created,
) -> anyhow::Result<()> {
    let printer = &ctx.printer;
    let name = ctx.profile.clone();
    let driver = &selected.driver;
    let containers = driver.capabilities().container_nodes;
    let machines = driver.capabilities().existing_machines;
    if machines && (opts.node_image.is_some() || opts.vm_image.is_some()) {
        bail!(UserError::new(
            "--node-image and --vm-image do not apply to the ssh driver: it installs k3s on the machines given with --node",
            "drop them",
        ));
    }
    // Existing machines: every one is checked before anything changes on any, and their
    // architecture picks the k3s binary.
    let mut arch = artifact::Arch::host()?;
    if let Some(ssh) = &selected.ssh {
        let step = printer.step(&format!(
            "checking {} machine(s)",
            opts.ssh.as_ref().map_or(0, |s| s.machines.len())
        ));
        let facts = cancel.or_cancel(ssh.preflight()).await??;
        for (node, f) in &facts {
            for w in f.warnings() {
                printer.warn(&format!("{node}: {w}"));
            }
        }
        if let Some(first) = facts.values().next() {
            arch = first.machine.parse()?;
        }
        let oses: Vec<String> = facts
            .values()
            .map(|f| f.os.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        step.finish(&format!(
            "{} machine(s) ready for k3s ({}, {})",
            facts.len(),
            oses.join(", "),
            arch.as_str()
        ));
        cancel.check()?;
    }
    if !containers && opts.node_image.is_some() {
        bail!(UserError::new(
            format!(
                "--node-image is a container image, and the {} driver runs VMs",
                driver.kind()
            ),
            "use --vm-image for VM drivers",
        ));
    }

    // The distribution and its artifacts.
    let cache = ArtifactCache::new(ctx.home.cache());
    let mut binary = None;
    let (version, node_image, airgap) = if let Some(image) = &opts.node_image {
        let version = opts
            .version
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        (version, Some(image.clone()), None)
    } else {
        let spec: VersionSpec = opts.version.as_deref().unwrap_or("stable").parse()?;
        let step = printer.step("resolving the k3s version");
        let resolved = artifact::resolve_version(&cache, &opts.sources, &spec).await?;
        step.finish(&format!("Resolved k3s {}", resolved.version));
        if let Some(note) = &resolved.note {
            printer.warn(note);
        }
        cancel.check()?;
        let step = printer.step(&format!("fetching k3s {}", resolved.version));
        let arts = cancel
            .or_cancel(artifact::ensure_k3s(
                &cache,
                &opts.sources,
                &resolved.version,
                arch,
                opts.preload,
                printer,
            ))
            .await??;
        step.finish(&format!("k3s {} ready (sha256 verified)", resolved.version));
        cancel.check()?;
        let image = if containers {
            let docker = selected
                .docker
                .as_ref()
                .ok_or_else(|| anyhow!("container nodes need the docker driver"))?;
            let step = printer.step("preparing the node image");
            let image = docker
                .ensure_node_image(&arts.binary, &resolved.version.to_string(), printer)
                .await?;
            step.finish(&format!("Node image {image}"));
            Some(image)
        } else {
            None
        };
        binary = Some(arts.binary.clone());
        // Airgap images ride along with the nodes when preloading.
        (resolved.version.to_string(), image, arts.airgap)
    };
    cancel.check()?;
    let vm_image = if containers || machines {
        None
    } else {
        let image = cancel
            .or_cancel(super::vm::base_image(
                &cache,
                &opts.sources,
                opts.vm_image.as_deref(),
                driver.kind(),
                printer,
            ))
            .await??;
        Some(image)
    };
    cancel.check()?;

    // The profile, saved before anything is created so `delete` always finds it.
    let servers = opts.control_planes.max(1);
    let total = opts.nodes.max(servers);
    let api_ports = if machines {
        // The API is served on the machines themselves.
        vec![k3s::API_PORT; servers as usize]
    } else {
        free_ports(opts.listen_address, servers as usize, opts.apiserver_port)
            .context("cannot find free ports for the API server")?
    };
    // NAT'd VMs reach SSH through a forwarded host port.
    let ssh_ports = if containers || machines {
        Vec::new()
    } else {
        free_ports(opts.listen_address, total as usize, None)
            .context("cannot find free ports for SSH")?
    };
    let kubeconfig_path = super::kubeconfig_target(None, opts.kubeconfig.as_deref())?;
    let profile = Profile {
        schema: SCHEMA,
        name: name.clone(),
        driver: driver.kind(),
        distribution: "k3s".to_string(),
        version: version.clone(),
        node_image: node_image.clone(),
        vm_image,
        disk_mib: opts.disk_mib,
        ssh_user: None,
        listen_address: opts.listen_address,
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        disable: opts.disable.clone(),
        env: {
            let mut env = opts.env.clone();
            env.extend(proxy_env(&name, total));
            env
        },
        ports: opts.ports.clone(),
        ca_certs: opts.ca_certs.clone(),
        registry_mirrors: opts.registry_mirrors.clone(),
        embedded_etcd: servers > 1,
        token: k3s::new_token(),
        kubeconfig: Some(kubeconfig_path.clone()),
        nodes: (1..=total)
            .map(|i| NodeRecord {
                name: name.machine(i),
                role: if i <= servers {
                    NodeRole::Server
                } else {
                    NodeRole::Agent
                },
                index: i,
                ip: None,
                api_port: api_ports.get(i as usize - 1).copied(),
                ssh_port: ssh_ports.get(i as usize - 1).copied(),
                api_url: None,
                machine: opts
                    .ssh
                    .as_ref()
                    .and_then(|s| s.machines.get(i as usize - 1).cloned()),
            })
            .collect(),
        ssh,
        phase: Phase::Creating,
        created_at: now_unix(),
    };
    let mut profile = profile;
    ctx.store.save(&profile)?;
    created.profile_saved = true;

    let install = Install { binary, airgap };
    bring_up(
        ctx,
        selected,
        &mut profile,
        opts,
        Some(&install),
        cancel,
        created,
    )
    .await
}

/// What a fresh start installs: VM nodes get the binary over SSH; every node gets the airgap
/// images (container nodes through their spec).
struct Install {
    binary: Option<PathBuf>,
    airgap: Option<PathBuf>,
}

/// Creates (idempotently) and starts every node, waits, writes the kubeconfig, records the
/// profile as running. Shared by a fresh start and a resume.
async fn bring_up(
    ctx: &Ctx,
    selected: &Selected,
    profile: &mut Profile,
    opts: &StartOptions,
    install: Option<&Install>,
    cancel: &Cancel,
    created: &mut Created,
) -> anyhow::Result<()> {
    let printer = &ctx.printer;
    let driver = selected.driver.clone();
    let name = profile.name.clone();
    let settings = cluster_settings(profile);
    let server = profile
        .server()
        .cloned()
        .ok_or_else(|| anyhow!("profile `{name}` has no server node"))?;
    let api_port = server
        .api_port
        .ok_or_else(|| anyhow!("profile `{name}` has no API port"))?;

    // The first server first: every other node joins it.
    let step = printer.step(&format!("starting node {}", server.name));
    let server_ip = start_node(
        ctx,
        selected,
        profile,
        &server,
        &settings,
        None,
        install,
        opts.wait_timeout,
        printer,
    )
    .await?;
    step.finish(&format!("Node {} running ({server_ip})", server.name));
    record_ip(profile, &server.name, server_ip);
    ctx.store.save(profile)?;
    cancel.check()?;

    // The other servers and the agents, in parallel.
    let join = join_url(server_ip);
    let others: Vec<NodeRecord> = profile
        .nodes
        .iter()
        .filter(|n| n.name != server.name)
        .cloned()
        .collect();
    if !others.is_empty() {
        let step = printer.step(&format!("starting {} more node(s)", others.len()));
        let snapshot = profile.clone();
        let mut tasks = Vec::new();
        for node in &others {
            let (snapshot, settings, join) = (&snapshot, &settings, &join);
            tasks.push(async move {
                let ip = start_node(
                    ctx,
                    selected,
                    snapshot,
                    node,
                    settings,
                    Some(join),
                    install,
                    opts.wait_timeout,
                    &timonel_driver::SilentReporter,
                )
                .await?;
                Ok::<_, anyhow::Error>((node.name.clone(), ip))
            });
        }
        for result in futures_util::future::join_all(tasks).await {
            let (node, ip) = result?;
            record_ip(profile, &node, ip);
        }
        ctx.store.save(profile)?;
        step.finish(&format!("{} more node(s) running", others.len()));
        cancel.check()?;
    }

    // Credentials: the admin kubeconfig k3s writes, with the host-reachable server.
    let step = printer.step("waiting for the cluster's kubeconfig");
    let access = node_access(ctx, profile, driver.as_ref(), &server, opts.wait_timeout).await?;
    let text = cancel
        .or_cancel(wait_for_file(
            access.as_ref(),
            k3s::KUBECONFIG_PATH,
            opts.wait_timeout,
        ))
        .await??;
    let mut creds = kubeconfig::parse_k3s_yaml(&text)?;
    if !driver.capabilities().container_nodes {
        // VMs and machines: each server's API where the host reaches it (its address, or a NAT
        // forward), so failover (`kubeconfig --merge`) can find the live ones.
        let servers: Vec<MachineName> = profile
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Server)
            .map(|n| n.name.clone())
            .collect();
        for s in servers {
            let addr = driver.endpoint(&s, k3s::API_PORT).await?;
            let url = format!("https://{}:{}", bracket(addr.ip()), addr.port());
            if let Some(n) = profile.nodes.iter_mut().find(|n| n.name == s) {
                n.api_url = Some(url);
            }
        }
    }
    let refreshed = profile
        .node(server.name.as_str())
        .cloned()
        .unwrap_or(server.clone());
    creds.server = profile
        .api_url(&refreshed)
        .unwrap_or_else(|| server_url(profile.listen_address, api_port));
    crate::fsutil::atomic_write(
        &ctx.store.dir(&name).join(KUBECONFIG_FILE),
        kubeconfig::standalone(name.as_str(), &creds).as_bytes(),
        0o600,
    )?;
    step.finish("Fetched the admin credentials");
    cancel.check()?;

    // Readiness.
    if opts.wait != WaitFor::None {
        let step = printer.step("waiting for the cluster");
        let api = ApiClient::new(&creds, &creds.server)?;
        let nodes: Vec<String> = profile.nodes.iter().map(|n| n.name.to_string()).collect();
        let waited = cancel
            .or_cancel(ready::wait(
                &api,
                opts.wait,
                &nodes,
                opts.wait_timeout,
                &mut |s| timonel_driver::Reporter::step(printer, s),
            ))
            .await?;
        if let Err(e) = waited {
            drop(step);
            let logs = last_logs(driver.as_ref(), &server.name).await;
            if !logs.is_empty() {
                printer.info(&format!(
                    "last lines of the k3s log on {}:\n{logs}",
                    server.name
                ));
            }
            return Err(e.into());
        }
        step.finish(&format!("Cluster ready ({})", describe_wait(opts.wait)));
    }
    cancel.check()?;

    // Kubeconfig.
    let path = profile
        .kubeconfig
        .clone()
        .ok_or_else(|| anyhow!("profile `{name}` has no kubeconfig path"))?;
    let outcome = kubeconfig::merge(
        &path,
        name.as_str(),
        &creds,
        &MergeOptions {
            set_current: !opts.keep_context,
            ..Default::default()
        },
    )?;
    created.kubeconfig = Some(path.clone());
    let _ = outcome;
    printer.done(
        &format!(
            "Context `{name}` in {}{}",
            path.display(),
            if opts.keep_context { "" } else { " (current)" }
        ),
        None,
    );

    profile.phase = Phase::Running;
    ctx.store.save(profile)?;
    printer.info(&format!(
        "\nCluster `{name}` is up: k3s {} on {} node(s), API at {}.\nTry: kubectl{} get nodes",
        profile.version,
        profile.nodes.len(),
        creds.server,
        if opts.keep_context {
            format!(" --context {name}")
        } else {
            String::new()
        }
    ));
    Ok(())
}

fn describe_wait(w: WaitFor) -> &'static str {
    match w {
        WaitFor::None => "not waited",
        WaitFor::Api => "API server ready",
        WaitFor::Ready => "nodes Ready",
        WaitFor::All => "nodes Ready, system pods running, DNS up",
    }
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

pub(crate) fn record_ip(profile: &mut Profile, node: &MachineName, ip: IpAddr) {
    if let Some(n) = profile.nodes.iter_mut().find(|n| &n.name == node) {
        n.ip = Some(ip);
    }
}

/// Every name and address the host may use to reach the API.
fn tls_sans(listen: IpAddr) -> Vec<String> {
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ];
    if !listen.is_loopback() && !listen.is_unspecified() {
        sans.push(listen.to_string());
    }
    sans
}

/// Creates (idempotently) and starts one node; on a fresh VM, installs the distribution over
/// SSH. Returns the node's address.
#[allow(clippy::too_many_arguments)]
async fn start_node(
    ctx: &Ctx,
    selected: &Selected,
    profile: &Profile,
    node: &NodeRecord,
    settings: &ClusterSettings,
    join: Option<&str>,
    install: Option<&Install>,
    timeout: Duration,
    report: &dyn timonel_driver::Reporter,
) -> anyhow::Result<IpAddr> {
    let driver = selected.driver.as_ref();
    let airgap = install.and_then(|i| i.airgap.as_deref());
    let mut spec = machine_spec(profile, node, settings, join, airgap)?;
    let containers = driver.capabilities().container_nodes;
    let machines = driver.capabilities().existing_machines;
    let plan = crate::distro::InstallPlan {
        files: spec.files.clone(),
        service: spec.service.clone().unwrap_or_default(),
    };
    if machines {
        // The driver installs what the spec carries: add the binary and the unit.
        if let Some(binary) = install.and_then(|i| i.binary.as_deref()) {
            spec.files
                .extend(super::vm::service_files(&plan, binary, node.role));
        }
    } else if !containers {
        super::vm::prepare(&ctx.home, profile, node, &mut spec)?;
    }
    let fresh = driver.state(&spec.name).await? == timonel_driver::MachineState::NotCreated;
    if machines && fresh && install.and_then(|i| i.binary.as_ref()).is_none() {
        bail!(UserError::new(
            format!(
                "k3s is no longer installed on the machine of node `{}`",
                node.name
            ),
            format!(
                "`timonel delete -p {}` and start again to reinstall the cluster",
                profile.name
            ),
        ));
    }
    ensure_running(driver, &spec, report).await?;
    if !containers && !machines && fresh {
        let binary = install.and_then(|i| i.binary.as_deref()).ok_or_else(|| {
            anyhow!(
                "node `{}` is new and there is no k3s binary to install",
                node.name
            )
        })?;
        let access = node_access(ctx, profile, driver, node, timeout).await?;
        super::vm::install(access.as_ref(), &plan, binary, node.role).await?;
    }
    Ok(driver.ip(&spec.name).await?)
}

/// Commands and files in a node: the driver's access for containers, SSH for VMs.
pub(crate) async fn node_access(
    ctx: &Ctx,
    profile: &Profile,
    driver: &dyn Driver,
    node: &NodeRecord,
    timeout: Duration,
) -> anyhow::Result<std::sync::Arc<dyn timonel_driver::NodeAccess>> {
    if driver.capabilities().container_nodes {
        Ok(driver.access(&node.name).await?)
    } else {
        super::vm::access(&ctx.home, profile, driver, node, timeout).await
    }
}

/// The k3s settings every node of `profile` shares.
pub(crate) fn cluster_settings(profile: &Profile) -> ClusterSettings {
    let mut sans = tls_sans(profile.listen_address);
    // Existing machines: the API is reached at the address the admin gave.
    for n in &profile.nodes {
        if let (NodeRole::Server, Some(m)) = (n.role, &n.machine) {
            if !sans.contains(&m.host) {
                sans.push(m.host.clone());
            }
        }
    }
    ClusterSettings {
        token: profile.token.clone(),
        disable: profile.disable.clone(),
        tls_sans: sans,
        env: profile
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ca_certs: profile.ca_certs.clone(),
        registry_mirrors: profile.registry_mirrors.clone(),
    }
}

/// The URL nodes use to join the server at `ip`.
pub(crate) fn join_url(ip: IpAddr) -> String {
    format!("https://{}:{}", bracket(ip), k3s::API_PORT)
}

/// The spec of one node, derived only from the profile (so a resume rebuilds the same spec).
/// `join` is the first server's URL for every node but the first server.
pub(crate) fn machine_spec(
    profile: &Profile,
    node: &NodeRecord,
    settings: &ClusterSettings,
    join: Option<&str>,
    airgap: Option<&Path>,
) -> anyhow::Result<MachineSpec> {
    let first = profile
        .server()
        .map(|s| s.name == node.name)
        .unwrap_or(false);
    let plan = k3s::plan(
        settings,
        &NodeSettings {
            name: node.name.to_string(),
            role: node.role,
            join: join.map(str::to_string),
            cluster_init: first && profile.embedded_etcd,
        },
        airgap,
    )
    .map_err(|e| anyhow!("cannot write the k3s configuration: {e}"))?;
    let mut spec = MachineSpec::new(
        node.name.clone(),
        profile.name.clone(),
        node.role,
        node.index,
    );
    spec.cpus = profile.cpus;
    spec.memory_mib = profile.memory_mib;
    if let Some(home) = security_cache_dir() {
        spec.options.insert(
            timonel_driver_docker::OPTION_SECURITY_CACHE.to_string(),
            home.join("cache")
                .join("docker-security.json")
                .display()
                .to_string(),
        );
    }
    spec.image = profile.node_image.clone();
    spec.files = plan.files;
    spec.service = Some(plan.service);
    if let (NodeRole::Server, Some(port)) = (node.role, node.api_port) {
        spec.ports.push(PortMapping {
            host_ip: profile.listen_address,
            host_port: port,
            node_port: k3s::API_PORT,
            protocol: "tcp".into(),
        });
    }
    if first {
        spec.ports.extend(profile.ports.iter().cloned());
    }
    Ok(spec)
}

/// timonel's home, for the Docker driver's remembered security verdicts.
fn security_cache_dir() -> Option<PathBuf> {
    crate::home::Home::from_env()
        .ok()
        .map(|h| h.root().to_path_buf())
}

/// `n` distinct free ports on `listen`, the first being `first` when given. The listeners stay
/// open until all are picked so none repeats (kind's way).
fn free_ports(listen: IpAddr, n: usize, first: Option<u16>) -> std::io::Result<Vec<u16>> {
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

pub(crate) async fn ensure_running(
    driver: &dyn Driver,
    spec: &MachineSpec,
    report: &dyn timonel_driver::Reporter,
) -> anyhow::Result<()> {
    let state = driver.state(&spec.name).await?;
    if state == timonel_driver::MachineState::NotCreated {
        driver.create(spec, report).await?;
    }
    if !driver.state(&spec.name).await?.is_running() {
        driver.start(&spec.name).await?;
    }
    Ok(())
}

/// Reads a file from the node once it exists, polling with a deadline.
async fn wait_for_file(
    access: &dyn timonel_driver::NodeAccess,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let got = timonel_driver::poll_until::<_, std::convert::Infallible, _, _>(
        &format!("`{path}` in the node"),
        timeout,
        Duration::from_millis(200),
        || async {
            Ok(match access.copy_out(path).await {
                Ok(bytes) if !bytes.is_empty() => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Ok(_) => Err("empty".to_string()),
                Err(e) => Err(e.to_string()),
            })
        },
    )
    .await;
    got.map_err(|e| anyhow!("{e}"))
}

/// The last lines of the distribution's log in a node, for failure messages.
pub(super) async fn last_logs(driver: &dyn Driver, node: &MachineName) -> String {
    driver.logs(node, 20).await.unwrap_or_default()
}

/// Resumes an existing profile: same nodes, port, addresses and data. Flags that would change
/// the cluster are refused.
async fn resume(
    ctx: &Ctx,
    mut profile: Profile,
    opts: &StartOptions,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let name = profile.name.clone();
    let mut conflicts = Vec::new();
    if let Some(d) = opts.driver {
        if d != profile.driver {
            conflicts.push(format!(
                "--driver {d} (the profile uses {})",
                profile.driver
            ));
        }
    }
    if let Some(v) = &opts.version {
        if v != &profile.version && v != "stable" {
            conflicts.push(format!(
                "--kubernetes-version {v} (the profile runs {})",
                profile.version
            ));
        }
    }
    if opts.cpus.is_some() && opts.cpus != profile.cpus {
        conflicts.push("--cpus".to_string());
    }
    if opts.memory_mib.is_some() && opts.memory_mib != profile.memory_mib {
        conflicts.push("--memory".to_string());
    }
    if (opts.nodes as usize != profile.nodes.len() && opts.nodes != 1)
        || opts.control_planes > 1
            && opts.control_planes as usize
                != profile
                    .nodes
                    .iter()
                    .filter(|n| n.role == NodeRole::Server)
                    .count()
    {
        conflicts.push(format!(
            "--nodes {} (the profile has {})",
            opts.nodes,
            profile.nodes.len()
        ));
    }
    if !opts.disable.is_empty() && opts.disable != profile.disable {
        conflicts.push("--disable".to_string());
    }
    if (!opts.ca_certs.is_empty() && opts.ca_certs != profile.ca_certs)
        || (!opts.registry_mirrors.is_empty() && opts.registry_mirrors != profile.registry_mirrors)
    {
        conflicts.push("--ca-cert/--registry-mirror".to_string());
    }
    if opts.env.iter().any(|e| !profile.env.contains(e)) {
        conflicts.push("--env".to_string());
    }
    if let Some(p) = opts.apiserver_port {
        if Some(p) != profile.server().and_then(|s| s.api_port) {
            conflicts.push("--apiserver-port".to_string());
        }
    }
    if let Some(image) = &opts.node_image {
        if Some(image) != profile.node_image.as_ref() {
            conflicts.push("--node-image".to_string());
        }
    }
    if !conflicts.is_empty() {
        bail!(UserError::new(
            format!(
                "profile `{name}` already exists and these flags would change it: {}",
                conflicts.join(", ")
            ),
            format!("`timonel start -p {name}` without them resumes it as it is; to change it, `timonel delete -p {name}` first, or use another profile (`-p other`)"),
        ));
    }
    let selected = drivers::for_profile(&profile)?;
    if let timonel_driver::Availability::Unusable { reason, fix } = selected.driver.probe().await {
        bail!(UserError::new(
            format!(
                "cannot resume profile `{name}`: the {} driver is not usable: {reason}",
                profile.driver
            ),
            fix,
        ));
    }
    ctx.printer.info(&format!("Resuming profile `{name}`"));
    if !opts.ports.is_empty() && opts.ports != profile.ports {
        bail!(UserError::new(
            format!("profile `{name}` already exists and --ports would change it"),
            format!("`timonel delete -p {name}` first, or use another profile"),
        ));
    }
    let mut created = Created::default();
    bring_up(
        ctx,
        &selected,
        &mut profile,
        opts,
        None,
        cancel,
        &mut created,
    )
    .await
}

/// Stops every node of `profile` (used by `stop`).
pub(super) async fn stop_nodes(
    driver: &Arc<dyn Driver>,
    profile: &Profile,
    timeout: Duration,
) -> anyhow::Result<()> {
    let tasks = profile.nodes.iter().rev().map(|n| {
        let driver = driver.clone();
        let name = n.name.clone();
        async move { driver.stop(&name, StopMode::graceful(timeout)).await }
    });
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}

/// The host's proxy settings, for k3s in the nodes (image pulls go through them), with
/// `NO_PROXY` extended by the cluster's own addresses and names so in-cluster traffic does not.
fn proxy_env(cluster: &ClusterName, nodes: u32) -> Vec<String> {
    proxy_env_from(cluster, nodes, |k| std::env::var(k).ok())
}

fn proxy_env_from(
    cluster: &ClusterName,
    nodes: u32,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let pick = |upper: &str| {
        get(upper)
            .or_else(|| get(&upper.to_ascii_lowercase()))
            .filter(|v| !v.is_empty())
    };
    let http = pick("HTTP_PROXY");
    let https = pick("HTTPS_PROXY");
    if http.is_none() && https.is_none() {
        return Vec::new();
    }
    let mut env = Vec::new();
    if let Some(v) = http {
        env.push(format!("HTTP_PROXY={v}"));
    }
    if let Some(v) = https {
        env.push(format!("HTTPS_PROXY={v}"));
    }
    let mut no_proxy: Vec<String> = pick("NO_PROXY")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut add = |s: String| {
        if !no_proxy.contains(&s) {
            no_proxy.push(s);
        }
    };
    for s in [
        "localhost",
        "127.0.0.1",
        "::1",
        "10.42.0.0/16",
        "10.43.0.0/16",
        ".svc",
        ".cluster.local",
    ] {
        add(s.to_string());
    }
    for i in 1..=nodes.max(1) {
        add(cluster.machine(i).to_string());
    }
    env.push(format!("NO_PROXY={}", no_proxy.join(",")));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_reach_the_nodes_with_the_cluster_excluded() {
        let name: ClusterName = "dev".parse().unwrap();
        let env = proxy_env_from(&name, 2, |k| match k {
            "https_proxy" => Some("http://proxy.corp:3128".into()),
            "NO_PROXY" => Some("corp.example, 10.0.0.0/8".into()),
            _ => None,
        });
        assert_eq!(env[0], "HTTPS_PROXY=http://proxy.corp:3128");
        let no = env[1].strip_prefix("NO_PROXY=").unwrap();
        for want in [
            "corp.example",
            "10.0.0.0/8",
            "10.42.0.0/16",
            "10.43.0.0/16",
            ".svc",
            ".cluster.local",
            "dev",
            "dev-m02",
            "localhost",
        ] {
            assert!(no.split(',').any(|x| x == want), "{want} missing from {no}");
        }
        assert!(proxy_env_from(&name, 1, |_| None).is_empty());
    }
}
