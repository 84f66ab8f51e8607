//! Converting a verified cloud image to the disk format a driver needs, once: with the
//! hypervisor's own tool where the driver has one ([`native`](super::native)), else with
//! `qemu-img` (or the converter a test names); under the image's lock, to a temporary name, then
//! renamed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timonel_driver::{Cmd, CommandError, DiskImages, HostRunner, Runner};
use timonel_driver_vm::ImageFile;

use super::{mtime, native, read_json, write_json, ImageMeta, Job};
use crate::artifact::cache::{blocking, lock_artifact, now, rfc3339, sync_dir, ArtifactCache};
use crate::artifact::checksum::hash_file;
use crate::artifact::error::ArtifactError;

/// A conversion writes a few GB; slow disks need time.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What makes the driver's format.
#[derive(Clone, Copy)]
pub(super) enum Converter<'a> {
    /// `qemu-img` (its program name).
    QemuImg(&'a str),
    /// The hypervisor's own tool, through its driver.
    Tool(&'a dyn DiskImages),
}

/// What is recorded next to a converted image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvertedMeta {
    pub size: u64,
    pub format: String,
    pub sha256: String,
    /// The verified download it was converted from, and that file's digest.
    pub source_file: String,
    pub source_digest: String,
    pub converted_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// The conversion of `source`, if it is in the cache and intact.
async fn converted_ok(
    cache: &ArtifactCache,
    dest: &Path,
    source: &ImageMeta,
    format: &str,
) -> Result<bool, ArtifactError> {
    let (full, dest, digest, format) = (
        cache.full_verify(),
        dest.to_path_buf(),
        source.digest.clone(),
        format.to_string(),
    );
    blocking(move || {
        let Some(mut meta) = read_json::<ConvertedMeta>(&dest)? else {
            return Ok(false);
        };
        if meta.format != format || !meta.source_digest.eq_ignore_ascii_case(&digest) {
            return Ok(false);
        }
        let stat = match std::fs::metadata(&dest) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(ArtifactError::io("could not read", &dest, e)),
        };
        if stat.len() != meta.size {
            return Ok(false);
        }
        let modified = stat.modified().ok().map(rfc3339);
        if full || modified.is_none() || modified != meta.modified {
            let (sha, size) =
                hash_file(&dest).map_err(|e| ArtifactError::io("could not read", &dest, e))?;
            if size != meta.size || !sha.eq_ignore_ascii_case(&meta.sha256) {
                tracing::warn!(path = %dest.display(), "converted image changed; converting again");
                return Ok(false);
            }
            if modified != meta.modified {
                meta.modified = modified;
                write_json(&dest, &meta)?;
            }
        }
        Ok(true)
    })
    .await
}

fn utf8_path(path: &Path) -> Result<String, ArtifactError> {
    path.to_str().map(str::to_string).ok_or_else(|| {
        ArtifactError::io(
            "the path is not valid UTF-8:",
            path,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

/// Removes temporary files an interrupted conversion left (the caller holds the lock).
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Converts the verified download to `format` once, atomically (temporary name, then rename).
pub(super) async fn convert(
    job: &Job<'_>,
    source: &ImageMeta,
    (source_format, format): (&str, &str),
    converter: Converter<'_>,
) -> Result<PathBuf, ArtifactError> {
    let Job {
        cache,
        image,
        layout,
        report,
        ..
    } = *job;
    let dest = layout.converted(&image.file_name, format);
    if converted_ok(cache, &dest, source, format).await? {
        return Ok(dest);
    }
    let _lock = lock_artifact(&dest, report).await?;
    if converted_ok(cache, &dest, source, format).await? {
        return Ok(dest);
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.tmp-");
    {
        let (dir, prefix) = (layout.dir.clone(), prefix.clone());
        blocking(move || {
            remove_stale_temps(&dir, &prefix);
            Ok(())
        })
        .await?;
    }
    let tmp = layout
        .dir
        .join(format!("{prefix}{:08x}.{format}", rand::random::<u32>()));
    let made = match converter {
        Converter::QemuImg(program) => {
            report.step(&format!(
                "converting `{}` to {format} with {program}",
                image.file_name
            ));
            qemu_img(
                program,
                (&layout.image, source_format),
                (&tmp, format),
                image,
            )
            .await
        }
        Converter::Tool(tool) => {
            report.step(&format!(
                "making the {format} disk from `{}` with {}",
                image.file_name,
                tool.disk_tool().name
            ));
            native::make(tool, (&layout.image, source_format), (&tmp, format)).await
        }
    };
    if let Err(e) = made {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let meta = ConvertedMeta {
        size: 0,
        format: format.to_string(),
        sha256: String::new(),
        source_file: image.file_name.clone(),
        source_digest: source.digest.clone(),
        converted_at: now(),
        modified: None,
    };
    let (tmp_c, dest_c) = (tmp.clone(), dest.clone());
    let finished = blocking(move || {
        let (sha256, size) =
            hash_file(&tmp_c).map_err(|e| ArtifactError::io("could not read", &tmp_c, e))?;
        std::fs::rename(&tmp_c, &dest_c)
            .map_err(|e| ArtifactError::io("could not move into the cache", &dest_c, e))?;
        if let Some(dir) = dest_c.parent() {
            sync_dir(dir);
        }
        let meta = ConvertedMeta {
            size,
            sha256,
            modified: mtime(&dest_c),
            ..meta
        };
        write_json(&dest_c, &meta)
    })
    .await;
    if finished.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    finished.map(|()| dest)
}

/// `qemu-img convert -f <source format> -O <format> <image> <dest>`.
async fn qemu_img(
    program: &str,
    (image, source_format): (&Path, &str),
    (dest, format): (&Path, &str),
    file: &ImageFile,
) -> Result<(), ArtifactError> {
    let cmd = Cmd::new(program)
        .args(["convert", "-f", source_format, "-O", format])
        .arg(utf8_path(image)?)
        .arg(utf8_path(dest)?)
        .timeout(CONVERT_TIMEOUT);
    HostRunner.run(&cmd).await.map(drop).map_err(|e| match e {
        CommandError::NotFound { program } => ArtifactError::ConverterMissing {
            tool: program,
            file: file.file_name.clone(),
            format: format.to_string(),
        },
        source => ArtifactError::ConvertFailed {
            path: image.to_path_buf(),
            format: format.to_string(),
            source: Box::new(source),
        },
    })
}
