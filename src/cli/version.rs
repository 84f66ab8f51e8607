use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::{Ctx, OutputFormat};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct VersionInfo {
    version: &'static str,
    commit: &'static str,
    os: &'static str,
    arch: &'static str,
    drivers: Vec<&'static str>,
}

pub fn run(_ctx: &Ctx, args: VersionArgs) -> anyhow::Result<ExitCode> {
    let info = VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        // Set by build.rs at build time: a constant, nothing is asked at run time.
        commit: env!("TIMONEL_GIT_COMMIT"),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        drivers: crate::drivers::compiled_in(),
    };
    match args.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&info)?)?,
        OutputFormat::Text => crate::outln!(
            "timonel {} (commit {}, {}/{})",
            info.version,
            info.commit,
            info.os,
            info.arch
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
