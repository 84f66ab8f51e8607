use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use timonel_driver::{DriverKind, Mount, PortMapping};

use timonel_driver_ssh::SshHost;

use super::Ctx;
use crate::cluster::{self, SshStart, StartOptions};
use crate::distro::k3s;
use crate::distro::k3s_args::{K3sArg, K3sArgs};
use crate::distro::ready::WaitFor;
use crate::error::UserError;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The driver: docker, kvm, hyperv, virtualbox, ssh (default: the first usable of the first
    /// four, in that order; `--node` means ssh).
    #[arg(long, env = "TIMONEL_DRIVER", value_parser = crate::drivers::parse_kind)]
    pub driver: Option<DriverKind>,
    /// k3s version (`v1.31.2+k3s1`), Kubernetes version (`v1.31.2`), minor (`v1.31`) or channel
    /// (`stable`, `latest`). Default: stable.
    #[arg(long = "kubernetes-version", visible_alias = "k8s-version")]
    pub kubernetes_version: Option<String>,
    /// Number of nodes in all: the servers, then agents (default 1, or `timonel config`).
    #[arg(short = 'n', long, value_parser = crate::config::parse_nodes)]
    pub nodes: Option<u32>,
    /// Number of servers (control-plane nodes). More than one runs embedded etcd; use an odd
    /// number, 3 or more, for a control plane that survives losing a server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub control_planes: u32,
    /// CPUs per node (a limit for container nodes).
    #[arg(long, value_parser = crate::config::parse_cpus)]
    pub cpus: Option<f64>,
    /// Memory per node: 2g, 2048m, …
    #[arg(short = 'm', long, value_parser = cluster::parse_memory)]
    pub memory: Option<u64>,
    /// What to wait for before returning.
    #[arg(long, value_enum, default_value_t = WaitFor::Ready)]
    pub wait: WaitFor,
    /// How long to wait (e.g. 90s, 5m; default 5m, or `timonel config`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait_timeout: Option<Duration>,
    /// Do not make the cluster's context the current one.
    #[arg(long)]
    pub keep_context: bool,
    /// The kubeconfig file to merge into (default: kubectl's rules: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// k3s components to turn off: traefik, servicelb, metrics-server, local-storage, coredns.
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Environment for k3s in every node, KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_env)]
    pub env: Vec<String>,
    /// Run this container image (it must have /bin/k3s) instead of building one from the
    /// verified k3s binary.
    #[arg(long)]
    pub node_image: Option<String>,
    /// A CA certificate (PEM file) the nodes trust, e.g. your proxy's (repeatable).
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// A registry mirror for docker.io images, written to k3s's registries.yaml (repeatable).
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// An extra argument for k3s, one `--name` or `--name=value` for the nodes after `@`
    /// (default: all), e.g. `--k3s-arg --node-label=tier=db@agent` (repeatable). Flags timonel
    /// sets itself (--token, --server, --node-name, --tls-san, --disable, …) are refused.
    #[arg(
        long = "k3s-arg",
        value_name = "ARG[@server|@agent|@all]",
        allow_hyphen_values = true
    )]
    pub k3s_args: Vec<K3sArg>,
    /// VM drivers: boot this local disk image (qcow2 for kvm, VHDX for hyperv, VMDK/VDI for
    /// virtualbox) instead of the default cloud image.
    #[arg(long)]
    pub vm_image: Option<PathBuf>,
    /// VM drivers: disk size per node (e.g. 20g).
    #[arg(long, value_parser = cluster::parse_memory)]
    pub disk_size: Option<u64>,
    /// hyperv driver: the virtual switch the VMs connect to (default: the Default Switch, else
    /// the only External switch).
    #[arg(long, value_name = "NAME")]
    pub hyperv_virtual_switch: Option<String>,
    /// Host port for the API server (default: a free port, kept in the profile).
    #[arg(long)]
    pub apiserver_port: Option<u16>,
    /// Host address published ports bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_address: IpAddr,
    /// Extra published ports, HOST:NODE[/tcp|udp] (repeatable).
    #[arg(long = "ports")]
    pub ports: Vec<String>,
    /// A host folder every node sees at NODE_DIR, read-only with `:ro` (repeatable). HOST_DIR
    /// is an absolute path to an existing folder (`C:\src:/src` on Windows). Docker: a bind
    /// mount; kvm: virtio-9p; virtualbox: a shared folder (the guest needs vboxsf); not on
    /// hyperv or ssh.
    #[arg(long = "mount", value_name = "HOST_DIR:NODE_DIR[:ro]", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// ssh driver: a machine you have, as user@host[:port]; one per node, servers first
    /// (repeatable). The user must be root or have passwordless sudo.
    #[arg(long = "node", value_name = "USER@HOST[:PORT]", value_parser = parse_machine)]
    pub machines: Vec<SshHost>,
    /// ssh driver: the private key to log in with (default: the ssh-agent's keys, then
    /// ~/.ssh/id_ed25519, id_ecdsa, id_rsa). A password comes from TIMONEL_SSH_PASSWORD.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// ssh driver: the known_hosts file host keys are checked against (default
    /// ~/.ssh/known_hosts).
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// ssh driver: trust the host key of a machine that is not in known_hosts yet, and record
    /// it there (trust on first use). A changed key is always refused.
    #[arg(long)]
    pub ssh_accept_new_host_keys: bool,
    /// ssh driver: take over machines that already run k3s: their k3s (services, binary,
    /// data) is replaced, and `timonel delete` removes it.
    #[arg(long)]
    pub adopt: bool,
    /// Keep what was created when start fails (for debugging).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Preload the k3s airgap images into the nodes (so nothing is pulled).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub preload: bool,
    #[command(flatten)]
    pub mirror: super::MirrorArgs,
    /// Use only the local cache; never the network.
    #[arg(long)]
    pub offline: bool,
    /// A cluster file (docs/cluster-file.md) with the cluster's settings; flags given here win
    /// over it.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `json`: a stream of JSON events on stdout, one per line (steps with durations, warnings,
    /// the final error with a reason code and hint), for CI.
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Text)]
    pub output: super::OutputFormat,
    /// The flags given on the command line or by their environment variable, by id: they win
    /// over the cluster file (set by `Cli::parse_from`).
    #[arg(skip)]
    pub explicit: Vec<String>,
    /// The cluster file `--config` names, read (set by `cli::run`, applied by [`prepare`]).
    #[arg(skip)]
    pub cluster_file: Option<super::cluster_file::Loaded>,
    /// CA certificates the cluster file gives as PEM text.
    #[arg(skip)]
    pub ca_pems: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: StartArgs) -> anyhow::Result<ExitCode> {
    // First, so an interrupt at any point of this command is seen.
    let cancel = cluster::Cancel::on_signals(
        || {
            eprintln!("interrupted: stopping at the next safe point and cleaning up (Ctrl-C again to quit at once)")
        },
        super::quit_now,
    );
    ctx.printer
        .set_events(args.output == super::OutputFormat::Json);
    let opts = prepare(ctx, args)?;
    match cluster::start(ctx, opts, &cancel).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // What this start created is gone; the exit code says it was interrupted.
        Err(cluster::Error::Interrupted) => {
            if ctx.printer.events() {
                crate::output::emit_error("interrupted", "INTERRUPTED", None);
            }
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

/// The flags checked (everything before anything is touched) and turned into options.
pub(super) fn prepare(ctx: &Ctx, mut args: StartArgs) -> anyhow::Result<StartOptions> {
    let file = args.cluster_file.take();
    if let Some(file) = &file {
        file.apply(&mut args)?;
    }
    warn_odd(ctx, &args);
    // Each of the file's values was checked alone; what fails now is values that do not go
    // together, which may come from the file.
    let checked = check_values(&args).and_then(|v| Ok((v, ssh_options(&args)?)));
    let ((ca_certs, ports), ssh) = match (checked, file) {
        (Err(e), Some(file)) => {
            return Err(e.context(format!(
                "with the cluster file `{}` (its fields stand for the flags named below: docs/cluster-file.md)",
                file.path.display()
            )))
        }
        (checked, _) => checked?,
    };
    let sources = args.mirror.sources(args.offline)?;
    options(ctx, args, (ca_certs, ports), ssh, sources)
}

/// Warns about flags that work but are likely not what was meant.
fn warn_odd(ctx: &Ctx, args: &StartArgs) {
    if args.control_planes > 1 && args.control_planes.is_multiple_of(2) {
        ctx.printer.warn(&format!(
            "{} servers give no more fault tolerance than {}: etcd needs a majority, so use an odd number (3 survives losing one)",
            args.control_planes,
            args.control_planes - 1
        ));
    }
    if !args.listen_address.is_loopback() {
        ctx.printer.warn(&format!(
            "--listen-address {} publishes the API server beyond this machine",
            args.listen_address
        ));
    }
}

/// Checks the flags that need no driver and reads the CA files: the same checks for a flag and
/// for the cluster file's field that stands for it. Returns the CA certificates (the files'
/// and the cluster file's PEM text) and the port mappings.
pub(super) fn check_values(args: &StartArgs) -> anyhow::Result<(Vec<String>, Vec<PortMapping>)> {
    k3s::validate_disable(&args.disable).map_err(|e| {
        UserError::new(
            e,
            "list components separated by commas, e.g. `--disable traefik,servicelb`",
        )
    })?;
    if let Some(v) = &args.kubernetes_version {
        v.parse::<crate::artifact::VersionSpec>()?;
    }
    let mut ca_certs = Vec::new();
    for path in &args.ca_certs {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserError::new(
                format!("--ca-cert `{}` cannot be read: {e}", path.display()),
                "give the path of a PEM file holding the CA certificate",
            )
        })?;
        k3s::validate_ca_pem(&text).map_err(|e| {
            UserError::new(
                format!("--ca-cert `{}` is not usable: {e}", path.display()),
                "export the CA certificate as PEM (e.g. `openssl x509 -in ca.der -inform der -out ca.pem`)",
            )
        })?;
        ca_certs.push(text);
    }
    ca_certs.extend(args.ca_pems.iter().cloned());
    for m in &args.registry_mirrors {
        let ok = url::Url::parse(m)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(UserError::new(
                format!("--registry-mirror `{m}` is not an http(s) URL"),
                "give the mirror's URL, e.g. `--registry-mirror https://mirror.example.com:5000`",
            )
            .into());
        }
    }
    for m in &args.mounts {
        m.check_host().map_err(|e| {
            UserError::new(
                format!("--mount {m}: {e}"),
                "give the absolute path of an existing folder on this machine, e.g. `--mount $PWD/data:/data`",
            )
        })?;
    }
    timonel_driver::mount::check_distinct(&args.mounts).map_err(|e| {
        UserError::new(
            format!("--mount: {e}"),
            "give each mount its own node folder",
        )
    })?;
    let ports = args
        .ports
        .iter()
        .map(|p| cluster::parse_port(p, args.listen_address))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            UserError::new(
                format!("--ports: {e}"),
                "use HOST_PORT:NODE_PORT, e.g. `--ports 8080:80`",
            )
        })?;
    Ok((ca_certs, ports))
}

/// `start`'s options: the flags, with the persistent defaults (`timonel config`) for a new
/// profile (an existing profile is resumed as it is).
fn options(
    ctx: &Ctx,
    mut args: StartArgs,
    (ca_certs, ports): (Vec<String>, Vec<PortMapping>),
    ssh: Option<SshStart>,
    sources: crate::artifact::Sources,
) -> anyhow::Result<StartOptions> {
    if !ctx.store.exists(&ctx.profile) {
        let defaults = crate::config::load_defaults(&ctx.home)?;
        args.driver = args.driver.or(defaults.driver);
        args.kubernetes_version = args.kubernetes_version.or(defaults.kubernetes_version);
        args.nodes = args.nodes.or(defaults.nodes);
        args.cpus = args.cpus.or(defaults.cpus);
        args.memory = args.memory.or(defaults.memory_mib);
        args.wait_timeout = args.wait_timeout.or(defaults.wait_timeout);
    }
    Ok(StartOptions {
        driver: if ssh.is_some() {
            Some(DriverKind::Ssh)
        } else {
            args.driver
        },
        version: args.kubernetes_version,
        nodes: ssh
            .as_ref()
            .map(|s| s.machines.len() as u32)
            .unwrap_or_else(|| args.nodes.unwrap_or(1)),
        control_planes: args.control_planes,
        cpus: args.cpus,
        memory_mib: args.memory,
        wait: args.wait,
        wait_timeout: args.wait_timeout.unwrap_or(Duration::from_secs(300)),
        keep_context: args.keep_context,
        kubeconfig: args.kubeconfig,
        standalone: false,
        disable: args.disable,
        env: args.env,
        node_image: args.node_image,
        ca_certs,
        registry_mirrors: args.registry_mirrors,
        k3s_args: K3sArgs::from_list(&args.k3s_args),
        vm_image: args.vm_image,
        disk_mib: args.disk_size,
        hyperv_switch: args.hyperv_virtual_switch,
        apiserver_port: args.apiserver_port,
        listen_address: args.listen_address,
        ports,
        mounts: args.mounts,
        keep_on_failure: args.keep_on_failure,
        preload: args.preload,
        sources,
        ssh,
    })
}

fn parse_mount(s: &str) -> Result<Mount, String> {
    s.parse()
        .map_err(|e: timonel_driver::MountError| e.to_string())
}

fn parse_machine(s: &str) -> Result<SshHost, String> {
    s.parse()
}

/// The ssh driver's options, checked before anything is touched: `--node` means the ssh
/// driver, the ssh driver needs `--node`, and `--nodes` must agree with them.
fn ssh_options(args: &StartArgs) -> anyhow::Result<Option<SshStart>> {
    let ssh_flags = args.ssh_key.is_some()
        || args.ssh_known_hosts.is_some()
        || args.ssh_accept_new_host_keys
        || args.adopt;
    let driver = args
        .driver
        .or((!args.machines.is_empty()).then_some(DriverKind::Ssh));
    if driver != Some(DriverKind::Ssh) {
        if !args.machines.is_empty() || ssh_flags {
            return Err(UserError::new(
                format!(
                    "--node, --ssh-key, --ssh-known-hosts, --ssh-accept-new-host-keys and --adopt are for the ssh driver, not {}",
                    driver.map_or("the default driver".to_string(), |d| format!("--driver {d}"))
                ),
                "drop them, or use `--driver ssh --node user@host`",
            )
            .into());
        }
        return Ok(None);
    }
    if args.machines.is_empty() {
        // Resuming an existing ssh profile needs no machines: they are in the profile.
        return Ok(None);
    }
    for (i, m) in args.machines.iter().enumerate() {
        if args.machines[..i]
            .iter()
            .any(|o| o.to_string() == m.to_string())
        {
            return Err(UserError::new(
                format!("--node {m} is given twice: a machine can be only one node"),
                "give each machine once, servers first",
            )
            .into());
        }
    }
    let n = args.machines.len() as u32;
    if let Some(nodes) = args.nodes {
        if nodes != n {
            return Err(UserError::new(
                format!("--nodes {nodes} does not match the {n} machine(s) given with --node"),
                "drop --nodes: with the ssh driver, each --node is one node",
            )
            .into());
        }
    }
    if args.control_planes > n {
        return Err(UserError::new(
            format!(
                "--control-planes {} needs that many machines; {n} given with --node",
                args.control_planes
            ),
            "give one --node per node, servers first",
        )
        .into());
    }
    if let Some(key) = &args.ssh_key {
        if let Err(e) = std::fs::metadata(key) {
            return Err(UserError::new(
                format!("--ssh-key `{}` cannot be read: {e}", key.display()),
                "give the path of your private key, e.g. ~/.ssh/id_ed25519",
            )
            .into());
        }
    }
    Ok(Some(SshStart {
        machines: args.machines.clone(),
        key_file: args.ssh_key.clone(),
        known_hosts: args.ssh_known_hosts.clone(),
        accept_new_host_keys: args.ssh_accept_new_host_keys,
        adopt: args.adopt,
    }))
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _))
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (letters, digits and _ in KEY)"
        )),
    }
}
