//! `timonel run [start flags] -- CMD [ARGS]`: an ephemeral cluster around one command, for CI.
//! It starts a cluster under a fresh profile (or `-p`), runs CMD with `KUBECONFIG` set to the
//! cluster's own kubeconfig (the user's is neither read nor written), deletes the cluster
//! whatever happens, and exits with CMD's code: 128 + the signal when interrupted (SIGINT and
//! SIGTERM are forwarded to CMD first), 127 when CMD cannot be found.

use std::ffi::OsString;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use clap::Args;
use timonel_driver::ClusterName;

use super::start::StartArgs;
use super::{Ctx, OutputFormat};
use crate::cluster::{self, KUBECONFIG_FILE};
use crate::error::UserError;

/// How long CMD gets to exit after a forwarded signal before it is killed.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// `start`'s flags; `--keep-on-failure` also keeps the cluster when CMD fails.
    #[command(flatten)]
    pub start: StartArgs,
    /// The command to run against the cluster, after `--`, with its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// A profile name no other cluster has: `run-` and 8 random hex digits.
pub fn fresh_profile() -> anyhow::Result<ClusterName> {
    let token = crate::distro::k3s::new_token();
    Ok(format!("run-{}", &token[..8]).parse::<ClusterName>()?)
}

/// How CMD ended.
enum Outcome {
    /// It exited (or was killed) on its own: its exit code.
    Exited(u8),
    /// timonel was interrupted by this signal while CMD ran.
    Interrupted(i32),
    /// It could not be started: the exit code a shell gives (127 not found, 126 otherwise).
    NotStarted(u8),
}

pub async fn run(ctx: &Ctx, args: RunArgs, profile_given: bool) -> anyhow::Result<ExitCode> {
    // First, so an interrupt at any point of this command is seen.
    let cancel = cluster::Cancel::on_signals(
        || {
            eprintln!(
                "interrupted: stopping, then deleting the cluster (Ctrl-C again to quit at once)"
            )
        },
        super::quit_now,
    );
    check(ctx, &args.start, profile_given)?;
    let keep_on_failure = args.start.keep_on_failure;
    let mut opts = super::start::prepare(ctx, args.start)?;
    opts.standalone = true;
    let name = ctx.profile.clone();
    ctx.printer
        .info(&format!("Starting cluster `{name}` for the command"));
    match cluster::start(ctx, opts, &cancel).await {
        Ok(()) => {}
        // `start` removed what it created.
        Err(cluster::Error::Interrupted) => return Ok(interrupted_code()),
        Err(e) => return Err(e.into()),
    }
    let kubeconfig = ctx.store.dir(&name).join(KUBECONFIG_FILE);
    let outcome = run_command(&args.command, &kubeconfig, &name, &cancel).await;
    let code = match outcome {
        Outcome::Exited(code) | Outcome::NotStarted(code) => code,
        Outcome::Interrupted(signal) => 128u8.saturating_add(signal as u8),
    };
    if keep_on_failure && matches!(outcome, Outcome::Exited(c) if c != 0) {
        ctx.printer.warn(&format!(
            "the command failed (exit code {code}); kept cluster `{name}` (--keep-on-failure): KUBECONFIG={} reaches it, `timonel delete -p {name}` deletes it",
            kubeconfig.display()
        ));
        return Ok(ExitCode::from(code));
    }
    cluster::delete_standalone(ctx).await?;
    Ok(ExitCode::from(code))
}

/// What `run` refuses before anything is touched.
fn check(ctx: &Ctx, start: &StartArgs, profile_given: bool) -> anyhow::Result<()> {
    if start.output == OutputFormat::Json {
        return Err(UserError::new(
            "`run` has no `-o json`: the command's output owns stdout",
            "drop `-o json`; timonel's progress goes to stderr",
        )
        .into());
    }
    if let Some(path) = &start.kubeconfig {
        return Err(UserError::new(
            format!(
                "`run` merges into no kubeconfig, so --kubeconfig {} has no use",
                path.display()
            ),
            "drop --kubeconfig: the command gets KUBECONFIG set to the cluster's own file",
        )
        .into());
    }
    if profile_given && ctx.store.exists(&ctx.profile) {
        return Err(UserError::new(
            format!(
                "profile `{}` exists, and `run` deletes its cluster when the command ends",
                ctx.profile
            ),
            "give `run` a new profile name with -p, or none (it makes one up)",
        )
        .into());
    }
    Ok(())
}

/// Runs CMD with the cluster's kubeconfig; an interrupt is forwarded to it.
async fn run_command(
    command: &[OsString],
    kubeconfig: &std::path::Path,
    profile: &ClusterName,
    cancel: &cluster::Cancel,
) -> Outcome {
    let Some((program, rest)) = command.split_first() else {
        return Outcome::NotStarted(127);
    };
    let shown = program.to_string_lossy();
    let mut child = match tokio::process::Command::new(program)
        .args(rest)
        .env("KUBECONFIG", kubeconfig)
        .env("TIMONEL_PROFILE", profile.as_str())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let (code, hint) = if e.kind() == std::io::ErrorKind::NotFound {
                (127, "check its name and that it is on PATH")
            } else {
                (126, "check that it is an executable you may run")
            };
            eprintln!("error: cannot run `{shown}`: {e}\n\nhint: {hint}; the cluster is deleted");
            return Outcome::NotStarted(code);
        }
    };
    tokio::select! {
        status = child.wait() => Outcome::Exited(status.map_or(1, |s| exit_code(&s))),
        _ = cancel.cancelled() => {
            let signal = cluster::first_signal().unwrap_or(2);
            forward(&mut child, signal);
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                eprintln!("`{shown}` did not exit within {GRACE:?} of the signal; killing it");
                let _ = child.kill().await;
            }
            Outcome::Interrupted(signal)
        }
    }
}

/// The exit code of a process that ended: its code, or 128 + the signal that killed it.
fn exit_code(status: &ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Unix codes are 0-255; a Windows code beyond that (an NTSTATUS) is a failure.
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128u8.saturating_add(signal as u8);
        }
    }
    1
}

/// Sends the interrupting signal on to CMD. On Windows the console already gave CMD the
/// Ctrl-C / Ctrl-Break; it gets the grace period to exit.
fn forward(child: &mut tokio::process::Child, signal: i32) {
    #[cfg(unix)]
    {
        use rustix::process::{kill_process, Pid, Signal};
        let sig = if signal == 15 {
            Signal::TERM
        } else {
            Signal::INT
        };
        if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
            let _ = kill_process(pid, sig);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (child, signal);
    }
}

/// The exit code of a run interrupted before CMD started.
fn interrupted_code() -> ExitCode {
    ExitCode::from(128u8.saturating_add(cluster::first_signal().unwrap_or(2) as u8))
}
