//! k3s version strings and what a user may pass to `--kubernetes-version`.
//!
//! Parsing is pure and refuses bad input before any network call.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ArtifactError;

/// A validated k3s release version: `v1.31.2+k3s1` or `v1.32.4-rc1+k3s1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct K3sVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// `Some(n)` for a release candidate `-rcN`.
    pub rc: Option<u32>,
    /// The `N` of `+k3sN`.
    pub build: u32,
}

impl K3sVersion {
    /// The tag of the `rancher/k3s` image: Docker tags cannot carry `+`.
    pub fn docker_tag(&self) -> String {
        self.to_string().replace('+', "-")
    }

    /// The Kubernetes version this k3s release packages, e.g. `v1.31.2`.
    pub fn kubernetes(&self) -> String {
        format!("v{}.{}.{}", self.major, self.minor, self.patch)
    }

    /// The version as it appears in a URL path: `+` percent-encoded as `%2B`.
    pub fn url_segment(&self) -> String {
        self.to_string().replace('+', "%2B")
    }
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(rc) = self.rc {
            write!(f, "-rc{rc}")?;
        }
        write!(f, "+k3s{}", self.build)
    }
}

impl Ord for K3sVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // A release candidate sorts before the release of the same patch version.
        let rc_key = |v: &Self| v.rc.map_or((1, 0), |n| (0, n));
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| rc_key(self).cmp(&rc_key(other)))
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for K3sVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn invalid(input: &str, reason: impl Into<String>) -> ArtifactError {
    ArtifactError::InvalidVersion {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn number(input: &str, part: &str, what: &str) -> Result<u32, ArtifactError> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            input,
            format!("the {what} `{part}` is not a number"),
        ));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(invalid(
            input,
            format!("the {what} `{part}` has a leading zero"),
        ));
    }
    part.parse()
        .map_err(|_| invalid(input, format!("the {what} `{part}` is too large")))
}

/// Splits `v1.31.2` (after the `v`) into numbers; `parts` is the count expected (2 or 3).
fn dotted(input: &str, body: &str) -> Result<Vec<u32>, ArtifactError> {
    let names = ["major version", "minor version", "patch version"];
    let pieces: Vec<&str> = body.split('.').collect();
    if pieces.len() > 3 {
        return Err(invalid(input, "it has more than three numbers"));
    }
    pieces
        .iter()
        .zip(names)
        .map(|(p, name)| number(input, p, name))
        .collect()
}

impl FromStr for K3sVersion {
    type Err = ArtifactError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let Some(rest) = input.strip_prefix('v') else {
            return Err(invalid(input, "a k3s version starts with `v`"));
        };
        let Some((kube, k3s)) = rest.split_once('+') else {
            return Err(invalid(input, "a k3s version ends with `+k3sN`"));
        };
        let Some(build) = k3s.strip_prefix("k3s") else {
            return Err(invalid(
                input,
                format!("`+{k3s}` is not of the form `+k3sN`"),
            ));
        };
        let build = number(input, build, "k3s build number")?;
        let (kube, rc) = match kube.split_once('-') {
            Some((kube, pre)) => {
                let Some(n) = pre.strip_prefix("rc") else {
                    return Err(invalid(
                        input,
                        format!("`-{pre}` is not a release candidate `-rcN`"),
                    ));
                };
                (kube, Some(number(input, n, "release candidate number")?))
            }
            None => (kube, None),
        };
        let nums = dotted(input, kube)?;
        let [major, minor, patch] = nums[..] else {
            return Err(invalid(
                input,
                "a k3s version has three numbers, as in `v1.31.2+k3s1`",
            ));
        };
        Ok(Self {
            major,
            minor,
            patch,
            rc,
            build,
        })
    }
}

impl Serialize for K3sVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for K3sVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What `--kubernetes-version` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// A full k3s release: used as is, no network.
    Exact(K3sVersion),
    /// `v1.31.2`: the newest `+k3sN` build of this Kubernetes version.
    Kubernetes { major: u32, minor: u32, patch: u32 },
    /// `v1.31`: the latest release of the channel `v1.31`.
    Minor { major: u32, minor: u32 },
    /// A named channel of the channel server (`stable`, `latest`, `testing`, …).
    Channel(String),
}

/// The channel used when no version is given.
pub const DEFAULT_CHANNEL: &str = "stable";

impl Default for VersionSpec {
    fn default() -> Self {
        Self::Channel(DEFAULT_CHANNEL.to_string())
    }
}

impl VersionSpec {
    /// The channel this spec asks the channel server about, if any.
    pub fn channel(&self) -> Option<String> {
        match self {
            Self::Exact(_) => None,
            Self::Kubernetes { major, minor, .. } | Self::Minor { major, minor } => {
                Some(format!("v{major}.{minor}"))
            }
            Self::Channel(name) => Some(name.clone()),
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(v) => v.fmt(f),
            Self::Kubernetes {
                major,
                minor,
                patch,
            } => write!(f, "v{major}.{minor}.{patch}"),
            Self::Minor { major, minor } => write!(f, "v{major}.{minor}"),
            Self::Channel(name) => f.write_str(name),
        }
    }
}

fn is_channel_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl FromStr for VersionSpec {
    type Err = ArtifactError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let input = raw.trim();
        if input.is_empty() {
            return Err(invalid(raw, "it is empty"));
        }
        if input.contains('+') {
            return input.parse().map(Self::Exact);
        }
        if input.as_bytes()[0].is_ascii_digit() {
            return Err(invalid(
                input,
                format!("versions start with `v`: try `v{input}`"),
            ));
        }
        if let Some(body) = input.strip_prefix('v') {
            if body.starts_with(|c: char| c.is_ascii_digit()) {
                // `v1.33-testing` style channels exist for old minors only; accept them as names.
                if let Some((minor, "testing")) = body.split_once('-') {
                    dotted(input, minor)?;
                    return Ok(Self::Channel(input.to_string()));
                }
                if body.contains('-') {
                    return Err(invalid(
                        input,
                        "a release candidate needs its k3s build, as in `v1.32.4-rc1+k3s1`",
                    ));
                }
                let nums = dotted(input, body)?;
                return match nums[..] {
                    [major, minor] => Ok(Self::Minor { major, minor }),
                    [major, minor, patch] => Ok(Self::Kubernetes {
                        major,
                        minor,
                        patch,
                    }),
                    _ => Err(invalid(
                        input,
                        "give at least a minor version, as in `v1.31`",
                    )),
                };
            }
        }
        if is_channel_name(input) {
            return Ok(Self::Channel(input.to_string()));
        }
        Err(invalid(
            input,
            "it is neither a version nor a channel name (lowercase letters, digits, `-`, `.`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> K3sVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_full_versions() {
        let x = v("v1.31.2+k3s1");
        assert_eq!(
            (x.major, x.minor, x.patch, x.rc, x.build),
            (1, 31, 2, None, 1)
        );
        assert_eq!(x.to_string(), "v1.31.2+k3s1");
        assert_eq!(x.docker_tag(), "v1.31.2-k3s1");
        assert_eq!(x.kubernetes(), "v1.31.2");
        assert_eq!(x.url_segment(), "v1.31.2%2Bk3s1");
        let rc = v("v1.32.4-rc1+k3s2");
        assert_eq!(rc.rc, Some(1));
        assert_eq!(rc.to_string(), "v1.32.4-rc1+k3s2");
    }

    #[test]
    fn orders_versions() {
        assert!(v("v1.32.4-rc1+k3s1") < v("v1.32.4+k3s1"));
        assert!(v("v1.32.4-rc2+k3s1") > v("v1.32.4-rc1+k3s1"));
        assert!(v("v1.31.2+k3s2") > v("v1.31.2+k3s1"));
        assert!(v("v1.31.10+k3s1") > v("v1.31.9+k3s3"));
    }

    #[test]
    fn refuses_bad_versions() {
        for bad in [
            "1.31.2+k3s1",
            "v1.31+k3s1",
            "v1.31.2+k3s",
            "v1.31.2+k3s.1",
            "v1.31.2-beta1+k3s1",
            "v1.31.02+k3s1",
            "v1.31.2.1+k3s1",
            "v1.31.2+rke2r1",
        ] {
            let err = bad.parse::<K3sVersion>().unwrap_err();
            assert!(
                matches!(err, ArtifactError::InvalidVersion { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn parses_specs() {
        let spec = |s: &str| s.parse::<VersionSpec>().unwrap();
        assert_eq!(spec("v1.31.2+k3s1"), VersionSpec::Exact(v("v1.31.2+k3s1")));
        assert_eq!(
            spec("v1.31.2"),
            VersionSpec::Kubernetes {
                major: 1,
                minor: 31,
                patch: 2
            }
        );
        assert_eq!(
            spec("v1.31"),
            VersionSpec::Minor {
                major: 1,
                minor: 31
            }
        );
        assert_eq!(spec("stable"), VersionSpec::Channel("stable".into()));
        assert_eq!(spec(" latest "), VersionSpec::Channel("latest".into()));
        assert_eq!(
            spec("v1.18-testing"),
            VersionSpec::Channel("v1.18-testing".into())
        );
        assert_eq!(
            VersionSpec::default(),
            VersionSpec::Channel("stable".into())
        );
        assert_eq!(spec("v1.31.2").channel().as_deref(), Some("v1.31"));
    }

    #[test]
    fn refuses_bad_specs_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("1.31", "try `v1.31`"),
            ("v1", "at least a minor"),
            ("v1.31.2.4", "more than three"),
            ("v1.x", "not a number"),
            ("v1.32.4-rc1", "k3s build"),
            ("Stable", "neither"),
            ("stable;rm", "neither"),
            ("v1.31.2+k3s", "not a number"),
        ] {
            let err = bad.parse::<VersionSpec>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(why), "{bad:?}: {text}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let x = v("v1.30.1+k3s3");
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, "\"v1.30.1+k3s3\"");
        assert_eq!(serde_json::from_str::<K3sVersion>(&json).unwrap(), x);
    }
}
