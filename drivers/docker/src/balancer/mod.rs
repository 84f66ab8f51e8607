//! The load balancer in front of a cluster's API servers: a container of its own,
//! `timonel-<cluster>-lb`, running `timonel-lb` (drivers/lb) from a scratch image imported
//! from the local program (never pulled). It is on the cluster's network at `.254`, publishes
//! the API port on the host, carries the cluster's labels (so `delete_cluster` removes it),
//! and reads its backends from `/etc/timonel-lb/backends`, which is replaced in place by a
//! copy into the container: new backends without a restart.

mod program;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

use timonel_driver::{
    ApiBalancer, BalancerSpec, BalancerStatus, ClusterName, DriverError, Reporter,
};

use crate::archive::{append_dir, append_file, single_file, tar_stream};
use crate::client::{error_text, is_not_found, map_err, DockerDriver};
use crate::image::{file_sha256, import_rootfs, Import};
use crate::objects::{foreign, foreign_error, labels, machine_state};
use crate::{network_name, LABEL_CLUSTER, LABEL_HOME, LABEL_IMAGE, NAME_PREFIX};

pub use program::{ENV_PROGRAM, PROGRAM};

/// Label on the balancer's container: what it balances (`api`).
pub const LABEL_BALANCER: &str = "dev.timonel.balancer";
/// The repository of balancer images; the tag is the program's sha256 (first 16 digits).
pub const BALANCER_IMAGE_REPO: &str = "timonel/lb";
/// Where the balancer listens in its container.
pub const BALANCER_PORT: u16 = 6443;
/// Where it reads its backends.
pub const BACKENDS_FILE: &str = "/etc/timonel-lb/backends";
/// Its address on the cluster network: `.254`, above the nodes' `.2` upward.
const BALANCER_HOST: u8 = 254;

/// The balancer's container: `timonel-<cluster>-lb` (node containers are
/// `timonel-<cluster>-mNN` or `timonel-<cluster>`, so no node has this name).
pub fn balancer_container(cluster: &str) -> String {
    format!("{NAME_PREFIX}{cluster}-lb")
}

/// The backends file's text: one `IP:PORT` a line.
pub fn backends_text(backends: &[SocketAddr]) -> String {
    backends.iter().map(|b| format!("{b}\n")).collect()
}

/// The balancer's container configuration.
fn balancer_config(
    spec: &BalancerSpec,
    image: &str,
    ip: std::net::Ipv4Addr,
) -> ContainerCreateBody {
    let network = network_name(spec.cluster.as_str());
    let key = format!("{BALANCER_PORT}/tcp");
    let mut labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_BALANCER.to_string(), "api".to_string()),
    ]);
    if let Some(owner) = &spec.owner {
        labels.insert(LABEL_HOME.to_string(), owner.clone());
    }
    let host = HostConfig {
        port_bindings: Some(HashMap::from([(
            key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.host_ip.to_string()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )])),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        network_mode: Some(network.clone()),
        // It only connects and listens above 1024: no capability, no root.
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some("65534:65534".into()),
        cmd: Some(vec![
            "--listen".into(),
            format!("0.0.0.0:{BALANCER_PORT}"),
            "--backends".into(),
            BACKENDS_FILE.into(),
        ]),
        labels: Some(labels),
        exposed_ports: Some(vec![key]),
        host_config: Some(host),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, endpoint)])),
        }),
        ..Default::default()
    }
}

impl DockerDriver {
    /// The daemon's architecture (`x86_64`, `aarch64`).
    async fn daemon_arch(&self) -> Result<String, DriverError> {
        let info = self.client().await?.info().await.map_err(|e| {
            DriverError::backend(
                "asking the Docker daemon for its architecture",
                error_text(&e),
            )
        })?;
        Ok(info.architecture.unwrap_or_else(|| "x86_64".into()))
    }

    /// The balancer image made from `program`, imported when missing. Never pulled.
    async fn ensure_balancer_image(
        &self,
        program: &Path,
        report: &dyn Reporter,
    ) -> Result<String, DriverError> {
        let path = program.to_path_buf();
        let sha = tokio::task::spawn_blocking(move || file_sha256(&path))
            .await
            .map_err(|e| DriverError::backend("hashing the balancer program", e))?
            .map_err(|e| DriverError::io(format!("reading `{}`", program.display()), e))?;
        let tag = &sha[..16];
        let image = format!("{BALANCER_IMAGE_REPO}:{tag}");
        let docker = self.long_client().await?;
        match docker.inspect_image(&image).await {
            Ok(_) => return Ok(image),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(map_err("inspecting", &format!("image `{image}`"), e)),
        }
        report.step(&format!("building the load balancer image {image}"));
        let bytes = std::fs::read(program)
            .map_err(|e| DriverError::io(format!("reading `{}`", program.display()), e))?;
        let size = bytes.len() as u64;
        let tar = tar_stream(move |b| {
            let mtime = crate::archive::now();
            for dir in ["etc", "etc/timonel-lb"] {
                append_dir(b, dir, 0o755, mtime)?;
            }
            append_file(b, PROGRAM, 0o755, size, mtime, bytes.as_slice())?;
            append_file(b, &BACKENDS_FILE[1..], 0o644, 0, mtime, std::io::empty())
        });
        let import = Import {
            repo: BALANCER_IMAGE_REPO,
            tag,
            message: "timonel API load balancer".into(),
            changes: vec![
                format!(r#"ENTRYPOINT ["/{PROGRAM}"]"#),
                format!(r#"LABEL {LABEL_IMAGE}="lb""#),
            ],
            source: program.display().to_string(),
        };
        import_rootfs(&docker, import, tar, size, report).await?;
        self.remove_old_balancer_images(&image).await;
        Ok(image)
    }

    /// Removes balancer images of earlier programs that no container uses (best effort: one
    /// in use is refused by the daemon and kept).
    async fn remove_old_balancer_images(&self, keep: &str) {
        let Ok(docker) = self.client().await else {
            return;
        };
        let filters = HashMap::from([(
            "reference".to_string(),
            vec![format!("{BALANCER_IMAGE_REPO}:*")],
        )]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let Ok(images) = docker.list_images(Some(options)).await else {
            return;
        };
        for tag in images.into_iter().flat_map(|i| i.repo_tags) {
            if tag != keep {
                let _ = docker
                    .remove_image(
                        &tag,
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        }
    }

    async fn inspect_balancer(
        &self,
        cluster: &ClusterName,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, DriverError> {
        let name = balancer_container(cluster.as_str());
        match self
            .client()
            .await?
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err("inspecting", &format!("container `{name}`"), e)),
        }
    }

    /// Writes the backends file into the balancer's container (running or not).
    async fn write_backends(
        &self,
        cluster: &ClusterName,
        backends: &[SocketAddr],
    ) -> Result<(), DriverError> {
        let name = balancer_container(cluster.as_str());
        let text = backends_text(backends).into_bytes();
        let mut b = tar::Builder::new(Vec::new());
        let file = Path::new(BACKENDS_FILE)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("backends");
        append_file(
            &mut b,
            file,
            0o644,
            text.len() as u64,
            crate::archive::now(),
            text.as_slice(),
        )
        .and_then(|()| b.finish())
        .map_err(|e| DriverError::io("writing the backends archive".to_string(), e))?;
        let tar = b
            .into_inner()
            .map_err(|e| DriverError::io("writing the backends archive".to_string(), e))?;
        let dir = Path::new(BACKENDS_FILE)
            .parent()
            .and_then(|d| d.to_str())
            .unwrap_or("/");
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        self.client()
            .await?
            .upload_to_container(&name, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| {
                map_err(
                    "copying the backends into",
                    &format!("container `{name}`"),
                    e,
                )
            })
    }

    async fn read_backends(&self, cluster: &ClusterName) -> Result<Vec<SocketAddr>, DriverError> {
        let name = balancer_container(cluster.as_str());
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(BACKENDS_FILE)
            .build();
        let chunks: Vec<bytes::Bytes> = self
            .client()
            .await?
            .download_from_container(&name, Some(options))
            .try_collect()
            .await
            .map_err(|e| map_err("reading the backends of", &format!("container `{name}`"), e))?;
        let text = single_file(&chunks.concat(), BACKENDS_FILE)?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }
}

#[async_trait]
impl ApiBalancer for DockerDriver {
    async fn balancer_ready(&self) -> Result<(), DriverError> {
        program::locate(&self.daemon_arch().await?).map(|_| ())
    }

    async fn ensure_balancer(
        &self,
        spec: &BalancerSpec,
        report: &dyn Reporter,
    ) -> Result<(), DriverError> {
        let name = balancer_container(spec.cluster.as_str());
        let docker = self.client().await?;
        match self.inspect_balancer(&spec.cluster).await? {
            Some(c) => {
                let l = labels(&c);
                if l.get(LABEL_CLUSTER).map(String::as_str) != Some(spec.cluster.as_str()) {
                    return Err(DriverError::AlreadyExists {
                        what: format!("container `{name}` (not this cluster's load balancer)"),
                        hint: Some(format!(
                            "remove or rename that container (`docker rm -f {name}`)"
                        )),
                    });
                }
                if foreign(Some(&l), spec.owner.as_deref()) {
                    return Err(foreign_error(format!("container `{name}`"), &spec.cluster));
                }
            }
            None => {
                let program = program::locate(&self.daemon_arch().await?)?;
                let image = self.ensure_balancer_image(&program, report).await?;
                let subnet = self
                    .ensure_network(&spec.cluster, spec.owner.as_deref(), report)
                    .await?;
                report.step(&format!("creating the API load balancer {name}"));
                let config = balancer_config(spec, &image, subnet.host(BALANCER_HOST));
                let options = CreateContainerOptionsBuilder::default().name(&name).build();
                docker
                    .create_container(Some(options), config)
                    .await
                    .map_err(|e| map_err("creating", &format!("container `{name}`"), e))?;
            }
        }
        // The backends are written before it starts, and on every start: the servers' addresses
        // are the profile's.
        self.write_backends(&spec.cluster, &spec.backends).await?;
        let running = self
            .inspect_balancer(&spec.cluster)
            .await?
            .map(|c| machine_state(&c).is_running())
            .unwrap_or(false);
        if !running {
            docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| map_err("starting", &format!("container `{name}`"), e))?;
        }
        Ok(())
    }

    async fn set_backends(
        &self,
        cluster: &ClusterName,
        backends: &[SocketAddr],
    ) -> Result<(), DriverError> {
        if self.inspect_balancer(cluster).await?.is_none() {
            return Ok(());
        }
        self.write_backends(cluster, backends).await
    }

    async fn stop_balancer(&self, cluster: &ClusterName) -> Result<(), DriverError> {
        let Some(c) = self.inspect_balancer(cluster).await? else {
            return Ok(());
        };
        if !machine_state(&c).can_stop() {
            return Ok(());
        }
        // It keeps no state: killed at once rather than waiting out a stop timeout (as PID 1
        // without a handler it would ignore SIGTERM).
        let name = balancer_container(cluster.as_str());
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self
            .client()
            .await?
            .kill_container(&name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(map_err("stopping", &format!("container `{name}`"), e)),
        }
    }

    async fn balancer(&self, cluster: &ClusterName) -> Result<Option<BalancerStatus>, DriverError> {
        let Some(c) = self.inspect_balancer(cluster).await? else {
            return Ok(None);
        };
        let key = format!("{BALANCER_PORT}/tcp");
        let host_port = c
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref())
            .and_then(|p| p.get(&key).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse().ok()));
        Ok(Some(BalancerStatus {
            state: machine_state(&c),
            host_port,
            backends: self.read_backends(cluster).await.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_container_belongs_to_the_cluster_and_publishes_the_port() {
        let spec = BalancerSpec {
            cluster: "dev".parse().unwrap(),
            owner: Some("home1".into()),
            host_ip: [127, 0, 0, 1].into(),
            host_port: 40500,
            backends: vec!["10.201.0.2:6443".parse().unwrap()],
        };
        let c = balancer_config(&spec, "timonel/lb:abc", [10, 201, 0, 254].into());
        let l = c.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_CLUSTER], "dev");
        assert_eq!(l[LABEL_HOME], "home1");
        assert_eq!(l[LABEL_BALANCER], "api");
        let h = c.host_config.as_ref().unwrap();
        let b = &h.port_bindings.as_ref().unwrap()["6443/tcp"]
            .as_ref()
            .unwrap()[0];
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.host_port.as_deref(), Some("40500"));
        assert_eq!(h.network_mode.as_deref(), Some("timonel-dev"));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.privileged, None);
        let cmd = c.cmd.unwrap();
        assert!(cmd.contains(&BACKENDS_FILE.to_string()), "{cmd:?}");
        assert_eq!(balancer_container("dev"), "timonel-dev-lb");
        assert_eq!(
            backends_text(&spec.backends),
            "10.201.0.2:6443\n",
            "one a line, newline-terminated (the program waits for the last newline)"
        );
    }
}
