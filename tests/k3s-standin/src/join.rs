//! What a joining node does first (docs/k3s-contract.md §6.1): fetch `/cacerts` without verifying
//! the server, compare its sha256 with the token's `K10` hash, and from then on trust
//! only that CA.

use std::sync::Arc;

use rustls::ClientConfig;

use crate::fsutil;
use crate::http;
use crate::logfmt;
use crate::net::HttpsUrl;
use crate::pki;
use crate::tls;
use crate::token::Token;

/// The cluster CA as served by `/cacerts`, and a client config that trusts it.
pub struct Joined {
    pub url: HttpsUrl,
    pub ca_pem: Vec<u8>,
    pub config: Arc<ClientConfig>,
}

/// True when `hash` matches the bundle bytes or any certificate's DER fingerprint
/// (k3s accepts the root's fingerprint for custom CAs).
pub fn hash_matches(hash: &str, bundle: &[u8]) -> bool {
    if fsutil::sha256_hex(bundle) == hash {
        return true;
    }
    pki::certs_from_pem(bundle)
        .iter()
        .any(|c| fsutil::sha256_hex(c.as_ref()) == hash)
}

/// Fetches and checks the cluster CA. Errors are the messages k3s would log.
pub fn join(server: &str, token: &Token) -> Result<Joined, String> {
    let url = HttpsUrl::parse(server)?;
    let insecure = tls::insecure_client_config()?;
    let resp = http::request(insecure, &url, "GET", "/cacerts", &[], b"")
        .map_err(|e| format!("failed to get CA certs from {server}/cacerts: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "failed to get CA certs from {server}/cacerts: status {}",
            resp.status
        ));
    }
    let ca_pem = resp.body;
    match &token.ca_hash {
        Some(hash) if !hash_matches(hash, &ca_pem) => {
            return Err(format!(
                "token CA hash does not match the Cluster CA certificate hash: {hash} != {}",
                fsutil::sha256_hex(&ca_pem)
            ));
        }
        Some(_) => {}
        None => logfmt::warn(
            "Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a CA hash. Use the full token from the server's node-token file to enable Cluster CA validation.",
        ),
    }
    let cas = pki::certs_from_pem(&ca_pem);
    if cas.is_empty() {
        return Err(format!("{server}/cacerts returned no certificate"));
    }
    let config = tls::client_config(&cas, None)?;
    Ok(Joined {
        url,
        ca_pem,
        config,
    })
}
