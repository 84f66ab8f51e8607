//! A driver's disk made from a verified cloud image without `qemu-img`: timonel writes the
//! image's disk (raw, or a fixed VHD) beside the result, the hypervisor's own tool
//! ([`DiskImages`]) makes its format from it, and the intermediate file goes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use timonel_driver::{DiskImages, DiskSource};

use super::raw::{output_size, write_disk, DiskReader, Written};
use crate::artifact::cache::blocking;
use crate::artifact::error::ArtifactError;

/// Room left for the file system and the tool's own metadata.
const MARGIN: u64 = 256 * 1024 * 1024;

/// Sets the flag when dropped: a cancelled `start` drops the future, and the thread writing the
/// disk sees the flag at its next chunk, stops and removes its file.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether timonel reads images of `format` itself.
pub(super) fn readable(format: &str) -> bool {
    matches!(format, "qcow2" | "raw")
}

/// Refuses when `dir` has less than `need` bytes (and the margin) free. Unknown free space
/// passes: the write then fails with the file system's own error.
fn check_space(dir: &Path, need: u64, what: &str) -> Result<(), ArtifactError> {
    let need = need.saturating_add(MARGIN);
    match crate::fsutil::free_space(dir) {
        Some(free) if free < need => Err(ArtifactError::NoSpace {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            need,
            free,
        }),
        _ => Ok(()),
    }
}

/// Makes `dest` (a temporary name the caller renames or removes) in `format` from the image at
/// `image` (`source_format`), with `tool`.
pub(super) async fn make(
    tool: &dyn DiskImages,
    (image, source_format): (&Path, &str),
    (dest, format): (&Path, &str),
) -> Result<(), ArtifactError> {
    let kind = tool.disk_tool().source;
    let ext = match kind {
        DiskSource::Raw => "raw",
        DiskSource::FixedVhd => "vhd",
    };
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".src.{ext}"));
    let source = dest.with_file_name(name);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let written = {
        let (image, source_format, source, stop) = (
            image.to_path_buf(),
            source_format.to_string(),
            source.clone(),
            stop.clone(),
        );
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        blocking(move || write_source(&image, &source_format, &source, kind, &dir, &stop)).await
    };
    let result = match written {
        Ok(written) => {
            let dir = dest.parent().unwrap_or(Path::new("."));
            match check_space(dir, written.data, &format!("{format} disk")) {
                Ok(()) => tool.make_disk(&source, dest, format).await.map_err(|e| {
                    ArtifactError::DiskToolFailed {
                        path: image.to_path_buf(),
                        format: format.to_string(),
                        tool: tool.disk_tool().name.to_string(),
                        source: Box::new(e),
                    }
                }),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&source).await;
    result
}

/// The blocking part: open, check the space, write (removing the file on any error).
fn write_source(
    image: &Path,
    source_format: &str,
    source: &PathBuf,
    kind: DiskSource,
    dir: &Path,
    stop: &AtomicBool,
) -> Result<Written, ArtifactError> {
    let reader = DiskReader::open(image, source_format)?;
    let what = match kind {
        DiskSource::Raw => "raw disk",
        DiskSource::FixedVhd => "VHD",
    };
    check_space(dir, output_size(reader.size, kind), what)?;
    let written = write_disk(reader, image, source, kind, stop);
    if written.is_err() {
        let _ = std::fs::remove_file(source);
    }
    written
}

#[cfg(all(test, unix))]
#[path = "native_tests.rs"]
mod tests;
