//! What fetching and caching artifacts can fail with. `Display` is short and lowercase and names
//! the object in backticks; the fix is a [`Hint`].

use std::path::PathBuf;
use std::time::Duration;

use timonel_driver::{CommandError, DriverError, Hint};

use super::{ENV_INSECURE_MIRROR, ENV_OFFLINE};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid Kubernetes version `{input}`: {reason}")]
    InvalidVersion { input: String, reason: String },

    #[error("unsupported architecture `{arch}`")]
    UnsupportedArch { arch: String },

    #[error("invalid {what} `{url}`: {reason}")]
    InvalidUrl {
        what: &'static str,
        url: String,
        reason: String,
    },

    #[error("refusing plain-http {what} `{url}`")]
    InsecureMirror { what: &'static str, url: String },

    #[error("refused a redirect while fetching `{url}`")]
    RedirectRefused {
        url: String,
        #[source]
        refusal: Box<super::sources::RedirectRefusal>,
    },

    #[error("unknown channel `{channel}` at `{url}`")]
    UnknownChannel {
        channel: String,
        url: String,
        known: Vec<String>,
    },

    #[error("could not resolve channel `{channel}`")]
    ChannelUnavailable {
        channel: String,
        #[source]
        source: Box<ArtifactError>,
    },

    #[error("channel `{channel}` is not in the cache and timonel is offline")]
    ChannelNotCached { channel: String },

    #[error("unexpected answer from the channel server `{url}`: {message}")]
    BadChannelAnswer { url: String, message: String },

    #[error("`{url}` was not found")]
    NotFound { url: String },

    #[error("`{url}` answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },

    #[error("could not connect to `{url}`")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("`{url}` sent nothing for {after:?}")]
    Timeout { url: String, after: Duration },

    #[error("transfer of `{url}` failed")]
    Transfer {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("transfer of `{url}` ended early: {message}")]
    Incomplete { url: String, message: String },

    #[error("sha256 of `{url}` does not match: expected {expected}, got {got}")]
    DigestMismatch {
        url: String,
        expected: String,
        got: String,
    },

    #[error("`{checksums}` has no sha256 for `{asset}`")]
    ChecksumMissing { checksums: String, asset: String },

    #[error("k3s `{version}` ({arch}) is not in the cache at `{}`: missing {}", .cache.display(), list(.missing))]
    NotCached {
        version: String,
        arch: String,
        missing: Vec<String>,
        cache: PathBuf,
        /// Why the network was not used: `None` when offline mode was asked for.
        #[source]
        cause: Option<Box<ArtifactError>>,
    },

    #[error("{algorithm} of `{url}` does not match `{checksums}`: expected {expected}, got {got}")]
    ImageDigestMismatch {
        url: String,
        checksums: String,
        algorithm: &'static str,
        expected: String,
        got: String,
    },

    #[error("the checksum file `{url}` is unusable: {message}")]
    BadChecksumFile { url: String, message: String },

    #[error("`{checksums}` lists no checksum for `{file}`")]
    ImageChecksumMissing { checksums: String, file: String },

    #[error("the cloud image is not in the cache at `{}`: missing {}", .cache.display(), names(.missing))]
    ImageNotCached {
        /// The checksum file (when it is missing too), then the image.
        missing: Vec<MissingFile>,
        cache: PathBuf,
        /// Why the network was not used: `None` when offline mode was asked for.
        #[source]
        cause: Option<Box<ArtifactError>>,
    },

    #[error("`{tool}` is needed to convert `{file}` to {format} and was not found")]
    ConverterMissing {
        tool: String,
        file: String,
        format: String,
    },

    #[error("could not convert `{}` to {format}", .path.display())]
    ConvertFailed {
        path: PathBuf,
        format: String,
        #[source]
        source: Box<CommandError>,
    },

    #[error("unsupported disk format `{format}`")]
    UnsupportedDiskFormat { format: String },

    #[error("cannot read `{}` as a {format} image: {message}", .path.display())]
    UnreadableImage {
        path: PathBuf,
        format: String,
        message: String,
    },

    #[error(
        "not enough free space in `{}` to make the {what}: {} MiB needed, {} MiB free",
        .dir.display(), .need.div_ceil(1 << 20), .free >> 20
    )]
    NoSpace {
        dir: PathBuf,
        what: String,
        need: u64,
        free: u64,
    },

    #[error("{tool} could not make the {format} disk from `{}`", .path.display())]
    DiskToolFailed {
        path: PathBuf,
        format: String,
        tool: String,
        #[source]
        source: Box<DriverError>,
    },

    #[error("{what} `{}`", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not build the HTTP client")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

/// A file the cache lacks, and where it would come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFile {
    pub name: String,
    pub url: String,
}

fn names(items: &[MissingFile]) -> String {
    items
        .iter()
        .map(|i| format!("`{}`", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to install `qemu-img` on this OS.
fn qemu_img_install_hint() -> &'static str {
    if cfg!(target_os = "windows") {
        "install QEMU for Windows (https://www.qemu.org/download/#windows) and add its folder \
         (with `qemu-img.exe`) to PATH"
    } else if cfg!(target_os = "macos") {
        "`brew install qemu`"
    } else {
        "`sudo apt-get install qemu-utils` (Debian, Ubuntu) or `sudo dnf install qemu-img` \
         (Fedora, RHEL)"
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ArtifactError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// Worth another try: the network or the server may do better in a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Transfer { .. }
            | Self::Incomplete { .. } => true,
            Self::HttpStatus { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// The server could not be used at all (no connection, no answer, or a server error):
    /// the cases where timonel falls back to the cache.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::HttpStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

impl Hint for ArtifactError {
    fn hint(&self) -> Option<String> {
        let pin = "or pin a release with `--kubernetes-version v1.31.2+k3s1`";
        match self {
            Self::InvalidVersion { .. } => Some(
                "give a k3s release (`v1.31.2+k3s1`), a Kubernetes version (`v1.31.2`), a minor \
                 (`v1.31`) or a channel (`stable`, `latest`, `testing`)"
                    .to_string(),
            ),
            Self::UnsupportedArch { .. } => {
                Some("k3s ships for amd64, arm64 and arm (armhf) only".to_string())
            }
            Self::InvalidUrl { .. } => Some(
                "give an absolute `https://`, `http://` (loopback only) or `file://` URL".to_string(),
            ),
            Self::InsecureMirror { .. } => Some(format!(
                "use an `https://` URL, or accept an unverified transport with \
                 `--insecure-mirror` ({ENV_INSECURE_MIRROR}=1); downloads are still checked by sha256"
            )),
            Self::RedirectRefused { refusal, .. } if refusal.insecure_helps => Some(format!(
                "point the mirror at a server that answers over https (or on this machine) \
                 without sending you elsewhere, or accept plain http with `--insecure-mirror` \
                 ({ENV_INSECURE_MIRROR}=1); downloads are still checked by sha256"
            )),
            Self::RedirectRefused { .. } => Some(
                "point the mirror at the file's final https:// (or this machine's http://) address"
                    .to_string(),
            ),
            Self::UnknownChannel { known, .. } if !known.is_empty() => Some(format!(
                "known channels: {}; {pin}",
                known.join(", ")
            )),
            Self::UnknownChannel { .. } => Some(format!(
                "check the channel name (`stable`, `latest`, `testing`, `v1.31`), {pin}"
            )),
            Self::ChannelUnavailable { .. } | Self::BadChannelAnswer { .. } => Some(format!(
                "try again later, point `--channel-url` at a working channel server, {pin}"
            )),
            Self::ChannelNotCached { .. } => Some(format!(
                "pin a release that is in the cache (see `timonel cache list`) with \
                 `--kubernetes-version`, or go online (unset {ENV_OFFLINE})"
            )),
            Self::NotFound { .. } => Some(
                "check that the version exists (https://github.com/k3s-io/k3s/releases) and that \
                 the mirror has the release layout `<mirror>/<version>/<asset>`"
                    .to_string(),
            ),
            Self::HttpStatus { .. } | Self::Unreachable { .. } | Self::Timeout { .. }
            | Self::Transfer { .. } | Self::Incomplete { .. } => Some(
                "check the network (or the proxy settings) and try again; an interrupted download \
                 resumes where it stopped, or use `--binary-mirror`"
                    .to_string(),
            ),
            Self::DigestMismatch { .. } => Some(
                "try again; if it keeps failing the server or mirror is serving a different file \
                 than the release's checksum file lists"
                    .to_string(),
            ),
            Self::ChecksumMissing { .. } => Some(
                "the release does not list this asset: check the version and the architecture"
                    .to_string(),
            ),
            Self::NotCached {
                version,
                arch,
                cache,
                ..
            } => {
                let arch_flag = if Some(arch.as_str()) == super::Arch::host().ok().map(|a| a.as_str()) {
                    String::new()
                } else {
                    format!(" --arch {arch}")
                };
                Some(format!(
                    "on a machine with network access run `timonel cache download \
                     --kubernetes-version {version}{arch_flag}`, then copy its `~/.timonel/cache` \
                     folder to `{}` on this machine",
                    cache.display()
                ))
            }
            Self::ImageDigestMismatch { checksums, .. } => Some(format!(
                "try again; if it keeps failing the server is serving a different file than \
                 `{checksums}` lists (a mirror in the middle of an update)"
            )),
            Self::BadChecksumFile { .. } => Some(
                "the checksum URL must name the publisher's `SHA256SUMS`/`SHA512SUMS` file"
                    .to_string(),
            ),
            Self::ImageChecksumMissing { .. } => Some(
                "the publisher no longer lists this file (its `current` folder may have moved \
                 on): update timonel, or pass a disk you have with `--vm-image PATH`"
                    .to_string(),
            ),
            Self::ImageNotCached { missing, .. } => Some(format!(
                "run once with network access (without `--offline` / {ENV_OFFLINE}) so timonel \
                 downloads {}, or pass a disk you have with `--vm-image PATH`",
                missing
                    .iter()
                    .map(|m| format!("`{}`", m.url))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
            Self::ConverterMissing { tool, .. } => Some(format!(
                "`{tool}` comes with QEMU: {}; or pass a converted disk with `--vm-image PATH`",
                qemu_img_install_hint()
            )),
            Self::ConvertFailed { .. } => Some(
                "check the free space in the cache folder; if the download is damaged, delete \
                 its folder under `images/` in the cache so it is fetched again"
                    .to_string(),
            ),
            Self::UnreadableImage { .. } => Some(
                "the download is not a qcow2 image timonel can read itself (one with a backing \
                 file, encryption or zstd compression); pass a disk in the driver's format with \
                 `--vm-image PATH`"
                    .to_string(),
            ),
            Self::NoSpace { .. } => Some(
                "free some space there (`timonel cache clean` removes cached downloads), or set \
                 TIMONEL_HOME to a folder on a larger disk"
                    .to_string(),
            ),
            Self::DiskToolFailed { source, .. } => Some(source.hint().unwrap_or_else(|| {
                "check the free space in the cache folder; if the download is damaged, delete \
                 its folder under `images/` in the cache so it is fetched again"
                    .to_string()
            })),
            Self::UnsupportedDiskFormat { .. } => Some(
                "timonel converts to `qcow2`, `raw`, `vmdk`, `vdi`, `vhdx` and `vpc`".to_string(),
            ),
            Self::Io { .. } | Self::Client { .. } => None,
        }
    }
}
