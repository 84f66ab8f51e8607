//! Which security profile the daemon accepts, found by experiment before the node is created.
//!
//! Some daemons refuse `--privileged` (a sandbox whose own capability bounding set is reduced
//! answers "unable to apply caps"), and only at start time. Finding out then would be too late
//! for the files placed at creation, so a throwaway container with an entrypoint that does not
//! exist is started: the runtime applies the privileges before it looks for the program, so
//! "no such file" means the privileges were accepted and "unable to apply caps" means they were
//! refused.
//!
//! The throwaway container runs [`PROBE_IMAGE`], an image of one empty folder imported once
//! (under 100 ms), not the node image: what the runtime accepts does not depend on the image,
//! so `start` learns it beside the download and the node image build ([`DockerDriver::learn_security`])
//! instead of after them. The verdict is kept per daemon, in memory and in the file the spec's
//! `docker.security_cache` option names.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use timonel_driver::{DriverError, MachineSpec, Reporter};

use crate::archive::{append_dir, tar_stream};
use crate::client::{error_text, is_not_found, DockerDriver};
use crate::config::{container_config, SecurityProfile};
use crate::image::{import_rootfs, Import};
use crate::{LABEL_CLUSTER, LABEL_HOME, LABEL_IMAGE, NAME_PREFIX};

/// The probe image: one empty folder, labelled as timonel's. Never pulled.
pub const PROBE_IMAGE: &str = "timonel/probe:1";

/// What a start error says about the privileges asked for.
pub(crate) fn is_refusal(text: &str) -> bool {
    matches!(classify(text), Probe::Refused(_))
}

/// What starting a probe container told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The runtime applied everything and then found no probe program.
    Accepted,
    /// The privileges asked for were refused: a smaller profile may do.
    Refused(String),
    /// Something that has nothing to do with the privileges failed: no profile will do.
    Broken(String),
}

/// Sorts a probe container's start error. Failures about limits and cgroups are the engine's
/// (or the kernel's), whatever the profile; capability, device and mount refusals are the
/// profile's; "no such file" for the probe program means the runtime got past all of them.
pub(crate) fn classify(text: &str) -> Probe {
    let t = text.to_lowercase();
    let engine_side = [
        "rlimit",            // runc: error setting rlimit type 7: operation not permitted
        "cgroup namespaces", // dockerd: cgroup namespaces aren't enabled in the kernel
        "to rootfs at \"/sys/fs/cgroup\"", // runc: error mounting "cgroup" to rootfs at "/sys/fs/cgroup"
        "cgroups: cgroup mountpoint does not exist",
    ];
    if engine_side.iter().any(|m| t.contains(m)) {
        return Probe::Broken(text.to_string());
    }
    if t.contains("timonel-security-probe")
        && (t.contains("no such file") || t.contains("not found"))
    {
        return Probe::Accepted;
    }
    let refusals = [
        "apply caps", // runc without the capabilities asked for
        "operation not permitted",
        "create device", // crun, rootless --privileged: create device `/dev/tty`
        "permission denied",
    ];
    if refusals.iter().any(|m| t.contains(m)) {
        return Probe::Refused(text.to_string());
    }
    Probe::Broken(text.to_string())
}

/// What to do about an engine that cannot start the node's containers, by what it said.
pub(crate) fn broken_hint(text: &str, plain_fails: bool) -> String {
    let t = text.to_lowercase();
    if t.contains("rlimit") {
        return "the engine asks for resource limits above its own and may not raise them (no CAP_SYS_RESOURCE, e.g. inside a container): lower its defaults to what it may set — Podman: `default_ulimits` in containers.conf; Docker: dockerd's `--default-ulimit`".into();
    }
    if t.contains("cgroup namespaces") {
        return "the kernel has no cgroup namespaces, which k3s's node needs: use a kernel built with CONFIG_CGROUP_NS (any distribution kernel since 4.6)".into();
    }
    if t.contains("cgroup") {
        return "the runtime cannot mount /sys/fs/cgroup into the container, which k3s's kubelet needs: on a rootless engine use cgroup v2 with the controllers delegated to your user, or use a rootful engine".into();
    }
    if plain_fails {
        "the engine cannot start even a plain container: check it with `docker run --rm hello-world` (or `podman run --rm …`) and fix that first".into()
    } else {
        "the engine starts plain containers but not with the settings k3s's node needs (see its error above)".into()
    }
}

impl DockerDriver {
    /// The profile for `spec`: `docker.security` when set, else privileged when the daemon
    /// accepts it, else the capability profile, with a warning.
    pub(crate) async fn choose_security(
        &self,
        spec: &MachineSpec,
        report: &dyn Reporter,
    ) -> Result<SecurityProfile, DriverError> {
        let chosen = self.settle_security(spec).await?;
        let first = Self::candidates(spec)?[0];
        if chosen != first {
            let caps = chosen.cap_add().join(", ");
            let what = if first == SecurityProfile::Privileged {
                "privileged containers (\"unable to apply caps\")"
            } else {
                "the full capability profile"
            };
            report.warn(&format!(
                "the Docker daemon refuses {what}; node `{}` runs with explicit capabilities instead ({caps}; seccomp and AppArmor unconfined). k3s may lack some privileges.",
                spec.name
            ));
        }
        Ok(chosen)
    }

    /// Learns which security profile the daemon accepts for nodes like `spec`, without
    /// creating anything of a node, so the node's create finds the verdict. `start` runs it
    /// beside the download. Every probe container is removed before it returns.
    pub async fn learn_security(&self, spec: &MachineSpec) -> Result<(), DriverError> {
        self.settle_security(spec).await.map(|_| ())
    }

    /// The profiles to try for `spec`, best first.
    fn candidates(spec: &MachineSpec) -> Result<&'static [SecurityProfile], DriverError> {
        Ok(match SecurityProfile::forced(spec)? {
            Some(SecurityProfile::Privileged) => &[SecurityProfile::Privileged],
            Some(_) => &[
                SecurityProfile::Capabilities,
                SecurityProfile::ReducedCapabilities,
            ],
            None => &[
                SecurityProfile::Privileged,
                SecurityProfile::Capabilities,
                SecurityProfile::ReducedCapabilities,
            ],
        })
    }

    /// The verdict for `spec`: remembered (in memory, then on disk), else probed.
    async fn settle_security(&self, spec: &MachineSpec) -> Result<SecurityProfile, DriverError> {
        let candidates = Self::candidates(spec)?;
        if candidates.len() == 1 {
            return Ok(candidates[0]);
        }
        // Per daemon, not per image: the runtime applies the privileges whatever the image.
        let key = format!("probe|{}", candidates[0]);
        let mut cache = self.accepted_security.lock().await;
        // A verdict remembered on disk by an earlier run against the same daemon.
        let file = spec
            .options
            .get(crate::OPTION_SECURITY_CACHE)
            .map(std::path::PathBuf::from);
        let daemon_key = match &file {
            Some(_) => self.daemon_identity().await.map(|id| format!("{id}|{key}")),
            None => None,
        };
        if !cache.contains_key(&key) {
            if let (Some(file), Some(dk)) = (&file, &daemon_key) {
                if let Some(p) = read_verdicts(file)
                    .get(dk)
                    .and_then(|v| SecurityProfile::parse(v))
                {
                    if candidates.contains(&p) {
                        cache.insert(key.clone(), p);
                    }
                }
            }
        }
        let chosen = match cache.get(&key) {
            Some(p) => *p,
            None => {
                let image = self.probe_image().await?;
                let image = image.as_str();
                let mut refusals = Vec::new();
                let mut chosen = None;
                let mut broken = None;
                // Every candidate at once (each probe is its own throwaway container), read
                // in order as if tried one by one: the first accepted wins.
                let outcomes = futures_util::future::join_all(
                    candidates
                        .iter()
                        .map(|profile| self.try_profile(spec, image, Some(*profile))),
                )
                .await;
                for (profile, outcome) in candidates.iter().zip(outcomes) {
                    match outcome? {
                        Probe::Accepted => {
                            chosen = Some(*profile);
                            break;
                        }
                        Probe::Refused(why) => refusals.push(format!("{profile}: {why}")),
                        Probe::Broken(why) => {
                            broken = Some(format!("{profile}: {why}"));
                            break;
                        }
                    }
                }
                if chosen.is_none() {
                    // Before blaming the privileges: can the engine start a plain container?
                    let plain = self.try_profile(spec, image, None).await?;
                    let plain_fails = plain != Probe::Accepted;
                    if let (Probe::Refused(why) | Probe::Broken(why), None) = (&plain, &broken) {
                        broken = Some(format!("a plain container: {why}"));
                    }
                    if let Some(why) = broken {
                        return Err(DriverError::Backend {
                            op: format!("creating node `{}`", spec.name),
                            message: format!(
                                "the container engine cannot start the node's container ({why}); the node was not created"
                            ),
                            hint: Some(broken_hint(&why, plain_fails)),
                        });
                    }
                }
                let Some(chosen) = chosen else {
                    return Err(DriverError::Backend {
                        op: format!("creating node `{}`", spec.name),
                        message: format!(
                            "the Docker daemon refuses every security profile k3s can run with ({})",
                            refusals.join("; ")
                        ),
                        hint: Some("run timonel against a Docker daemon that allows privileged containers".into()),
                    });
                };
                cache.insert(key, chosen);
                if let (Some(file), Some(dk)) = (&file, daemon_key) {
                    write_verdict(file, dk, chosen);
                }
                chosen
            }
        };
        Ok(chosen)
    }

    /// What tells this daemon from others across runs, for the remembered verdicts. Docker's
    /// `/info` ID is stable; Podman's compatible service answers a new random ID with every
    /// request, so a Podman service is known by its socket and its machine's name instead.
    async fn daemon_identity(&self) -> Option<String> {
        let info = self
            .daemon_info("asking the Docker daemon for its ID")
            .await
            .ok()?;
        let podman = match self.engine.get() {
            Some(engine) => engine.podman,
            None => {
                let version = self.client().await.ok()?.version().await.ok()?;
                crate::engine::podman_component(&version).is_some()
            }
        };
        if podman {
            Some(format!(
                "podman {} on {}",
                self.host,
                info.name.unwrap_or_default()
            ))
        } else {
            info.id
        }
    }

    /// [`PROBE_IMAGE`], imported when the daemon lacks it (one empty folder: no download).
    async fn probe_image(&self) -> Result<String, DriverError> {
        let docker = self.client().await?;
        match docker.inspect_image(PROBE_IMAGE).await {
            Ok(_) => return Ok(PROBE_IMAGE.to_string()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(DriverError::backend(
                    format!("inspecting image `{PROBE_IMAGE}`"),
                    error_text(&e),
                ))
            }
        }
        let (repo, tag) = PROBE_IMAGE
            .split_once(':')
            .unwrap_or((PROBE_IMAGE, "latest"));
        let tar = tar_stream(|b| append_dir(b, "etc", 0o755, 0));
        let import = Import {
            repo,
            tag,
            message: "timonel security probe (an empty folder)".into(),
            changes: vec![format!(r#"LABEL {LABEL_IMAGE}="probe""#)],
            source: "the probe image's folder".into(),
        };
        import_rootfs(docker, import, tar, 1024, &timonel_driver::SilentReporter).await?;
        Ok(PROBE_IMAGE.to_string())
    }

    /// Starts a throwaway container with `profile` (None: a plain container, no privileges).
    async fn try_profile(
        &self,
        spec: &MachineSpec,
        image: &str,
        profile: Option<SecurityProfile>,
    ) -> Result<Probe, DriverError> {
        let docker = self.client().await?;
        let host = match profile {
            // The node's own settings, minus network, ports, volumes and restart policy.
            Some(profile) => {
                // The node's config as if it ran the probe image (a spec made ahead has none).
                let probe = MachineSpec {
                    image: Some(image.to_string()),
                    ..spec.clone()
                };
                let node = container_config(&probe, profile, std::net::Ipv4Addr::LOCALHOST)?;
                let node_host = node.host_config.unwrap_or_default();
                HostConfig {
                    privileged: node_host.privileged,
                    cap_add: node_host.cap_add,
                    security_opt: node_host.security_opt,
                    devices: node_host.devices,
                    cgroupns_mode: node_host.cgroupns_mode,
                    masked_paths: node_host.masked_paths,
                    readonly_paths: node_host.readonly_paths,
                    init: Some(false),
                    network_mode: Some("none".into()),
                    ..Default::default()
                }
            }
            None => HostConfig {
                init: Some(false),
                network_mode: Some("none".into()),
                ..Default::default()
            },
        };
        let profile = profile.map_or("plain".to_string(), |p| p.to_string());
        let config = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/timonel-security-probe".into()]),
            cmd: Some(Vec::new()),
            labels: Some(
                [
                    (LABEL_CLUSTER, Some(spec.cluster.as_str())),
                    (LABEL_HOME, spec.owner.as_deref()),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                .collect(),
            ),
            host_config: Some(host),
            ..Default::default()
        };
        let name = format!(
            "{NAME_PREFIX}{}-security-probe-{}-{profile}",
            spec.name,
            std::process::id()
        );
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker.create_container(Some(options), config).await;
        let outcome = match created {
            // Refused at create (dockerd checks cgroup namespaces there): sorted the same way,
            // except that an unknown failure is the request's, not the profile's.
            Err(e) => match classify(&error_text(&e)) {
                Probe::Accepted => Err(DriverError::backend(
                    format!("creating container `{name}`"),
                    error_text(&e),
                )),
                sorted => Ok(sorted),
            },
            Ok(_) => match docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                // The probe program does not exist: a runtime that starts it anyway is odd,
                // but nothing was refused.
                Ok(()) => Ok(Probe::Accepted),
                Err(e) => {
                    let sorted = classify(&error_text(&e));
                    tracing::debug!(?sorted, %profile, "security probe");
                    Ok(sorted)
                }
            },
        };
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = docker.remove_container(&name, Some(remove)).await;
        outcome
    }
}

fn read_verdicts(file: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Remembers a verdict (best effort: a failure only costs the probe next time).
fn write_verdict(file: &std::path::Path, key: String, profile: SecurityProfile) {
    let mut all = read_verdicts(file);
    all.insert(key, profile.as_str().to_string());
    let Ok(text) = serde_json::to_vec_pretty(&all) else {
        return;
    };
    let Some(dir) = file.parent() else {
        return;
    };
    let _ = std::fs::create_dir_all(dir);
    let tmp = dir.join(format!(".docker-security.{}.tmp", std::process::id()));
    // A failed write (a full disk) or rename leaves no half-written temp file behind.
    if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn verdicts_are_remembered_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/docker-security.json");
        assert!(read_verdicts(&file).is_empty());
        write_verdict(
            &file,
            "daemon-a|img|privileged".into(),
            SecurityProfile::ReducedCapabilities,
        );
        write_verdict(
            &file,
            "daemon-b|img|privileged".into(),
            SecurityProfile::Privileged,
        );
        let all = read_verdicts(&file);
        assert_eq!(
            all.get("daemon-a|img|privileged").map(String::as_str),
            Some("capabilities-reduced")
        );
        assert_eq!(
            SecurityProfile::parse(&all["daemon-b|img|privileged"]),
            Some(SecurityProfile::Privileged)
        );
        assert_eq!(SecurityProfile::parse("bogus"), None);
        // No temp file left behind.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_acceptances() {
        let refused = "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply caps: operation not permitted: unknown";
        let ok = "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/timonel-security-probe\": stat /timonel-security-probe: no such file or directory: unknown";
        assert!(is_refusal(refused));
        assert!(!is_refusal(ok));
        assert_eq!(classify(ok), Probe::Accepted);
        // crun, rootless --privileged (Podman 4.4): the privileged profile is refused.
        let crun = "crun: create device `/dev/tty`: No such device or address: OCI runtime attempted to invoke a command that was not found";
        assert!(matches!(classify(crun), Probe::Refused(_)));
        let crun_ok = "crun: executable file `/timonel-security-probe` not found in $PATH: No such file or directory: OCI runtime attempted to invoke a command that was not found";
        assert_eq!(classify(crun_ok), Probe::Accepted);
    }

    #[test]
    fn failures_that_are_not_about_privileges_are_the_engines() {
        // Podman 4.3 as root without CAP_SYS_RESOURCE: every container, whatever its profile.
        let rlimit = "runc: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: OCI permission denied";
        assert!(matches!(classify(rlimit), Probe::Broken(_)));
        assert!(broken_hint(rlimit, true).contains("default_ulimits"));
        // dockerd at create, `--cgroupns=private` on a kernel without cgroup namespaces.
        let cgroupns = "cgroup namespaces aren't enabled in the kernel";
        assert!(matches!(classify(cgroupns), Probe::Broken(_)));
        assert!(broken_hint(cgroupns, false).contains("CONFIG_CGROUP_NS"));
        let mount = "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting \"cgroup\" to rootfs at \"/sys/fs/cgroup\": mount cgroup:/sys/fs/cgroup/openrc (via /proc/self/fd/7), flags: 0xf, data: openrc: invalid argument: unknown";
        assert!(matches!(classify(mount), Probe::Broken(_)));
        assert!(broken_hint(mount, false).contains("/sys/fs/cgroup"));
        // An unknown failure is not taken for acceptance.
        assert!(matches!(
            classify("something else went wrong"),
            Probe::Broken(_)
        ));
        assert!(broken_hint("x", true).contains("plain container"));
    }
}
