//! Errors of the kubeconfig module: what happened (short, lowercase, the file in backticks) and,
//! through [`Hint`], what the user can do about it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use timonel_driver::Hint;

/// One of the three named lists of a kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Cluster,
    Context,
    User,
}

impl EntryKind {
    pub const ALL: [EntryKind; 3] = [EntryKind::Cluster, EntryKind::Context, EntryKind::User];

    /// The top-level key of the list (`clusters`, `contexts`, `users`).
    pub fn list_key(self) -> &'static str {
        match self {
            EntryKind::Cluster => "clusters",
            EntryKind::Context => "contexts",
            EntryKind::User => "users",
        }
    }

    /// The key of the object inside a named entry (`cluster`, `context`, `user`).
    pub fn item_key(self) -> &'static str {
        match self {
            EntryKind::Cluster => "cluster",
            EntryKind::Context => "context",
            EntryKind::User => "user",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.item_key())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML. The YAML error is rendered without a snippet of the file, which
    /// holds private keys.
    #[error("`{}` is not valid YAML", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// YAML, but not shaped like a kubeconfig (e.g. `clusters` is not a list).
    #[error("`{}` is not a valid kubeconfig: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// An entry with our name exists and was not written by timonel.
    #[error("{kind} `{name}` in `{}` was not created by timonel", path.display())]
    Foreign {
        path: PathBuf,
        kind: EntryKind,
        name: String,
    },
    #[error("`{}` is read-only", path.display())]
    ReadOnly { path: PathBuf },
    #[error("failed to write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to serialize the kubeconfig for `{}`", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::SerializeError>,
    },
    #[error(
        "timed out after {after:?} waiting for the lock `{}`{}",
        lock.display(),
        holder_suffix(*.holder)
    )]
    LockTimeout {
        lock: PathBuf,
        after: Duration,
        /// The PID written in the lock file, when it holds one (kubectl's lock file is empty).
        holder: Option<u32>,
    },
    #[error("failed to create the lock `{}`", lock.display())]
    Lock {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the home directory for the default kubeconfig `~/.kube/config`")]
    NoHome,
    #[error("the k3s kubeconfig is not valid YAML")]
    K3sParse {
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("the k3s kubeconfig has no {what}")]
    K3sMissing { what: String },
    #[error("the k3s kubeconfig refers to `{field}` by file path instead of embedding it")]
    K3sPathReference { field: String },
    #[error("the k3s kubeconfig field `{field}` is not valid base64")]
    K3sBase64 { field: String },
}

fn holder_suffix(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!(" (held by process {pid})"),
        None => String::new(),
    }
}

impl Hint for KubeconfigError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } => Some(format!(
                "fix or move `{}`, or write elsewhere with `--kubeconfig <file>`",
                path.display()
            )),
            Self::Foreign { path, kind, name } => Some(format!(
                "use another profile name, write to another file with `--kubeconfig <file>`, \
                 or delete the existing entry with `kubectl config delete-{kind} {name} \
                 --kubeconfig {}`",
                path.display()
            )),
            Self::ReadOnly { path } => Some(format!(
                "make `{}` writable, or write elsewhere with `--kubeconfig <file>`",
                path.display()
            )),
            Self::LockTimeout { lock, .. } => Some(format!(
                "another kubectl or timonel is changing this kubeconfig; if none is running, \
                 delete `{}`",
                lock.display()
            )),
            Self::NoHome => Some("set `KUBECONFIG` or pass `--kubeconfig <file>`".to_string()),
            Self::K3sParse { .. }
            | Self::K3sMissing { .. }
            | Self::K3sPathReference { .. }
            | Self::K3sBase64 { .. } => Some(
                "the node's /etc/rancher/k3s/k3s.yaml is not what k3s writes; \
                 run `timonel logs` to see what the node was doing"
                    .to_string(),
            ),
            Self::Read { .. } | Self::Write { .. } | Self::Serialize { .. } | Self::Lock { .. } => {
                None
            }
        }
    }
}
