//! [`DriverError`] across the process boundary: every variant has its twin here, so the error
//! timonel shows (its text, its chain, its hint, its variant for exit codes and `-o json`) is
//! the one the driver returned in the helper.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timonel_driver::{CommandError, DriverError};

/// A [`DriverError`] as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WireError {
    NotFound {
        what: String,
    },
    AlreadyExists {
        what: String,
        hint: Option<String>,
    },
    InvalidState {
        what: String,
        state: String,
        action: String,
    },
    Timeout {
        what: String,
        after: Duration,
        last_state: String,
    },
    NotAvailable {
        driver: String,
        reason: String,
        fix: String,
    },
    NotCompiledIn {
        driver: String,
        feature: String,
    },
    Unsupported {
        driver: String,
        what: String,
    },
    Command {
        error: WireCommandError,
    },
    Backend {
        op: String,
        message: String,
        hint: Option<String>,
    },
    Io {
        what: String,
        error: WireIo,
    },
    Parse {
        what: String,
        message: String,
    },
}

/// A [`CommandError`] as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WireCommandError {
    NotFound {
        program: String,
    },
    Exited {
        argv: String,
        code: i32,
        stdout: String,
        stderr: String,
    },
    Timeout {
        argv: String,
        after: Duration,
    },
    Io {
        argv: String,
        error: WireIo,
    },
    Unexpected {
        message: String,
    },
}

/// An [`io::Error`] as data: the OS error code when there is one (rebuilt into the same error
/// and text), else its kind and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireIo {
    pub kind: String,
    pub os_code: Option<i32>,
    pub message: String,
}

impl From<&io::Error> for WireIo {
    fn from(e: &io::Error) -> Self {
        Self {
            kind: format!("{:?}", e.kind()),
            os_code: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl From<WireIo> for io::Error {
    fn from(e: WireIo) -> Self {
        match e.os_code {
            Some(code) => io::Error::from_raw_os_error(code),
            None => {
                let kind = kind_named(&e.kind);
                // A bare kind (no message of its own) stays bare.
                if io::Error::from(kind).to_string() == e.message {
                    io::Error::from(kind)
                } else {
                    io::Error::new(kind, e.message)
                }
            }
        }
    }
}

/// The [`io::ErrorKind`] whose `Debug` name is `name`; `Other` for the rest.
fn kind_named(name: &str) -> io::ErrorKind {
    use io::ErrorKind as K;
    [
        K::NotFound,
        K::PermissionDenied,
        K::ConnectionRefused,
        K::ConnectionReset,
        K::ConnectionAborted,
        K::NotConnected,
        K::AddrInUse,
        K::AddrNotAvailable,
        K::BrokenPipe,
        K::AlreadyExists,
        K::WouldBlock,
        K::InvalidInput,
        K::InvalidData,
        K::TimedOut,
        K::WriteZero,
        K::Interrupted,
        K::Unsupported,
        K::UnexpectedEof,
        K::OutOfMemory,
    ]
    .into_iter()
    .find(|k| format!("{k:?}") == name)
    .unwrap_or(K::Other)
}

impl From<&DriverError> for WireError {
    fn from(e: &DriverError) -> Self {
        match e {
            DriverError::NotFound { what } => Self::NotFound { what: what.clone() },
            DriverError::AlreadyExists { what, hint } => Self::AlreadyExists {
                what: what.clone(),
                hint: hint.clone(),
            },
            DriverError::InvalidState {
                what,
                state,
                action,
            } => Self::InvalidState {
                what: what.clone(),
                state: state.clone(),
                action: action.clone(),
            },
            DriverError::Timeout {
                what,
                after,
                last_state,
            } => Self::Timeout {
                what: what.clone(),
                after: *after,
                last_state: last_state.clone(),
            },
            DriverError::NotAvailable {
                driver,
                reason,
                fix,
            } => Self::NotAvailable {
                driver: driver.clone(),
                reason: reason.clone(),
                fix: fix.clone(),
            },
            DriverError::NotCompiledIn { driver, feature } => Self::NotCompiledIn {
                driver: driver.clone(),
                feature: feature.clone(),
            },
            DriverError::Unsupported { driver, what } => Self::Unsupported {
                driver: driver.clone(),
                what: what.clone(),
            },
            DriverError::Command(c) => Self::Command { error: c.into() },
            DriverError::Backend { op, message, hint } => Self::Backend {
                op: op.clone(),
                message: message.clone(),
                hint: hint.clone(),
            },
            DriverError::Io { what, source } => Self::Io {
                what: what.clone(),
                error: source.into(),
            },
            DriverError::Parse { what, message } => Self::Parse {
                what: what.clone(),
                message: message.clone(),
            },
        }
    }
}

impl From<&CommandError> for WireCommandError {
    fn from(e: &CommandError) -> Self {
        match e {
            CommandError::NotFound { program } => Self::NotFound {
                program: program.clone(),
            },
            CommandError::Exited {
                argv,
                code,
                stdout,
                stderr,
            } => Self::Exited {
                argv: argv.clone(),
                code: *code,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            },
            CommandError::Timeout { argv, after } => Self::Timeout {
                argv: argv.clone(),
                after: *after,
            },
            CommandError::Io { argv, source } => Self::Io {
                argv: argv.clone(),
                error: source.into(),
            },
            CommandError::Unexpected { message } => Self::Unexpected {
                message: message.clone(),
            },
        }
    }
}

impl From<WireError> for DriverError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound { what } => Self::NotFound { what },
            WireError::AlreadyExists { what, hint } => Self::AlreadyExists { what, hint },
            WireError::InvalidState {
                what,
                state,
                action,
            } => Self::InvalidState {
                what,
                state,
                action,
            },
            WireError::Timeout {
                what,
                after,
                last_state,
            } => Self::Timeout {
                what,
                after,
                last_state,
            },
            WireError::NotAvailable {
                driver,
                reason,
                fix,
            } => Self::NotAvailable {
                driver,
                reason,
                fix,
            },
            WireError::NotCompiledIn { driver, feature } => Self::NotCompiledIn { driver, feature },
            WireError::Unsupported { driver, what } => Self::Unsupported { driver, what },
            WireError::Command { error } => Self::Command(error.into()),
            WireError::Backend { op, message, hint } => Self::Backend { op, message, hint },
            WireError::Io { what, error } => Self::Io {
                what,
                source: error.into(),
            },
            WireError::Parse { what, message } => Self::Parse { what, message },
        }
    }
}

impl From<WireCommandError> for CommandError {
    fn from(e: WireCommandError) -> Self {
        match e {
            WireCommandError::NotFound { program } => Self::NotFound { program },
            WireCommandError::Exited {
                argv,
                code,
                stdout,
                stderr,
            } => Self::Exited {
                argv,
                code,
                stdout,
                stderr,
            },
            WireCommandError::Timeout { argv, after } => Self::Timeout { argv, after },
            WireCommandError::Io { argv, error } => Self::Io {
                argv,
                source: error.into(),
            },
            WireCommandError::Unexpected { message } => Self::Unexpected { message },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use timonel_driver::{error_chain, Hint};

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn every_error() -> Vec<DriverError> {
        let io_os = io::Error::from_raw_os_error(13);
        vec![
            DriverError::NotFound {
                what: s("machine `a`"),
            },
            DriverError::AlreadyExists {
                what: s("domain `b`"),
                hint: Some(s("delete it")),
            },
            DriverError::InvalidState {
                what: s("machine `c`"),
                state: s("stopped"),
                action: s("ip"),
            },
            DriverError::Timeout {
                what: s("the IP address"),
                after: Duration::from_millis(180_250),
                last_state: s("no lease"),
            },
            DriverError::NotAvailable {
                driver: s("kvm"),
                reason: s("libvirtd is not running"),
                fix: s("start it"),
            },
            DriverError::NotCompiledIn {
                driver: s("kvm"),
                feature: s("kvm"),
            },
            DriverError::Unsupported {
                driver: s("kvm"),
                what: s("logs"),
            },
            DriverError::Command(CommandError::NotFound {
                program: s("qemu-img"),
            }),
            DriverError::Command(CommandError::Exited {
                argv: s("qemu-img create"),
                code: 1,
                stdout: s(""),
                stderr: s("Could not open\nbacking file"),
            }),
            DriverError::Command(CommandError::Timeout {
                argv: s("qemu-img info"),
                after: Duration::from_secs(20),
            }),
            DriverError::Command(CommandError::Io {
                argv: s("qemu-img"),
                source: io::Error::new(io::ErrorKind::PermissionDenied, "nope"),
            }),
            DriverError::Command(CommandError::Unexpected { message: s("what") }),
            DriverError::Backend {
                op: s("defining the domain"),
                message: s("libvirt said no"),
                hint: Some(s("check libvirtd")),
            },
            DriverError::io(s("writing the seed"), io_os),
            DriverError::io(s("reading"), io::Error::from(io::ErrorKind::UnexpectedEof)),
            DriverError::Parse {
                what: s("`kvm.accel`"),
                message: s("bad"),
            },
        ]
    }

    #[test]
    fn every_driver_error_comes_back_with_the_same_text_hint_and_variant() {
        for original in every_error() {
            let line = serde_json::to_string(&WireError::from(&original)).unwrap();
            let back = DriverError::from(serde_json::from_str::<WireError>(&line).unwrap());
            assert_eq!(error_chain(&back), error_chain(&original), "{line}");
            assert_eq!(back.hint(), original.hint(), "{line}");
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&original)
            );
            assert_eq!(format!("{back:?}"), format!("{original:?}"), "{line}");
        }
    }

    #[test]
    fn io_errors_keep_their_kind_and_os_code() {
        for original in [
            io::Error::from_raw_os_error(2),
            io::Error::new(io::ErrorKind::TimedOut, "slow"),
            io::Error::other("odd"),
        ] {
            let back = io::Error::from(WireIo::from(&original));
            assert_eq!(back.kind(), original.kind());
            assert_eq!(back.raw_os_error(), original.raw_os_error());
            assert_eq!(back.to_string(), original.to_string());
        }
    }
}
