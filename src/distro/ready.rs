//! Readiness over the API, from the host: `/ping`, then `/readyz` with the admin client
//! certificate, then the node(s) Ready, then (for `--wait all`) system pods and DNS. Each step
//! is polled with an interval and a deadline; a timeout names what was not ready.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use timonel_driver::poll_backoff;
use tokio::time::Instant;

use crate::kubeconfig::ClusterCredentials;

/// How long `start` waits, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Default)]
pub enum WaitFor {
    /// Return once the nodes are created and started.
    None,
    /// The API server answers `/readyz`.
    Api,
    /// Every node is Ready (the default).
    #[default]
    Ready,
    /// Nodes Ready, kube-system pods Running and cluster DNS has an endpoint.
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("{what} was not ready after {after:?} (last seen: {last})")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("the kubeconfig the cluster wrote is unusable: {0}")]
    Credentials(String),
}

/// An HTTPS client for one cluster: trusts its CA, presents the admin certificate.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
}

impl ApiClient {
    /// `server` is the host-reachable `https://127.0.0.1:<port>`.
    pub fn new(creds: &ClusterCredentials, server: &str) -> Result<Self, ReadyError> {
        let b64 = |what: &str, s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| ReadyError::Credentials(format!("{what}: {e}")))
        };
        let ca = b64("certificate-authority-data", &creds.ca_data)?;
        let mut identity = b64("client-certificate-data", &creds.client_cert_data)?;
        identity.push(b'\n');
        identity.extend(b64("client-key-data", &creds.client_key_data)?);
        let mut builder = crate::http::client_builder()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(&ca)
                    .map_err(|e| ReadyError::Credentials(format!("CA: {e}")))?,
            )
            .identity(
                reqwest::Identity::from_pem(&identity)
                    .map_err(|e| ReadyError::Credentials(format!("client certificate: {e}")))?,
            )
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .no_proxy();
        builder = builder.http1_only();
        let http = builder
            .build()
            .map_err(|e| ReadyError::Credentials(e.to_string()))?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_string(),
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| describe(&e))?;
        Ok((status, body))
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            return Err(format!("HTTP {status} from {path}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{path}: {e}"))
    }

    /// One API object as JSON (`/api/v1/namespaces/default/services/web`); `None` on 404.
    pub async fn get_object(&self, path: &str) -> Result<Option<Value>, String> {
        let (status, body) = self.get(path).await?;
        match status {
            404 => Ok(None),
            200 => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| format!("{path}: {e}")),
            s => Err(format!("HTTP {s} from {path}")),
        }
    }

    /// Deletes a Node object (for `node delete`).
    pub async fn delete_node(&self, name: &str) -> Result<(), String> {
        let resp = self
            .http
            .delete(format!("{}/api/v1/nodes/{name}", self.base))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        match resp.status().as_u16() {
            200 | 202 | 404 => Ok(()),
            s => Err(format!("HTTP {s} deleting node `{name}`")),
        }
    }

    /// `Ready` status of each named node (`None` when the node is not registered).
    pub async fn node_ready(&self, name: &str) -> Result<Option<bool>, String> {
        let (status, body) = self.get(&format!("/api/v1/nodes/{name}")).await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let node: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(Some(is_ready(&node)))
    }

    /// `Ready` of every registered node, by name, from one list request.
    pub async fn nodes_ready(&self) -> Result<std::collections::BTreeMap<String, bool>, String> {
        let (status, body) = self.get("/api/v1/nodes").await?;
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let list: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|n| {
                        Some((n["metadata"]["name"].as_str()?.to_string(), is_ready(n)))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether `/readyz` answers `ok`.
    pub async fn api_ready(&self) -> Result<bool, String> {
        let (status, body) = self.get("/readyz").await?;
        Ok(status == 200 && body.trim() == "ok")
    }
}

impl timonel_driver::Hint for ReadyError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Timeout { .. } => Some(
                "the node log above shows what k3s was doing; give it longer with `--wait-timeout 10m`, or keep the nodes for a look with `--keep-on-failure`"
                    .to_string(),
            ),
            Self::Credentials(_) => None,
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        timonel_driver::error_chain(e)
    }
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// How often each condition is asked: soon at first (a container node answers within
/// milliseconds), then every 250 ms.
const EVERY: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_millis(250);

/// Waits, within `timeout` overall, for what `wait` asks. `nodes` are the Kubernetes node names.
pub async fn wait(
    api: &ApiClient,
    wait: WaitFor,
    nodes: &[String],
    timeout: Duration,
    step: &mut dyn FnMut(&str),
) -> Result<(), ReadyError> {
    if wait == WaitFor::None {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let timeout_err = |e: timonel_driver::WaitError<std::convert::Infallible>| match e {
        timonel_driver::WaitError::Timeout { what, last, .. } => ReadyError::Timeout {
            what,
            after: timeout,
            last,
        },
        timonel_driver::WaitError::Failed(never) => match never {},
    };

    step("waiting for the API server (/ping)");
    poll_backoff("the supervisor (/ping)", left(), EVERY, || async {
        Ok(match api.get("/ping").await {
            Ok((200, body)) if body.trim() == "pong" => Ok(()),
            Ok((s, _)) => Err(format!("HTTP {s}")),
            Err(e) => Err(e),
        })
    })
    .await
    .map_err(timeout_err)?;

    step("waiting for the API server (/readyz)");
    poll_backoff("the API server (/readyz)", left(), EVERY, || async {
        Ok(match api.get("/readyz").await {
            Ok((200, body)) if body.trim() == "ok" => Ok(()),
            Ok((s, body)) => Err(format!("HTTP {s} {}", body.trim())),
            Err(e) => Err(e),
        })
    })
    .await
    .map_err(timeout_err)?;
    if wait == WaitFor::Api {
        return Ok(());
    }

    for name in nodes {
        step(&format!("waiting for node {name} to be Ready"));
        poll_backoff(&format!("node `{name}`"), left(), EVERY, || async {
            Ok(match api.node_ready(name).await {
                Ok(Some(true)) => Ok(()),
                Ok(Some(false)) => Err("NotReady".to_string()),
                Ok(None) => Err("not registered yet".to_string()),
                Err(e) => Err(e),
            })
        })
        .await
        .map_err(timeout_err)?;
    }
    if wait == WaitFor::Ready {
        return Ok(());
    }

    step("waiting for kube-system pods");
    poll_backoff("the kube-system pods", left(), EVERY, || async {
        Ok(
            match api.get_json("/api/v1/namespaces/kube-system/pods").await {
                Ok(list) => pods_running(&list),
                Err(e) => Err(e),
            },
        )
    })
    .await
    .map_err(timeout_err)?;
    step("waiting for cluster DNS");
    poll_backoff(
        "cluster DNS (kube-dns endpoints)",
        left(),
        EVERY,
        || async {
            Ok(
                match api
                    .get_json("/api/v1/namespaces/kube-system/endpoints/kube-dns")
                    .await
                {
                    Ok(ep) if has_ready_address(&ep) => Ok(()),
                    Ok(_) => Err("no ready address".to_string()),
                    Err(e) => Err(e),
                },
            )
        },
    )
    .await
    .map_err(timeout_err)?;
    Ok(())
}

/// Ok when there is at least one pod and every pod is Running or Succeeded.
fn pods_running(list: &Value) -> Result<(), String> {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err("no pods yet".to_string());
    }
    let pending: Vec<String> = items
        .iter()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Running" | "Succeeded")))
        .map(|p| {
            format!(
                "{} {}",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                p["status"]["phase"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(pending.join(", "))
    }
}

fn has_ready_address(ep: &Value) -> bool {
    ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_node_conditions() {
        let ready = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"}]}});
        let not = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(is_ready(&ready));
        assert!(!is_ready(&not));
        assert!(!is_ready(&json!({})));
    }

    #[test]
    fn pods_must_all_run() {
        let list = json!({"items": [
            {"metadata": {"name": "coredns-1"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "helm-install"}, "status": {"phase": "Succeeded"}},
            {"metadata": {"name": "metrics"}, "status": {"phase": "Pending"}}]});
        assert_eq!(pods_running(&list).unwrap_err(), "metrics Pending");
        assert!(pods_running(&json!({"items": []})).is_err());
        assert!(has_ready_address(
            &json!({"subsets": [{"addresses": [{"ip": "10.42.0.2"}]}]})
        ));
        assert!(!has_ready_address(
            &json!({"subsets": [{"notReadyAddresses": [{"ip": "x"}]}]})
        ));
    }
}
