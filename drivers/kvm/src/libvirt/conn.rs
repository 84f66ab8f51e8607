//! One shared libvirt connection, used from blocking threads, and libvirt errors as
//! [`DriverError`]s.

use std::sync::{Arc, Mutex};

use timonel_driver::DriverError;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;

/// What to tell a user whose libvirt does not answer.
pub const LIBVIRT_FIX: &str = "start libvirtd (`sudo systemctl start libvirtd`, or `scripts/start-libvirt.sh` where there is no systemd) and add yourself to the `libvirt` group (`sudo usermod -aG libvirt $USER`, then log in again)";

/// A lazily opened connection, reopened when it dies. `test:///default` keeps its state only as
/// long as a connection is open, so the driver holds one.
#[derive(Clone)]
pub struct SharedConnect {
    uri: String,
    slot: Arc<Mutex<Option<Connect>>>,
}

impl SharedConnect {
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            slot: Arc::new(Mutex::new(None)),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn is_test(&self) -> bool {
        self.uri.starts_with("test:")
    }

    /// The open connection (blocking).
    pub fn get(&self) -> Result<Connect, DriverError> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| DriverError::backend("libvirt", "connection lock poisoned"))?;
        if let Some(conn) = slot.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
        }
        let conn = Connect::open(Some(&self.uri)).map_err(|e| DriverError::NotAvailable {
            driver: "kvm".to_string(),
            reason: format!(
                "cannot connect to libvirt at `{}`: {}",
                self.uri,
                e.message()
            ),
            fix: LIBVIRT_FIX.to_string(),
        })?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, DriverError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| DriverError::backend("libvirt call", e))?
    }
}

/// A libvirt error as a [`DriverError`] (`op` says what was being done).
pub fn lv(op: &str, e: VirtError) -> DriverError {
    DriverError::backend(op, e.message())
}

pub fn is_no_domain(e: &VirtError) -> bool {
    e.code() == virt::enumutil::Enum::Known(ErrorNumber::NoDomain)
}

pub fn is_no_network(e: &VirtError) -> bool {
    e.code() == virt::enumutil::Enum::Known(ErrorNumber::NoNetwork)
}

/// The domain, or `None` when there is none by that name.
pub fn find_domain(conn: &Connect, name: &str) -> Result<Option<Domain>, DriverError> {
    match conn.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is_no_domain(&e) => Ok(None),
        Err(e) => Err(lv(&format!("looking up domain `{name}`"), e)),
    }
}

/// The domain, or a typed `NotFound`.
pub fn domain(conn: &Connect, name: &str) -> Result<Domain, DriverError> {
    find_domain(conn, name)?.ok_or_else(|| DriverError::NotFound {
        what: format!("machine `{name}`"),
    })
}

pub fn find_network(conn: &Connect, name: &str) -> Result<Option<Network>, DriverError> {
    match conn.lookup_network_by_name(name) {
        Ok(n) => Ok(Some(n)),
        Err(e) if is_no_network(&e) => Ok(None),
        Err(e) => Err(lv(&format!("looking up network `{name}`"), e)),
    }
}
