//! `timonel addons list|enable|disable NAME`: k3s's packaged components (traefik, servicelb,
//! metrics-server, local-storage, coredns).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Ctx, OutputFormat};
use crate::cluster;

#[derive(Debug, Subcommand)]
pub enum AddonsCommand {
    /// List the addons and whether the cluster has them.
    List(ListArgs),
    /// Turn an addon on (the servers restart to apply it).
    Enable(SwitchArgs),
    /// Turn an addon off (the servers restart to apply it; k3s removes it).
    Disable(SwitchArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// traefik, servicelb, metrics-server, local-storage or coredns.
    pub name: String,
    /// How long to wait for the cluster after the restart.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
}

pub async fn run(ctx: &Ctx, cmd: AddonsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AddonsCommand::List(a) => {
            let profile = ctx.store.load(&ctx.profile)?;
            let rows = cluster::addon_rows(&profile);
            match a.output {
                OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?,
                OutputFormat::Text => {
                    crate::outln!("{:<16} {:<9} DESCRIPTION", "ADDON", "STATE")?;
                    for r in rows {
                        crate::outln!(
                            "{:<16} {:<9} {}",
                            r.name,
                            if r.enabled { "enabled" } else { "disabled" },
                            r.description
                        )?;
                    }
                }
            }
        }
        AddonsCommand::Enable(a) => switch(ctx, &a, true).await?,
        AddonsCommand::Disable(a) => switch(ctx, &a, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn switch(ctx: &Ctx, a: &SwitchArgs, enable: bool) -> anyhow::Result<()> {
    let changed = cluster::set_addon(ctx, &a.name, enable, a.wait_timeout).await?;
    if !changed {
        ctx.printer.info(&format!(
            "{} is already {} in profile `{}`",
            a.name,
            if enable { "enabled" } else { "disabled" },
            ctx.profile
        ));
    }
    Ok(())
}
