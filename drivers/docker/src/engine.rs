//! Which engine serves the Docker API: Docker, or Podman's compatible service, rootful or
//! rootless, and whether it can give k3s what it needs.
//!
//! What the engines answer (checked against Docker 20.10 and Podman 4.3):
//! - Docker's `/version` lists a component named `Engine`; Docker Desktop adds a platform name
//!   such as `Docker Desktop 4.30.0 (149282)`.
//! - Podman's lists `Podman Engine` (its version, and in `Details.APIVersion` its own libpod API
//!   version), answers every request with the headers `Server: Libpod/<version> (linux)` and
//!   `Libpod-Api-Version`, and reports `ApiVersion` 1.40 or 1.41 as the Docker API it speaks.
//! - Rootless Docker lists `name=rootless` in `/info`'s `SecurityOptions`; Podman (4.3) does
//!   not, and says it in a top-level `"Rootless": true` of its `/info` instead.

use bollard::models::{
    SystemInfo, SystemInfoCgroupVersionEnum, SystemVersion, SystemVersionComponents,
};

/// The engine behind the Docker API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `Docker`, `Docker Desktop`, `Podman`, or the component's own name for anything else.
    pub name: String,
    /// The engine's version (`20.10.24`, `4.3.1`).
    pub version: String,
    /// Whether it is Podman (whose answers differ from Docker's in places).
    pub podman: bool,
    /// Whether the engine runs as an unprivileged user.
    pub rootless: bool,
    /// `1` or `2` when the engine says.
    pub cgroup: Option<u8>,
}

/// The `/version` component of Podman's engine (`Podman Engine`), when it lists one.
pub(crate) fn podman_component(version: &SystemVersion) -> Option<&SystemVersionComponents> {
    version
        .components
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name.contains("Podman"))
}

impl Engine {
    /// The engine from its `/version` and `/info` answers; `rootless_flag` is the top-level
    /// `Rootless` of `/info` that Podman sends beside Docker's fields.
    pub fn identify(
        version: &SystemVersion,
        info: &SystemInfo,
        rootless_flag: Option<bool>,
    ) -> Self {
        let components = version.components.as_deref().unwrap_or_default();
        let podman = podman_component(version);
        let engine = components.iter().find(|c| c.name == "Engine");
        let platform = version
            .platform
            .as_ref()
            .map(|p| p.name.trim())
            .unwrap_or_default();
        let fallback = || {
            version
                .version
                .clone()
                .or_else(|| info.server_version.clone())
                .unwrap_or_else(|| "?".into())
        };
        let (name, engine_version) = match (podman, engine) {
            (Some(p), _) => ("Podman".to_string(), p.version.clone()),
            (None, Some(e)) if platform.starts_with("Docker Desktop") => {
                (platform.to_string(), e.version.clone())
            }
            (None, Some(e)) => ("Docker".to_string(), e.version.clone()),
            (None, None) => match components.first() {
                Some(c) => (c.name.clone(), c.version.clone()),
                None => ("Docker".to_string(), fallback()),
            },
        };
        let rootless = info
            .security_options
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=rootless"))
            || rootless_flag == Some(true);
        let cgroup = match info.cgroup_version {
            Some(SystemInfoCgroupVersionEnum::_2) => Some(2),
            Some(SystemInfoCgroupVersionEnum::_1) => Some(1),
            _ => None,
        };
        Self {
            name,
            version: engine_version,
            podman: podman.is_some(),
            rootless,
            cgroup,
        }
    }

    /// `Podman 4.3.1, rootful` — the engine as the driver line shows it.
    pub fn describe(&self, api: &str) -> String {
        format!(
            "{} {} (API {api}, {})",
            self.name,
            self.version,
            if self.rootless { "rootless" } else { "rootful" }
        )
    }

    /// Why k3s cannot run on this engine at all, with what to do; None when it may.
    ///
    /// A rootless engine can only hand a container the cgroups it was delegated, and cgroup v1
    /// delegates none: k3s's kubelet then has no cgroup to manage and fails after the node is
    /// created. Checked before anything is created.
    pub fn unfit_for_k3s(&self) -> Option<(String, String)> {
        if self.rootless && self.cgroup == Some(1) {
            let user_service = if self.podman {
                "run the rootful service (`sudo podman system service`, socket /run/podman/podman.sock)"
            } else {
                "use the rootful Docker daemon"
            };
            return Some((
                format!(
                    "{} {} runs rootless on cgroup v1: k3s's kubelet needs cgroups the engine cannot delegate to it",
                    self.name, self.version
                ),
                format!("boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) and delegate the cpu, cpuset, io, memory and pids controllers to your user, or {user_service}"),
            ));
        }
        None
    }

    /// What the user should know about running k3s on this engine.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.rootless {
            notes.push(format!("rootless {}: k3s needs `--kubelet-arg=feature-gates=KubeletInUserNamespace=true` and delegated cgroup controllers", self.name));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(json: &str) -> SystemVersion {
        serde_json::from_str(json).unwrap_or_default()
    }

    fn info(json: &str) -> SystemInfo {
        serde_json::from_str(json).unwrap_or_default()
    }

    #[test]
    fn podman_is_named_by_its_component() {
        let v = version(
            r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1","MinAPIVersion":"4.0.0"}}],"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24"}"#,
        );
        let i = info(
            r#"{"ServerVersion":"4.3.1","SecurityOptions":["name=seccomp,profile=default"],"CgroupVersion":"1"}"#,
        );
        let e = Engine::identify(&v, &i, Some(false));
        assert_eq!(e.name, "Podman");
        assert!(e.podman && !e.rootless);
        assert_eq!(e.describe("1.41"), "Podman 4.3.1 (API 1.41, rootful)");
        assert_eq!(e.unfit_for_k3s(), None);
    }

    #[test]
    fn docker_and_docker_desktop() {
        let v = version(
            r#"{"Platform":{"Name":""},"Components":[{"Name":"Engine","Version":"20.10.24+dfsg1","Details":{"ApiVersion":"1.41"}},{"Name":"containerd","Version":"1.6.20~ds1"}],"Version":"20.10.24+dfsg1","ApiVersion":"1.41"}"#,
        );
        let e = Engine::identify(
            &v,
            &info(
                r#"{"SecurityOptions":["name=seccomp,profile=default","name=cgroupns"],"CgroupVersion":"2"}"#,
            ),
            None,
        );
        assert_eq!(
            e.describe("1.41"),
            "Docker 20.10.24+dfsg1 (API 1.41, rootful)"
        );
        let desktop = version(
            r#"{"Platform":{"Name":"Docker Desktop 4.30.0 (149282)"},"Components":[{"Name":"Engine","Version":"26.1.1"}],"Version":"26.1.1","ApiVersion":"1.45"}"#,
        );
        let e = Engine::identify(&desktop, &info("{}"), None);
        assert_eq!(e.name, "Docker Desktop 4.30.0 (149282)");
        assert_eq!(e.version, "26.1.1");
    }

    #[test]
    fn rootless_on_cgroup_v1_is_refused_before_anything_is_created() {
        let v = version(
            r#"{"Components":[{"Name":"Podman Engine","Version":"4.3.1"}],"ApiVersion":"1.41"}"#,
        );
        // Podman 4.3 as a user: no `name=rootless`, its own `"Rootless": true`.
        let v1 = Engine::identify(
            &v,
            &info(r#"{"SecurityOptions":["name=seccomp,profile=default"],"CgroupVersion":"1"}"#),
            Some(true),
        );
        assert!(v1.rootless);
        let (reason, fix) = v1.unfit_for_k3s().unwrap();
        assert!(reason.contains("rootless on cgroup v1"), "{reason}");
        assert!(fix.contains("podman system service"), "{fix}");
        // Rootless Docker's way of saying it.
        let v2 = Engine::identify(
            &v,
            &info(
                r#"{"SecurityOptions":["name=seccomp,profile=default","name=rootless"],"CgroupVersion":"2"}"#,
            ),
            None,
        );
        assert_eq!(v2.unfit_for_k3s(), None);
        assert!(v2.describe("1.41").ends_with("rootless)"));
        assert!(v2.notes()[0].contains("KubeletInUserNamespace"));
    }
}
