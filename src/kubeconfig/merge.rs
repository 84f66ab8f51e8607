//! Pure edits of a parsed kubeconfig (a JSON object with insertion order kept): add, update and
//! remove our cluster, context and user, and nothing else.
//!
//! Our entries carry a kubeconfig extension in their inner object, as minikube does:
//!
//! ```yaml
//! extensions:
//! - extension:
//!     profile: timonel
//!     provider: timonel
//!     previous-context: kind-dev   # context only: the current-context we replaced
//!   name: timonel
//! ```
//!
//! kubectl keeps extensions when it rewrites the file (`kubectl config use-context`), so the
//! mark survives. An entry with our name and without the mark belongs to someone else.

use serde_json::{json, Map, Value};

use super::{ClusterCredentials, EntryKind};

/// The name of our kubeconfig extension and the value of its `provider`.
pub const EXTENSION_NAME: &str = "timonel";
const PREVIOUS_CONTEXT: &str = "previous-context";
const CURRENT_CONTEXT: &str = "current-context";

/// A document that violates the kubeconfig shape, or an entry that is not ours.
#[derive(Debug)]
pub(crate) enum EditError {
    Invalid(String),
    Foreign(EntryKind),
}

/// Check the shape we rely on: each list is missing, null or a list of mappings.
pub(crate) fn validate(doc: &Map<String, Value>) -> Result<(), EditError> {
    for kind in EntryKind::ALL {
        match doc.get(kind.list_key()) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.iter().any(|item| !item.is_object()) {
                    return Err(EditError::Invalid(format!(
                        "an entry of `{}` is not a mapping",
                        kind.list_key()
                    )));
                }
            }
            Some(_) => {
                return Err(EditError::Invalid(format!(
                    "`{}` is not a list",
                    kind.list_key()
                )))
            }
        }
    }
    match doc.get(CURRENT_CONTEXT) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(EditError::Invalid(
            "`current-context` is not a string".to_string(),
        )),
    }
}

fn items(doc: &Map<String, Value>, kind: EntryKind) -> &[Value] {
    match doc.get(kind.list_key()) {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn items_mut(doc: &mut Map<String, Value>, kind: EntryKind) -> &mut Vec<Value> {
    let slot = doc
        .entry(kind.list_key())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(items) => items,
        _ => unreachable!("just made an array"),
    }
}

fn position(doc: &Map<String, Value>, kind: EntryKind, name: &str) -> Option<usize> {
    items(doc, kind)
        .iter()
        .position(|item| item.get("name").and_then(Value::as_str) == Some(name))
}

/// Our extension inside an entry, if the entry carries it.
fn our_extension(entry: &Value, kind: EntryKind) -> Option<&Map<String, Value>> {
    entry
        .get(kind.item_key())?
        .get("extensions")?
        .as_array()?
        .iter()
        .filter(|ext| ext.get("name").and_then(Value::as_str) == Some(EXTENSION_NAME))
        .filter_map(|ext| ext.get("extension")?.as_object())
        .find(|ext| ext.get("provider").and_then(Value::as_str) == Some(EXTENSION_NAME))
}

fn current_context(doc: &Map<String, Value>) -> Option<&str> {
    doc.get(CURRENT_CONTEXT)
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
}

fn context_exists(doc: &Map<String, Value>, name: &str) -> bool {
    position(doc, EntryKind::Context, name).is_some()
}

/// A new, empty kubeconfig in client-go's key order.
pub(crate) fn new_document(current_context: Option<&str>) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), json!("v1"));
    doc.insert("clusters".into(), json!([]));
    doc.insert("contexts".into(), json!([]));
    if let Some(current) = current_context {
        doc.insert(CURRENT_CONTEXT.into(), json!(current));
    }
    doc.insert("kind".into(), json!("Config"));
    doc.insert("preferences".into(), json!({}));
    doc.insert("users".into(), json!([]));
    doc
}

/// What [`apply_merge`] did to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MergeReport {
    /// Whether any of our three entries existed before.
    pub existed: bool,
    /// The current-context before, when we replaced it.
    pub previous_context: Option<String>,
}

/// Write our cluster, context and user named `name` into `doc`; refuse (changing nothing) when
/// an entry with that name is not ours.
pub(crate) fn apply_merge(
    doc: &mut Map<String, Value>,
    name: &str,
    creds: &ClusterCredentials,
    set_current: bool,
) -> Result<MergeReport, EditError> {
    validate(doc)?;
    let mut existed = false;
    for kind in EntryKind::ALL {
        if let Some(i) = position(doc, kind, name) {
            if our_extension(&items(doc, kind)[i], kind).is_none() {
                return Err(EditError::Foreign(kind));
            }
            existed = true;
        }
    }
    let recorded = position(doc, EntryKind::Context, name)
        .and_then(|i| our_extension(&items(doc, EntryKind::Context)[i], EntryKind::Context))
        .and_then(|ext| ext.get(PREVIOUS_CONTEXT)?.as_str())
        .map(str::to_string);
    let current = current_context(doc).map(str::to_string);
    let replaced = current.filter(|c| set_current && c != name);
    let previous = replaced.clone().or(recorded);

    let base = |previous: Option<&str>| {
        let mut ext = Map::new();
        if let Some(prev) = previous {
            ext.insert(PREVIOUS_CONTEXT.into(), json!(prev));
        }
        ext.insert("profile".into(), json!(name));
        ext.insert("provider".into(), json!(EXTENSION_NAME));
        ext
    };
    let cluster = [
        ("certificate-authority-data", json!(creds.ca_data)),
        ("server", json!(creds.server)),
    ];
    let context = [("cluster", json!(name)), ("user", json!(name))];
    let user = [
        ("client-certificate-data", json!(creds.client_cert_data)),
        ("client-key-data", json!(creds.client_key_data)),
    ];
    // Fields that conflict with ours (client-go rejects a path next to embedded data, or the
    // insecure flag next to a CA).
    let cluster_drop = ["certificate-authority", "insecure-skip-tls-verify"];
    let user_drop = ["client-certificate", "client-key"];
    upsert(
        doc,
        EntryKind::Cluster,
        name,
        &cluster,
        &cluster_drop,
        base(None),
    );
    let context_ext = base(previous.as_deref());
    upsert(doc, EntryKind::Context, name, &context, &[], context_ext);
    upsert(doc, EntryKind::User, name, &user, &user_drop, base(None));
    if set_current {
        doc.insert(CURRENT_CONTEXT.into(), json!(name));
    }
    Ok(MergeReport {
        existed,
        previous_context: replaced,
    })
}

/// Update our entry in place (keeping fields we do not own, like a context's `namespace`) or
/// append a new one in kubectl's alphabetical key order.
fn upsert(
    doc: &mut Map<String, Value>,
    kind: EntryKind,
    name: &str,
    fields: &[(&str, Value)],
    drop: &[&str],
    extension: Map<String, Value>,
) {
    let index = position(doc, kind, name);
    let list = items_mut(doc, kind);
    let entry = match index {
        Some(i) => &mut list[i],
        None => {
            let mut entry = Map::new();
            if kind == EntryKind::User {
                entry.insert("name".into(), json!(name));
                entry.insert(kind.item_key().into(), json!({}));
            } else {
                entry.insert(kind.item_key().into(), json!({}));
                entry.insert("name".into(), json!(name));
            }
            list.push(Value::Object(entry));
            let last = list.len() - 1;
            &mut list[last]
        }
    };
    let Value::Object(entry) = entry else {
        unreachable!("validated: entries are mappings")
    };
    let inner = entry.entry(kind.item_key()).or_insert_with(|| json!({}));
    if !inner.is_object() {
        *inner = json!({});
    }
    let Value::Object(inner) = inner else {
        unreachable!("just made a mapping")
    };
    for key in drop {
        inner.remove(*key);
    }
    let fresh = inner.is_empty();
    for (key, value) in fields {
        inner.insert((*key).to_string(), value.clone());
    }
    set_extension(inner, extension);
    if fresh {
        // New entries get kubectl's alphabetical key order; existing ones keep theirs.
        inner.sort_keys();
    }
}

fn set_extension(inner: &mut Map<String, Value>, extension: Map<String, Value>) {
    let slot = inner.entry("extensions").or_insert_with(|| json!([]));
    if !slot.is_array() {
        *slot = json!([]);
    }
    let Value::Array(list) = slot else {
        unreachable!("just made a list")
    };
    let ours = list
        .iter_mut()
        .find(|ext| ext.get("name").and_then(Value::as_str) == Some(EXTENSION_NAME));
    match ours {
        Some(Value::Object(ext)) => {
            ext.insert("extension".into(), Value::Object(extension));
        }
        _ => list.push(json!({ "extension": extension, "name": EXTENSION_NAME })),
    }
}

/// How [`apply_remove`] left `current-context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextChange {
    /// Not ours, left as it was.
    Kept,
    /// Ours; set back to the context that was current before our merge.
    Restored(String),
    /// Ours, and the earlier context is unknown or gone: `current-context` removed.
    Unset,
}

/// What [`apply_remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoveReport {
    pub removed: Vec<EntryKind>,
    pub kept_foreign: Vec<EntryKind>,
    pub current_context: ContextChange,
}

/// Remove our three entries named `name`; entries with that name that are not ours stay.
pub(crate) fn apply_remove(
    doc: &mut Map<String, Value>,
    name: &str,
) -> Result<RemoveReport, EditError> {
    validate(doc)?;
    let previous = position(doc, EntryKind::Context, name)
        .and_then(|i| our_extension(&items(doc, EntryKind::Context)[i], EntryKind::Context))
        .and_then(|ext| ext.get(PREVIOUS_CONTEXT)?.as_str())
        .map(str::to_string);
    let mut removed = Vec::new();
    let mut kept_foreign = Vec::new();
    for kind in EntryKind::ALL {
        let Some(i) = position(doc, kind, name) else {
            continue;
        };
        if our_extension(&items(doc, kind)[i], kind).is_some() {
            items_mut(doc, kind).remove(i);
            removed.push(kind);
        } else {
            kept_foreign.push(kind);
        }
    }
    let mut current_context = ContextChange::Kept;
    if removed.contains(&EntryKind::Context) && current_context_is(doc, name) {
        match previous.filter(|p| context_exists(doc, p)) {
            Some(prev) => {
                doc.insert(CURRENT_CONTEXT.into(), json!(prev));
                current_context = ContextChange::Restored(prev);
            }
            None => {
                doc.remove(CURRENT_CONTEXT);
                current_context = ContextChange::Unset;
            }
        }
    }
    Ok(RemoveReport {
        removed,
        kept_foreign,
        current_context,
    })
}

fn current_context_is(doc: &Map<String, Value>, name: &str) -> bool {
    current_context(doc) == Some(name)
}
