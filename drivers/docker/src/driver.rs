//! [`Driver`] for Docker: one container per node, on a per-cluster network, with named volumes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    StopContainerOptionsBuilder,
};

use timonel_driver::{
    poll_until, Availability, Capabilities, ClusterName, Driver, DriverError, DriverKind,
    FollowLogs, HostCapacity, HostResources, LogStream, MachineName, MachineSpec, MachineState,
    NodeAccess, NodeImages, NodeKind, Reporter, StopMode,
};

use crate::client::{error_text, is_not_found, map_err, DockerDriver};
use crate::config::{container_config, node_volumes};
use crate::exec::DockerExec;
use crate::objects::{label_filter, labels, machine_state, machine_what};
use crate::{container_name, LABEL_CLUSTER, LABEL_NODE};

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Docker
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Container,
            needs_admin: false,
            disk_format: None,
        }
    }

    async fn probe(&self) -> Availability {
        self.probe_daemon().await
    }

    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::AtCreate
    }

    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        let name = container_name(spec.name.as_str());
        if let Some(existing) = self.inspect(spec.name.as_str()).await? {
            return Self::check_existing(spec, &existing);
        }
        let image = spec
            .image
            .clone()
            .ok_or_else(|| DriverError::InvalidState {
                what: format!("machine `{}`", spec.name),
                state: "without an image".into(),
                action: "creating a container".into(),
            })?;
        // Never pulled: the lead builds it (`ensure_node_image`) or the user loaded it.
        match self.client().await?.inspect_image(&image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(DriverError::NotFound {
                    what: format!(
                        "image `{image}` (timonel never pulls; build it or `docker load` it first)"
                    ),
                })
            }
            Err(e) => return Err(map_err("inspecting", &format!("image `{image}`"), e)),
        }
        // What the engine accepts, before the node's network and volumes exist: an engine
        // that cannot run the node is refused with nothing of the node created.
        let security = self.choose_security(spec, report).await?;
        let subnet = self
            .ensure_network(&spec.cluster, spec.owner.as_deref(), report)
            .await?;
        let ip: Ipv4Addr = subnet.node(spec.index)?;
        self.ensure_volumes(spec).await?;

        report.step(&format!("creating container {name} ({ip})"));
        let config = container_config(spec, security, ip)?;
        let docker = self.client().await?;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        if let Err(e) = docker.create_container(Some(options), config).await {
            if crate::answers::is_name_conflict(&e) {
                // Created concurrently: same rules as when it was there before.
                if let Some(existing) = self.inspect(spec.name.as_str()).await? {
                    return Self::check_existing(spec, &existing);
                }
            }
            if crate::client::is_missing_image(&e) {
                return Err(DriverError::NotFound {
                    what: format!("image `{image}` ({})", error_text(&e)),
                });
            }
            return Err(map_err("creating", &format!("container `{name}`"), e));
        }
        if !spec.files.is_empty() {
            report.step(&format!("copying {} file(s) into {name}", spec.files.len()));
            let access = DockerExec::new(self.long_client().await?, name.clone());
            if let Err(e) = access.copy_in(&spec.files).await {
                // A container without its files must not pass for a created one next time.
                let _ = self.remove_container(&name).await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        let c = self.inspect_ours(name.as_str()).await?;
        let docker = self.client().await?;
        let cname = container_name(name.as_str());
        match machine_state(&c) {
            MachineState::Running | MachineState::Starting => return Ok(()),
            MachineState::Paused => {
                return docker
                    .unpause_container(&cname)
                    .await
                    .map_err(|e| map_err("resuming", &machine_what(name.as_str()), e))
            }
            _ => {}
        }
        docker
            .start_container(&cname, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| {
                let text = error_text(&e);
                if crate::security::is_refusal(&text) {
                    DriverError::Backend {
                        op: format!("starting {}", machine_what(name.as_str())),
                        message: text,
                        hint: Some("the daemon refuses this container's privileges: delete the cluster and create it with the option `docker.security=capabilities`".into()),
                    }
                } else {
                    map_err("starting", &machine_what(name.as_str()), e)
                }
            })
    }

    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError> {
        let c = self.inspect_ours(name.as_str()).await?;
        let cname = container_name(name.as_str());
        let docker = self.client().await?;
        let state = machine_state(&c);
        if !state.can_stop() {
            return Ok(());
        }
        if state == MachineState::Paused {
            docker
                .unpause_container(&cname)
                .await
                .map_err(|e| map_err("resuming", &machine_what(name.as_str()), e))?;
        }
        match how {
            StopMode::Graceful { timeout } => {
                let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
                let options = StopContainerOptionsBuilder::default().t(secs).build();
                docker
                    .clone()
                    .with_timeout(timeout + Duration::from_secs(60))
                    .stop_container(&cname, Some(options))
                    .await
                    .map_err(|e| map_err("stopping", &machine_what(name.as_str()), e))?;
            }
            StopMode::Force => {
                let options = KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                match docker.kill_container(&cname, Some(options)).await {
                    Ok(()) => {}
                    // Not running any more (409): that is what we wanted.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }) => {}
                    Err(e) => return Err(map_err("killing", &machine_what(name.as_str()), e)),
                }
            }
        }
        poll_until(
            &format!("{} to stop", machine_what(name.as_str())),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let state = match self.inspect(name.as_str()).await? {
                    None => MachineState::NotCreated,
                    Some(c) => machine_state(&c),
                };
                Ok::<_, DriverError>(if state.can_stop() {
                    Err(state.to_string())
                } else {
                    Ok(())
                })
            },
        )
        .await
        .map_err(DriverError::from)
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        match self.inspect(name.as_str()).await? {
            Some(c) if !labels(&c).contains_key(LABEL_CLUSTER) => {
                return Err(DriverError::InvalidState {
                    what: machine_what(name.as_str()),
                    state: "not created by timonel".into(),
                    action: "deleting it".into(),
                })
            }
            Some(_) => {
                self.remove_container(&container_name(name.as_str()))
                    .await?;
            }
            None => {}
        }
        let mut volumes: Vec<String> = node_volumes(name.as_str())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for v in self.labelled_volumes(LABEL_NODE, name.as_str()).await? {
            if !volumes.contains(&v) {
                volumes.push(v);
            }
        }
        self.remove_volumes(volumes).await?;
        Ok(())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        let docker = self.client().await?;
        let filters = label_filter(LABEL_CLUSTER, cluster.as_str());
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DriverError::backend("listing containers", error_text(&e)))?;
        let mut removed = Vec::new();
        for c in containers {
            let Some(id) = c.id else { continue };
            let name = c
                .names
                .and_then(|n| n.first().cloned())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.clone());
            if self.remove_container(&id).await? {
                removed.push(format!("container {name}"));
            }
        }
        let volumes = self
            .labelled_volumes(LABEL_CLUSTER, cluster.as_str())
            .await?;
        removed.extend(self.remove_volumes(volumes).await?);
        removed.extend(self.remove_cluster_networks(cluster).await?);
        Ok(removed)
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        Ok(match self.inspect(name.as_str()).await? {
            None => MachineState::NotCreated,
            Some(c) if !labels(&c).contains_key(LABEL_CLUSTER) => MachineState::NotCreated,
            Some(c) => machine_state(&c),
        })
    }

    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        let c = self.inspect_ours(name.as_str()).await?;
        let state = machine_state(&c);
        if !state.is_running() {
            return Err(DriverError::InvalidState {
                what: machine_what(name.as_str()),
                state: state.to_string(),
                action: "reading its address".into(),
            });
        }
        Self::cluster_ip(&c).ok_or_else(|| DriverError::NotFound {
            what: format!(
                "the cluster network address of {}",
                machine_what(name.as_str())
            ),
        })
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        let c = self.inspect_ours(name.as_str()).await?;
        let key = format!("{port}/tcp");
        // While running, what Docker bound; while stopped, what the container is configured with.
        let runtime = c
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
            .and_then(|p| p.get(&key).cloned().flatten());
        let configured = c
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref())
            .and_then(|p| p.get(&key).cloned().flatten());
        let binding = runtime.into_iter().chain(configured).flatten().find(|b| {
            b.host_port
                .as_deref()
                .is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0))
        });
        let Some(binding) = binding else {
            return Err(DriverError::NotFound {
                what: format!(
                    "a published host port for port {key} of {}",
                    machine_what(name.as_str())
                ),
            });
        };
        let host_port: u16 = binding
            .host_port
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let host_ip = match binding.host_ip.as_deref().unwrap_or("") {
            "" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            "::" => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other.parse().map_err(|_| DriverError::Parse {
                what: format!("the host address of port {key}"),
                message: format!("`{other}` is not an IP address"),
            })?,
        };
        Ok(SocketAddr::new(host_ip, host_port))
    }

    async fn access(&self, name: &MachineName) -> Result<Arc<dyn NodeAccess>, DriverError> {
        self.inspect_ours(name.as_str()).await?;
        Ok(Arc::new(DockerExec::new(
            self.long_client().await?,
            container_name(name.as_str()),
        )))
    }

    async fn logs(&self, name: &MachineName, tail: usize) -> Result<String, DriverError> {
        self.tail_logs(name, tail).await
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name, true).await
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name, false).await
    }

    fn as_node_images(&self) -> Option<&dyn NodeImages> {
        Some(self)
    }

    fn as_follow_logs(&self) -> Option<&dyn FollowLogs> {
        Some(self)
    }

    fn as_host_resources(&self) -> Option<&dyn HostResources> {
        Some(self)
    }

    fn as_api_balancer(&self) -> Option<&dyn timonel_driver::ApiBalancer> {
        Some(self)
    }
}

#[async_trait]
impl HostResources for DockerDriver {
    /// The daemon's `/info`: its machine's CPUs and memory (on Docker Desktop, its VM's). The
    /// free disk of its data root is on that machine, which timonel may not reach: not known.
    async fn host_resources(&self) -> Result<HostCapacity, DriverError> {
        let info = self
            .daemon_info("asking the Docker daemon for its resources")
            .await?;
        let name = info.name.unwrap_or_default();
        Ok(HostCapacity {
            source: if name.is_empty() {
                "the Docker daemon's machine".to_string()
            } else {
                format!("the Docker daemon's machine ({name})")
            },
            cpus: info
                .ncpu
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0),
            memory_bytes: info
                .mem_total
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m > 0),
            free_disk_bytes: None,
        })
    }
}

#[async_trait]
impl NodeImages for DockerDriver {
    async fn ensure_node_image(
        &self,
        source: &timonel_driver::NodeImageSource<'_>,
        report: &dyn Reporter,
    ) -> Result<String, DriverError> {
        DockerDriver::ensure_node_image(self, source, report).await
    }

    async fn learn_ahead(&self, spec: &MachineSpec) -> Result<(), DriverError> {
        self.learn_security(spec).await
    }
}

#[async_trait]
impl FollowLogs for DockerDriver {
    async fn follow_logs(
        &self,
        name: &MachineName,
        tail: Option<usize>,
    ) -> Result<LogStream, DriverError> {
        use futures_util::StreamExt;
        let stream = DockerDriver::follow_logs(self, name, tail).await?;
        Ok(Box::pin(stream.map(|chunk| chunk.map(|b| b.to_vec()))))
    }
}
