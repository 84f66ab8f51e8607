//! `ensure_k3s`: the release files for one version and architecture, verified, in the cache.

use std::path::{Path, PathBuf};

use serde::Serialize;
use timonel_driver::Reporter;

use super::cache::{
    blocking, lock_artifact, now, read_meta, write_atomic, write_meta, ArtifactCache, AssetMeta,
    LAST_USED,
};
use super::checksum::{sha256_hex, Checksums};
use super::download::Fetcher;
use super::error::ArtifactError;
use super::sources::Sources;
use super::version::K3sVersion;
use super::Arch;

/// Verified files in the cache, ready to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3sArtifacts {
    pub version: K3sVersion,
    pub arch: Arch,
    pub binary: PathBuf,
    pub binary_sha256: String,
    /// The airgap images tarball, when `preload` was asked for.
    pub airgap: Option<PathBuf>,
    /// The airgap tarball's sha256 from the verified checksum file.
    pub airgap_sha256: Option<String>,
}

/// Makes sure the k3s binary (and with `preload` the airgap images) of `version` for `arch`
/// are in the cache and match the release's `sha256sum-<arch>.txt`, fetching what is missing.
///
/// Offline (asked for, or because no connection to the server can be made) only the cache is
/// used, and a missing file is an [`ArtifactError::NotCached`] that lists every missing file.
/// A server that answers but fails (5xx, stalls, bad digest) is reported as such.
pub async fn ensure_k3s(
    cache: &ArtifactCache,
    sources: &Sources,
    version: &K3sVersion,
    arch: Arch,
    preload: bool,
    reporter: &dyn Reporter,
) -> Result<K3sArtifacts, ArtifactError> {
    sources.validate()?;
    let mut assets = vec![arch.binary_asset().to_string()];
    if preload {
        assets.push(arch.airgap_asset());
    }
    let sums_path = cache.asset_path(version, arch, &arch.checksum_asset());
    let cached_sums = read_cached_checksums(&sums_path).await?;
    let missing = missing_assets(cache, version, arch, cached_sums.as_ref(), &assets).await?;
    let not_cached = |cause| ArtifactError::NotCached {
        version: version.to_string(),
        arch: arch.to_string(),
        missing: missing.clone(),
        cache: cache.root().to_path_buf(),
        cause,
    };
    let sums = if missing.is_empty() {
        cached_sums.unwrap_or_default()
    } else if sources.offline {
        return Err(not_cached(None));
    } else {
        match fetch_missing(
            cache,
            sources,
            version,
            arch,
            cached_sums,
            &assets,
            reporter,
        )
        .await
        {
            Ok(sums) => sums,
            // No connection at all: behave as offline and say what is missing.
            Err(e @ ArtifactError::Unreachable { .. }) => {
                return Err(not_cached(Some(Box::new(e))))
            }
            Err(e) => return Err(e),
        }
    };
    touch_last_used(cache, version).await;
    let binary = cache.asset_path(version, arch, arch.binary_asset());
    let binary_sha256 = sums
        .get(arch.binary_asset())
        .map(str::to_string)
        .ok_or_else(|| ArtifactError::ChecksumMissing {
            checksums: arch.checksum_asset(),
            asset: arch.binary_asset().to_string(),
        })?;
    Ok(K3sArtifacts {
        version: version.clone(),
        arch,
        binary,
        binary_sha256,
        airgap: preload.then(|| cache.asset_path(version, arch, &arch.airgap_asset())),
        airgap_sha256: preload
            .then(|| sums.get(&arch.airgap_asset()).map(str::to_string))
            .flatten(),
    })
}

/// The checksum file in the cache, if it is there and matches its recorded digest.
async fn read_cached_checksums(path: &Path) -> Result<Option<Checksums>, ArtifactError> {
    let path = path.to_path_buf();
    blocking(move || {
        let Some(meta) = read_meta(&path)? else {
            return Ok(None);
        };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArtifactError::io("could not read", &path, e)),
        };
        if !sha256_hex(&text).eq_ignore_ascii_case(&meta.sha256) {
            return Ok(None);
        }
        let sums = Checksums::parse(&String::from_utf8_lossy(&text));
        Ok((!sums.is_empty()).then_some(sums))
    })
    .await
}

/// What has to be fetched: the checksum file and any asset not verified in the cache.
async fn missing_assets(
    cache: &ArtifactCache,
    version: &K3sVersion,
    arch: Arch,
    sums: Option<&Checksums>,
    assets: &[String],
) -> Result<Vec<String>, ArtifactError> {
    let Some(sums) = sums else {
        let mut all = vec![arch.checksum_asset()];
        all.extend(assets.iter().cloned());
        return Ok(all);
    };
    let mut missing = Vec::new();
    for asset in assets {
        let ok = match sums.get(asset) {
            Some(expected) => is_cached(cache, &cache.asset_path(version, arch, asset), expected)
                .await?
                .is_some(),
            None => false,
        };
        if !ok {
            missing.push(asset.clone());
        }
    }
    Ok(missing)
}

async fn is_cached(
    cache: &ArtifactCache,
    path: &Path,
    expected: &str,
) -> Result<Option<AssetMeta>, ArtifactError> {
    let (cache, path, expected) = (cache.clone(), path.to_path_buf(), expected.to_string());
    blocking(move || cache.verify_cached(&path, &expected)).await
}

async fn fetch_missing(
    cache: &ArtifactCache,
    sources: &Sources,
    version: &K3sVersion,
    arch: Arch,
    cached_sums: Option<Checksums>,
    assets: &[String],
    reporter: &dyn Reporter,
) -> Result<Checksums, ArtifactError> {
    let fetcher = Fetcher::new(sources)?;
    let sums = match cached_sums {
        Some(s) => s,
        None => fetch_checksums(cache, sources, &fetcher, version, arch, reporter).await?,
    };
    for asset in assets {
        let expected = sums
            .get(asset)
            .ok_or_else(|| ArtifactError::ChecksumMissing {
                checksums: arch.checksum_asset(),
                asset: asset.clone(),
            })?;
        let path = cache.asset_path(version, arch, asset);
        if is_cached(cache, &path, expected).await?.is_some() {
            continue;
        }
        let _lock = lock_artifact(&path, reporter).await?;
        // Another process may have fetched it while we waited for the lock.
        if is_cached(cache, &path, expected).await?.is_some() {
            continue;
        }
        let url = sources.asset_url(version, asset)?;
        reporter.step(&format!("downloading `{asset}` of k3s {version} ({arch})"));
        fetcher.download(&url, &path, expected, reporter).await?;
    }
    Ok(sums)
}

async fn fetch_checksums(
    cache: &ArtifactCache,
    sources: &Sources,
    fetcher: &Fetcher,
    version: &K3sVersion,
    arch: Arch,
    reporter: &dyn Reporter,
) -> Result<Checksums, ArtifactError> {
    let name = arch.checksum_asset();
    let path = cache.asset_path(version, arch, &name);
    let _lock = lock_artifact(&path, reporter).await?;
    if let Some(sums) = read_cached_checksums(&path).await? {
        return Ok(sums);
    }
    let url = sources.asset_url(version, &name)?;
    let body = fetcher.get_small(&url).await?;
    let sums = Checksums::parse(&String::from_utf8_lossy(&body));
    if sums.is_empty() {
        return Err(ArtifactError::ChecksumMissing {
            checksums: url.to_string(),
            asset: arch.binary_asset().to_string(),
        });
    }
    let meta = AssetMeta {
        size: body.len() as u64,
        sha256: sha256_hex(&body),
        url: url.to_string(),
        fetched_at: now(),
        modified: None,
    };
    blocking(move || {
        write_atomic(&path, &body)?;
        write_meta(&path, &meta)
    })
    .await?;
    Ok(sums)
}

/// Records when a version was last used, for `timonel cache list`. Best effort.
async fn touch_last_used(cache: &ArtifactCache, version: &K3sVersion) {
    let path = cache.version_dir(version).join(LAST_USED);
    let stamp = now();
    if let Err(e) = blocking(move || write_atomic(&path, stamp.as_bytes())).await {
        tracing::warn!(error = %e, "could not record the last use of a cached version");
    }
}
