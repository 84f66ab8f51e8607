//! An error in what the user asked for, with the fix. How failures are shown is the CLI's
//! business (`cli::report`).

use timonel_driver::Hint;

/// An error in what the user asked for, with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl Hint for UserError {
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}
