//! Container output (the distribution's log: k3s is the container's command) and image export
//! from the host daemon (`docker save`), for `timonel logs` and `timonel image load`.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use timonel_driver::{DriverError, MachineName};

use crate::client::{error_text, is_not_found, map_err, DockerDriver};
use crate::container_name;
use crate::objects::machine_what;

/// An image in the host daemon, as `docker image inspect` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// The reference asked for (`app:1`).
    pub reference: String,
    /// The image ID (`sha256:…`): the digest of its configuration, the same for every tag.
    pub id: String,
    /// Bytes, as the daemon reports them.
    pub size: Option<u64>,
}

fn chunk_bytes(chunk: LogOutput) -> Option<Bytes> {
    match chunk {
        LogOutput::StdOut { message }
        | LogOutput::StdErr { message }
        | LogOutput::Console { message } => Some(message),
        LogOutput::StdIn { .. } => None,
    }
}

impl DockerDriver {
    /// The last `tail` lines of a node's output, stdout and stderr interleaved as written
    /// (`tail == 0`: all of it).
    pub(crate) async fn tail_logs(
        &self,
        name: &MachineName,
        tail: usize,
    ) -> Result<String, DriverError> {
        self.inspect_ours(name.as_str()).await?;
        let tail = if tail == 0 {
            "all".to_string()
        } else {
            tail.to_string()
        };
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let chunks: Vec<LogOutput> = self
            .client()
            .await?
            .logs(&container_name(name.as_str()), Some(options))
            .try_collect()
            .await
            .map_err(|e| map_err("reading the log of", &machine_what(name.as_str()), e))?;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .filter_map(chunk_bytes)
            .flat_map(|b| b.to_vec())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A node's output as it is written (`docker logs -f`): the last `tail` lines first
    /// (`None`: everything so far), then new output until the container stops or the stream is
    /// dropped.
    pub async fn follow_logs(
        &self,
        name: &MachineName,
        tail: Option<usize>,
    ) -> Result<impl Stream<Item = Result<Bytes, DriverError>> + Send + Unpin + 'static, DriverError>
    {
        self.inspect_ours(name.as_str()).await?;
        let tail = tail.map_or_else(|| "all".to_string(), |t| t.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail)
            .build();
        let what = machine_what(name.as_str());
        let stream = self
            .client()
            .await?
            .logs(&container_name(name.as_str()), Some(options))
            .filter_map(move |chunk| {
                let item = match chunk {
                    Ok(c) => chunk_bytes(c).map(Ok),
                    Err(e) => Some(Err(map_err("following the log of", &what, e))),
                };
                std::future::ready(item)
            });
        Ok(Box::pin(stream))
    }

    /// Looks an image up in the host daemon; `None` when it has no such image.
    pub async fn host_image(&self, reference: &str) -> Result<Option<HostImage>, DriverError> {
        match self.client().await?.inspect_image(reference).await {
            Ok(i) => Ok(Some(HostImage {
                reference: reference.to_string(),
                id: i.id.unwrap_or_default(),
                size: i.size.and_then(|s| u64::try_from(s).ok()),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DriverError::backend(
                format!("inspecting image `{reference}`"),
                error_text(&e),
            )),
        }
    }

    /// The image as a `docker save` tar stream (repositories and tags included).
    pub async fn export_image(
        &self,
        reference: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, DriverError>> + Send + Unpin + 'static, DriverError>
    {
        let what = format!("image `{reference}`");
        let stream = self
            .long_client()
            .await?
            .export_image(reference)
            .map_err(move |e| map_err("exporting", &what, e));
        Ok(stream)
    }
}
