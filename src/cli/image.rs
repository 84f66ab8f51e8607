//! `timonel image load IMAGE|ARCHIVE...`: images from the host's Docker daemon or from
//! `docker save` / OCI archives into every running node, without a registry.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Ctx, OutputFormat};
use crate::cluster::{self, images_short};
use crate::error::UserError;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Load images into the cluster's nodes: Docker image references (e.g. `app:1`, read from
    /// the host's Docker daemon) or paths of tar archives (`docker save -o app.tar app:1`).
    /// Images a node already has are skipped.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Image references or archive paths.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(ctx: &Ctx, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let ImageCommand::Load(args) = cmd;
    let rows = cluster::load_images(ctx, &args.images).await?;
    if args.output == OutputFormat::Json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
    }
    let mut failed = 0;
    for r in &rows {
        let digest = r
            .tar_sha256
            .as_deref()
            .map(|d| format!(" (sha256:{})", images_short(d)))
            .unwrap_or_default();
        match r.result.as_str() {
            "imported" => ctx.printer.done(
                &format!(
                    "{}: loaded {} as {}{digest}",
                    r.node,
                    r.image,
                    r.names.join(", ")
                ),
                None,
            ),
            "skipped" => ctx.printer.done(
                &format!("{}: {} already present{digest}, skipped", r.node, r.image),
                None,
            ),
            _ => {
                failed += 1;
                ctx.printer.warn(&format!(
                    "{}: loading {} failed: {}",
                    r.node,
                    r.image,
                    r.error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
    }
    if failed > 0 {
        return Err(UserError::new(
            format!("{failed} image load(s) failed"),
            "the lines above say which and why; fix that and run the same `timonel image load` again (what was loaded is skipped)",
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
