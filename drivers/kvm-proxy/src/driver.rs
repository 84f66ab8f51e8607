//! [`KvmDriver`]: the kvm driver as timonel uses it, each call forwarded to the helper.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use async_trait::async_trait;
use timonel_driver::{
    Availability, Capabilities, ClusterName, Driver, DriverError, DriverKind, MachineName,
    MachineSpec, MachineState, NodeKind, Reporter, SilentReporter, StopMode,
};
use tokio::sync::OnceCell;

use crate::connection::Connection;
use crate::locate::{locate, Unavailable};
use crate::protocol::{Reply, Request};

/// The kvm driver, run by the `timonel-kvm` helper. Nothing is looked up or started until the
/// first call that needs libvirt; then one helper serves this driver until it is dropped.
pub struct KvmDriver {
    uri: String,
    helper: Option<PathBuf>,
    conn: OnceCell<Result<Connection, Unavailable>>,
}

impl std::fmt::Debug for KvmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmDriver")
            .field("uri", &self.uri)
            .field("helper", &self.helper)
            .field("started", &self.conn.initialized())
            .finish()
    }
}

impl KvmDriver {
    /// The driver for the libvirt connection `uri`, with the helper found by
    /// [`locate`](crate::locate::locate).
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            helper: None,
            conn: OnceCell::new(),
        }
    }

    /// Uses the helper at `path` instead of looking for it.
    pub fn with_helper(mut self, path: impl Into<PathBuf>) -> Self {
        self.helper = Some(path.into());
        self
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The helper, started on first use. A helper that cannot start makes every call fail with
    /// the same reason and fix.
    async fn connection(&self) -> Result<&Connection, Unavailable> {
        let started = self
            .conn
            .get_or_init(|| async {
                if !cfg!(target_os = "linux") {
                    return Err(Unavailable {
                        reason: "KVM/libvirt is only supported on Linux".to_string(),
                        fix: "use `--driver docker`, or hyperv on Windows".to_string(),
                    });
                }
                let path = match &self.helper {
                    Some(p) => p.clone(),
                    None => locate()?,
                };
                Connection::start(&path, &self.uri).await
            })
            .await;
        started.as_ref().map_err(Clone::clone)
    }

    async fn call(&self, request: Request, report: &dyn Reporter) -> Result<Reply, DriverError> {
        let conn = self.connection().await.map_err(|u| u.to_error())?;
        conn.call(request, report).await
    }
}

/// The error for a reply of the wrong kind (a helper from another build).
fn unexpected(op: &str, reply: &Reply) -> DriverError {
    DriverError::backend(
        format!("the kvm helper's answer to `{op}`"),
        format!(
            "`{}` is not an answer to it (is the helper from another build?)",
            reply.name()
        ),
    )
}

macro_rules! expect_reply {
    ($call:expr, $op:literal, $pat:pat => $out:expr) => {
        match $call.await? {
            $pat => Ok($out),
            other => Err(unexpected($op, &other)),
        }
    };
}

#[async_trait]
impl Driver for KvmDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Kvm
    }

    fn as_host_resources(&self) -> Option<&dyn timonel_driver::HostResources> {
        Some(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Vm,
            needs_admin: false,
            disk_format: Some("qcow2".to_string()),
        }
    }

    /// The helper's answer, known without starting it (as `capabilities`).
    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::Guest(timonel_driver::GuestMount::virtio_9p())
    }

    async fn probe(&self) -> Availability {
        if let Err(u) = self.connection().await {
            return Availability::Unusable {
                reason: u.reason,
                fix: u.fix,
            };
        }
        match self.call(Request::Probe, &SilentReporter).await {
            Ok(Reply::Availability(a)) => a,
            Ok(other) => Availability::Unusable {
                reason: unexpected("probe", &other).to_string(),
                fix: crate::locate::INSTALL_FIX.to_string(),
            },
            Err(e) => Availability::Unusable {
                reason: e.to_string(),
                fix: timonel_driver::Hint::hint(&e).unwrap_or_default(),
            },
        }
    }

    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        let request = Request::Create {
            spec: Box::new(spec.clone()),
        };
        expect_reply!(self.call(request, report), "create", Reply::Done => ())
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        let request = Request::Start { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "start", Reply::Done => ())
    }

    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError> {
        let request = Request::Stop {
            name: name.clone(),
            how,
        };
        expect_reply!(self.call(request, &SilentReporter), "stop", Reply::Done => ())
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        let request = Request::Pause { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "pause", Reply::Done => ())
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        let request = Request::Unpause { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "unpause", Reply::Done => ())
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        let request = Request::Delete { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "delete", Reply::Done => ())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        let request = Request::DeleteCluster {
            cluster: cluster.clone(),
        };
        expect_reply!(
            self.call(request, &SilentReporter),
            "delete_cluster",
            Reply::Removed(lines) => lines
        )
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        let request = Request::State { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "state", Reply::State(s) => s)
    }

    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        let request = Request::Ip { name: name.clone() };
        expect_reply!(self.call(request, &SilentReporter), "ip", Reply::Ip(ip) => ip)
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        let request = Request::Endpoint {
            name: name.clone(),
            port,
        };
        expect_reply!(
            self.call(request, &SilentReporter),
            "endpoint",
            Reply::Endpoint(addr) => addr
        )
    }
}

/// The helper runs on this machine and libvirt's VMs on the helper's: this machine's CPUs and
/// memory, read here without starting the helper (as the driver inside it would answer).
#[async_trait]
impl timonel_driver::HostResources for KvmDriver {
    async fn host_resources(&self) -> Result<timonel_driver::HostCapacity, DriverError> {
        Ok(timonel_driver::local_host(
            "this machine (the libvirt host)",
        ))
    }
}
