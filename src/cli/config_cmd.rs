//! `timonel config set|get|unset|view`: persistent defaults for `start` (src/config.rs).

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
