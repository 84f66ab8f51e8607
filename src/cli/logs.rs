//! `timonel logs [--node N] [-f] [--tail N]`: the distribution's log from a node (k3s is the
//! container's command, so its log is the container's output; on VMs and machines, the
//! service's journal).

use std::process::ExitCode;

use clap::Args;
use futures_util::StreamExt;

use super::Ctx;
use crate::drivers;
use crate::error::UserError;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The node (default: the first server; `timonel node list` shows the nodes).
    #[arg(long)]
    pub node: Option<String>,
    /// Keep printing new lines as they are written, until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (0: all).
    #[arg(long, default_value_t = 0)]
    pub tail: usize,
}

pub async fn run(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let profile = ctx.store.load(&ctx.profile)?;
    let node = crate::cluster::pick_node(&profile, args.node.as_deref())?;
    let selected = drivers::for_profile(&profile)?;
    if !args.follow {
        let driver = selected.driver.as_ref();
        let text = match driver.logs(&node.name, args.tail).await {
            // VM nodes: the service's journal, over SSH.
            Err(timonel_driver::DriverError::Unsupported { .. })
                if !driver.capabilities().container_nodes =>
            {
                let access = crate::cluster::node_access(
                    ctx,
                    &profile,
                    driver,
                    node,
                    std::time::Duration::from_secs(60),
                )
                .await?;
                crate::cluster::journal(access.as_ref(), node.role, args.tail).await?
            }
            other => other?,
        };
        crate::output::write_stdout_bytes(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let docker = selected.docker.as_ref().ok_or_else(|| {
        UserError::new(
            format!(
                "following the log is not possible with the {} driver",
                profile.driver
            ),
            format!(
                "`timonel logs -p {} --tail 100` prints the last lines",
                profile.name
            ),
        )
    })?;
    let tail = (args.tail > 0).then_some(args.tail);
    let mut stream = docker.follow_logs(&node.name, tail).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            chunk = stream.next() => match chunk {
                Some(bytes) => {
                    crate::output::write_stdout_bytes(&bytes?)?;
                }
                // The container stopped: nothing more will be written.
                None => {
                    ctx.printer.info(&format!("node {} stopped; end of its log", node.name));
                    break;
                }
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}
