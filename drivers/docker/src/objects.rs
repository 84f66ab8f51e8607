//! The Docker objects of a node and a cluster, found by name and by label: inspect, volumes,
//! removal, the clusters that exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, VolumeCreateRequest};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};

use timonel_driver::{ClusterName, DriverError, MachineSpec, MachineState};

use crate::client::{error_text, is_not_found, is_removal_in_progress, map_err, DockerDriver};
use crate::config::{node_volumes, spec_digest};
use crate::{container_name, network_name, LABEL_CLUSTER, LABEL_HOME, LABEL_NODE, LABEL_SPEC};

/// An object labelled with another home than `owner` (objects without the label, from before
/// it existed, and specs without an owner are never foreign).
pub(crate) fn foreign(labels: Option<&HashMap<String, String>>, owner: Option<&str>) -> bool {
    match (labels.and_then(|l| l.get(LABEL_HOME)), owner) {
        (Some(home), Some(owner)) => home != owner,
        _ => false,
    }
}

/// The error for a container, network or volume of `cluster` another timonel home created.
pub(crate) fn foreign_error(what: String, cluster: &ClusterName) -> DriverError {
    DriverError::AlreadyExists {
        what: format!("{what}, created by another timonel home (another $TIMONEL_HOME, user or CI job sharing this Docker daemon)"),
        hint: Some(format!(
            "pick another profile name, or remove that cluster first: `timonel delete -p {cluster}` removes it from any home"
        )),
    }
}

pub(crate) fn machine_what(name: &str) -> String {
    format!("container `{}`", container_name(name))
}

pub(crate) fn labels(c: &ContainerInspectResponse) -> HashMap<String, String> {
    c.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

pub(crate) fn status(c: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    c.state.as_ref().and_then(|s| s.status)
}

/// Map a container's state to a [`MachineState`].
pub(crate) fn machine_state(c: &ContainerInspectResponse) -> MachineState {
    use ContainerStateStatusEnum as S;
    match status(c) {
        Some(S::RUNNING) if c.state.as_ref().and_then(|s| s.restarting) == Some(true) => {
            MachineState::Starting
        }
        Some(S::RUNNING) => MachineState::Running,
        Some(S::CREATED | S::EXITED) => MachineState::Stopped,
        Some(S::PAUSED) => MachineState::Paused,
        Some(S::RESTARTING) => MachineState::Starting,
        Some(S::DEAD) => MachineState::Error { raw: "dead".into() },
        Some(other) => MachineState::Unknown {
            raw: other.to_string(),
        },
        None => MachineState::Unknown { raw: String::new() },
    }
}

pub(crate) fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{key}={value}")])])
}

impl DockerDriver {
    pub(crate) async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, DriverError> {
        if !self.is_negotiated() {
            // A command that only looks (`ip`, `status`) asks once, unversioned; anything but
            // the container's description (not found, errors, a transport the plain request
            // does not speak) is asked again below, negotiated, for its typed meaning.
            let path = format!("/containers/{}/json", container_name(name));
            let found: Option<ContainerInspectResponse> =
                crate::raw::get_as(&self.host, &path).await;
            if let Some(c) = found.filter(|c| c.id.is_some()) {
                return Ok(Some(c));
            }
        }
        let docker = self.client().await?;
        match docker
            .inspect_container(&container_name(name), None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err("inspecting", &machine_what(name), e)),
        }
    }

    pub(crate) async fn inspect_ours(
        &self,
        name: &str,
    ) -> Result<ContainerInspectResponse, DriverError> {
        match self.inspect(name).await? {
            None => Err(DriverError::NotFound {
                what: machine_what(name),
            }),
            Some(c) if !labels(&c).contains_key(LABEL_CLUSTER) => Err(DriverError::InvalidState {
                what: machine_what(name),
                state: "not created by timonel".into(),
                action: "managing it".into(),
            }),
            Some(c) => Ok(c),
        }
    }

    /// Ok when an existing container is ours with the same spec; AlreadyExists otherwise.
    pub(crate) fn check_existing(
        spec: &MachineSpec,
        c: &ContainerInspectResponse,
    ) -> Result<(), DriverError> {
        let name = container_name(spec.name.as_str());
        let l = labels(c);
        if !l.contains_key(LABEL_CLUSTER) {
            return Err(DriverError::AlreadyExists {
                what: format!("container `{name}` (not created by timonel)"),
                hint: Some(format!(
                    "remove or rename that container (`docker rm -f {name}`), or use another profile name"
                )),
            });
        }
        if foreign(Some(&l), spec.owner.as_deref()) {
            return Err(foreign_error(format!("container `{name}`"), &spec.cluster));
        }
        if l.get(LABEL_CLUSTER).map(String::as_str) != Some(spec.cluster.as_str())
            || l.get(LABEL_SPEC) != Some(&spec_digest(spec))
        {
            return Err(DriverError::AlreadyExists {
                what: format!("container `{name}` with different settings"),
                hint: Some(format!(
                    "delete the cluster first (`timonel delete -p {}`) to change its settings",
                    spec.cluster
                )),
            });
        }
        Ok(())
    }

    pub(crate) async fn ensure_volumes(&self, spec: &MachineSpec) -> Result<(), DriverError> {
        let docker = self.client().await?;
        for (name, _) in node_volumes(spec.name.as_str()) {
            let mut labels = HashMap::from([
                (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
                (LABEL_NODE.to_string(), spec.name.to_string()),
            ]);
            if let Some(owner) = &spec.owner {
                labels.insert(LABEL_HOME.to_string(), owner.clone());
            }
            let request = VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            };
            // Creating an existing volume returns it: another home's data must not be taken.
            let volume = docker
                .create_volume(request)
                .await
                .map_err(|e| map_err("creating", &format!("volume `{name}`"), e))?;
            if foreign(Some(&volume.labels), spec.owner.as_deref()) {
                return Err(foreign_error(format!("volume `{name}`"), &spec.cluster));
            }
        }
        Ok(())
    }

    pub(crate) async fn remove_volumes(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<String>, DriverError> {
        let docker = self.client().await?;
        let mut removed = Vec::new();
        for name in names {
            match docker
                .remove_volume(&name, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => removed.push(format!("volume {name}")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err("removing", &format!("volume `{name}`"), e)),
            }
        }
        Ok(removed)
    }

    pub(crate) async fn labelled_volumes(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<String>, DriverError> {
        let docker = self.client().await?;
        let options = ListVolumesOptionsBuilder::default()
            .filters(&label_filter(key, value))
            .build();
        let list = docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| DriverError::backend("listing volumes", error_text(&e)))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    pub(crate) async fn remove_container(&self, id_or_name: &str) -> Result<bool, DriverError> {
        let docker = self.client().await?;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(id_or_name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            // A removal someone else asked for (a killed `delete`: the daemon carries on without
            // its client) is under way: wait for it to end.
            Err(e) if is_removal_in_progress(&e) => {
                self.wait_until_gone(id_or_name).await?;
                Ok(true)
            }
            Err(e) => Err(map_err("removing", &format!("container `{id_or_name}`"), e)),
        }
    }

    async fn wait_until_gone(&self, id_or_name: &str) -> Result<(), DriverError> {
        let docker = self.client().await?;
        timonel_driver::poll_until(
            &format!("the removal of container `{id_or_name}` under way"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                match docker
                    .inspect_container(id_or_name, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(_) => Ok(Err("still there".to_string())),
                    Err(e) if is_not_found(&e) => Ok(Ok(())),
                    Err(e) => Err(map_err(
                        "inspecting",
                        &format!("container `{id_or_name}`"),
                        e,
                    )),
                }
            },
        )
        .await
        .map_err(DriverError::from)
    }

    /// The clusters that have any container, volume or network labelled as timonel's, even
    /// when timonel's own records of them are gone (`delete --all`), each with the homes that
    /// created its objects (`None`: objects from before homes were labelled).
    pub async fn clusters_by_home(
        &self,
    ) -> Result<BTreeMap<ClusterName, BTreeSet<Option<String>>>, DriverError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label".to_string(), vec![LABEL_CLUSTER.to_string()])]);
        let mut found: Vec<HashMap<String, String>> = Vec::new();
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DriverError::backend("listing containers", error_text(&e)))?;
        found.extend(containers.into_iter().filter_map(|c| c.labels));
        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DriverError::backend("listing volumes", error_text(&e)))?;
        found.extend(
            volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.labels),
        );
        let networks = docker
            .list_networks(Some(
                bollard::query_parameters::ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DriverError::backend("listing networks", error_text(&e)))?;
        found.extend(networks.into_iter().filter_map(|n| n.labels));
        let mut clusters: BTreeMap<ClusterName, BTreeSet<Option<String>>> = BTreeMap::new();
        for mut labels in found {
            let Some(name) = labels.remove(LABEL_CLUSTER).and_then(|n| n.parse().ok()) else {
                continue;
            };
            clusters
                .entry(name)
                .or_default()
                .insert(labels.remove(LABEL_HOME));
        }
        Ok(clusters)
    }

    /// The names of the clusters [`clusters_by_home`](Self::clusters_by_home) finds.
    pub async fn list_clusters(&self) -> Result<Vec<ClusterName>, DriverError> {
        Ok(self.clusters_by_home().await?.into_keys().collect())
    }

    /// The container's address on its cluster network.
    pub(crate) fn cluster_ip(c: &ContainerInspectResponse) -> Option<IpAddr> {
        let cluster = labels(c).remove(LABEL_CLUSTER)?;
        let networks = c.network_settings.as_ref()?.networks.as_ref()?;
        let endpoint = networks.get(&network_name(&cluster))?;
        endpoint.ip_address.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn with_status(status: ContainerStateStatusEnum, restarting: bool) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(status),
                restarting: Some(restarting),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_another_homes_label_is_foreign() {
        let labels = |home: Option<&str>| {
            let mut l = HashMap::from([(LABEL_CLUSTER.to_string(), "dev".to_string())]);
            if let Some(h) = home {
                l.insert(LABEL_HOME.to_string(), h.to_string());
            }
            l
        };
        assert!(foreign(Some(&labels(Some("a"))), Some("b")));
        assert!(!foreign(Some(&labels(Some("a"))), Some("a")));
        // Unlabelled (older) objects, and specs without an owner, are not refused here.
        assert!(!foreign(Some(&labels(None)), Some("a")));
        assert!(!foreign(Some(&labels(Some("a"))), None));
        let spec = MachineSpec {
            owner: Some("b".into()),
            ..MachineSpec::new(
                "dev".parse().unwrap(),
                "dev".parse().unwrap(),
                timonel_driver::NodeRole::Server,
                1,
            )
        };
        let theirs = ContainerInspectResponse {
            config: Some(bollard::models::ContainerConfig {
                labels: Some(labels(Some("a"))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = DockerDriver::check_existing(&spec, &theirs).unwrap_err();
        assert!(err.to_string().contains("another timonel home"), "{err}");
    }

    #[test]
    fn container_states_map_to_machine_states() {
        use ContainerStateStatusEnum as S;
        assert_eq!(
            machine_state(&with_status(S::CREATED, false)),
            MachineState::Stopped
        );
        assert_eq!(
            machine_state(&with_status(S::EXITED, false)),
            MachineState::Stopped
        );
        assert_eq!(
            machine_state(&with_status(S::RUNNING, false)),
            MachineState::Running
        );
        assert_eq!(
            machine_state(&with_status(S::RESTARTING, true)),
            MachineState::Starting
        );
        assert_eq!(
            machine_state(&with_status(S::PAUSED, false)),
            MachineState::Paused
        );
        assert!(matches!(
            machine_state(&with_status(S::DEAD, false)),
            MachineState::Error { .. }
        ));
        assert!(matches!(
            machine_state(&with_status(S::REMOVING, false)),
            MachineState::Unknown { .. }
        ));
    }
}
