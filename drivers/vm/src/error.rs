//! Errors of the shared VM pieces (keys, seeds, images, checksums).

use std::path::PathBuf;

use timonel_driver::DriverError;

/// What preparing a VM node (key, seed, image) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the cloud-init seed `{}`: {message}", path.display())]
    Seed { path: PathBuf, message: String },
    #[error("the SSH key `{}` is unusable: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("could not parse {what}: {message}")]
    Parse { what: String, message: String },
    #[error("`{file}` is not listed in the checksum file")]
    ChecksumNotListed { file: String },
    #[error("checksum mismatch for `{}`: expected {algorithm} {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        algorithm: String,
        expected: String,
        actual: String,
    },
    #[error("unknown cloud image `{id}`")]
    UnknownImage { id: String },
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<VmError> for DriverError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::Io { what, source } => DriverError::Io { what, source },
            VmError::Parse { what, message } => DriverError::Parse { what, message },
            VmError::ChecksumMismatch { .. } => DriverError::Backend {
                op: "verifying the VM image".to_string(),
                message: e.to_string(),
                hint: Some(
                    "delete the cached image so it is downloaded again; if it keeps failing the mirror may be mid-update"
                        .to_string(),
                ),
            },
            other => DriverError::backend("preparing the VM", other),
        }
    }
}
