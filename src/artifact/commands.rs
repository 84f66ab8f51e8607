//! The data side of `timonel cache list|download|clean`: plain functions returning
//! serde-serializable reports; the CLI prints them as a table or with `-o json`.

use std::collections::BTreeSet;
use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::Serialize;
use timonel_driver::Reporter;

use super::cache::{
    blocking, read_meta, ArtifactCache, LAST_USED, LOCK_SUFFIX, META_SUFFIX, PARTIAL_SUFFIX,
};
use super::error::ArtifactError;
use super::{ensure_k3s, resolve_version, Arch, K3sVersion, Sources, VersionSpec};

/// One cached k3s release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedVersion {
    pub version: K3sVersion,
    /// Bytes on disk for this version, all architectures and partial downloads included.
    pub size: u64,
    /// RFC 3339 time of the last `ensure_k3s` for this version.
    pub last_used: Option<String>,
    pub arches: Vec<CachedArch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedArch {
    pub arch: String,
    pub assets: Vec<CachedAsset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedAsset {
    pub name: String,
    pub size: u64,
    /// From the metadata recorded when the file was verified.
    pub sha256: Option<String>,
    pub fetched_at: Option<String>,
    /// A download that has not finished (it resumes on the next fetch).
    pub partial: bool,
}

/// The cached versions, newest first.
pub async fn list(cache: &ArtifactCache) -> Result<Vec<CachedVersion>, ArtifactError> {
    let cache = cache.clone();
    blocking(move || {
        let mut out = Vec::new();
        for (version, dir) in version_dirs(&cache.k3s_dir())? {
            out.push(describe(version, &dir)?);
        }
        out.sort_by(|a, b| b.version.cmp(&a.version));
        Ok(out)
    })
    .await
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ArtifactError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ArtifactError::io("could not list", dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ArtifactError::io("could not list", dir, e)),
    }
}

fn version_dirs(k3s_dir: &Path) -> Result<Vec<(K3sVersion, PathBuf)>, ArtifactError> {
    Ok(read_dir(k3s_dir)?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect())
}

fn describe(version: K3sVersion, dir: &Path) -> Result<CachedVersion, ArtifactError> {
    let last_used = std::fs::read_to_string(dir.join(LAST_USED))
        .ok()
        .map(|s| s.trim().to_string());
    let mut size = 0;
    let mut arches = Vec::new();
    for entry in read_dir(dir)? {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mut assets = Vec::new();
        for file in read_dir(&entry.path())? {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            size += len;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(META_SUFFIX) || name.ends_with(LOCK_SUFFIX) {
                continue;
            }
            let partial = name.ends_with(PARTIAL_SUFFIX);
            let meta = if partial {
                None
            } else {
                read_meta(&file.path()).ok().flatten()
            };
            assets.push(CachedAsset {
                name,
                size: len,
                sha256: meta.as_ref().map(|m| m.sha256.clone()),
                fetched_at: meta.map(|m| m.fetched_at),
                partial,
            });
        }
        assets.sort_by(|a, b| a.name.cmp(&b.name));
        arches.push(CachedArch {
            arch: entry.file_name().to_string_lossy().into_owned(),
            assets,
        });
    }
    arches.sort_by(|a, b| a.arch.cmp(&b.arch));
    Ok(CachedVersion {
        version,
        size,
        last_used,
        arches,
    })
}

/// What `timonel cache download` fetched (or found already cached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downloaded {
    pub version: K3sVersion,
    pub note: Option<String>,
    pub artifacts: super::K3sArtifacts,
}

/// Resolves `spec` and ensures everything for it: the binary and, with `airgap`, the airgap
/// images tarball, so the cache can be copied to a machine without network.
pub async fn download(
    cache: &ArtifactCache,
    sources: &Sources,
    spec: &VersionSpec,
    arch: Arch,
    airgap: bool,
    reporter: &dyn Reporter,
) -> Result<Downloaded, ArtifactError> {
    let resolved = resolve_version(cache, sources, spec).await?;
    let artifacts = ensure_k3s(cache, sources, &resolved.version, arch, airgap, reporter).await?;
    Ok(Downloaded {
        version: resolved.version,
        note: resolved.note,
        artifacts,
    })
}

/// What `timonel cache clean` removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    pub removed: Vec<RemovedVersion>,
    /// Versions kept because a profile uses them or another process is fetching them.
    pub kept: Vec<KeptVersion>,
    pub freed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedVersion {
    pub version: K3sVersion,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptVersion {
    pub version: K3sVersion,
    pub reason: String,
}

/// Removes every cached version not in `in_use` (the versions recorded in profiles). A version
/// that another process is downloading right now is kept. Removal renames the folder away first
/// so a listing never sees half a version.
pub async fn clean(
    cache: &ArtifactCache,
    in_use: &BTreeSet<K3sVersion>,
) -> Result<CleanReport, ArtifactError> {
    let cache = cache.clone();
    let in_use = in_use.clone();
    blocking(move || {
        let k3s_dir = cache.k3s_dir();
        let mut report = CleanReport::default();
        let mut versions = version_dirs(&k3s_dir)?;
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        for (version, dir) in versions {
            if in_use.contains(&version) {
                report.kept.push(KeptVersion {
                    version,
                    reason: "used by a profile".to_string(),
                });
                continue;
            }
            if being_fetched(&dir)? {
                report.kept.push(KeptVersion {
                    version,
                    reason: "another timonel process is fetching it".to_string(),
                });
                continue;
            }
            let size = describe(version.clone(), &dir)?.size;
            let trash = k3s_dir.join(format!(".removing-{:08x}", rand::random::<u32>()));
            std::fs::rename(&dir, &trash)
                .map_err(|e| ArtifactError::io("could not remove", &dir, e))?;
            std::fs::remove_dir_all(&trash)
                .map_err(|e| ArtifactError::io("could not remove", &trash, e))?;
            report.freed += size;
            report.removed.push(RemovedVersion { version, size });
        }
        // Leftovers of an interrupted clean.
        for entry in read_dir(&k3s_dir)? {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".removing-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(report)
    })
    .await
}

/// Whether any artifact lock under `dir` is held by another process.
fn being_fetched(dir: &Path) -> Result<bool, ArtifactError> {
    for arch in read_dir(dir)? {
        if !arch.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for file in read_dir(&arch.path())? {
            if !file.file_name().to_string_lossy().ends_with(LOCK_SUFFIX) {
                continue;
            }
            let Ok(f) = OpenOptions::new().read(true).write(true).open(file.path()) else {
                continue;
            };
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(true),
                Err(TryLockError::Error(e)) => {
                    return Err(ArtifactError::io("could not lock", file.path(), e))
                }
            }
        }
    }
    Ok(false)
}
