//! The errors of the cluster layer: one enum, each variant keeping its typed source, so the
//! CLI can tell a node timeout from a readiness timeout from a bad flag (`-o json` reasons).

use timonel_driver::{DriverError, Hint};

use crate::artifact::ArtifactError;
use crate::distro::ready::ReadyError;
use crate::error::UserError;
use crate::kubeconfig::KubeconfigError;
use crate::lock::LockError;
use crate::profile::ProfileError;

/// What went wrong in `start`, `stop`, `node add` and the other cluster operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user interrupted the command; what it had created was removed first.
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Vm(#[from] timonel_driver_vm::VmError),
    /// A file or folder of timonel's own could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A state the profile or the driver should never be in.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The typed error this one carries, for callers that classify errors by their type.
    pub fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::User(e) => Some(e),
            Self::Driver(e) => Some(e),
            Self::Ready(e) => Some(e),
            Self::Artifact(e) => Some(e),
            Self::Kubeconfig(e) => Some(e),
            Self::Profile(e) => Some(e),
            Self::Lock(e) => Some(e),
            Self::Vm(e) => Some(e),
            Self::Interrupted | Self::Io { .. } | Self::Internal(_) => None,
        }
    }
}

impl Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Self::User(e) => e.hint(),
            Self::Driver(e) => e.hint(),
            Self::Ready(e) => e.hint(),
            Self::Artifact(e) => e.hint(),
            Self::Kubeconfig(e) => e.hint(),
            Self::Profile(e) => e.hint(),
            Self::Lock(e) => e.hint(),
            _ => None,
        }
    }
}

impl From<super::cancel::Interrupted> for Error {
    fn from(_: super::cancel::Interrupted) -> Self {
        Self::Interrupted
    }
}

impl From<timonel_driver::WaitError<DriverError>> for Error {
    fn from(e: timonel_driver::WaitError<DriverError>) -> Self {
        Self::Driver(e.into())
    }
}

impl From<crate::drivers::ChoiceError> for Error {
    fn from(e: crate::drivers::ChoiceError) -> Self {
        match e {
            crate::drivers::ChoiceError::User(u) => Self::User(u),
            crate::drivers::ChoiceError::Driver(d) => Self::Driver(d),
        }
    }
}

/// The cluster layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
