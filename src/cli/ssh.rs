//! `timonel ssh [--node N] [-- CMD...]`: a command in a node (docker exec for containers, SSH
//! for VMs), or an interactive login on VM nodes through the system's `ssh` client.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use timonel_driver::{Cmd, CommandError};

use super::Ctx;
use crate::error::UserError;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The node (default: the first server).
    #[arg(long)]
    pub node: Option<String>,
    /// The command to run in the node; without one, an interactive login (VM nodes).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: SshArgs) -> anyhow::Result<ExitCode> {
    let profile = ctx.store.load(&ctx.profile)?;
    let node = crate::cluster::pick_node(&profile, args.node.as_deref())?.clone();
    let nodes = crate::cluster::node::ops(ctx.driver_for(&profile)?, &ctx.home);
    let driver = nodes.driver().as_ref();
    let state = driver.state(&node.name).await?;
    if !state.is_running() {
        return Err(UserError::new(
            format!("node `{}` is {state}", node.name),
            format!("start it with `timonel start -p {}`", profile.name),
        )
        .into());
    }
    let containers = driver.capabilities().nodes == timonel_driver::NodeKind::Container;
    if args.command.is_empty() {
        if containers {
            return Err(UserError::new(
                format!(
                    "node `{}` is a container without a shell to log in to",
                    node.name
                ),
                format!(
                    "run a command in it instead: `timonel ssh -p {} -- k3s kubectl get pods -A`",
                    profile.name
                ),
            )
            .into());
        }
        return interactive(ctx, &profile, driver, &node).await;
    }
    let access = nodes
        .access(&profile, &node, Duration::from_secs(60))
        .await?;
    let cmd = Cmd::new(&args.command[0])
        .args(args.command[1..].iter().cloned())
        .timeout(Duration::from_secs(24 * 3600));
    let (code, stdout, stderr) = match access.run(&cmd).await {
        Ok(out) => (out.code, out.stdout, out.stderr),
        Err(CommandError::Exited {
            code,
            stdout,
            stderr,
            ..
        }) => (code, stdout, stderr),
        Err(e) => return Err(e.into()),
    };
    crate::output::write_stdout_bytes(stdout.as_bytes())?;
    // The node's stderr is passed on as it is; a closed stderr is no reason to panic.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), stderr.as_bytes());
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Hands the terminal to the system's `ssh` client with the profile's key and the node's
/// recorded host key.
async fn interactive(
    ctx: &Ctx,
    profile: &crate::profile::Profile,
    driver: &dyn timonel_driver::Driver,
    node: &crate::profile::NodeRecord,
) -> anyhow::Result<ExitCode> {
    if let (Some(machine), Some(ssh)) = (&node.machine, &profile.ssh) {
        // A machine of the user's: their own ssh, known_hosts and key.
        let mut cmd = std::process::Command::new("ssh");
        if let Some(key) = &ssh.key_file {
            cmd.arg("-i").arg(key);
        }
        if let Some(file) = &ssh.known_hosts {
            cmd.arg("-o")
                .arg(format!("UserKnownHostsFile={}", file.display()));
        }
        cmd.arg("-p")
            .arg(machine.port.to_string())
            .arg(format!("{}@{}", machine.user, machine.host));
        return run_ssh_client(cmd);
    }
    let addr = driver.endpoint(&node.name, 22).await?;
    let keys = crate::cluster::node::key_dir(&ctx.home, &profile.name);
    let user = profile
        .ssh_user
        .clone()
        .unwrap_or_else(|| timonel_driver_vm::options::DEFAULT_SSH_USER.to_string());
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-i")
        .arg(keys.join(timonel_driver_vm::keys::PRIVATE_KEY_FILE))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            timonel_driver_vm::host_key_path(&keys, node.name.as_str()).display()
        ))
        .arg("-o")
        .arg("StrictHostKeyChecking=accept-new")
        .arg("-p")
        .arg(addr.port().to_string())
        .arg(format!("{user}@{}", addr.ip()));
    run_ssh_client(cmd)
}

fn run_ssh_client(mut cmd: std::process::Command) -> anyhow::Result<ExitCode> {
    let status = cmd.status().map_err(|e| {
        UserError::new(
            format!("cannot run the `ssh` client: {e}"),
            "install OpenSSH's client, or run a command with `timonel ssh -- CMD`",
        )
    })?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}
