//! Which security profile the daemon accepts, found by experiment before the node is created.
//!
//! Some daemons refuse `--privileged` (a sandbox whose own capability bounding set is reduced
//! answers "unable to apply caps"), and only at start time. Finding out then would be too late
//! for the files placed at creation, so a throwaway container of the node image, with an
//! entrypoint that does not exist, is started once per profile: the runtime applies the
//! privileges before it looks for the program, so "no such file" means the privileges were
//! accepted and "unable to apply caps" means they were refused.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use timonel_driver::{DriverError, MachineSpec, Reporter};

use crate::client::{error_text, DockerDriver};
use crate::config::{container_config, SecurityProfile};
use crate::{LABEL_CLUSTER, LABEL_HOME, NAME_PREFIX};

/// What a start error says about the privileges asked for.
pub(crate) fn is_refusal(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("apply caps")
        || (t.contains("operation not permitted") && !t.contains("no such file"))
}

fn accepted(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("no such file") || t.contains("not found")
}

impl DockerDriver {
    /// The profile for `spec`: `docker.security` when set, else privileged when the daemon
    /// accepts it, else the capability profile, with a warning.
    pub(crate) async fn choose_security(
        &self,
        spec: &MachineSpec,
        image: &str,
        report: &dyn Reporter,
    ) -> Result<SecurityProfile, DriverError> {
        let candidates: &[SecurityProfile] = match SecurityProfile::forced(spec)? {
            Some(SecurityProfile::Privileged) => return Ok(SecurityProfile::Privileged),
            Some(_) => &[
                SecurityProfile::Capabilities,
                SecurityProfile::ReducedCapabilities,
            ],
            None => &[
                SecurityProfile::Privileged,
                SecurityProfile::Capabilities,
                SecurityProfile::ReducedCapabilities,
            ],
        };
        let key = format!("{image}|{}", candidates[0]);
        let mut cache = self.accepted_security.lock().await;
        // A verdict remembered on disk by an earlier run against the same daemon.
        let file = spec
            .options
            .get(crate::OPTION_SECURITY_CACHE)
            .map(std::path::PathBuf::from);
        let daemon_key = match &file {
            Some(_) => match self.client().await?.info().await {
                Ok(info) => info.id.map(|id| format!("{id}|{key}")),
                Err(_) => None,
            },
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
                let mut refusals = Vec::new();
                let mut chosen = None;
                for profile in candidates {
                    match self.try_profile(spec, image, *profile).await? {
                        None => {
                            chosen = Some(*profile);
                            break;
                        }
                        Some(why) => refusals.push(format!("{profile}: {why}")),
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
        if chosen != candidates[0] {
            let caps = chosen.cap_add().join(", ");
            let what = if candidates[0] == SecurityProfile::Privileged {
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

    /// Starts a throwaway container with `profile`. None when accepted, Some(why) when refused.
    async fn try_profile(
        &self,
        spec: &MachineSpec,
        image: &str,
        profile: SecurityProfile,
    ) -> Result<Option<String>, DriverError> {
        let docker = self.client().await?;
        // The node's own settings, minus network, ports, volumes and restart policy.
        let node = container_config(spec, profile, std::net::Ipv4Addr::LOCALHOST)?;
        let node_host = node.host_config.unwrap_or_default();
        let host = HostConfig {
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
        };
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
            "{NAME_PREFIX}{}-security-probe-{}",
            spec.name,
            std::process::id()
        );
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker.create_container(Some(options), config).await;
        let outcome = match created {
            Err(e) => {
                let text = error_text(&e);
                if is_refusal(&text) {
                    Ok(Some(text))
                } else {
                    Err(DriverError::backend(
                        format!("creating container `{name}`"),
                        text,
                    ))
                }
            }
            Ok(_) => match docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                Ok(()) => Ok(None),
                Err(e) => {
                    let text = error_text(&e);
                    if is_refusal(&text) {
                        Ok(Some(text))
                    } else {
                        if !accepted(&text) {
                            tracing::debug!(%text, %profile, "unclear security probe outcome; assuming accepted");
                        }
                        Ok(None)
                    }
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
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, file).is_err() {
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
        assert!(accepted(ok));
    }
}
