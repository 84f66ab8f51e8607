use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{Ctx, OutputFormat};

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List profiles with their driver, version, nodes and state.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct Row {
    name: String,
    driver: Option<String>,
    version: Option<String>,
    nodes: usize,
    /// As timonel last left it (`creating`, `running`, `stopped`), or `invalid`.
    state: String,
    /// What the driver reports now for the first server (`running`, `stopped`, `not created`,
    /// …), or `unknown` when the driver cannot tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Host folders in the nodes (`--mount`), as `HOST:NODE[:ro]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<String>,
}

pub async fn run(ctx: &Ctx, cmd: ProfileCommand) -> anyhow::Result<ExitCode> {
    let ProfileCommand::List(args) = cmd;
    let mut rows: Vec<Row> = ctx
        .store
        .list()
        .into_iter()
        .map(|(name, p)| match p {
            Ok(p) => Row {
                name,
                driver: Some(p.driver.to_string()),
                version: Some(p.version.clone()),
                nodes: p.nodes.len(),
                state: serde_json::to_value(p.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                live: None,
                error: None,
                mounts: p.mounts.iter().map(ToString::to_string).collect(),
            },
            Err(e) => Row {
                name,
                driver: None,
                version: None,
                nodes: 0,
                state: "invalid".into(),
                live: None,
                error: Some(e.to_string()),
                mounts: Vec::new(),
            },
        })
        .collect();
    // The live state of each profile's first server, asked of its driver (in parallel, briefly).
    let live = futures_util::future::join_all(rows.iter().map(|r| live_state(ctx, &r.name))).await;
    for (row, live) in rows.iter_mut().zip(live) {
        if row.error.is_none() {
            row.live = Some(live);
        }
    }
    match args.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?,
        OutputFormat::Text => {
            if rows.is_empty() {
                ctx.printer
                    .info("no profiles yet: `timonel start` creates one");
            } else {
                crate::outln!(
                    "{:<20} {:<10} {:<16} {:>5}  STATE",
                    "PROFILE",
                    "DRIVER",
                    "VERSION",
                    "NODES"
                )?;
                for r in rows {
                    crate::outln!(
                        "{:<20} {:<10} {:<16} {:>5}  {}",
                        r.name,
                        r.driver.as_deref().unwrap_or("-"),
                        r.version.as_deref().unwrap_or("-"),
                        r.nodes,
                        match &r.live {
                            Some(live) if *live != r.state => format!("{live} (last {})", r.state),
                            _ => r.state.clone(),
                        }
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn live_state(ctx: &Ctx, name: &str) -> String {
    let Ok(name) = name.parse() else {
        return "unknown".into();
    };
    let Ok(profile) = ctx.store.load(&name) else {
        return "unknown".into();
    };
    let (Ok(driver), Some(server)) = (ctx.driver_for(&profile), profile.server()) else {
        return "unknown".into();
    };
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        driver.state(&server.name),
    )
    .await
    {
        Ok(Ok(state)) => state.to_string(),
        _ => "unknown".into(),
    }
}
