//! Access to a running node: run commands in it, put files into it, get files out of it.
//! `docker exec` and the container archive API for containers, ssh for VMs.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::DriverError;
use crate::runner::Runner;

/// Where the bytes of a file to place come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileSource {
    Bytes(Vec<u8>),
    /// A file on the host, streamed (never read whole into memory).
    HostPath(PathBuf),
}

/// A file to place in a node: an absolute path in the node, a mode, the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlacement {
    /// Absolute, `/`-separated path inside the node.
    pub path: String,
    pub mode: u32,
    pub source: FileSource,
}

impl FilePlacement {
    pub fn bytes(path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            mode,
            source: FileSource::Bytes(data.into()),
        }
    }
    pub fn host_file(path: impl Into<String>, mode: u32, host: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode,
            source: FileSource::HostPath(host.into()),
        }
    }
}

/// Commands (through [`Runner`]) plus file transfer, in one node.
#[async_trait]
pub trait NodeAccess: Runner {
    /// Places files in the node, creating parent directories.
    async fn copy_in(&self, files: &[FilePlacement]) -> Result<(), DriverError>;
    /// Reads one file out of the node.
    async fn copy_out(&self, path: &str) -> Result<Vec<u8>, DriverError>;
}
