use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Ctx, OutputFormat};
use crate::cluster;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add a node to the running cluster (an agent, or a server with --control-plane).
    Add(AddArgs),
    /// Delete a node: its Kubernetes Node object (without draining) and the machine.
    Delete(DeleteArgs),
    /// List the nodes with their state, address and API port.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Add a server (the cluster must have been created with --control-planes 3 or more).
    #[arg(long)]
    pub control_plane: bool,
    /// How long to wait for the node to be Ready.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// ssh clusters: the machine to add, as user@host[:port] (checked like at `start`).
    #[arg(long = "node", value_name = "USER@HOST[:PORT]", value_parser = parse_machine)]
    pub machine: Option<timonel_driver_ssh::SshHost>,
    #[command(flatten)]
    pub mirror: super::MirrorArgs,
}

fn parse_machine(s: &str) -> Result<timonel_driver_ssh::SshHost, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The node's name (see `timonel node list`).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(ctx: &Ctx, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Add(a) => {
            let sources = a.mirror.sources(false)?;
            let name = cluster::node_add(
                ctx,
                cluster::NodeAdd {
                    control_plane: a.control_plane,
                    machine: a.machine,
                    wait_timeout: a.wait_timeout,
                    sources,
                },
            )
            .await?;
            crate::outln!("{name}")?;
        }
        NodeCommand::Delete(d) => cluster::node_delete(ctx, &d.name).await?,
        NodeCommand::List(l) => {
            let rows = cluster::node_list(ctx).await?;
            match l.output {
                OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?,
                OutputFormat::Text => {
                    crate::outln!(
                        "{:<24} {:<7} {:<12} {:<16} API PORT",
                        "NAME",
                        "ROLE",
                        "STATE",
                        "IP"
                    )?;
                    for r in rows {
                        crate::outln!(
                            "{:<24} {:<7} {:<12} {:<16} {}",
                            r.name,
                            r.role,
                            r.state,
                            r.ip.as_deref().unwrap_or("-"),
                            r.api_port
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| "-".into())
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
