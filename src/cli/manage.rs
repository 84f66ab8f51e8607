//! `stop`, `pause`, `unpause`, `delete`, `ip`, `status`, `kubeconfig`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{Ctx, OutputFormat};
use crate::cluster;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// How long nodes get to shut down before they are killed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn stop(ctx: &Ctx, args: StopArgs) -> anyhow::Result<ExitCode> {
    cluster::stop(ctx, args.timeout).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Output format: with json, the result as one object on stdout.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `pause -o json` / `unpause -o json`: the cluster's state after, and the nodes that changed.
#[derive(Debug, serde::Serialize)]
struct PauseResult<'a> {
    profile: &'a str,
    state: &'a str,
    changed: Vec<String>,
}

pub async fn pause(ctx: &Ctx, args: PauseArgs, to_paused: bool) -> anyhow::Result<ExitCode> {
    // Freezing or thawing takes milliseconds a node; one that stops halfway leaves the cluster
    // half paused, so the first Ctrl-C (or SIGTERM) lets it finish; a second one quits at once.
    // After an unpause, the wait for the API server is cut short.
    let cancel = cluster::Cancel::on_signals(
        move || {
            eprintln!(
                "interrupted: finishing the {} of the nodes so none is left behind (Ctrl-C again to quit at once)",
                if to_paused { "pause" } else { "unpause" }
            )
        },
        super::quit_now,
    );
    let outcome = if to_paused {
        cluster::pause(ctx).await?
    } else {
        cluster::unpause(ctx, &cancel).await?
    };
    if args.output == OutputFormat::Json {
        let changed = match outcome {
            cluster::PauseOutcome::Changed(nodes) => nodes.iter().map(|n| n.to_string()).collect(),
            cluster::PauseOutcome::Already => Vec::new(),
        };
        let result = PauseResult {
            profile: ctx.profile.as_str(),
            state: if to_paused { "paused" } else { "running" },
            changed,
        };
        crate::outln!("{}", serde_json::to_string_pretty(&result)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete every profile of this home, and clusters this home created whose profile files are
    /// gone. Clusters of other homes sharing the Docker daemon are listed and left alone.
    #[arg(long)]
    pub all: bool,
    /// With --all: also delete the clusters other timonel homes (users, CI jobs) made on this
    /// Docker daemon, and unlabelled ones from older timonel versions.
    #[arg(long, requires = "all")]
    pub include_foreign: bool,
    /// With --all: also remove timonel's home folder (the artifact cache included).
    #[arg(long, requires = "all")]
    pub purge: bool,
    /// The kubeconfig to remove our entries from (default: the one `start` used).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

pub async fn delete(ctx: &Ctx, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    // A delete that stops halfway leaves a cluster half removed, so the first Ctrl-C (or
    // SIGTERM) lets it finish; a second one quits at once.
    let _finish = cluster::Cancel::on_signals(
        || {
            eprintln!("interrupted: finishing the delete so nothing is left half removed (Ctrl-C again to quit at once)")
        },
        super::quit_now,
    );
    if args.all {
        cluster::delete_all(ctx, args.purge, args.include_foreign).await?;
    } else {
        cluster::delete(ctx, args.kubeconfig.as_deref()).await?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct IpArgs {
    /// The node (default: the first server).
    #[arg(long)]
    pub node: Option<String>,
}

pub async fn ip(ctx: &Ctx, args: IpArgs) -> anyhow::Result<ExitCode> {
    crate::outln!("{}", cluster::ip(ctx, args.node.as_deref()).await?)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn status(ctx: &Ctx, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report = cluster::status(ctx).await?;
    match args.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?)?,
        OutputFormat::Text => {
            crate::outln!("profile: {}", report.profile)?;
            crate::outln!("driver:  {}", report.driver)?;
            crate::outln!("version: {}", report.version)?;
            crate::outln!("state:   {}", report.state)?;
            crate::outln!(
                "api:     {}{}",
                report.api,
                report
                    .api_server
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            )?;
            for m in &report.mounts {
                crate::outln!("mount:   {m}")?;
            }
            if let Some(lb) = &report.load_balancer {
                crate::outln!(
                    "lb:      {} ({} → {})",
                    lb.state,
                    lb.url,
                    if lb.backends.is_empty() {
                        "no backends".to_string()
                    } else {
                        lb.backends.join(", ")
                    }
                )?;
                if lb.state != "running" {
                    crate::outln!(
                        "         the kubeconfig points at it: `timonel start -p {}` starts it again",
                        report.profile
                    )?;
                }
            }
            crate::outln!(
                "{:<24} {:<7} {:<12} {:<8} {:<16} KUBERNETES",
                "NODE",
                "ROLE",
                "HOST",
                "K3S",
                "IP"
            )?;
            for n in &report.nodes {
                crate::outln!(
                    "{:<24} {:<7} {:<12} {:<8} {:<16} {}",
                    n.name,
                    n.role,
                    n.host,
                    n.k3s,
                    n.ip.as_deref().unwrap_or("-"),
                    n.kubernetes
                )?;
            }
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Also merge the context into the kubeconfig file again.
    #[arg(long)]
    pub merge: bool,
    /// With --merge: the file to merge into.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// With --merge: do not make it the current context.
    #[arg(long)]
    pub keep_context: bool,
}

pub async fn kubeconfig(ctx: &Ctx, args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let text = cluster::kubeconfig_cmd(
        ctx,
        args.merge,
        args.kubeconfig.as_deref(),
        args.keep_context,
    )
    .await?;
    crate::output::write_stdout_bytes(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
