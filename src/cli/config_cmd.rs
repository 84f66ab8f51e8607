//! `timonel config set|get|unset|view`: persistent defaults for `start` (src/config.rs);
//! `timonel config export`: a cluster's cluster file (`cli::cluster_file`).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Ctx, OutputFormat};
use crate::config::{Key, Settings};
use crate::error::UserError;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set a default for `start` (flags still win): driver, cpus, memory, kubernetes-version,
    /// nodes, wait-timeout.
    Set(SetArgs),
    /// Print one setting's value.
    Get(KeyArgs),
    /// Remove a setting (the built-in default applies again).
    Unset(KeyArgs),
    /// Print every setting.
    View(ViewArgs),
    /// Write the cluster file of an existing cluster (-p), from which `start --config`
    /// creates it again: to stdout, or to a new file with -o.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write the file here (a file that exists is refused without --force), written whole
    /// or not at all.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The setting.
    pub key: String,
    /// Its value, checked like the `start` flag of the same name.
    pub value: String,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The setting.
    pub key: String,
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(ctx: &Ctx, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let home = &ctx.home;
    match cmd {
        ConfigCommand::Set(a) => {
            let key: Key = a.key.parse()?;
            let mut settings = Settings::load(home)?;
            settings.set(key, &a.value)?;
            settings.save(home)?;
            ctx.printer.done(
                &format!(
                    "{key} = {} (in {})",
                    a.value.trim(),
                    Settings::path(home).display()
                ),
                None,
            );
        }
        ConfigCommand::Get(a) => {
            let key: Key = a.key.parse()?;
            let settings = Settings::load(home)?;
            match settings.get(key) {
                Some(v) => crate::outln!("{v}")?,
                None => {
                    return Err(UserError::new(
                        format!("`{key}` is not set"),
                        format!(
                            "`start` uses its built-in default; set one with `timonel config set {key} <value>` ({})",
                            key.describe()
                        ),
                    )
                    .into())
                }
            }
        }
        ConfigCommand::Unset(a) => {
            let key: Key = a.key.parse()?;
            let mut settings = Settings::load(home)?;
            if settings.unset(key) {
                settings.save(home)?;
                ctx.printer.done(&format!("Unset {key}"), None);
            } else {
                ctx.printer.info(&format!("`{key}` was not set"));
            }
        }
        ConfigCommand::Export(a) => export(ctx, a)?,
        ConfigCommand::View(a) => {
            let settings = Settings::load(home)?;
            match a.output {
                OutputFormat::Json => {
                    let map: serde_json::Map<String, serde_json::Value> = settings
                        .iter()
                        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                        .collect();
                    crate::outln!("{}", serde_json::to_string_pretty(&map)?)?;
                }
                OutputFormat::Text => {
                    let mut any = false;
                    for (k, v) in settings.iter() {
                        any = true;
                        crate::outln!("{k} = {v}")?;
                    }
                    if !any {
                        ctx.printer.info(
                            "no settings yet: `timonel config set memory 4g` sets a default for `start`",
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<()> {
    use super::cluster_file;
    let profile = ctx.store.load(&ctx.profile)?;
    let text = cluster_file::to_yaml(&cluster_file::export(&profile, &ctx.home))?;
    let Some(path) = a.output else {
        crate::output::write_stdout(format_args!("{text}"))?;
        return Ok(());
    };
    let failed = |e: std::io::Error| {
        UserError::new(
            format!("cannot write `{}`: {e}", path.display()),
            "give a path in a folder you can write to",
        )
    };
    if a.force {
        crate::fsutil::atomic_write(&path, text.as_bytes(), 0o644).map_err(failed)?;
    } else if !crate::fsutil::write_new(&path, text.as_bytes(), 0o644).map_err(failed)? {
        return Err(UserError::new(
            format!("`{}` exists; it was left as it is", path.display()),
            "give another path, or add --force to replace it",
        )
        .into());
    }
    ctx.printer.done(
        &format!(
            "Wrote the cluster file of `{}` to {}",
            profile.name,
            path.display()
        ),
        None,
    );
    Ok(())
}
