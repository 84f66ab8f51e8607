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
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: ProfileCommand) -> anyhow::Result<ExitCode> {
    let ProfileCommand::List(args) = cmd;
    let rows: Vec<Row> = ctx
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
                error: None,
            },
            Err(e) => Row {
                name,
                driver: None,
                version: None,
                nodes: 0,
                state: "invalid".into(),
                error: Some(e.to_string()),
            },
        })
        .collect();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Text => {
            if rows.is_empty() {
                ctx.printer
                    .info("no profiles yet: `timonel start` creates one");
            } else {
                println!(
                    "{:<20} {:<10} {:<16} {:>5}  STATE",
                    "PROFILE", "DRIVER", "VERSION", "NODES"
                );
                for r in rows {
                    println!(
                        "{:<20} {:<10} {:<16} {:>5}  {}",
                        r.name,
                        r.driver.as_deref().unwrap_or("-"),
                        r.version.as_deref().unwrap_or("-"),
                        r.nodes,
                        r.state
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
