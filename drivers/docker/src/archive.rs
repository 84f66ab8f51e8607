//! Tar archives built on the fly and streamed to the daemon (file uploads, the node image's
//! rootfs) without a temporary copy, and the single-file download.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use timonel_driver::{DriverError, FilePlacement, FileSource};

/// Size of the chunks sent to the daemon.
const CHUNK: usize = 256 * 1024;

/// An [`io::Write`] that hands full chunks to an async channel. Lives on a blocking thread.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    written: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let len = chunk.len() as u64;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the daemon stopped reading the archive",
            )
        })?;
        self.written.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A tar archive being written by `build` on a blocking thread, as a byte stream.
pub(crate) struct TarStream {
    pub stream: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    /// Bytes handed to the stream so far.
    pub written: Arc<AtomicU64>,
    /// The writer's outcome: an error here explains a failed upload.
    pub writer: JoinHandle<io::Result<()>>,
}

/// Runs `build` on a blocking thread, streaming the tar it writes.
pub(crate) fn tar_stream<F>(build: F) -> TarStream
where
    F: FnOnce(&mut tar::Builder<ChannelWriter>) -> io::Result<()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let written = Arc::new(AtomicU64::new(0));
    let writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        written: written.clone(),
    };
    let handle = tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(writer);
        builder.mode(tar::HeaderMode::Deterministic);
        let result = build(&mut builder)
            .and_then(|()| builder.into_inner())
            .and_then(|mut w| w.flush());
        if let Err(e) = &result {
            // Make the upload fail too, rather than end with a truncated archive.
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    TarStream {
        stream: Box::pin(stream),
        written,
        writer: handle,
    }
}

/// Why the archive writer failed, unless it only saw the daemon stop reading (then the request's
/// own error says why).
pub(crate) fn writer_failure(
    written: Result<io::Result<()>, tokio::task::JoinError>,
) -> Option<io::Error> {
    match written {
        Ok(Ok(())) => None,
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(io::Error::other(e.to_string())),
    }
}

/// Seconds since the epoch, for entry times.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

/// Appends a directory entry (`path` relative, without a leading `/`).
pub(crate) fn append_dir<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    mtime: u64,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0, mtime);
    b.append_data(
        &mut h,
        format!("{}/", path.trim_end_matches('/')),
        io::empty(),
    )
}

/// Appends a symbolic link at `path` pointing to `target`.
pub(crate) fn append_symlink<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    target: &str,
    mtime: u64,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
    b.append_link(&mut h, path, target)
}

/// Appends a regular file read from `data` (exactly `size` bytes).
pub(crate) fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, size, mtime);
    b.append_data(&mut h, path, data)
}

/// Every ancestor directory of the placed files, shallowest first, without `/` itself.
pub(crate) fn parent_dirs(files: &[FilePlacement]) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for file in files {
        let mut path = String::new();
        let parts: Vec<&str> = file.path.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            path.push('/');
            path.push_str(part);
            if !dirs.contains(&path) {
                dirs.push(path.clone());
            }
        }
    }
    dirs.sort_by_key(|d| d.matches('/').count());
    dirs
}

/// Checks the placements before anything is sent: absolute, no `..`, sources readable.
pub(crate) fn validate(files: &[FilePlacement]) -> Result<(), DriverError> {
    for file in files {
        let bad = !file.path.starts_with('/')
            || file.path.ends_with('/')
            || file.path.split('/').any(|p| p == "..");
        if bad {
            return Err(DriverError::Parse {
                what: format!("the node path `{}`", file.path),
                message: "must be an absolute file path without `..`".into(),
            });
        }
        if let FileSource::HostPath(host) = &file.source {
            let meta = std::fs::metadata(host)
                .map_err(|e| DriverError::io(format!("reading `{}`", host.display()), e))?;
            if !meta.is_file() {
                return Err(DriverError::Parse {
                    what: format!("`{}`", host.display()),
                    message: "is not a regular file".into(),
                });
            }
        }
    }
    Ok(())
}

/// Writes `files` (and the `missing_dirs`, mode 0755) into a tar rooted at `/`.
pub(crate) fn write_files<W: Write>(
    b: &mut tar::Builder<W>,
    files: &[FilePlacement],
    missing_dirs: &[String],
) -> io::Result<()> {
    let mtime = now();
    for dir in missing_dirs {
        append_dir(b, dir.trim_start_matches('/'), 0o755, mtime)?;
    }
    for file in files {
        let path = file.path.trim_start_matches('/');
        match &file.source {
            FileSource::Bytes(data) => append_file(
                b,
                path,
                file.mode,
                data.len() as u64,
                mtime,
                data.as_slice(),
            )?,
            FileSource::HostPath(host) => {
                let f = std::fs::File::open(host).map_err(|e| annotate(e, host))?;
                let size = f.metadata().map_err(|e| annotate(e, host))?.len();
                // `take` guards against a file that grows while it is sent.
                append_file(b, path, file.mode, size, mtime, f.take(size))?
            }
        }
    }
    Ok(())
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The content of the single regular file in a tar (the archive download of one path).
pub(crate) fn single_file(tar_bytes: &[u8], path: &str) -> Result<Vec<u8>, DriverError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let entries = archive
        .entries()
        .map_err(|e| DriverError::io(format!("reading the archive of `{path}`"), e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| DriverError::io(format!("reading the archive of `{path}`"), e))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut out)
                    .map_err(|e| DriverError::io(format!("reading `{path}`"), e))?;
                return Ok(out);
            }
            tar::EntryType::Directory => {
                return Err(DriverError::Parse {
                    what: format!("`{path}` in the node"),
                    message: "is a directory, not a file".into(),
                })
            }
            _ => continue,
        }
    }
    Err(DriverError::NotFound {
        what: format!("file `{path}` in the node"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_listed_once_shallowest_first() {
        let files = [
            FilePlacement::bytes("/etc/rancher/k3s/config.yaml", 0o600, "a"),
            FilePlacement::bytes("/var/lib/rancher/k3s/agent/images/a.tar", 0o644, "b"),
            FilePlacement::bytes("/etc/rancher/k3s/registries.yaml", 0o600, "c"),
            FilePlacement::bytes("/top", 0o600, "c"),
        ];
        assert_eq!(
            parent_dirs(&files),
            [
                "/etc",
                "/var",
                "/etc/rancher",
                "/var/lib",
                "/etc/rancher/k3s",
                "/var/lib/rancher",
                "/var/lib/rancher/k3s",
                "/var/lib/rancher/k3s/agent",
                "/var/lib/rancher/k3s/agent/images",
            ]
        );
    }

    #[test]
    fn refuses_relative_and_escaping_paths() {
        assert!(validate(&[FilePlacement::bytes("etc/x", 0o644, "")]).is_err());
        assert!(validate(&[FilePlacement::bytes("/etc/../x", 0o644, "")]).is_err());
        assert!(validate(&[FilePlacement::host_file("/x", 0o644, "/nonexistent/file")]).is_err());
        assert!(validate(&[FilePlacement::bytes("/etc/x", 0o644, "")]).is_ok());
    }

    #[test]
    fn files_round_trip_through_a_tar() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("big");
        std::fs::write(&host, vec![7u8; 300_000]).unwrap();
        let files = [
            FilePlacement::bytes("/etc/a/b.txt", 0o600, "hello"),
            FilePlacement::host_file("/data/big", 0o644, &host),
        ];
        let mut b = tar::Builder::new(Vec::new());
        write_files(&mut b, &files, &["/etc/a".to_string()]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let seen: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("etc/a/".to_string(), 0o755, 0),
                ("etc/a/b.txt".to_string(), 0o600, 5),
                ("data/big".to_string(), 0o644, 300_000)
            ]
        );
        let mut one = tar::Builder::new(Vec::new());
        write_files(&mut one, &files[..1], &[]).unwrap();
        assert_eq!(
            single_file(&one.into_inner().unwrap(), "/etc/a/b.txt").unwrap(),
            b"hello"
        );
    }

    #[tokio::test]
    async fn tar_stream_streams_and_reports_writer_errors() {
        use futures_util::StreamExt;
        let mut ts = tar_stream(|b| append_file(b, "x", 0o644, 3, 0, &b"abc"[..]));
        let mut total = 0;
        while let Some(chunk) = ts.stream.next().await {
            total += chunk.unwrap().len();
        }
        ts.writer.await.unwrap().unwrap();
        assert_eq!(total, 2048); // header + one block + the two end blocks, padded
        let mut bad = tar_stream(|_| Err(io::Error::other("boom")));
        let first = bad.stream.next().await.unwrap();
        assert!(first.is_err());
        assert!(bad.writer.await.unwrap().is_err());
    }
}
