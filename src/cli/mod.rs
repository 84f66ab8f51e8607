//! The command line: global flags and one module per subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use timonel_driver::ClusterName;

use crate::home::Home;
use crate::output::{ColorChoice, Printer, Verbosity};

mod addons;
mod cache;
pub mod cluster_file;
mod completion;
mod config_cmd;
mod doctor;
mod image;
mod logs;
mod manage;
mod node;
mod profile_cmd;
pub mod report;
mod run;
mod service;
mod ssh;
mod start;
mod version;

/// timonel: a local Kubernetes cluster in one command (k3s in Docker containers or VMs).
#[derive(Debug, Parser)]
#[command(name = "timonel", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The cluster profile to act on.
    #[arg(short, long, global = true, default_value = "timonel", env = "TIMONEL_PROFILE", value_parser = parse_profile)]
    pub profile: ClusterName,
    /// More output: step timings and diagnostics (-vv for debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When to colour output (NO_COLOR is honoured with `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// No spinners or progress bars (also TIMONEL_NO_PROGRESS, CI, TERM=dumb).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Whether the profile was given (`-p`, TIMONEL_PROFILE) rather than the default
    /// ([`Cli::parse_args`] sets it).
    #[arg(skip)]
    pub profile_given: bool,
}

fn parse_profile(s: &str) -> Result<ClusterName, String> {
    s.parse::<ClusterName>()
        .map_err(|e| format!("{e}\n\nhint: {}", e.hint()))
}

/// Where k3s artifacts come from (start, cache download).
#[derive(Debug, Args, Default)]
pub struct MirrorArgs {
    /// Download k3s assets from this mirror: <URL>/<version>/<asset>, http(s):// or file://
    /// (also TIMONEL_BINARY_MIRROR).
    #[arg(long)]
    pub binary_mirror: Option<String>,
    /// The k3s channel server to resolve channels with (also TIMONEL_CHANNEL_URL).
    #[arg(long)]
    pub channel_url: Option<String>,
    /// Allow plain http:// mirrors that are not on this machine.
    #[arg(long)]
    pub insecure_mirror: bool,
}

impl MirrorArgs {
    /// The artifact sources: the environment, overridden by these flags; checked.
    pub fn sources(&self, offline: bool) -> anyhow::Result<crate::artifact::Sources> {
        use crate::artifact::sources::parse_url;
        let mut sources = crate::artifact::Sources::from_env()?;
        if let Some(m) = &self.binary_mirror {
            sources.binary_mirror = Some(parse_url("--binary-mirror", m)?);
        }
        if let Some(c) = &self.channel_url {
            sources.channel_url = Some(parse_url("--channel-url", c)?);
        }
        sources.insecure_mirror |= self.insecure_mirror;
        sources.offline |= offline;
        sources.validate()?;
        Ok(sources)
    }
}

/// Text for people, JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster, or start an existing one again.
    Start(Box<start::StartArgs>),
    /// Stop the cluster's nodes, keeping their data.
    Stop(manage::StopArgs),
    /// Freeze the cluster's nodes in place to free their CPU (`unpause` thaws them, no restart).
    Pause(manage::PauseArgs),
    /// Thaw a paused cluster: its nodes run on where they were, and kubectl answers again.
    Unpause(manage::PauseArgs),
    /// Delete the cluster: nodes, networks, volumes, kubeconfig entries, profile.
    Delete(manage::DeleteArgs),
    /// Print a node's IP address.
    Ip(manage::IpArgs),
    /// Show the state of the nodes and the API server (exit code: 0 up, 2 paused, 3 a node is down, 4 not ready).
    Status(manage::StatusArgs),
    /// Print the cluster's kubeconfig (standalone); --merge merges it into your kubeconfig again.
    Kubeconfig(manage::KubeconfigArgs),
    /// Add, delete and list the nodes of a cluster.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Print timonel's version.
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completion(completion::CompletionArgs),
    /// Manage profiles (clusters).
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
    /// Print the k3s log of a node (-f to follow it).
    Logs(logs::LogsArgs),
    /// Run a command in a node (`timonel ssh -- CMD`), or log in to a VM node.
    Ssh(ssh::SshArgs),
    /// Load container images into the cluster's nodes (from Docker or tar archives).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Turn k3s's packaged components on or off (traefik, servicelb, metrics-server, …).
    #[command(subcommand)]
    Addons(addons::AddonsCommand),
    /// Show how to reach a NodePort/LoadBalancer service from this machine.
    Service(service::ServiceArgs),
    /// Persistent defaults for `start` (driver, cpus, memory, kubernetes-version, …).
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// The download cache of k3s releases: list, download ahead of time, clean.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Run one command against a fresh cluster, then delete it (`timonel run -- make test`): for
    /// CI. KUBECONFIG points at the cluster's own kubeconfig; yours is untouched.
    Run(Box<run::RunArgs>),
    /// Check this machine: drivers, cgroups, kernel modules, inotify limits, disk, clock, proxy (exit 1 when a check fails).
    Doctor(doctor::DoctorArgs),
}

impl Cli {
    /// Parses the process's arguments, noting whether the profile was given rather than
    /// defaulted (`timonel run` makes a fresh one otherwise).
    pub fn parse_args() -> Self {
        Self::parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses a command line, noting what was given rather than defaulted: the profile, and
    /// `start`'s (and `run`'s) flags, which win over a cluster file.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        let given = |m: &clap::ArgMatches, id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let mut level = Some(&matches);
        while let Some(m) = level {
            if given(m, "profile") {
                cli.global.profile_given = true;
            }
            level = m.subcommand().map(|(_, sub)| sub);
        }
        if let Some((_, sub)) = matches.subcommand() {
            let explicit = sub
                .ids()
                .map(|id| id.as_str().to_string())
                .filter(|id| given(sub, id))
                .collect();
            match &mut cli.command {
                Command::Start(a) => a.explicit = explicit,
                Command::Run(a) => a.start.explicit = explicit,
                _ => {}
            }
        }
        Ok(cli)
    }

    /// Whether the command streams JSON events on stdout (`start -o json`), so `main` reports a
    /// failure as an event too.
    pub fn streams_events(&self) -> bool {
        matches!(&self.command, Command::Start(a) if a.output == OutputFormat::Json)
    }
}

pub use crate::cluster::Ctx;

/// An interrupt no command took charge of: quit at once, as if nothing listened.
pub fn quit_interrupted() {
    std::process::exit(130);
}

/// A second Ctrl-C: quit at once, with the status of an interrupted command.
pub(crate) fn quit_now() {
    eprintln!("interrupted again: quitting without cleaning up");
    std::process::exit(130);
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let printer = Printer::new(verbosity, cli.global.color, cli.global.no_progress);
    let home = Home::from_env()?;
    let mut cli = cli;
    // The cluster file first: its `name` is the profile unless `-p` is given.
    let start = match &mut cli.command {
        Command::Start(a) => Some(&mut **a),
        Command::Run(a) => Some(&mut a.start),
        _ => None,
    };
    let mut file_name = None;
    if let Some(start) = start {
        if let Some(path) = &start.config {
            let file = cluster_file::load(path)?;
            file_name = file.name.clone();
            start.cluster_file = Some(file);
        }
    }
    let profile = match &cli.command {
        Command::Run(_) if !cli.global.profile_given => run::fresh_profile()?,
        _ if !cli.global.profile_given => file_name.clone().unwrap_or(cli.global.profile.clone()),
        _ => cli.global.profile.clone(),
    };
    let ctx = Ctx::new(printer, home, profile);
    if let Some(name) = file_name.filter(|n| cli.global.profile_given && *n != ctx.profile) {
        ctx.printer.warn(&format!(
            "the cluster file names the cluster `{name}`; -p (or TIMONEL_PROFILE) wins: this is `{}`",
            ctx.profile
        ));
    }
    match cli.command {
        Command::Start(args) => start::run(&ctx, *args).await,
        Command::Stop(args) => manage::stop(&ctx, args).await,
        Command::Pause(args) => manage::pause(&ctx, args, true).await,
        Command::Unpause(args) => manage::pause(&ctx, args, false).await,
        Command::Delete(args) => manage::delete(&ctx, args).await,
        Command::Ip(args) => manage::ip(&ctx, args).await,
        Command::Status(args) => manage::status(&ctx, args).await,
        Command::Kubeconfig(args) => manage::kubeconfig(&ctx, args).await,
        Command::Node(cmd) => node::run(&ctx, cmd).await,
        Command::Version(args) => version::run(&ctx, args),
        Command::Completion(args) => completion::run(args),
        Command::Profile(cmd) => profile_cmd::run(&ctx, cmd).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::Ssh(args) => ssh::run(&ctx, args).await,
        Command::Image(cmd) => image::run(&ctx, cmd).await,
        Command::Addons(cmd) => addons::run(&ctx, cmd).await,
        Command::Service(args) => service::run(&ctx, args).await,
        Command::Config(cmd) => config_cmd::run(&ctx, cmd).await,
        Command::Cache(cmd) => cache::run(&ctx, cmd).await,
        Command::Doctor(args) => doctor::run(&ctx, args).await,
        Command::Run(args) => run::run(&ctx, *args, cli.global.profile_given).await,
    }
}
