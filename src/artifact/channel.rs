//! Turning a [`VersionSpec`] into a k3s release through the channel server, with the last
//! answers kept in the cache so a channel still resolves offline.
//!
//! - `GET <base>/<name>` answers `302` to `…/releases/tag/<version>`: the last path segment is
//!   the version. A `404` is an unknown channel.
//! - `GET <base>` answers the JSON collection (`data[].name`, `data[].latest`). timonel reads it
//!   to list the known channels after a `404`, when the server answers a channel with `200`
//!   instead of a redirect, and for `file://` channel sources.
//! - A `file://` channel URL names that JSON file, or a directory holding it as `channels`.

use std::collections::BTreeMap;

use reqwest::header::LOCATION;
use serde::{Deserialize, Serialize};
use timonel_driver::SilentReporter;

use super::cache::{blocking, lock_artifact, now, write_atomic, ArtifactCache};
use super::download::{file_path, Fetcher};
use super::error::ArtifactError;
use super::sources::Sources;
use super::version::{K3sVersion, VersionSpec};

/// A resolved version, with a note for the user when it is not the plain answer (stale cache,
/// fallback, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub version: K3sVersion,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Collection {
    data: Vec<ChannelItem>,
}

#[derive(Debug, Deserialize)]
struct ChannelItem {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    latest: Option<String>,
}

/// One remembered answer of the channel server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedChannel {
    pub latest: K3sVersion,
    pub fetched_at: String,
    pub source: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ChannelCacheFile {
    channels: BTreeMap<String, CachedChannel>,
}

/// Resolves what the user asked for. A full k3s version never touches the network.
///
/// `v1.31.2` (a Kubernetes version) asks the channel `v1.31`: when its latest release is a
/// build of v1.31.2, that is the answer. Otherwise (the channel moved on to a later patch, or
/// cannot be reached) timonel takes the newest `v1.31.2+k3sN` already in the cache, else
/// `v1.31.2+k3s1`, and says so in the note: the channel server only knows each channel's latest
/// release, so older builds cannot be listed without the GitHub API.
pub async fn resolve_version(
    cache: &ArtifactCache,
    sources: &Sources,
    spec: &VersionSpec,
) -> Result<Resolved, ArtifactError> {
    sources.validate()?;
    match spec {
        VersionSpec::Exact(v) => Ok(Resolved {
            version: v.clone(),
            note: None,
        }),
        VersionSpec::Channel(name) => resolve_channel(cache, sources, name).await,
        VersionSpec::Minor { .. } => {
            let channel = spec.channel().unwrap_or_default();
            resolve_channel(cache, sources, &channel).await
        }
        VersionSpec::Kubernetes {
            major,
            minor,
            patch,
        } => resolve_kubernetes(cache, sources, *major, *minor, *patch).await,
    }
}

async fn resolve_kubernetes(
    cache: &ArtifactCache,
    sources: &Sources,
    major: u32,
    minor: u32,
    patch: u32,
) -> Result<Resolved, ArtifactError> {
    let wanted = |v: &K3sVersion| (v.major, v.minor, v.patch, v.rc) == (major, minor, patch, None);
    let channel = format!("v{major}.{minor}");
    let kube = format!("v{major}.{minor}.{patch}");
    let answer = resolve_channel(cache, sources, &channel).await;
    if let Ok(r) = &answer {
        if wanted(&r.version) {
            return answer;
        }
    }
    let cached_best = cache
        .cached_versions()
        .await
        .into_iter()
        .filter(wanted)
        .max();
    let (pick, how) = match cached_best {
        Some(v) => (v, "the newest build of it in the cache"),
        None => (
            K3sVersion {
                major,
                minor,
                patch,
                rc: None,
                build: 1,
            },
            "its first k3s build",
        ),
    };
    let why = match answer {
        Ok(r) => format!("channel `{channel}` is at `{}`", r.version),
        Err(e @ ArtifactError::UnknownChannel { .. }) => e.to_string(),
        Err(
            e @ (ArtifactError::ChannelNotCached { .. } | ArtifactError::ChannelUnavailable { .. }),
        ) => e.to_string(),
        Err(e) => return Err(e),
    };
    Ok(Resolved {
        note: Some(format!(
            "{why}; using `{pick}`, {how} of {kube}; pass a full version such as `{kube}+k3s2` to \
             choose another build"
        )),
        version: pick,
    })
}

async fn resolve_channel(
    cache: &ArtifactCache,
    sources: &Sources,
    name: &str,
) -> Result<Resolved, ArtifactError> {
    let from_cache = |c: CachedChannel, why: &str| Resolved {
        note: Some(format!(
            "{why}: channel `{name}` resolved from the cache as it was at {}; it may be stale",
            c.fetched_at
        )),
        version: c.latest,
    };
    if sources.offline {
        return match cached_channel(cache, name).await {
            Some(c) => Ok(from_cache(c, "offline")),
            None => Err(ArtifactError::ChannelNotCached {
                channel: name.to_string(),
            }),
        };
    }
    let fetcher = Fetcher::new(sources)?;
    match query_channel(cache, &fetcher, sources, name).await {
        Ok(version) => {
            remember(cache, sources, [(name.to_string(), version.clone())]).await;
            Ok(Resolved {
                version,
                note: None,
            })
        }
        Err(e) if e.is_unavailable() => match cached_channel(cache, name).await {
            Some(c) => Ok(from_cache(
                c,
                &format!("the channel server is unavailable ({e})"),
            )),
            None => Err(ArtifactError::ChannelUnavailable {
                channel: name.to_string(),
                source: Box::new(e),
            }),
        },
        Err(e) => Err(e),
    }
}

async fn query_channel(
    cache: &ArtifactCache,
    fetcher: &Fetcher,
    sources: &Sources,
    name: &str,
) -> Result<K3sVersion, ArtifactError> {
    let base = sources.channel_base()?;
    if base.scheme() == "file" {
        return lookup(cache, fetcher, sources, name).await;
    }
    let url = sources.channel_entry_url(name)?;
    let resp = fetcher
        .retry(|| async {
            let resp = fetcher
                .send(fetcher.get_without_redirects(&url), &url)
                .await?;
            let status = resp.status();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(ArtifactError::HttpStatus {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
            Ok(resp)
        })
        .await?;
    let status = resp.status();
    if status.is_redirection() {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ArtifactError::BadChannelAnswer {
                url: url.to_string(),
                message: format!("HTTP {} without a Location", status.as_u16()),
            })?;
        return version_from_location(location).ok_or_else(|| ArtifactError::BadChannelAnswer {
            url: url.to_string(),
            message: format!("the redirect `{location}` does not end in a k3s version"),
        });
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        let known = fetch_list(cache, fetcher, sources)
            .await
            .map(|list| list.into_keys().collect())
            .unwrap_or_default();
        return Err(ArtifactError::UnknownChannel {
            channel: name.to_string(),
            url: base.to_string(),
            known,
        });
    }
    if status.is_success() {
        // Something between us and the server followed the redirect; use the collection.
        return lookup(cache, fetcher, sources, name).await;
    }
    Err(ArtifactError::HttpStatus {
        url: url.to_string(),
        status: status.as_u16(),
    })
}

/// The version at the end of `…/releases/tag/v1.31.2+k3s1` (or `%2B`).
fn version_from_location(location: &str) -> Option<K3sVersion> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    last.replace("%2B", "+").replace("%2b", "+").parse().ok()
}

/// Finds `name` in the channel collection.
async fn lookup(
    cache: &ArtifactCache,
    fetcher: &Fetcher,
    sources: &Sources,
    name: &str,
) -> Result<K3sVersion, ArtifactError> {
    let base = sources.channel_base()?;
    let mut list = fetch_list(cache, fetcher, sources).await?;
    match list.remove(name) {
        Some(Some(v)) => Ok(v),
        Some(None) => Err(ArtifactError::BadChannelAnswer {
            url: base.to_string(),
            message: format!("channel `{name}` has no valid `latest`"),
        }),
        None => Err(ArtifactError::UnknownChannel {
            channel: name.to_string(),
            url: base.to_string(),
            known: list.into_keys().collect(),
        }),
    }
}

/// Reads the channel collection and remembers every answer in it.
async fn fetch_list(
    cache: &ArtifactCache,
    fetcher: &Fetcher,
    sources: &Sources,
) -> Result<BTreeMap<String, Option<K3sVersion>>, ArtifactError> {
    let mut base = sources.channel_base()?;
    if base.scheme() == "file" {
        let path = file_path(&base)?;
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            base = url::Url::from_file_path(path.join("channels")).map_err(|()| {
                ArtifactError::InvalidUrl {
                    what: "channel URL",
                    url: base.to_string(),
                    reason: "it is not a local absolute path".to_string(),
                }
            })?;
        }
    }
    let body = fetcher.get_small(&base).await?;
    let collection: Collection =
        serde_json::from_slice(&body).map_err(|e| ArtifactError::BadChannelAnswer {
            url: base.to_string(),
            message: format!("not a channel collection: {e}"),
        })?;
    let list: BTreeMap<String, Option<K3sVersion>> = collection
        .data
        .into_iter()
        .filter_map(|c| Some((c.name.or(c.id)?, c.latest.and_then(|l| l.parse().ok()))))
        .collect();
    let answers = list
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), v.clone()?)));
    remember(cache, sources, answers.collect::<Vec<_>>()).await;
    Ok(list)
}

/// The remembered answer for `name`, if any.
pub async fn cached_channel(cache: &ArtifactCache, name: &str) -> Option<CachedChannel> {
    read_channel_cache(cache).await.channels.remove(name)
}

async fn read_channel_cache(cache: &ArtifactCache) -> ChannelCacheFile {
    match tokio::fs::read(cache.channels_file()).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => ChannelCacheFile::default(),
    }
}

/// Records answers; failing to write the cache only costs the offline fallback, so it warns.
async fn remember(
    cache: &ArtifactCache,
    sources: &Sources,
    answers: impl IntoIterator<Item = (String, K3sVersion)>,
) {
    let answers: Vec<_> = answers.into_iter().collect();
    if answers.is_empty() {
        return;
    }
    let source = sources
        .channel_base()
        .map(|u| u.to_string())
        .unwrap_or_default();
    let result = async {
        let path = cache.channels_file();
        let _lock = lock_artifact(&path, &SilentReporter).await?;
        let mut file = read_channel_cache(cache).await;
        let fetched_at = now();
        for (name, latest) in answers {
            file.channels.insert(
                name,
                CachedChannel {
                    latest,
                    fetched_at: fetched_at.clone(),
                    source: source.clone(),
                },
            );
        }
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| ArtifactError::io("could not encode", &path, std::io::Error::other(e)))?;
        blocking(move || write_atomic(&path, &json)).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not remember the channel server's answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_from_the_redirect() {
        let v = |s| version_from_location(s).map(|v| v.to_string());
        assert_eq!(
            v("https://github.com/k3s-io/k3s/releases/tag/v1.31.2+k3s1").as_deref(),
            Some("v1.31.2+k3s1")
        );
        assert_eq!(
            v("https://github.com/k3s-io/k3s/releases/tag/v1.31.2%2Bk3s1?x=1").as_deref(),
            Some("v1.31.2+k3s1")
        );
        assert_eq!(v("https://github.com/k3s-io/k3s/releases"), None);
    }

    #[tokio::test]
    async fn exact_versions_need_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path());
        let sources = Sources {
            channel_url: Some(url::Url::parse("http://127.0.0.1:9/none").unwrap()),
            ..Sources::default()
        };
        let spec: VersionSpec = "v1.30.4+k3s2".parse().unwrap();
        let r = resolve_version(&cache, &sources, &spec).await.unwrap();
        assert_eq!(r.version.to_string(), "v1.30.4+k3s2");
        assert!(r.note.is_none());
    }

    #[tokio::test]
    async fn reads_a_file_channel_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("channels"),
            r#"{"type":"collection","data":[{"id":"stable","name":"stable","latest":"v1.31.2+k3s1"},{"name":"v1.31","latest":"v1.31.5+k3s1"}]}"#,
        )
        .unwrap();
        let cache = ArtifactCache::new(dir.path().join("cache"));
        let sources = Sources {
            channel_url: Some(url::Url::from_directory_path(dir.path()).unwrap()),
            ..Sources::default()
        };
        let r = resolve_version(&cache, &sources, &"stable".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.version.to_string(), "v1.31.2+k3s1");
        let r = resolve_version(&cache, &sources, &"v1.31".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.version.to_string(), "v1.31.5+k3s1");
        let r = resolve_version(&cache, &sources, &"v1.31.2".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.version.to_string(), "v1.31.2+k3s1");
        assert!(r.note.unwrap().contains("`v1.31.5+k3s1`"));
        let err = resolve_version(&cache, &sources, &"nope".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(&err, ArtifactError::UnknownChannel { known, .. } if known.len() == 2));
        // Offline, the remembered answers still resolve, with a note.
        let offline = Sources {
            offline: true,
            ..sources
        };
        let r = resolve_version(&cache, &offline, &"v1.31".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.version.to_string(), "v1.31.5+k3s1");
        assert!(r.note.unwrap().contains("may be stale"));
    }
}
