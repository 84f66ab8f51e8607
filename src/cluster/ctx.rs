//! What every cluster operation gets: the printer, timonel's home, the profile store, the
//! profile acted on, and where drivers come from.

use std::sync::Arc;
use std::time::Duration;

use timonel_driver::{ClusterName, Driver, DriverKind};

use crate::drivers::{self, ChoiceError, Selected};
use crate::home::Home;
use crate::output::Printer;
use crate::profile::{Profile, Store};

/// The context of one command.
pub struct Ctx {
    pub printer: Printer,
    pub home: Home,
    pub store: Store,
    pub profile: ClusterName,
    /// A driver every lookup returns instead of the real ones (tests, with the fake driver).
    driver_override: Option<Arc<dyn Driver>>,
}

impl Ctx {
    pub fn new(printer: Printer, home: Home, profile: ClusterName) -> Self {
        Self {
            printer,
            store: Store::new(home.clone()),
            home,
            profile,
            driver_override: None,
        }
    }

    /// Every driver lookup of this context returns `driver` (for tests without a backend).
    pub fn with_driver(mut self, driver: Arc<dyn Driver>) -> Self {
        self.driver_override = Some(driver);
        self
    }

    /// The driver of an existing profile.
    pub fn driver_for(&self, profile: &Profile) -> Result<Selected, ChoiceError> {
        match &self.driver_override {
            Some(d) => Ok(d.clone()),
            None => drivers::for_profile(profile),
        }
    }

    /// The driver of `kind`, not probed.
    pub fn driver_of(&self, kind: DriverKind) -> Result<Selected, ChoiceError> {
        match &self.driver_override {
            Some(d) => Ok(d.clone()),
            None => drivers::make(kind),
        }
    }

    /// The driver a new cluster uses: the requested one (which must be usable), else the first
    /// usable one.
    pub async fn select_driver(
        &self,
        requested: Option<DriverKind>,
    ) -> Result<Selected, ChoiceError> {
        match &self.driver_override {
            Some(d) => Ok(d.clone()),
            None => drivers::select(requested, &self.printer).await,
        }
    }

    /// The SSH driver of a new cluster on the given machines.
    pub fn ssh_driver(
        &self,
        settings: &crate::profile::SshSettings,
        nodes: Vec<(
            timonel_driver::MachineName,
            timonel_driver_ssh::SshHost,
            timonel_driver::NodeRole,
        )>,
    ) -> Selected {
        match &self.driver_override {
            Some(d) => d.clone(),
            None => drivers::ssh(&self.profile, settings, nodes),
        }
    }

    /// This home's id, made on first use: what the nodes this command creates are labelled
    /// with (see [`Home::id`]).
    pub fn home_id(&self) -> Result<String, crate::error::UserError> {
        self.home.id()
    }

    /// Takes the profile lock for the rest of the command, telling the user if it must wait.
    pub fn lock_profile(&self) -> Result<crate::lock::ProfileLock, crate::lock::LockError> {
        let timeout = std::env::var(crate::env::TIMONEL_LOCK_TIMEOUT)
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or(Duration::from_secs(300));
        crate::lock::acquire(
            &self.home.locks(),
            self.profile.as_str(),
            timeout,
            &mut |holder| {
                self.printer.warn(&format!(
                    "profile `{}` is in use by {holder}; waiting up to {}",
                    self.profile,
                    humantime::format_duration(timeout)
                ))
            },
        )
    }
}
