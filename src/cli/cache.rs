//! `timonel cache list|download|clean`: the artifact cache (k3s binaries, airgap images).
//! `download` fills it ahead of time so `start --offline` (or a machine without network, once
//! the cache is copied there) works; `clean` removes versions no profile uses.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Ctx, OutputFormat};
use crate::artifact::{commands, Arch, ArtifactCache, K3sVersion, VersionSpec};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached k3s versions with their files and sizes.
    List(ListArgs),
    /// Download (and verify) everything a version needs, airgap images included, so `start`
    /// works offline.
    Download(DownloadArgs),
    /// Remove the cached versions no profile uses.
    Clean(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// k3s version (`v1.31.2+k3s1`), Kubernetes version (`v1.31.2`), minor (`v1.31`) or channel
    /// (`stable`, `latest`).
    #[arg(
        long = "kubernetes-version",
        visible_alias = "k8s-version",
        default_value = "stable"
    )]
    pub kubernetes_version: String,
    /// The architecture of the nodes: amd64, arm64, arm (default: this machine's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Only the k3s binary, not the airgap images (nodes then pull system images).
    #[arg(long)]
    pub no_airgap: bool,
    #[command(flatten)]
    pub mirror: super::MirrorArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub async fn run(ctx: &Ctx, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    let cache = ArtifactCache::new(ctx.home.cache());
    match cmd {
        CacheCommand::List(a) => list(ctx, &cache, a.output).await,
        CacheCommand::Download(a) => download(ctx, &cache, a).await,
        CacheCommand::Clean(a) => clean(ctx, &cache, a.output).await,
    }
}

/// `1.5 GiB`, `12.0 MiB`, `300 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

async fn list(ctx: &Ctx, cache: &ArtifactCache, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let versions = commands::list(cache).await?;
    if output == OutputFormat::Json {
        crate::outln!("{}", serde_json::to_string_pretty(&versions)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        ctx.printer.info(&format!(
            "the cache ({}) is empty: `timonel cache download --kubernetes-version stable` fills it",
            cache.root().display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<20} {:<8} {:>10}  {:<26} FILES",
        "VERSION",
        "ARCH",
        "SIZE",
        "LAST USED"
    )?;
    for v in &versions {
        for (i, arch) in v.arches.iter().enumerate() {
            let files: Vec<String> = arch
                .assets
                .iter()
                .map(|a| {
                    if a.partial {
                        format!("{} (incomplete)", a.name)
                    } else {
                        a.name.clone()
                    }
                })
                .collect();
            crate::outln!(
                "{:<20} {:<8} {:>10}  {:<26} {}",
                if i == 0 {
                    v.version.to_string()
                } else {
                    String::new()
                },
                arch.arch,
                if i == 0 {
                    human_size(v.size)
                } else {
                    String::new()
                },
                if i == 0 {
                    v.last_used.as_deref().unwrap_or("-")
                } else {
                    ""
                },
                files.join(", ")
            )?;
        }
        if v.arches.is_empty() {
            crate::outln!(
                "{:<20} {:<8} {:>10}  {:<26} -",
                v.version.to_string(),
                "-",
                human_size(v.size),
                v.last_used.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn download(ctx: &Ctx, cache: &ArtifactCache, a: DownloadArgs) -> anyhow::Result<ExitCode> {
    let spec: VersionSpec = a.kubernetes_version.parse()?;
    let arch = match &a.arch {
        Some(s) => s.parse::<Arch>()?,
        None => Arch::host()?,
    };
    let sources = a.mirror.sources(false)?;
    let step = ctx.printer.step(&format!("fetching k3s {spec} ({arch})"));
    let got = commands::download(cache, &sources, &spec, arch, !a.no_airgap, &ctx.printer).await?;
    step.finish(&format!(
        "k3s {} ({arch}) in the cache (sha256 verified){}",
        got.version,
        if a.no_airgap {
            ""
        } else {
            ", airgap images included"
        }
    ));
    if let Some(note) = &got.note {
        ctx.printer.warn(note);
    }
    match a.output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&got)?)?,
        OutputFormat::Text => {
            crate::outln!("{}", got.artifacts.binary.display())?;
            if let Some(airgap) = &got.artifacts.airgap {
                crate::outln!("{}", airgap.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The versions recorded in profiles; an unreadable profile is reported, not guessed at.
fn versions_in_use(ctx: &Ctx) -> BTreeSet<K3sVersion> {
    let mut in_use = BTreeSet::new();
    for (name, profile) in ctx.store.list() {
        match profile {
            Ok(p) => {
                if let Ok(v) = p.version.parse::<K3sVersion>() {
                    in_use.insert(v);
                }
            }
            // A newer timonel's profile is not read, but the version it names is kept.
            Err(crate::profile::ProfileError::TooNew { path, .. }) => {
                in_use.extend(version_named_in(&path));
            }
            Err(e) => ctx.printer.warn(&format!(
                "profile `{name}` cannot be read ({e}), so the version it uses is not kept"
            )),
        }
    }
    in_use
}

/// The `version` a profile file names, read without typing the rest of it.
fn version_named_in(path: &std::path::Path) -> Option<K3sVersion> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("version")?.as_str()?.parse().ok()
}

async fn clean(ctx: &Ctx, cache: &ArtifactCache, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let in_use = versions_in_use(ctx);
    let report = commands::clean(cache, &in_use).await?;
    match output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?)?,
        OutputFormat::Text => {
            for r in &report.removed {
                crate::outln!("removed {} ({})", r.version, human_size(r.size))?;
            }
            for k in &report.kept {
                crate::outln!("kept    {} ({})", k.version, k.reason)?;
            }
            ctx.printer.done(
                &format!(
                    "Removed {} version(s), freed {}",
                    report.removed.len(),
                    human_size(report.freed)
                ),
                None,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(300), "300 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(12 * 1024 * 1024 + 1), "12.0 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
