//! `timonel doctor [-o json]`: checks the host before a cluster is started on it — the drivers
//! (the Docker engine and its version first), cgroups, the kernel modules and inotify limits k3s
//! needs, free disk under `$TIMONEL_HOME`, the clock and the proxy settings. Each check has a
//! verdict (ok, warn, fail) and, when not ok, the fix. Exit code: 1 when a check fails, else 0
//! (warnings included). Nothing is changed on the host.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;
use timonel_driver::{Availability, DriverKind};

use super::{Ctx, OutputFormat};

mod checks;

use checks::{Check, HostFiles, Verdict};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output format: a table, or one JSON document.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The JSON document of `doctor -o json`.
#[derive(Debug, Serialize)]
struct Report {
    /// The worst verdict of all checks.
    verdict: Verdict,
    checks: Vec<Check>,
}

/// How long one driver's probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Ctx, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut list = drivers().await;
    if cfg!(target_os = "linux") {
        let host = HostFiles::real();
        list.push(checks::cgroups(&host, uid()));
        list.push(checks::kernel_module(&host, checks::BR_NETFILTER));
        list.push(checks::kernel_module(&host, checks::OVERLAY));
        list.extend(checks::inotify(&host));
    }
    let home = ctx.home.root();
    list.push(checks::free_disk(home, checks::measure_free(home)));
    list.push(checks::clock(SystemTime::now(), built_at()));
    list.push(checks::proxies(|k| std::env::var(k).ok()));

    let report = Report {
        verdict: checks::worst(&list),
        checks: list,
    };
    match args.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?)?,
        OutputFormat::Text => print_table(&report.checks)?,
    }
    let count = |v| report.checks.iter().filter(|c| c.verdict == v).count();
    ctx.printer.info(&format!(
        "{} checks: {} ok, {} warnings, {} failed",
        report.checks.len(),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail)
    ));
    Ok(if report.verdict == Verdict::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(list: &[Check]) -> std::io::Result<()> {
    let width = list.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    crate::outln!("{:<width$}  {:<6} DETAIL", "CHECK", "RESULT")?;
    for c in list {
        crate::outln!(
            "{:<width$}  {:<6} {}",
            c.name,
            c.verdict.to_string(),
            c.detail
        )?;
        if let Some(fix) = &c.fix {
            crate::outln!("{:<width$}  {:<6} fix: {fix}", "", "")?;
        }
    }
    Ok(())
}

/// The drivers that can run on this OS, each probed (at once, each within
/// [`PROBE_TIMEOUT`]), then whether any is usable.
async fn drivers() -> Vec<Check> {
    let kinds: Vec<DriverKind> = crate::drivers::ORDER
        .iter()
        .copied()
        .filter(|k| match k {
            DriverKind::Kvm => cfg!(target_os = "linux"),
            DriverKind::Hyperv => cfg!(windows),
            _ => true,
        })
        .collect();
    let mut list: Vec<Check> =
        futures_util::future::join_all(kinds.iter().map(|k| probe(*k))).await;
    let usable: Vec<String> = kinds
        .iter()
        .zip(&list)
        .filter(|(_, c)| c.verdict == Verdict::Ok)
        .map(|(k, _)| k.to_string())
        .collect();
    list.push(if usable.is_empty() {
        Check::not_ok(
            "usable driver",
            Verdict::Fail,
            "no driver can run a cluster on this machine",
            "install and start Docker (the default driver), or fix one of the drivers above",
        )
    } else {
        Check::ok("usable driver", usable.join(", "))
    });
    list
}

async fn probe(kind: DriverKind) -> Check {
    let name = format!("driver {kind}");
    let selected = match crate::drivers::make(kind) {
        Ok(s) => s,
        Err(e) => {
            return Check::not_ok(
                &name,
                Verdict::Warn,
                format!("{e:#}"),
                crate::cli::report::hint_of(&anyhow::Error::from(e))
                    .unwrap_or_else(|| "use another driver (`--driver docker`)".to_string()),
            )
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, selected.probe()).await {
        Ok(Availability::Ready { version, notes }) if notes.is_empty() => Check::ok(&name, version),
        Ok(Availability::Ready { version, notes }) => {
            Check::ok(&name, format!("{version}; {}", notes.join("; ")))
        }
        Ok(Availability::Unusable { reason, fix }) => {
            Check::not_ok(&name, Verdict::Warn, reason, fix)
        }
        Err(_) => Check::not_ok(
            &name,
            Verdict::Warn,
            format!(
                "did not answer within {}",
                humantime::format_duration(PROBE_TIMEOUT)
            ),
            format!("check that the {kind} service is running and responsive"),
        ),
    }
}

#[cfg(unix)]
fn uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

#[cfg(not(unix))]
fn uid() -> Option<u32> {
    None
}

/// When the commit timonel was built from was made (build.rs), but no earlier than the start
/// of 2025 (when no commit time is known).
fn built_at() -> SystemTime {
    const FLOOR: u64 = 1_735_689_600; // 2025-01-01T00:00:00Z
    let commit: u64 = env!("TIMONEL_GIT_COMMIT_TIME").parse().unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(commit.max(FLOOR))
}
