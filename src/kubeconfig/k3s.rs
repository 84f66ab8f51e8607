//! Reading the admin credentials out of k3s's own kubeconfig (`/etc/rancher/k3s/k3s.yaml`).
//!
//! k3s writes it with client-go: cluster, context and user all named `default`,
//! `current-context: default`, certificates embedded as base64. The layout and key order vary
//! between versions, so we parse the YAML and never compare bytes.

use std::fmt;

use base64::Engine as _;
use serde_json::Value;

use super::io::parse_yaml;
use super::KubeconfigError;

/// What a client needs to reach a cluster: the API server and the embedded (base64) PEM data, as
/// they appear in a kubeconfig.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCredentials {
    /// e.g. `https://127.0.0.1:6443`; the caller rewrites it to the host-reachable address.
    pub server: String,
    /// `certificate-authority-data`
    pub ca_data: String,
    /// `client-certificate-data`
    pub client_cert_data: String,
    /// `client-key-data`: a private key; never printed by `Debug`.
    pub client_key_data: String,
}

impl fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCredentials")
            .field("server", &self.server)
            .field("ca_data", &format_args!("<{} bytes>", self.ca_data.len()))
            .field(
                "client_cert_data",
                &format_args!("<{} bytes>", self.client_cert_data.len()),
            )
            .field("client_key_data", &format_args!("<redacted>"))
            .finish()
    }
}

/// The credentials in k3s's kubeconfig: the context named by `current-context` (else the one
/// named `default`, else the only one), its cluster and its user.
pub fn parse_k3s_yaml(text: &str) -> Result<ClusterCredentials, KubeconfigError> {
    let doc = parse_yaml(text).map_err(|source| KubeconfigError::K3sParse {
        source: Box::new(source),
    })?;
    let missing = |what: String| KubeconfigError::K3sMissing { what };
    if !doc.is_object() {
        return Err(missing("top-level mapping".to_string()));
    }
    let contexts = list(&doc, "contexts");
    let wanted = doc
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    let context = match wanted {
        Some(name) => find(contexts, name),
        None => find(contexts, "default").or(match contexts {
            [only] => Some(only),
            _ => None,
        }),
    }
    .and_then(|c| c.get("context"))
    .ok_or_else(|| missing(format!("context `{}`", wanted.unwrap_or("default"))))?;
    let reference = |key: &str| {
        context
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| missing(format!("`{key}` in its context")))
    };
    let (cluster_name, user_name) = (reference("cluster")?, reference("user")?);
    let cluster = find(list(&doc, "clusters"), cluster_name)
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| missing(format!("cluster `{cluster_name}`")))?;
    let user = find(list(&doc, "users"), user_name)
        .and_then(|u| u.get("user"))
        .ok_or_else(|| missing(format!("user `{user_name}`")))?;
    let server = cluster
        .get("server")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| missing("cluster `server`".to_string()))?;
    Ok(ClusterCredentials {
        server: server.trim().to_string(),
        ca_data: embedded(
            cluster,
            "certificate-authority-data",
            "certificate-authority",
        )?,
        client_cert_data: embedded(user, "client-certificate-data", "client-certificate")?,
        client_key_data: embedded(user, "client-key-data", "client-key")?,
    })
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn find<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|item| item.get("name").and_then(Value::as_str) == Some(name))
}

/// A base64 field, checked to decode; a file-path variant gets its own error.
fn embedded(object: &Value, field: &str, path_field: &str) -> Result<String, KubeconfigError> {
    let Some(data) = object.get(field).and_then(Value::as_str) else {
        if object.get(path_field).is_some() {
            return Err(KubeconfigError::K3sPathReference {
                field: path_field.to_string(),
            });
        }
        return Err(KubeconfigError::K3sMissing {
            what: format!("`{field}`"),
        });
    };
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) if !bytes.is_empty() => Ok(compact),
        _ => Err(KubeconfigError::K3sBase64 {
            field: field.to_string(),
        }),
    }
}
