//! Machine state as an enum, never a string.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a machine is in its lifecycle, as the driver's backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum MachineState {
    NotCreated,
    Stopped,
    Starting,
    Running,
    Stopping,
    Paused,
    /// Saved to disk (VirtualBox `saved`, Hyper-V `Saved`).
    Suspended,
    /// The backend reports an error state (VirtualBox `gurumeditation`, Hyper-V critical states).
    Error {
        raw: String,
    },
    /// A state we do not know; never assumed to be running.
    Unknown {
        raw: String,
    },
}

impl MachineState {
    pub fn can_stop(&self) -> bool {
        matches!(self, Self::Running | Self::Starting | Self::Paused)
    }
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotCreated => f.write_str("not created"),
            Self::Stopped => f.write_str("stopped"),
            Self::Starting => f.write_str("starting"),
            Self::Running => f.write_str("running"),
            Self::Stopping => f.write_str("stopping"),
            Self::Paused => f.write_str("paused"),
            Self::Suspended => f.write_str("suspended"),
            Self::Error { raw } => write!(f, "error ({raw})"),
            Self::Unknown { raw } => write!(f, "unknown ({raw})"),
        }
    }
}

/// How to stop a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopMode {
    /// Ask the guest to shut down; after `timeout`, force it off.
    Graceful { timeout: Duration },
    /// Power off at once.
    Force,
}

impl StopMode {
    pub fn graceful(timeout: Duration) -> Self {
        Self::Graceful { timeout }
    }
}
