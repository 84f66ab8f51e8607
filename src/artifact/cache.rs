//! The on-disk cache: layout, metadata, per-artifact locks and atomic writes.
//!
//! ```text
//! <root>/
//!   channels.json                      last answers of the channel server (offline fallback)
//!   k3s/<version>/last-used            RFC 3339 time of the last `ensure_k3s`
//!   k3s/<version>/<arch>/<asset>       verified file, e.g. k3s/v1.31.2+k3s1/amd64/k3s
//!   k3s/<version>/<arch>/<asset>.meta.json   size, sha256, source url, fetched at, mtime
//!   k3s/<version>/<arch>/<asset>.partial     a download in progress (resumable)
//!   k3s/<version>/<arch>/<asset>.lock        held while one process fetches the asset
//!   images/<image>-<url hash>/<file>        a verified cloud image (see `cloud`), with the same
//!                                            .meta.json/.partial/.lock companions, the
//!                                            publisher's checksum file, and conversions
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use timonel_driver::Reporter;

use super::checksum::hash_file;
use super::error::ArtifactError;
use super::version::K3sVersion;
use super::Arch;

pub(crate) const META_SUFFIX: &str = ".meta.json";
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";
pub(crate) const LOCK_SUFFIX: &str = ".lock";
pub(crate) const LAST_USED: &str = "last-used";

/// A handle on the cache directory. Cheap to clone; several handles (and processes) may use the
/// same root at once.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    root: PathBuf,
    verify_full: bool,
}

/// What is recorded next to every cached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetMeta {
    pub size: u64,
    pub sha256: String,
    pub url: String,
    pub fetched_at: String,
    /// The file's modification time when it was last verified; a change triggers a rehash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl ArtifactCache {
    /// A cache rooted at `root` (the CLI passes `$TIMONEL_HOME/cache`). Nothing is created yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            verify_full: false,
        }
    }

    /// Rehash every cached file before use instead of trusting size, mtime and metadata.
    pub fn with_full_verify(mut self, on: bool) -> Self {
        self.verify_full = on;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn k3s_dir(&self) -> PathBuf {
        self.root.join("k3s")
    }

    /// `<root>/images`: the VM drivers' cloud images.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Whether cached files are rehashed before every use.
    pub(crate) fn full_verify(&self) -> bool {
        self.verify_full
    }

    pub fn version_dir(&self, version: &K3sVersion) -> PathBuf {
        self.k3s_dir().join(version.to_string())
    }

    pub fn arch_dir(&self, version: &K3sVersion, arch: Arch) -> PathBuf {
        self.version_dir(version).join(arch.as_str())
    }

    pub fn asset_path(&self, version: &K3sVersion, arch: Arch, asset: &str) -> PathBuf {
        self.arch_dir(version, arch).join(asset)
    }

    /// Versions that have a folder in the cache, in no particular order.
    pub async fn cached_versions(&self) -> Vec<K3sVersion> {
        let mut out = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(self.k3s_dir()).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                if let Some(v) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.push(v);
                }
            }
        }
        out
    }

    pub(crate) fn channels_file(&self) -> PathBuf {
        self.root.join("channels.json")
    }

    /// Checks a cached file against the digest the release lists. Cheap unless the file's
    /// size or mtime changed since it was verified, or full verification is on. Blocking.
    pub(crate) fn verify_cached(
        &self,
        path: &Path,
        expected: &str,
    ) -> Result<Option<AssetMeta>, ArtifactError> {
        let Some(mut meta) = read_meta(path)? else {
            return Ok(None);
        };
        if !meta.sha256.eq_ignore_ascii_case(expected) {
            return Ok(None);
        }
        let stat = match std::fs::metadata(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArtifactError::io("could not read", path, e)),
        };
        if stat.len() != meta.size {
            return Ok(None);
        }
        let modified = stat.modified().ok().map(rfc3339);
        if self.verify_full || modified.is_none() || modified != meta.modified {
            let (digest, size) =
                hash_file(path).map_err(|e| ArtifactError::io("could not read", path, e))?;
            if size != meta.size || !digest.eq_ignore_ascii_case(expected) {
                tracing::warn!(path = %path.display(), "cached file changed; fetching it again");
                return Ok(None);
            }
            if modified != meta.modified {
                meta.modified = modified;
                write_meta(path, &meta)?;
            }
        }
        Ok(Some(meta))
    }
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(crate) fn read_meta(path: &Path) -> Result<Option<AssetMeta>, ArtifactError> {
    let meta_path = with_suffix(path, META_SUFFIX);
    match std::fs::read(&meta_path) {
        // A damaged metadata file only means the asset is fetched again.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArtifactError::io("could not read", meta_path, e)),
    }
}

pub(crate) fn write_meta(path: &Path, meta: &AssetMeta) -> Result<(), ArtifactError> {
    let meta_path = with_suffix(path, META_SUFFIX);
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| ArtifactError::io("could not encode", &meta_path, std::io::Error::other(e)))?;
    write_atomic(&meta_path, &json)
}

/// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path` and (on
/// unix) fsyncs the directory. Blocking.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ArtifactError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_cache_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ArtifactError::io("could not write", path, e));
    }
    sync_dir(dir);
    Ok(())
}

/// Creates a folder of the cache and its missing parents, the cache itself and timonel's home
/// included: 0700 on unix (the files inside may stay 0644). Blocking.
pub(crate) fn create_cache_dir(dir: &Path) -> Result<(), ArtifactError> {
    crate::fsutil::create_dir_all_private(dir)
        .map_err(|e| ArtifactError::io("could not create", dir, e))
}

/// Makes a rename durable. Directories cannot be opened for sync on Windows; NTFS journals the
/// rename itself.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// An exclusive lock on one artifact, released when dropped (closing the file unlocks it).
#[derive(Debug)]
pub(crate) struct ArtifactLock {
    _file: File,
}

/// Takes the lock `<path>.lock`, waiting for another process that holds it.
pub(crate) async fn lock_artifact(
    path: &Path,
    reporter: &dyn Reporter,
) -> Result<ArtifactLock, ArtifactError> {
    let lock_path = with_suffix(path, LOCK_SUFFIX);
    if let Some(dir) = lock_path.parent() {
        let dir = dir.to_path_buf();
        blocking(move || create_cache_dir(&dir)).await?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| ArtifactError::io("could not open the lock", &lock_path, e))?;
    match file.try_lock() {
        Ok(()) => return Ok(ArtifactLock { _file: file }),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => {
            return Err(ArtifactError::io("could not lock", &lock_path, e));
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    reporter.step(&format!(
        "waiting for another timonel process to fetch `{name}`"
    ));
    let waited = lock_path.clone();
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| ArtifactError::io("could not lock", &waited, std::io::Error::other(e)))?
        .map(|file| ArtifactLock { _file: file })
        .map_err(|e| ArtifactError::io("could not lock", &waited, e))
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ArtifactError::io(
            "background task failed for",
            PathBuf::new(),
            std::io::Error::other(e),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::checksum::sha256_hex;

    fn cached(dir: &Path, body: &[u8]) -> (ArtifactCache, PathBuf, String) {
        let cache = ArtifactCache::new(dir);
        let path = dir.join("k3s");
        std::fs::write(&path, body).unwrap();
        let sha = sha256_hex(body);
        let modified = std::fs::metadata(&path)
            .unwrap()
            .modified()
            .ok()
            .map(rfc3339);
        let meta = AssetMeta {
            size: body.len() as u64,
            sha256: sha.clone(),
            url: "http://x/k3s".into(),
            fetched_at: now(),
            modified,
        };
        write_meta(&path, &meta).unwrap();
        (cache, path, sha)
    }

    #[test]
    fn cheap_check_accepts_an_untouched_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, path, sha) = cached(dir.path(), b"binary");
        assert!(cache.verify_cached(&path, &sha).unwrap().is_some());
        // A different expected digest (checksum file changed) is a miss.
        assert!(cache
            .verify_cached(&path, &sha256_hex(b"x"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn detects_size_and_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, path, sha) = cached(dir.path(), b"binary");
        std::fs::write(&path, b"binary!").unwrap();
        assert!(cache.verify_cached(&path, &sha).unwrap().is_none());

        let (cache, path, sha) = cached(dir.path(), b"binary");
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        (&f).write_all(b"BINARY").unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        assert!(cache.verify_cached(&path, &sha).unwrap().is_none());
    }

    #[test]
    fn full_verify_rehashes_even_when_mtime_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, path, sha) = cached(dir.path(), b"binary");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        (&f).write_all(b"BINARY").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        // The cheap check is fooled by a same-size edit that restores the mtime …
        assert!(cache.verify_cached(&path, &sha).unwrap().is_some());
        // … the full one is not.
        let full = cache.with_full_verify(true);
        assert!(full.verify_cached(&path, &sha).unwrap().is_none());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
