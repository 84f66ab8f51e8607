//! Cloud images for the VM drivers, through the artifact cache: the publisher's checksum file
//! (`SHA256SUMS`, `SHA512SUMS`, BSD style) and the image it lists, fetched with the same
//! resumable, retried, verified downloads as the k3s release files, and converted once when a
//! driver needs another disk format: by the hypervisor's own tool where the driver has one
//! (Hyper-V, VirtualBox: no `qemu-img` needed, docs/vm-disks.md), else with `qemu-img`.
//!
//! ```text
//! <cache>/images/<image id>-<hash of the image URL>/
//!   SHA256SUMS, SHA256SUMS.meta.json    the publisher's checksum file (sha256 of its bytes, URL)
//!   <file>                              the verified download, e.g. noble-server-cloudimg-amd64.img
//!   <file>.meta.json                    size, algorithm, digest, URLs, fetched at, mtime
//!   <file>.partial / <file>.lock        a download in progress / held while one process fetches
//!   <stem>.<format>                     a conversion (the driver's tool or `qemu-img`), e.g. .vhdx
//!   <stem>.<format>.meta.json           size, sha256, and the digest of the download it came from
//! ```
//!
//! A cached image is reused without a request when its checksum file is cached too, the file's
//! size and mtime are the ones recorded (or, with full verification, its digest is), and the
//! recorded digest is the one the checksum file lists. The checksum file is not fetched again
//! for a cached image: a newer image in the publisher's `current` folder is picked up only once
//! the cached one is removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use timonel_driver::{DiskImages, Reporter};
use timonel_driver_vm::checksum::parse_checksums;
use timonel_driver_vm::{ChecksumEntry, HashAlgorithm, ImageFile};
use url::Url;

use super::cache::{
    blocking, lock_artifact, now, read_meta, rfc3339, with_suffix, write_atomic, write_meta,
    ArtifactCache, AssetMeta, META_SUFFIX,
};
use super::checksum::{hash_file_with, sha256_hex};
use super::download::Fetcher;
use super::error::{ArtifactError, MissingFile};
use super::sources::{check_url, parse_url, Sources};

/// The converter.
pub const QEMU_IMG: &str = "qemu-img";
/// Disk formats `qemu-img` reads and writes that timonel's drivers use.
pub const DISK_FORMATS: [&str; 6] = ["qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"];

/// What is recorded next to a verified cloud image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub size: u64,
    /// The algorithm of the publisher's checksum file.
    pub algorithm: HashAlgorithm,
    /// Lowercase hex.
    pub digest: String,
    pub url: String,
    pub checksum_url: String,
    pub fetched_at: String,
    /// The file's modification time when it was last verified; a change triggers a rehash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// Where one image lives in the cache.
#[derive(Debug, Clone)]
struct Layout {
    dir: PathBuf,
    image: PathBuf,
    sums: PathBuf,
    sums_name: String,
}

/// Keeps `[A-Za-z0-9._-]`, replaces the rest with `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A bare file name: no directory part, nothing that climbs out of the folder.
fn plain_file_name(what: &'static str, name: &str) -> Result<String, ArtifactError> {
    let bad = |reason: &str| ArtifactError::InvalidUrl {
        what,
        url: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad("it is not a file name"));
    }
    if name.contains(['/', '\\', ':', '\0']) {
        return Err(bad("a file name has no directory part"));
    }
    Ok(name.to_string())
}

/// The cache folder of `image`: `<cache>/images/<image id>-<first 16 hex of sha256(url)>`.
pub fn image_dir(cache: &ArtifactCache, image: &ImageFile) -> PathBuf {
    let label = sanitize(image.image_id.trim_matches('.'));
    let label = if label.is_empty() {
        "image".to_string()
    } else {
        label
    };
    let key = sha256_hex(image.url.as_bytes());
    cache.images_dir().join(format!("{label}-{}", &key[..16]))
}

impl Layout {
    fn new(
        cache: &ArtifactCache,
        image: &ImageFile,
        sums_url: &Url,
    ) -> Result<Self, ArtifactError> {
        let file = plain_file_name("cloud image file name", &image.file_name)?;
        let dir = image_dir(cache, image);
        let last = sums_url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .map(sanitize)
            .filter(|s| !s.is_empty() && s != "." && s != "..")
            .unwrap_or_else(|| "CHECKSUMS".to_string());
        // Never let the checksum file and the image (or their companions) share a name.
        let sums_name = if last == file || last.starts_with(&format!("{file}.")) {
            format!("{last}.checksums")
        } else {
            last
        };
        Ok(Self {
            image: dir.join(&file),
            sums: dir.join(&sums_name),
            sums_name,
            dir,
        })
    }

    /// `<stem>.<format>` next to the download (`x.img` → `x.vhdx`).
    fn converted(&self, file_name: &str, format: &str) -> PathBuf {
        let stem = Path::new(file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| file_name.to_string());
        let mut name = format!("{stem}.{format}");
        if name == file_name {
            name = format!("{file_name}.{format}");
        }
        self.dir.join(name)
    }
}

fn source_url(what: &'static str, text: &str, sources: &Sources) -> Result<Url, ArtifactError> {
    let url = parse_url(what, text.trim())?;
    check_url(what, &url, sources.insecure_mirror)?;
    Ok(url)
}

fn disk_format(format: &str) -> Result<String, ArtifactError> {
    let f = format.trim().to_ascii_lowercase();
    if DISK_FORMATS.contains(&f.as_str()) {
        Ok(f)
    } else {
        Err(ArtifactError::UnsupportedDiskFormat {
            format: format.to_string(),
        })
    }
}

/// The line for `image.file_name` in a checksum file (any of the three formats), with the
/// algorithm the catalog expects. Lines that do not parse are skipped, so one odd line in a
/// publisher's file does not hide the one that matters.
fn entry_for(
    text: &str,
    image: &ImageFile,
    checksum_url: &str,
) -> Result<ChecksumEntry, ArtifactError> {
    let base = |s: &str| s.rsplit(['/', '\\']).next().unwrap_or(s).to_string();
    let wanted = base(&image.file_name);
    let mut parsed = 0usize;
    let mut first_error = None;
    for (i, line) in text.lines().enumerate() {
        match parse_checksums(line) {
            Ok(entries) => {
                parsed += entries.len();
                if let Some(e) = entries.into_iter().find(|e| base(&e.file) == wanted) {
                    if e.algorithm != image.algorithm {
                        return Err(ArtifactError::BadChecksumFile {
                            url: checksum_url.to_string(),
                            message: format!(
                                "it lists a {} checksum for `{wanted}`, a {} one was expected",
                                e.algorithm, image.algorithm
                            ),
                        });
                    }
                    return Ok(e);
                }
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("line {}: {e}", i + 1));
            }
        }
    }
    if parsed == 0 {
        return Err(ArtifactError::BadChecksumFile {
            url: checksum_url.to_string(),
            message: first_error.unwrap_or_else(|| "it has no checksum lines".to_string()),
        });
    }
    Err(ArtifactError::ImageChecksumMissing {
        checksums: checksum_url.to_string(),
        file: wanted,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ArtifactError> {
    let meta_path = with_suffix(path, META_SUFFIX);
    match std::fs::read(&meta_path) {
        // A damaged metadata file only means the file is fetched (or converted) again.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArtifactError::io("could not read", meta_path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, meta: &T) -> Result<(), ArtifactError> {
    let meta_path = with_suffix(path, META_SUFFIX);
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| ArtifactError::io("could not encode", &meta_path, std::io::Error::other(e)))?;
    write_atomic(&meta_path, &json)
}

fn mtime(path: &Path) -> Option<String> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(rfc3339)
}

/// The cached checksum file's text, if it is there, intact and from `checksum_url`.
async fn read_cached_sums(
    path: &Path,
    checksum_url: &Url,
) -> Result<Option<String>, ArtifactError> {
    let (path, url) = (path.to_path_buf(), checksum_url.to_string());
    blocking(move || {
        let Some(meta) = read_meta(&path)? else {
            return Ok(None);
        };
        if meta.url != url {
            return Ok(None);
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArtifactError::io("could not read", &path, e)),
        };
        if !sha256_hex(&bytes).eq_ignore_ascii_case(&meta.sha256) {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    })
    .await
}

/// The cached image, if it is the file `entry` describes. Cheap (size and mtime against the
/// metadata) unless the file changed or the cache verifies fully.
async fn verified_image(
    cache: &ArtifactCache,
    path: &Path,
    entry: &ChecksumEntry,
) -> Result<Option<ImageMeta>, ArtifactError> {
    let (full, path, entry) = (cache.full_verify(), path.to_path_buf(), entry.clone());
    blocking(move || {
        let Some(mut meta) = read_json::<ImageMeta>(&path)? else {
            return Ok(None);
        };
        if meta.algorithm != entry.algorithm || !meta.digest.eq_ignore_ascii_case(&entry.hex) {
            return Ok(None);
        }
        let stat = match std::fs::metadata(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArtifactError::io("could not read", &path, e)),
        };
        if stat.len() != meta.size {
            return Ok(None);
        }
        let modified = stat.modified().ok().map(rfc3339);
        if full || modified.is_none() || modified != meta.modified {
            let (digest, size) = hash_file_with(&path, entry.algorithm)
                .map_err(|e| ArtifactError::io("could not read", &path, e))?;
            if size != meta.size || !digest.eq_ignore_ascii_case(&entry.hex) {
                tracing::warn!(path = %path.display(), "cached image changed; fetching it again");
                return Ok(None);
            }
            if modified != meta.modified {
                meta.modified = modified;
                write_json(&path, &meta)?;
            }
        }
        Ok(Some(meta))
    })
    .await
}

/// Makes sure the cloud image `image` is in the cache, verified against the line for its file
/// name in the publisher's checksum file, and returns its path; with `image.convert_to`, the
/// path of the converted disk (converted once and kept next to the download): with `disks`, the
/// driver's own tool, when it makes that format and timonel reads the download's format (qcow2,
/// raw); otherwise `qemu-img`.
///
/// A verified cached image makes no request. Offline (asked for, or because no connection can
/// be made) only the cache is used and a miss is an [`ArtifactError::ImageNotCached`] naming
/// what is missing. Plain `http://` is refused unless it is loopback or `insecure_mirror` is
/// set; `file://` works.
pub async fn ensure_cloud_image(
    cache: &ArtifactCache,
    sources: &Sources,
    image: &ImageFile,
    disks: Option<&dyn DiskImages>,
    report: &dyn Reporter,
) -> Result<PathBuf, ArtifactError> {
    ensure_with(cache, sources, image, (QEMU_IMG, disks), report).await
}

/// [`ensure_cloud_image`] with `qemu-img`'s program named, for tests.
async fn ensure_with(
    cache: &ArtifactCache,
    sources: &Sources,
    image: &ImageFile,
    (qemu_img, disks): (&str, Option<&dyn DiskImages>),
    report: &dyn Reporter,
) -> Result<PathBuf, ArtifactError> {
    let url = source_url("cloud image URL", &image.url, sources)?;
    let sums_url = source_url("checksum file URL", &image.checksum_url, sources)?;
    let layout = Layout::new(cache, image, &sums_url)?;
    let source_format = disk_format(&image.format)?;
    let target = image
        .convert_to
        .as_deref()
        .map(disk_format)
        .transpose()?
        .filter(|f| *f != source_format);

    let job = Job {
        cache,
        sources,
        image,
        layout: &layout,
        report,
    };
    let cached_text = read_cached_sums(&layout.sums, &sums_url).await?;
    let cached_entry = cached_text
        .as_deref()
        .and_then(|t| entry_for(t, image, sums_url.as_str()).ok());
    let hit = match &cached_entry {
        Some(entry) => verified_image(cache, &layout.image, entry).await?,
        None => None,
    };
    let meta = match hit {
        Some(meta) => meta,
        None => {
            let mut missing = Vec::new();
            if cached_entry.is_none() {
                missing.push(MissingFile {
                    name: layout.sums_name.clone(),
                    url: sums_url.to_string(),
                });
            }
            missing.push(MissingFile {
                name: image.file_name.clone(),
                url: url.to_string(),
            });
            let not_cached = |cause| ArtifactError::ImageNotCached {
                missing: missing.clone(),
                cache: layout.dir.clone(),
                cause,
            };
            if sources.offline {
                return Err(not_cached(None));
            }
            let fetched = fetch_image(&job, &url, &sums_url, cached_entry).await;
            match fetched {
                Ok(meta) => meta,
                // No connection at all: behave as offline and say what is missing.
                Err(e @ ArtifactError::Unreachable { .. }) => {
                    return Err(not_cached(Some(Box::new(e))))
                }
                Err(e) => return Err(e),
            }
        }
    };
    match target {
        None => Ok(layout.image),
        Some(format) => {
            let converter = match disks {
                Some(tool)
                    if native::readable(&source_format)
                        && tool.disk_tool().formats.contains(&format.as_str()) =>
                {
                    Converter::Tool(tool)
                }
                _ => Converter::QemuImg(qemu_img),
            };
            convert(&job, &meta, (&source_format, &format), converter).await
        }
    }
}

/// What fetching and converting one cloud image share.
struct Job<'a> {
    cache: &'a ArtifactCache,
    sources: &'a Sources,
    image: &'a ImageFile,
    layout: &'a Layout,
    report: &'a dyn Reporter,
}

/// A checksum file that was fetched and has a line for the image. It is written into the cache
/// only once the image verifies against it, so the cache never holds a checksum file that no
/// download matched.
struct FetchedSums {
    entry: ChecksumEntry,
    body: Vec<u8>,
}

impl FetchedSums {
    async fn fetch(
        fetcher: &Fetcher,
        image: &ImageFile,
        sums_url: &Url,
    ) -> Result<Self, ArtifactError> {
        let body = fetcher.get_small(sums_url).await?;
        let entry = entry_for(&String::from_utf8_lossy(&body), image, sums_url.as_str())?;
        Ok(Self { entry, body })
    }

    async fn store(self, path: &Path, sums_url: &Url) -> Result<(), ArtifactError> {
        let meta = AssetMeta {
            size: self.body.len() as u64,
            sha256: sha256_hex(&self.body),
            url: sums_url.to_string(),
            fetched_at: now(),
            modified: None,
        };
        let (path, body) = (path.to_path_buf(), self.body);
        blocking(move || {
            write_atomic(&path, &body)?;
            write_meta(&path, &meta)
        })
        .await
    }
}

async fn fetch_image(
    job: &Job<'_>,
    url: &Url,
    sums_url: &Url,
    cached_entry: Option<ChecksumEntry>,
) -> Result<ImageMeta, ArtifactError> {
    let Job {
        cache,
        sources,
        image,
        layout,
        report,
    } = *job;
    let fetcher = Fetcher::new(sources)?;
    // `fresh`: the checksum file fetched now, cached together with the image.
    let (mut entry, mut fresh) = match cached_entry {
        Some(e) => (e, None),
        None => {
            let sums = FetchedSums::fetch(&fetcher, image, sums_url).await?;
            (sums.entry.clone(), Some(sums))
        }
    };
    let _lock = lock_artifact(&layout.image, report).await?;
    loop {
        // Another process may have fetched it while we waited for the lock.
        if let Some(meta) = verified_image(cache, &layout.image, &entry).await? {
            if let Some(sums) = fresh {
                sums.store(&layout.sums, sums_url).await?;
            }
            return Ok(meta);
        }
        report.step(&format!(
            "downloading the cloud image `{}`",
            image.file_name
        ));
        let result = fetcher
            .download_verified(url, &layout.image, entry.algorithm, &entry.hex, report)
            .await;
        match result {
            Ok(v) => {
                let meta = ImageMeta {
                    size: v.size,
                    algorithm: entry.algorithm,
                    digest: v.digest,
                    url: url.to_string(),
                    checksum_url: sums_url.to_string(),
                    fetched_at: now(),
                    modified: None,
                };
                let path = layout.image.clone();
                let meta = blocking(move || {
                    let meta = ImageMeta {
                        modified: mtime(&path),
                        ..meta
                    };
                    write_json(&path, &meta)?;
                    Ok(meta)
                })
                .await?;
                if let Some(sums) = fresh {
                    sums.store(&layout.sums, sums_url).await?;
                }
                return Ok(meta);
            }
            Err(ArtifactError::DigestMismatch { expected, got, .. }) => {
                // The publisher may have replaced the image since its checksum file was cached:
                // read the checksum file again, once, before calling the download bad.
                if fresh.is_none() {
                    let sums = FetchedSums::fetch(&fetcher, image, sums_url).await?;
                    let changed = sums.entry != entry;
                    entry = sums.entry.clone();
                    fresh = Some(sums);
                    if changed {
                        tracing::info!(file = %image.file_name, "the checksum file changed");
                        continue;
                    }
                }
                return Err(ArtifactError::ImageDigestMismatch {
                    url: url.to_string(),
                    checksums: sums_url.to_string(),
                    algorithm: entry.algorithm.as_str(),
                    expected,
                    got,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

mod convert;
mod native;
mod raw;
#[cfg(test)]
mod tests;
pub mod vhd;

pub use convert::ConvertedMeta;
use convert::{convert, Converter};
