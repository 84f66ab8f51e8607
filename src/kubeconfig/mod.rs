//! The user's kubeconfig: add our cluster, context and user, take them out again, and break
//! nothing else.
//!
//! - **Which file**: kubectl's rules, see [`resolve_target`].
//! - **What we write**: a cluster, a context and a user all named after the profile, certificates
//!   embedded, each marked as ours with a kubeconfig extension named `timonel` (see
//!   [`merge`](self::merge())). An entry with our name but without the mark is someone else's: we
//!   refuse to touch it.
//! - **What we keep**: every other entry and field, in order, including unknown top-level keys,
//!   `preferences` and extensions. The file is parsed and re-serialized, so **comments,
//!   anchors, quoting style and indentation are lost** when we write; when our entries are
//!   already up to date we do not write at all, and the file stays byte for byte. Integers
//!   beyond 64 bits in unknown fields turn into floats. The output is always UTF-8 without a
//!   BOM (input may be UTF-8 with or without a BOM, or UTF-16 with a BOM).
//! - **Locking**: kubectl's `<file>.lock`, see [`lock`].
//! - **Writing**: a temp file in the target's directory, fsync, mode 0600 (unix), rename. A
//!   symlinked kubeconfig stays a symlink; its target is replaced. A read-only file is refused.
//!   On any error the file is untouched and no temp file is left.

mod error;
mod io;
mod k3s;
pub mod lock;
mod merge;
mod path;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

pub use error::{EntryKind, KubeconfigError};
pub use k3s::{parse_k3s_yaml, ClusterCredentials};
pub use merge::{ContextChange, EXTENSION_NAME};
pub use path::{env_files, resolve_target, resolve_target_with, KUBECONFIG_ENV};

use merge::EditError;

/// How long to wait for another process's lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A lock file older than this is left over from a crash (kubectl holds it for milliseconds).
pub const DEFAULT_STALE_LOCK_AFTER: Duration = Duration::from_secs(60);

/// Options of [`merge`].
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Make our context the current one (`false` for `--keep-context`).
    pub set_current: bool,
    /// How long to wait for `<file>.lock` held by another process.
    pub lock_timeout: Duration,
    /// Age after which a lock file is taken as left over from a crash and removed.
    pub stale_lock_after: Duration,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            set_current: true,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            stale_lock_after: DEFAULT_STALE_LOCK_AFTER,
        }
    }
}

/// Options of [`remove`].
#[derive(Debug, Clone)]
pub struct RemoveOptions {
    pub lock_timeout: Duration,
    pub stale_lock_after: Duration,
}

impl Default for RemoveOptions {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            stale_lock_after: DEFAULT_STALE_LOCK_AFTER,
        }
    }
}

/// What [`merge`] did to our entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Our entries were not there; they were added.
    Created,
    /// Our entries were there and something changed (server, certificates, current-context).
    Updated,
    /// Everything was already as wanted; the file was not written.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The file that holds the data (a symlinked kubeconfig's target).
    pub path: PathBuf,
    pub change: Change,
    /// The kubeconfig file did not exist before.
    pub file_created: bool,
    /// The current-context we replaced with ours, if we did.
    pub previous_context: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveOutcome {
    /// Our entries that were removed (none when the file or the entries were missing).
    pub removed: Vec<EntryKind>,
    /// Entries with our name that are not ours and were left alone.
    pub kept_foreign: Vec<EntryKind>,
    pub current_context: ContextChange,
}

impl RemoveOutcome {
    /// Nothing of ours was there.
    pub fn nothing_removed(&self) -> bool {
        self.removed.is_empty()
    }

    pub fn nothing() -> Self {
        Self {
            removed: Vec::new(),
            kept_foreign: Vec::new(),
            current_context: ContextChange::Kept,
        }
    }
}

/// Merge our cluster, context and user, all named `name`, into the kubeconfig at `path`
/// (created, with its directory, when missing). Running it again updates our entries in place
/// and keeps fields a user added to them (e.g. a context's `namespace`).
///
/// With `set_current`, `current-context` becomes `name`, and the context it replaces is
/// recorded in our context's extension so that [`remove`] can restore it.
pub fn merge(
    path: &Path,
    name: &str,
    creds: &ClusterCredentials,
    opts: &MergeOptions,
) -> Result<MergeOutcome, KubeconfigError> {
    io::ensure_parent_dir(path)?;
    let _lock = lock::acquire(path, opts.lock_timeout, opts.stale_lock_after)?;
    let target = io::resolve_symlinks(path)?;
    let bytes = io::read_optional(path)?;
    let mut doc = match &bytes {
        Some(bytes) => io::parse_document(path, &io::decode(path, bytes)?)?,
        None => serde_json::Map::new(),
    };
    if doc.is_empty() {
        doc = merge::new_document(opts.set_current.then_some(name));
    }
    let before = doc.clone();
    let report = merge::apply_merge(&mut doc, name, creds, opts.set_current)
        .map_err(|e| edit_error(path, name, e))?;
    let change = match (report.existed, doc == before) {
        (_, true) if bytes.is_some() => Change::Unchanged,
        (false, _) => Change::Created,
        (true, _) => Change::Updated,
    };
    if change != Change::Unchanged {
        write(&target, &Value::Object(doc))?;
        tracing::debug!(path = %target.display(), ?change, "wrote kubeconfig");
    }
    Ok(MergeOutcome {
        path: target,
        change,
        file_created: bytes.is_none(),
        previous_context: report.previous_context,
    })
}

/// Remove our cluster, context and user named `name` from the kubeconfig at `path`; entries with
/// that name that are not ours stay. When our context was current, `current-context` goes back
/// to the context recorded at merge time if it still exists, else it is removed. A missing file
/// or missing entries are not an error.
pub fn remove(
    path: &Path,
    name: &str,
    opts: &RemoveOptions,
) -> Result<RemoveOutcome, KubeconfigError> {
    if !path.exists() {
        return Ok(RemoveOutcome::nothing());
    }
    let _lock = lock::acquire(path, opts.lock_timeout, opts.stale_lock_after)?;
    let target = io::resolve_symlinks(path)?;
    let Some(bytes) = io::read_optional(path)? else {
        return Ok(RemoveOutcome::nothing());
    };
    let mut doc = io::parse_document(path, &io::decode(path, &bytes)?)?;
    let report = merge::apply_remove(&mut doc, name).map_err(|e| edit_error(path, name, e))?;
    if !report.removed.is_empty() {
        write(&target, &Value::Object(doc))?;
        tracing::debug!(path = %target.display(), removed = ?report.removed, "removed our kubeconfig entries");
    }
    Ok(RemoveOutcome {
        removed: report.removed,
        kept_foreign: report.kept_foreign,
        current_context: report.current_context,
    })
}

/// A complete kubeconfig holding only our entries, current-context set (`timonel kubeconfig`).
pub fn standalone(name: &str, creds: &ClusterCredentials) -> String {
    let mut doc = merge::new_document(Some(name));
    // A fresh document has no entries, so nothing can be foreign.
    let _ = merge::apply_merge(&mut doc, name, creds, true);
    let doc = Value::Object(doc);
    // JSON is YAML too: a fallback that cannot lose data, for a serializer error that a
    // document of strings does not produce.
    io::to_yaml(&doc).unwrap_or_else(|_| format!("{:#}\n", json!(doc)))
}

fn write(target: &Path, doc: &Value) -> Result<(), KubeconfigError> {
    let yaml = io::to_yaml(doc).map_err(|source| KubeconfigError::Serialize {
        path: target.to_path_buf(),
        source: Box::new(source),
    })?;
    io::ensure_parent_dir(target)?;
    io::check_writable(target)?;
    // Under the kubeconfig lock: what a killed earlier write left beside the file goes now.
    io::remove_stale_temps(target);
    io::write_atomic(target, yaml.as_bytes())
}

fn edit_error(path: &Path, name: &str, err: EditError) -> KubeconfigError {
    match err {
        EditError::Invalid(reason) => KubeconfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        },
        EditError::Foreign(kind) => KubeconfigError::Foreign {
            path: path.to_path_buf(),
            kind,
            name: name.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
