//! `timonel logs [--node N] [-f] [--tail N]`: the distribution's log from a node (k3s is the
//! container's command, so its log is the container's output; on VMs and machines, the
//! service's journal).

use std::process::ExitCode;

use clap::Args;
use futures_util::StreamExt;

use super::Ctx;
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
    let nodes = crate::cluster::node::ops(ctx.driver_for(&profile)?, &ctx.home);
    if !args.follow {
        let text = nodes.logs(&profile, node, args.tail).await?;
        crate::output::write_stdout_bytes(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let follower = nodes.driver().as_follow_logs().ok_or_else(|| {
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
    let mut stream = follower.follow_logs(&node.name, tail).await?;
    // Ctrl-C ends the follow quietly (a second one quits at once).
    let cancel = crate::cluster::Cancel::on_signals(|| {}, super::quit_now);
    let interrupted = cancel.cancelled();
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
