//! The admin kubeconfig k3s writes (docs/k3s-contract.md §4.4): cluster, context and user all named
//! `default`, credentials embedded as base64 data.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub clusters: Vec<NamedCluster>,
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    pub current_context: String,
    pub kind: String,
    #[serde(default)]
    pub preferences: serde_json::Map<String, serde_json::Value>,
    pub users: Vec<NamedUser>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NamedCluster {
    pub cluster: Cluster,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    #[serde(rename = "certificate-authority-data")]
    pub certificate_authority_data: String,
    pub server: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NamedContext {
    pub context: Context,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub cluster: String,
    pub user: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    #[serde(rename = "client-certificate-data")]
    pub client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    pub client_key_data: String,
}

/// Builds the kubeconfig for `server` with PEM inputs.
pub fn build(server: &str, ca_pem: &[u8], cert_pem: &str, key_pem: &str) -> Kubeconfig {
    Kubeconfig {
        api_version: "v1".into(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: STANDARD.encode(ca_pem),
                server: server.into(),
            },
            name: "default".into(),
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: "default".into(),
                user: "default".into(),
            },
            name: "default".into(),
        }],
        current_context: "default".into(),
        kind: "Config".into(),
        preferences: serde_json::Map::new(),
        users: vec![NamedUser {
            name: "default".into(),
            user: User {
                client_certificate_data: STANDARD.encode(cert_pem),
                client_key_data: STANDARD.encode(key_pem),
            },
        }],
    }
}

/// Serializes to YAML.
pub fn to_yaml(config: &Kubeconfig) -> Result<String, String> {
    serde_saphyr::to_string(config).map_err(|e| e.to_string())
}

/// The credentials needed to talk to the API: server URL, CA PEM, client cert and key PEM.
pub struct Credentials {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Reads the credentials of the current context from a kubeconfig written by k3s.
pub fn read_credentials(text: &str) -> Result<Credentials, String> {
    let config: Kubeconfig =
        serde_saphyr::from_str(text).map_err(|e| format!("invalid kubeconfig: {e}"))?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == config.current_context)
        .ok_or("kubeconfig has no current context")?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.context.cluster)
        .ok_or("kubeconfig context names a missing cluster")?;
    let user = config
        .users
        .iter()
        .find(|u| u.name == context.context.user)
        .ok_or("kubeconfig context names a missing user")?;
    let decode = |s: &str| {
        STANDARD
            .decode(s)
            .map_err(|e| format!("invalid base64 in kubeconfig: {e}"))
    };
    Ok(Credentials {
        server: cluster.cluster.server.clone(),
        ca_pem: decode(&cluster.cluster.certificate_authority_data)?,
        cert_pem: decode(&user.user.client_certificate_data)?,
        key_pem: decode(&user.user.client_key_data)?,
    })
}

/// The server URL k3s writes: the bind address, or loopback when it binds everywhere.
pub fn server_url(bind_address: &str, port: u16) -> String {
    let host = match bind_address.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        Ok(ip) => ip.to_string(),
        Err(_) if bind_address.is_empty() => "127.0.0.1".to_string(),
        Err(_) => bind_address.to_string(),
    };
    format!("https://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_shape_matches_k3s() {
        let yaml = to_yaml(&build("https://127.0.0.1:6443", b"CA", "CERT", "KEY")).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Config");
        assert_eq!(v["current-context"], "default");
        assert_eq!(v["clusters"][0]["name"], "default");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["contexts"][0]["context"]["cluster"], "default");
        assert_eq!(v["contexts"][0]["context"]["user"], "default");
        assert_eq!(v["users"][0]["name"], "default");
        assert_eq!(v["users"][0]["user"]["client-certificate-data"], "Q0VSVA==");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        // client-go's key order.
        let keys: Vec<&str> = [
            "apiVersion:",
            "clusters:",
            "contexts:",
            "current-context:",
            "kind:",
            "users:",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys.iter().map(|k| yaml.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{yaml}");
        let creds = read_credentials(&yaml).unwrap();
        assert_eq!(creds.cert_pem, b"CERT");
    }

    #[test]
    fn server_url_uses_loopback_or_bind_address() {
        assert_eq!(server_url("0.0.0.0", 6443), "https://127.0.0.1:6443");
        assert_eq!(server_url("::", 6443), "https://127.0.0.1:6443");
        assert_eq!(server_url("10.0.0.5", 7443), "https://10.0.0.5:7443");
        assert_eq!(server_url("::1", 6443), "https://[::1]:6443");
    }
}
