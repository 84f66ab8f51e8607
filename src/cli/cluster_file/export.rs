//! `timonel config export`: the cluster file that recreates a profile's cluster.

use timonel_driver::{DriverKind, NodeRole};

use super::schema::*;
use crate::home::Home;
use crate::profile::Profile;

/// The file for `profile`. What timonel chose by itself is left out, so it is chosen again:
/// the API server's free port, the node image built from the k3s binary, the cached default VM
/// image, the ssh driver's cluster identity.
pub fn export(profile: &Profile, home: &Home) -> Written {
    let nodes: Vec<_> = {
        let mut n: Vec<_> = profile.nodes.iter().filter(|n| !n.pending).collect();
        n.sort_by_key(|n| (n.role != NodeRole::Server, n.index));
        n
    };
    let servers = nodes.iter().filter(|n| n.role == NodeRole::Server).count() as u32;
    let built_image = match profile.driver {
        DriverKind::Docker => timonel_driver_docker::node_image_ref(&profile.version).ok(),
        _ => None,
    };
    let node_image = profile
        .node_image
        .clone()
        .filter(|i| Some(i) != built_image.as_ref());
    let vm_image = profile
        .vm_image
        .as_ref()
        .filter(|p| !p.starts_with(home.cache()))
        .map(|p| p.to_string_lossy().into_owned());
    let disk_size = profile.disk_mib.map(|m| format!("{m}m"));
    let registries =
        (!profile.registry_mirrors.is_empty() || !profile.ca_certs.is_empty()).then(|| {
            WrittenRegistries {
                mirrors: profile.registry_mirrors.clone(),
                ca_certs: profile
                    .ca_certs
                    .iter()
                    .map(|pem| WrittenPem { pem: pem.clone() })
                    .collect(),
            }
        });
    let ssh = profile.ssh.as_ref().map(|s| WrittenSsh {
        machines: nodes
            .iter()
            .filter_map(|n| n.machine.as_ref().map(ToString::to_string))
            .collect(),
        key: s
            .key_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        known_hosts: s
            .known_hosts
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        accept_new_host_keys: s.accept_new_host_keys,
        adopt: s.adopt,
    });
    Written {
        api_version: API_VERSIONS[0].to_string(),
        kind: KIND.to_string(),
        name: profile.name.to_string(),
        driver: profile.driver.to_string(),
        kubernetes_version: profile.version.clone(),
        servers,
        agents: nodes.len() as u32 - servers,
        cpus: profile.cpus,
        memory: profile.memory_mib.map(|m| format!("{m}m")),
        disable: profile.disable.clone(),
        env: profile.env.clone(),
        ports: profile
            .ports
            .iter()
            .map(|p| format!("{}:{}/{}", p.host_port, p.node_port, p.protocol))
            .collect(),
        mounts: profile.mounts.iter().map(ToString::to_string).collect(),
        api_server: WrittenApiServer {
            listen_address: profile.listen_address.to_string(),
        },
        registries,
        node_image,
        k3s_args: (!profile.k3s_args.is_empty()).then(|| profile.k3s_args.clone()),
        vm: (vm_image.is_some() || disk_size.is_some() || profile.hyperv_switch.is_some())
            .then_some(WrittenVm {
                image: vm_image,
                disk_size,
                hyperv_switch: profile.hyperv_switch.clone(),
            }),
        ssh,
    }
}

/// The file's text: a header saying where it came from, then the fields.
pub fn to_yaml(file: &Written) -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(file)?;
    Ok(format!(
        "# The cluster `{name}`, written by `timonel config export -p {name}`.\n\
         # `timonel start --config FILE` creates it again (docs/cluster-file.md).\n\
         {body}",
        name = file.name
    ))
}
