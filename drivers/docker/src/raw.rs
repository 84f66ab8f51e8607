//! A plain `GET` to the engine, on an unversioned path (the engine's own API version):
//! - for what bollard's typed answers drop: Podman's compat `/info` carries a top-level
//!   `"Rootless": true|false` that Docker's schema has no field for (Podman does not list
//!   `name=rootless` in `SecurityOptions` as rootless Docker does);
//! - for a quick look that needs no version negotiation (`ip`, `status`: one container
//!   inspect instead of `/version` then the inspect).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The JSON body of `GET path` on `host` (`unix://…`, `tcp://…`, `http://…`), or None when it
/// cannot be had (other transports, errors, a status other than 200).
pub(crate) async fn get_json(host: &str, path: &str) -> Option<serde_json::Value> {
    get_as(host, path).await
}

/// The body of `GET path`, parsed as `T`, or None as for [`get_json`].
pub(crate) async fn get_as<T: serde::de::DeserializeOwned>(host: &str, path: &str) -> Option<T> {
    let fetch = async {
        if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
                .await
                .ok()?;
            return exchange(stream, path).await;
        }
        #[cfg(unix)]
        if let Some(socket) = host.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
            return exchange(stream, path).await;
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

/// HTTP/1.0, so the answer is neither chunked nor kept alive: the body is what follows the
/// headers until the engine closes the connection.
async fn exchange<T: serde::de::DeserializeOwned>(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
) -> Option<T> {
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: engine\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    serde_json::from_slice(&answer[split + 4..]).ok()
}
