//! Fetching over HTTP(S) or from `file://`: stream to `<file>.partial` while hashing (SHA-256 or
//! SHA-512, in the same pass), resume with `Range`, retry transient failures with backoff, and
//! rename into place only after the digest matches.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use timonel_driver::Reporter;
use timonel_driver_vm::HashAlgorithm;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::cache::{
    blocking, now, rfc3339, sync_dir, with_suffix, write_meta, AssetMeta, PARTIAL_SUFFIX,
};
use super::checksum::{hash_file_into, StreamHasher};
use super::error::ArtifactError;
use super::sources::{check_redirect, NetworkSettings, RedirectRefusal, Sources};

/// How often progress is reported while streaming.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Checksum files and channel answers are small; refuse anything absurd.
const SMALL_LIMIT: usize = 4 * 1024 * 1024;

/// HTTP clients with timeouts, plus the retry policy.
pub(crate) struct Fetcher {
    /// Follows redirects (GitHub release downloads redirect to a CDN).
    client: Client,
    /// Does not follow redirects: the channel server's answer *is* the redirect.
    no_redirect: Client,
    net: NetworkSettings,
}

/// The refusal [`redirect_policy`] gave, if that is why `e` happened.
fn take_refusal(e: &reqwest::Error) -> Option<Box<RedirectRefusal>> {
    if !e.is_redirect() {
        return None;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<RedirectRefusal>() {
            return Some(Box::new(r.clone()));
        }
        cause = c.source();
    }
    None
}

struct Attempt {
    size: u64,
    digest: String,
    resumed: bool,
}

/// A file that was downloaded, verified and moved into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) size: u64,
    /// Lowercase hex, with the algorithm that was asked for.
    pub(crate) digest: String,
}

/// Redirects followed before giving up (reqwest's default too).
const MAX_REDIRECTS: usize = 10;

/// Follows redirects that [`check_redirect`] allows; refuses the others before any lookup of
/// or connection to the new host.
fn redirect_policy(insecure: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let checked = match attempt.previous().last() {
            Some(from) => check_redirect(from, attempt.url(), insecure),
            None => Ok(()),
        };
        match checked {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(*refusal),
        }
    })
}

impl Fetcher {
    /// Clients for `sources`: their timeouts, and their rules for plain http applied to every
    /// redirect.
    pub(crate) fn new(sources: &Sources) -> Result<Self, ArtifactError> {
        let net = &sources.network;
        let build = |policy| {
            crate::http::client_builder()
                .connect_timeout(net.connect_timeout)
                .read_timeout(net.read_timeout)
                .redirect(policy)
                .user_agent(concat!("timonel/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|source| ArtifactError::Client { source })
        };
        Ok(Self {
            client: build(redirect_policy(sources.insecure_mirror))?,
            no_redirect: build(reqwest::redirect::Policy::none())?,
            net: net.clone(),
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .net
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(6));
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }

    /// Runs `op` until it succeeds, fails for good, or the tries are used up.
    pub(crate) async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ArtifactError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.net.attempts => {
                    let pause = self.backoff(attempt);
                    tracing::debug!(error = %e, attempt, ?pause, "retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends a request; the whole exchange up to the response headers is bounded.
    pub(crate) async fn send(
        &self,
        req: RequestBuilder,
        url: &Url,
    ) -> Result<Response, ArtifactError> {
        let limit = self.net.connect_timeout + self.net.read_timeout;
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(ArtifactError::Timeout {
                url: url.to_string(),
                after: limit,
            }),
            Ok(Err(e)) => Err(self.map_error(url, e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    pub(crate) fn map_error(&self, url: &Url, e: reqwest::Error) -> ArtifactError {
        if let Some(refusal) = take_refusal(&e) {
            ArtifactError::RedirectRefused {
                url: url.to_string(),
                refusal,
            }
        } else if e.is_connect() {
            ArtifactError::Unreachable {
                url: url.to_string(),
                source: e,
            }
        } else if e.is_timeout() {
            ArtifactError::Timeout {
                url: url.to_string(),
                after: self.net.read_timeout,
            }
        } else {
            ArtifactError::Transfer {
                url: url.to_string(),
                source: e,
            }
        }
    }

    pub(crate) fn get_without_redirects(&self, url: &Url) -> RequestBuilder {
        self.no_redirect.get(url.clone())
    }

    /// Fetches a small document fully into memory (with retries).
    pub(crate) async fn get_small(&self, url: &Url) -> Result<Vec<u8>, ArtifactError> {
        if url.scheme() == "file" {
            let path = file_path(url)?;
            return match tokio::fs::read(&path).await {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ArtifactError::NotFound {
                        url: url.to_string(),
                    })
                }
                Err(e) => Err(ArtifactError::io("could not read", path, e)),
            };
        }
        self.retry(|| async {
            let resp = self.send(self.client.get(url.clone()), url).await?;
            check_status(url, resp.status())?;
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = self.next_chunk(url, &mut stream).await? {
                body.extend_from_slice(&chunk);
                if body.len() > SMALL_LIMIT {
                    return Err(ArtifactError::Incomplete {
                        url: url.to_string(),
                        message: format!("more than {SMALL_LIMIT} bytes"),
                    });
                }
            }
            Ok(body)
        })
        .await
    }

    async fn next_chunk<S>(
        &self,
        url: &Url,
        stream: &mut S,
    ) -> Result<Option<bytes::Bytes>, ArtifactError>
    where
        S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    {
        match tokio::time::timeout(self.net.read_timeout, stream.next()).await {
            Err(_) => Err(ArtifactError::Timeout {
                url: url.to_string(),
                after: self.net.read_timeout,
            }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(e))) => Err(self.map_error(url, e)),
        }
    }

    /// Downloads `url` to `dest` and checks it against `expected` (hex sha256). The caller holds
    /// the artifact's lock. On success `dest` holds the verified file and its metadata.
    pub(crate) async fn download(
        &self,
        url: &Url,
        dest: &Path,
        expected: &str,
        reporter: &dyn Reporter,
    ) -> Result<AssetMeta, ArtifactError> {
        let verified = self
            .download_verified(url, dest, HashAlgorithm::Sha256, expected, reporter)
            .await?;
        let dest_c = dest.to_path_buf();
        let meta = AssetMeta {
            size: verified.size,
            sha256: verified.digest,
            url: url.to_string(),
            fetched_at: now(),
            modified: None,
        };
        blocking(move || {
            let modified = std::fs::metadata(&dest_c)
                .and_then(|m| m.modified())
                .ok()
                .map(rfc3339);
            let meta = AssetMeta { modified, ..meta };
            write_meta(&dest_c, &meta)?;
            Ok(meta)
        })
        .await
    }

    /// Downloads `url` to `dest` through `<dest>.partial`, hashing with `algorithm` while it
    /// streams, and renames it to `dest` only when the digest is `expected` (hex). Writes no
    /// metadata: that is the caller's, who also holds the artifact's lock.
    pub(crate) async fn download_verified(
        &self,
        url: &Url,
        dest: &Path,
        algorithm: HashAlgorithm,
        expected: &str,
        reporter: &dyn Reporter,
    ) -> Result<Verified, ArtifactError> {
        let partial = with_suffix(dest, PARTIAL_SUFFIX);
        let mut restarted = false;
        let outcome = loop {
            let attempt = if url.scheme() == "file" {
                copy_file(url, &partial, algorithm, reporter).await?
            } else {
                self.retry(|| self.attempt(url, &partial, algorithm, expected, reporter))
                    .await?
            };
            if attempt.digest.eq_ignore_ascii_case(expected) {
                break attempt;
            }
            remove_if_exists(&partial).await?;
            // A resumed file may have started from a stale or foreign prefix: one clean restart.
            if attempt.resumed && !restarted {
                tracing::warn!(%url, "resumed download does not verify; downloading it again");
                restarted = true;
                continue;
            }
            return Err(ArtifactError::DigestMismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                got: attempt.digest,
            });
        };
        let (partial_c, dest_c) = (partial.clone(), dest.to_path_buf());
        blocking(move || {
            std::fs::rename(&partial_c, &dest_c)
                .map_err(|e| ArtifactError::io("could not move into the cache", &dest_c, e))?;
            if let Some(dir) = dest_c.parent() {
                sync_dir(dir);
            }
            Ok(())
        })
        .await?;
        Ok(Verified {
            size: outcome.size,
            digest: outcome.digest,
        })
    }

    /// One HTTP try: resumes from the partial file when there is one.
    async fn attempt(
        &self,
        url: &Url,
        partial: &Path,
        algorithm: HashAlgorithm,
        expected: &str,
        reporter: &dyn Reporter,
    ) -> Result<Attempt, ArtifactError> {
        let (mut hasher, mut offset) = hash_prefix(partial, algorithm).await?;
        let mut req = self.client.get(url.clone());
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = self.send(req, url).await?;
        let status = resp.status();
        let mut resumed = false;
        if offset > 0 {
            match status {
                StatusCode::PARTIAL_CONTENT => {
                    let range = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !range.starts_with(&format!("bytes {offset}-")) {
                        truncate(partial).await?;
                        return Err(ArtifactError::Incomplete {
                            url: url.to_string(),
                            message: format!("asked for bytes from {offset}, got `{range}`"),
                        });
                    }
                    resumed = true;
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // Either the partial file is already whole, or it is longer than the asset.
                    let digest = hasher.clone().finalize_hex();
                    if digest.eq_ignore_ascii_case(expected) {
                        return Ok(Attempt {
                            size: offset,
                            digest,
                            resumed: true,
                        });
                    }
                    truncate(partial).await?;
                    return Err(ArtifactError::Incomplete {
                        url: url.to_string(),
                        message: "the partial download is longer than the file".to_string(),
                    });
                }
                s if s.is_success() => {
                    tracing::debug!(%url, "server ignored the range request; starting over");
                    hasher = StreamHasher::new(algorithm);
                    offset = 0;
                }
                s => check_status(url, s)?,
            }
        } else {
            check_status(url, status)?;
        }
        let total = resp.content_length().map(|n| n + offset);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(partial)
            .await
            .map_err(|e| ArtifactError::io("could not write", partial, e))?;
        let mut done = offset;
        let mut last_report: Option<Instant> = None;
        let mut stream = resp.bytes_stream();
        let streamed: Result<(), ArtifactError> = async {
            while let Some(chunk) = self.next_chunk(url, &mut stream).await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ArtifactError::io("could not write", partial, e))?;
                hasher.update(&chunk);
                done += chunk.len() as u64;
                if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    reporter.progress(done, total);
                    last_report = Some(Instant::now());
                }
            }
            Ok(())
        }
        .await;
        // Whatever happened, what was received stays on disk for the next try to resume from.
        let flushed = async {
            file.flush().await?;
            file.sync_all().await
        }
        .await
        .map_err(|e| ArtifactError::io("could not write", partial, e));
        streamed?;
        flushed?;
        reporter.progress(done, total);
        if let Some(total) = total.filter(|t| done < *t) {
            return Err(ArtifactError::Incomplete {
                url: url.to_string(),
                message: format!("got {done} of {total} bytes"),
            });
        }
        Ok(Attempt {
            size: done,
            digest: hasher.finalize_hex(),
            resumed,
        })
    }
}

fn check_status(url: &Url, status: StatusCode) -> Result<(), ArtifactError> {
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        Err(ArtifactError::NotFound {
            url: url.to_string(),
        })
    } else {
        Err(ArtifactError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        })
    }
}

pub(crate) fn file_path(url: &Url) -> Result<PathBuf, ArtifactError> {
    url.to_file_path().map_err(|()| ArtifactError::InvalidUrl {
        what: "file URL",
        url: url.to_string(),
        reason: "it is not a local absolute path".to_string(),
    })
}

/// The hash state and length of what a previous try left in the partial file.
async fn hash_prefix(
    partial: &Path,
    algorithm: HashAlgorithm,
) -> Result<(StreamHasher, u64), ArtifactError> {
    let path = partial.to_path_buf();
    blocking(move || {
        let mut hasher = StreamHasher::new(algorithm);
        match hash_file_into(&path, &mut hasher) {
            Ok(n) => Ok((hasher, n)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((StreamHasher::new(algorithm), 0))
            }
            Err(e) => Err(ArtifactError::io("could not read", &path, e)),
        }
    })
    .await
}

async fn truncate(partial: &Path) -> Result<(), ArtifactError> {
    tokio::fs::File::create(partial)
        .await
        .map(drop)
        .map_err(|e| ArtifactError::io("could not write", partial, e))
}

async fn remove_if_exists(path: &Path) -> Result<(), ArtifactError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ArtifactError::io("could not remove", path, e))
        }
        _ => Ok(()),
    }
}

/// A `file://` source: copy into the partial file while hashing, in one pass.
async fn copy_file(
    url: &Url,
    partial: &Path,
    algorithm: HashAlgorithm,
    reporter: &dyn Reporter,
) -> Result<Attempt, ArtifactError> {
    use std::io::{Read, Write};
    let source = file_path(url)?;
    let total = match tokio::fs::metadata(&source).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::NotFound {
                url: url.to_string(),
            })
        }
        Err(e) => return Err(ArtifactError::io("could not read", source, e)),
    };
    reporter.progress(0, Some(total));
    let dest = partial.to_path_buf();
    let attempt = blocking(move || {
        let mut input = std::fs::File::open(&source)
            .map_err(|e| ArtifactError::io("could not read", &source, e))?;
        let mut output = std::fs::File::create(&dest)
            .map_err(|e| ArtifactError::io("could not write", &dest, e))?;
        let mut hasher = StreamHasher::new(algorithm);
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| ArtifactError::io("could not read", &source, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output
                .write_all(&buf[..n])
                .map_err(|e| ArtifactError::io("could not write", &dest, e))?;
            size += n as u64;
        }
        output
            .sync_all()
            .map_err(|e| ArtifactError::io("could not write", &dest, e))?;
        Ok(Attempt {
            size,
            digest: hasher.finalize_hex(),
            resumed: false,
        })
    })
    .await?;
    reporter.progress(attempt.size, Some(total));
    Ok(attempt)
}
