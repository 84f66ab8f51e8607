//! Where artifacts come from: the release server (or a binary mirror) and the channel server,
//! plus the network settings used to reach them.

use std::time::Duration;

use url::{Host, Url};

use super::error::ArtifactError;
use super::version::K3sVersion;
use super::{ENV_BINARY_MIRROR, ENV_CHANNEL_URL, ENV_INSECURE_MIRROR, ENV_OFFLINE};

/// The k3s release downloads: `<base>/<version>/<asset>`.
pub const DEFAULT_RELEASES_URL: &str = "https://github.com/k3s-io/k3s/releases/download";
/// The k3s channel server.
pub const DEFAULT_CHANNEL_URL: &str = "https://update.k3s.io/v1-release/channels";

/// Timeouts and retries. The defaults suit real networks; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed without receiving a byte (headers or body) before giving up on a transfer.
    pub read_timeout: Duration,
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Pause before the second try; doubled for each further try, with jitter.
    pub backoff: Duration,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Where to fetch from, and whether the network may be used at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Replaces `https://github.com/k3s-io/k3s/releases/download`; assets are read from
    /// `<mirror>/<version>/<asset>` (`+` sent as `%2B` over HTTP; a literal `+` in a
    /// `file://` directory name).
    pub binary_mirror: Option<Url>,
    /// Replaces `https://update.k3s.io/v1-release/channels`. A `file://` URL names the JSON
    /// collection file itself, or a directory holding it as `channels`.
    pub channel_url: Option<Url>,
    /// Allow plain `http://` to hosts other than loopback.
    pub insecure_mirror: bool,
    /// Use only the cache.
    pub offline: bool,
    pub network: NetworkSettings,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl Sources {
    /// Reads `TIMONEL_BINARY_MIRROR`, `TIMONEL_CHANNEL_URL`, `TIMONEL_INSECURE_MIRROR` and
    /// `TIMONEL_OFFLINE`. Flags given on the command line should override these afterwards.
    pub fn from_env() -> Result<Self, ArtifactError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with an injected lookup, for tests.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ArtifactError> {
        let url = |key: &str, what| -> Result<Option<Url>, ArtifactError> {
            match get(key).filter(|v| !v.trim().is_empty()) {
                Some(v) => parse_url(what, v.trim()).map(Some),
                None => Ok(None),
            }
        };
        Ok(Self {
            binary_mirror: url(ENV_BINARY_MIRROR, "binary mirror")?,
            channel_url: url(ENV_CHANNEL_URL, "channel URL")?,
            insecure_mirror: get(ENV_INSECURE_MIRROR).is_some_and(|v| truthy(&v)),
            offline: get(ENV_OFFLINE).is_some_and(|v| truthy(&v)),
            network: NetworkSettings::default(),
        })
    }

    /// Refuses URLs timonel will not use: unknown schemes, and plain `http://` to a host other
    /// than loopback unless [`insecure_mirror`](Self::insecure_mirror) is set.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        for (what, url) in [
            ("binary mirror", &self.binary_mirror),
            ("channel URL", &self.channel_url),
        ] {
            if let Some(url) = url {
                check_url(what, url, self.insecure_mirror)?;
            }
        }
        Ok(())
    }

    pub fn releases_base(&self) -> Result<Url, ArtifactError> {
        match &self.binary_mirror {
            Some(u) => Ok(u.clone()),
            None => parse_url("binary mirror", DEFAULT_RELEASES_URL),
        }
    }

    pub fn channel_base(&self) -> Result<Url, ArtifactError> {
        match &self.channel_url {
            Some(u) => Ok(u.clone()),
            None => parse_url("channel URL", DEFAULT_CHANNEL_URL),
        }
    }

    /// `<base>/<version with + as %2B>/<asset>`.
    pub fn asset_url(&self, version: &K3sVersion, asset: &str) -> Result<Url, ArtifactError> {
        let base = self.releases_base()?;
        let text = format!(
            "{}/{}/{asset}",
            base.as_str().trim_end_matches('/'),
            version.url_segment()
        );
        parse_url("asset URL", &text)
    }

    /// `<base>/<channel>`.
    pub fn channel_entry_url(&self, channel: &str) -> Result<Url, ArtifactError> {
        let base = self.channel_base()?;
        let text = format!("{}/{channel}", base.as_str().trim_end_matches('/'));
        parse_url("channel URL", &text)
    }
}

/// Parses a mirror URL given by a user.
pub fn parse_url(what: &'static str, text: &str) -> Result<Url, ArtifactError> {
    let url = Url::parse(text).map_err(|e| ArtifactError::InvalidUrl {
        what,
        url: text.to_string(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "https" | "http" | "file" => Ok(url),
        other => Err(ArtifactError::InvalidUrl {
            what,
            url: text.to_string(),
            reason: format!("the scheme `{other}` is not supported"),
        }),
    }
}

/// Whether `url`'s host is this machine (`localhost` or a loopback address).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(crate) fn check_url(
    what: &'static str,
    url: &Url,
    insecure: bool,
) -> Result<(), ArtifactError> {
    match url.scheme() {
        "https" => Ok(()),
        "file" => url
            .to_file_path()
            .map(drop)
            .map_err(|()| ArtifactError::InvalidUrl {
                what,
                url: url.to_string(),
                reason: "it is not a local absolute path".to_string(),
            }),
        "http" if insecure || is_loopback(url) => Ok(()),
        "http" => Err(ArtifactError::InsecureMirror {
            what,
            url: url.to_string(),
        }),
        other => Err(ArtifactError::InvalidUrl {
            what,
            url: url.to_string(),
            reason: format!("the scheme `{other}` is not supported"),
        }),
    }
}

/// A redirect the download client will not follow (see [`check_redirect`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{from}` redirects to `{to}`: {reason}")]
pub struct RedirectRefusal {
    /// The address that answered with the redirect.
    pub from: Url,
    /// Where it pointed: the refused URL.
    pub to: Url,
    pub reason: &'static str,
    /// Whether `--insecure-mirror` would let it through.
    pub insecure_helps: bool,
}

/// Checks a redirect before it is followed (so before any lookup of or connection to the new
/// host), with the rules of a mirror the user names: https, or plain http to this machine or
/// with `insecure`. A redirect never steps down from https to plain http, not even to this
/// machine, unless `insecure`.
pub(crate) fn check_redirect(
    from: &Url,
    to: &Url,
    insecure: bool,
) -> Result<(), Box<RedirectRefusal>> {
    let refuse = |reason, insecure_helps| {
        Err(Box::new(RedirectRefusal {
            from: from.clone(),
            to: to.clone(),
            reason,
            insecure_helps,
        }))
    };
    match to.scheme() {
        "https" => Ok(()),
        "http" if insecure => Ok(()),
        "http" if from.scheme() == "https" => refuse(
            "timonel refuses to step down from https to plain http",
            true,
        ),
        "http" if is_loopback(to) => Ok(()),
        "http" => refuse(
            "timonel refuses plain http to a host other than this machine",
            true,
        ),
        _ => refuse("timonel follows redirects to http(s) addresses only", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sources(mirror: &str) -> Sources {
        Sources {
            binary_mirror: Some(parse_url("binary mirror", mirror).unwrap()),
            ..Sources::default()
        }
    }

    #[test]
    fn builds_asset_urls_with_encoded_plus() {
        let v: K3sVersion = "v1.31.2+k3s1".parse().unwrap();
        let def = Sources::default().asset_url(&v, "k3s").unwrap();
        assert_eq!(
            def.as_str(),
            "https://github.com/k3s-io/k3s/releases/download/v1.31.2%2Bk3s1/k3s"
        );
        let m = sources("http://127.0.0.1:8080/download/")
            .asset_url(&v, "k3s-arm64")
            .unwrap();
        assert_eq!(
            m.as_str(),
            "http://127.0.0.1:8080/download/v1.31.2%2Bk3s1/k3s-arm64"
        );
        // A local absolute path: a drive letter on Windows.
        let (base, path) = if cfg!(windows) {
            ("file:///C:/srv/k3s", r"C:\srv\k3s\v1.31.2+k3s1\k3s")
        } else {
            ("file:///srv/k3s", "/srv/k3s/v1.31.2+k3s1/k3s")
        };
        let f = sources(base).asset_url(&v, "k3s").unwrap();
        assert_eq!(f.to_file_path().unwrap(), std::path::PathBuf::from(path));
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:1/x",
            "http://localhost/x",
            "http://[::1]:9/x",
            "https://example.com/x",
            if cfg!(windows) {
                "file:///C:/tmp/x"
            } else {
                "file:///tmp/x"
            },
        ] {
            sources(ok).validate().unwrap();
        }
        let err = sources("http://mirror.example.com/k3s")
            .validate()
            .unwrap_err();
        assert!(matches!(err, ArtifactError::InsecureMirror { .. }), "{err}");
        let mut s = sources("http://mirror.example.com/k3s");
        s.insecure_mirror = true;
        s.validate().unwrap();
        assert!(parse_url("binary mirror", "ftp://x/y").is_err());
        assert!(parse_url("binary mirror", "not a url").is_err());
    }

    #[test]
    fn redirects_follow_the_mirror_rules_and_never_step_down() {
        let url = |s: &str| Url::parse(s).unwrap();
        let loopback = url("http://127.0.0.1:8080/download/v1/k3s");
        let remote_tls = url("https://mirror.example.com/k3s");
        for (from, to, insecure, ok) in [
            (&loopback, "http://localhost:9/k3s", false, true),
            (&loopback, "https://cdn.example.com/k3s", false, true),
            (
                &loopback,
                "http://timonel-redirect-test.invalid/k3s",
                false,
                false,
            ),
            (
                &loopback,
                "http://timonel-redirect-test.invalid/k3s",
                true,
                true,
            ),
            (&remote_tls, "https://cdn.example.com/k3s", false, true),
            (&remote_tls, "http://cdn.example.com/k3s", false, false),
            (&remote_tls, "http://127.0.0.1/k3s", false, false),
            (&remote_tls, "http://cdn.example.com/k3s", true, true),
            (&loopback, "file:///etc/passwd", true, false),
        ] {
            let result = check_redirect(from, &url(to), insecure);
            assert_eq!(result.is_ok(), ok, "{from} -> {to} (insecure: {insecure})");
            if let Err(refusal) = result {
                let text = refusal.to_string();
                assert!(
                    text.contains(&format!("`{from}`")) && text.contains(to),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn reads_the_environment() {
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_BINARY_MIRROR, "http://127.0.0.1:1/download"),
            (ENV_OFFLINE, "1"),
            (ENV_INSECURE_MIRROR, "false"),
        ]);
        let s = Sources::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert!(s.offline);
        assert!(!s.insecure_mirror);
        assert!(s.channel_url.is_none());
        assert_eq!(
            s.binary_mirror.unwrap().as_str(),
            "http://127.0.0.1:1/download"
        );
        let bad = Sources::from_lookup(|k| (k == ENV_CHANNEL_URL).then(|| "::".to_string()));
        assert!(bad.is_err());
    }
}
