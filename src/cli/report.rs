//! Printing a failed command: the error chain, then a hint; and the machine-readable reason
//! of `-o json` error events.

use timonel_driver::Hint;

use crate::error::UserError;

/// The errors of `err`'s chain, with the cluster layer's error replaced by the typed error it
/// carries (its `Display` and its sources are that error's).
fn causes(err: &anyhow::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    err.chain()
        .map(|c| {
            if let Some(e) = c.downcast_ref::<crate::cluster::Error>() {
                return e.inner().unwrap_or(c);
            }
            match c.downcast_ref::<crate::drivers::ChoiceError>() {
                Some(crate::drivers::ChoiceError::User(u)) => u,
                Some(crate::drivers::ChoiceError::Driver(d)) => d,
                None => c,
            }
        })
        .collect()
}

/// The fix for the first error in the chain that has one.
pub fn hint_of(err: &anyhow::Error) -> Option<String> {
    for cause in causes(err) {
        macro_rules! try_hint {
            ($($ty:ty),* $(,)?) => {
                $(
                    if let Some(e) = cause.downcast_ref::<$ty>() {
                        if let Some(h) = Hint::hint(e) {
                            return Some(h);
                        }
                    }
                )*
            };
        }
        try_hint!(
            timonel_driver::DriverError,
            crate::profile::ProfileError,
            crate::lock::LockError,
            crate::artifact::ArtifactError,
            crate::kubeconfig::KubeconfigError,
            crate::distro::ready::ReadyError,
            crate::config::ConfigError,
            UserError,
        );
        if let Some(e) = cause.downcast_ref::<timonel_driver::NameError>() {
            return Some(e.hint().to_string());
        }
    }
    None
}

/// Renders `err` as `error: …` + `caused by: …` lines + a hint.
pub fn render(err: &anyhow::Error) -> String {
    // The cluster layer's error shows as the error it carries.
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        // Some errors already embed their source (`#[error(transparent)]`); don't say it twice.
        if !out.contains(&text) {
            out.push_str(&format!("\n  caused by: {text}"));
        }
    }
    if let Some(hint) = hint_of(err) {
        out.push_str(&format!("\n\nhint: {hint}"));
    }
    out
}

/// A stable, machine-readable reason for a failure (the `reason` of `-o json` error events).
pub fn reason_code(err: &anyhow::Error) -> &'static str {
    use timonel_driver::DriverError;
    for cause in causes(err) {
        if let Some(crate::cluster::Error::Interrupted) = cause.downcast_ref() {
            return "INTERRUPTED";
        }
        if let Some(e) = cause.downcast_ref::<DriverError>() {
            return match e {
                DriverError::NotAvailable { .. } | DriverError::NotCompiledIn { .. } => {
                    "DRIVER_UNAVAILABLE"
                }
                DriverError::Timeout { .. } => "NODE_TIMEOUT",
                DriverError::AlreadyExists { .. } => "NODE_CONFLICT",
                _ => "DRIVER_ERROR",
            };
        }
        if cause
            .downcast_ref::<crate::distro::ready::ReadyError>()
            .is_some()
        {
            return "READY_TIMEOUT";
        }
        if cause
            .downcast_ref::<crate::artifact::ArtifactError>()
            .is_some()
        {
            return "ARTIFACT_ERROR";
        }
        if cause
            .downcast_ref::<crate::kubeconfig::KubeconfigError>()
            .is_some()
        {
            return "KUBECONFIG_ERROR";
        }
        if cause.downcast_ref::<crate::lock::LockError>().is_some() {
            return "PROFILE_BUSY";
        }
        if cause
            .downcast_ref::<crate::profile::ProfileError>()
            .is_some()
        {
            return "PROFILE_ERROR";
        }
        if cause.downcast_ref::<UserError>().is_some() {
            return "USAGE";
        }
    }
    "INTERNAL"
}
