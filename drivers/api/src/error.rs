//! Typed errors. `Display` is short and lowercase and never repeats its source; the fix for the
//! user is a [`Hint`], printed after the error chain.

use std::time::Duration;

/// A fix the user can apply, printed after a blank line as `hint: …`.
pub trait Hint {
    fn hint(&self) -> Option<String>;
}

/// An external command (host process, `docker exec`, ssh, PowerShell, VBoxManage) that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{program}` was not found")]
    NotFound { program: String },
    #[error("`{argv}` exited with status {code}{}", stderr_suffix(.stderr))]
    Exited {
        argv: String,
        code: i32,
        stdout: String,
        stderr: String,
    },
    #[error("`{argv}` did not finish within {after:?}")]
    Timeout { argv: String, after: Duration },
    #[error("could not run `{argv}`")]
    Io {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    /// A scripted test runner was asked for a command it did not expect.
    #[error("{message}")]
    Unexpected { message: String },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        // Keep the last lines: that is where tools put the reason.
        let lines: Vec<&str> = trimmed.lines().collect();
        let start = lines.len().saturating_sub(8);
        format!("\n  command output:\n    {}", lines[start..].join("\n    "))
    }
}

impl CommandError {
    /// The exit code, when the command ran and failed.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exited { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// The stderr of a command that ran and failed.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Exited { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// What a driver operation can fail with. Typed variants do the work string matching would.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String, hint: Option<String> },
    #[error("{what} is {state}, which does not allow {action}")]
    InvalidState {
        what: String,
        state: String,
        action: String,
    },
    #[error("{what} was not ready after {after:?} (last state: {last_state})")]
    Timeout {
        what: String,
        after: Duration,
        last_state: String,
    },
    #[error("the {driver} driver is not usable: {reason}")]
    NotAvailable {
        driver: String,
        reason: String,
        fix: String,
    },
    #[error("the {driver} driver is not compiled into this build")]
    NotCompiledIn { driver: String, feature: String },
    #[error("the {driver} driver cannot do this: {what}")]
    Unsupported { driver: String, what: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{op} failed: {message}")]
    Backend {
        op: String,
        message: String,
        hint: Option<String>,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not parse {what}: {message}")]
    Parse { what: String, message: String },
}

impl DriverError {
    pub fn backend(op: impl Into<String>, message: impl ToString) -> Self {
        Self::Backend {
            op: op.into(),
            message: message.to_string(),
            hint: None,
        }
    }
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

impl Hint for DriverError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::AlreadyExists { hint, .. } | Self::Backend { hint, .. } => hint.clone(),
            Self::NotAvailable { fix, .. } => Some(fix.clone()),
            Self::NotCompiledIn { feature, .. } => Some(format!(
                "rebuild timonel with `--features {feature}`, or pick another driver with `--driver`"
            )),
            Self::Timeout { .. } => {
                Some("run `timonel logs` to see what the node was doing".to_string())
            }
            Self::Command(CommandError::NotFound { program }) => {
                Some(format!("install `{program}` or put it on PATH"))
            }
            _ => None,
        }
    }
}

/// `err` and its sources as one line, `a: b: c`; a source whose text the line already holds
/// (errors that embed their cause) is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
