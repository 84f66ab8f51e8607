//! HTTPS clients (k3s downloads, the cluster's API) with one TLS setup.
//!
//! rustls with the `ring` crypto provider. Not aws-lc-rs (reqwest's default): seeding its
//! random generator runs a CPU-jitter entropy source that costs about 20 ms of CPU in every
//! process that makes a TLS connection, which is most of what `timonel status` costs.

/// A client builder whose TLS uses the `ring` provider (installed once per process).
pub fn client_builder() -> reqwest::ClientBuilder {
    // Err only when a provider is installed already: the first one stays, which is this one
    // unless an embedding program chose its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_clients_with_the_ring_provider() {
        super::client_builder().build().unwrap();
        super::client_builder().build().unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
