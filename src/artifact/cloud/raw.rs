//! A verified cloud image (qcow2 or raw) written out as the raw disk it holds, or as a fixed VHD
//! (the raw disk and a footer), in one pass with a small buffer: what a hypervisor's own tool
//! turns into its disk format (docs/vm-disks.md).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use timonel_driver::DiskSource;

use super::vhd;
use crate::artifact::error::ArtifactError;

/// Read and written at a time: a whole number of qcow2 clusters (64 KiB by default, at most
/// 2 MiB), so each compressed cluster is inflated once.
const CHUNK: usize = 2 * 1024 * 1024;

/// What [`write_disk`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The file's size (with the VHD footer, if any).
    pub size: u64,
    /// The bytes of the disk that are not zero, rounded to the chunk: about what a dynamic disk
    /// made from it holds.
    pub data: u64,
}

/// The disk inside an image file of `format`, and its size.
pub struct DiskReader {
    inner: Box<dyn Read + Send>,
    format: &'static str,
    pub size: u64,
}

fn unreadable(path: &Path, format: &str, message: String) -> ArtifactError {
    ArtifactError::UnreadableImage {
        path: path.to_path_buf(),
        format: format.to_string(),
        message,
    }
}

impl DiskReader {
    /// Opens `path`, a `qcow2` or `raw` image. A qcow2 with a backing file, encryption, zstd
    /// compression or extended L2 entries is refused (cloud images use none of them).
    pub fn open(path: &Path, format: &str) -> Result<Self, ArtifactError> {
        match format {
            "qcow2" => {
                let r = qcow2::Qcow2Reader::open(path)
                    .map_err(|e| unreadable(path, format, e.to_string()))?;
                Ok(Self {
                    size: r.virtual_disk_size(),
                    format: "qcow2",
                    inner: Box::new(r),
                })
            }
            "raw" => {
                let f =
                    File::open(path).map_err(|e| ArtifactError::io("could not read", path, e))?;
                let size = f
                    .metadata()
                    .map_err(|e| ArtifactError::io("could not read", path, e))?
                    .len();
                Ok(Self {
                    size,
                    format: "raw",
                    inner: Box::new(f),
                })
            }
            other => Err(unreadable(
                path,
                other,
                "timonel reads only qcow2 and raw images itself".to_string(),
            )),
        }
    }

    /// Fills `buf` as far as the disk goes; the number of bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// The size of the file [`write_disk`] makes for a disk of `size` bytes.
pub fn output_size(size: u64, kind: DiskSource) -> u64 {
    match kind {
        DiskSource::Raw => size.div_ceil(vhd::SECTOR) * vhd::SECTOR,
        DiskSource::FixedVhd => vhd::fitted(size).0 + vhd::SECTOR,
    }
}

/// Writes the disk of `reader` to `dest` (a new file) as `kind`: runs of zeros are skipped, not
/// written (a sparse file where the file system has them); the size is whole sectors (and, for a
/// VHD, what its geometry addresses). Stops with `Interrupted` when `stop` is set. The caller
/// removes `dest` on an error.
pub fn write_disk(
    mut reader: DiskReader,
    source: &Path,
    dest: &Path,
    kind: DiskSource,
    stop: &AtomicBool,
) -> Result<Written, ArtifactError> {
    let write_err = |e| ArtifactError::io("could not write", dest, e);
    let mut out = File::create_new(dest).map_err(write_err)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut at, mut data) = (0u64, 0u64);
    while at < reader.size {
        if stop.load(Ordering::Relaxed) {
            return Err(write_err(io::Error::from(io::ErrorKind::Interrupted)));
        }
        let want = usize::try_from(reader.size - at).map_or(CHUNK, |left| left.min(CHUNK));
        let n = reader
            .fill(&mut buf[..want])
            .map_err(|e| unreadable(source, reader.format, e.to_string()))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            out.seek(SeekFrom::Start(at)).map_err(write_err)?;
            out.write_all(&buf[..n]).map_err(write_err)?;
            data += n as u64;
        }
        at += n as u64;
    }
    if at < reader.size {
        return Err(unreadable(
            source,
            reader.format,
            format!("it ended after {at} of {} bytes", reader.size),
        ));
    }
    let size = match kind {
        DiskSource::Raw => {
            let size = output_size(reader.size, kind);
            out.set_len(size).map_err(write_err)?;
            size
        }
        DiskSource::FixedVhd => {
            let (disk, geometry) = vhd::fitted(reader.size);
            let footer = vhd::footer(disk, geometry, rand::random(), SystemTime::now());
            out.seek(SeekFrom::Start(disk)).map_err(write_err)?;
            out.write_all(&footer).map_err(write_err)?;
            disk + vhd::SECTOR
        }
    };
    out.sync_all().map_err(write_err)?;
    Ok(Written { size, data })
}

#[cfg(test)]
#[path = "raw_tests.rs"]
mod tests;
