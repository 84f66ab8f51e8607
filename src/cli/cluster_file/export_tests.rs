//! `config export`: what it writes for a profile, and that `start --config` of it gives the
//! same cluster back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use timonel_driver::{DriverKind, NodeRole};

use super::tests::{options, parse_at, start_args, PEM};
use super::*;
use crate::home::Home;

/// A profile with every exported field set: 3 servers and an agent (one pending, left out).
fn rich_profile() -> crate::profile::Profile {
    let mut p = crate::profile::tests::sample("rt");
    let server = p.nodes[0].clone();
    for (i, role, pending) in [
        (2, NodeRole::Server, false),
        (3, NodeRole::Server, false),
        (4, NodeRole::Agent, false),
        (5, NodeRole::Agent, true),
    ] {
        let mut n = server.clone();
        n.name = p.name.machine(i);
        n.index = i;
        n.role = role;
        n.pending = pending;
        p.nodes.push(n);
    }
    p.embedded_etcd = true;
    p.memory_mib = Some(1536);
    p.env = vec!["A=1".into(), "B=x=y".into()];
    p.ports = vec![crate::cluster::parse_port("8443:443/tcp", p.listen_address).unwrap()];
    p.registry_mirrors = vec!["https://mirror.example.com".into()];
    p.ca_certs = vec![PEM.into()];
    p.k3s_args = crate::distro::k3s_args::K3sArgs {
        server: vec!["--node-taint=cp=true:NoSchedule".into()],
        agent: vec![],
        all: vec![
            "--kubelet-arg=eviction-hard=memory.available<5%".into(),
            "--kubelet-arg=max-pods=50".into(),
        ],
    };
    // A host folder that exists wherever the test runs.
    let host = std::path::absolute(std::env::temp_dir()).unwrap();
    p.mounts = vec![timonel_driver::Mount::new(host, "/data", true).unwrap()];
    p
}

#[test]
fn export_then_start_config_gives_the_same_options() {
    let p = rich_profile();
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let text = to_yaml(&export(&p, &home)).unwrap();
    // The node image timonel built for the version is chosen again, not pinned.
    assert!(!text.contains("nodeImage"), "{text}");
    let o = options(&["start"], &text, "{}");
    assert_eq!(o.driver, Some(p.driver));
    assert_eq!(o.version.as_deref(), Some(p.version.as_str()));
    assert_eq!((o.nodes, o.control_planes), (4, 3));
    assert_eq!(o.cpus, p.cpus);
    assert_eq!(o.memory_mib, p.memory_mib);
    assert_eq!(o.disable, p.disable);
    assert_eq!(o.env, p.env);
    assert_eq!(o.ports, p.ports);
    assert_eq!(o.mounts, p.mounts);
    assert_eq!(o.listen_address, p.listen_address);
    assert_eq!(o.registry_mirrors, p.registry_mirrors);
    assert_eq!(o.ca_certs, p.ca_certs);
    assert_eq!(o.k3s_args, p.k3s_args);
    assert_eq!(o.node_image, None);
    // `start --config` of it on the profile itself changes nothing (once the pending node is
    // finished or gone).
    let mut settled = p.clone();
    settled.nodes.retain(|n| !n.pending);
    assert_eq!(
        crate::cluster::start_conflicts(&settled, &o),
        Vec::<String>::new()
    );
    // Other k3s arguments would change it, and are refused like other flags.
    let mut other = o.clone();
    other.k3s_args.agent.push("--node-label=z=1".into());
    assert_eq!(
        crate::cluster::start_conflicts(&settled, &other),
        ["--k3s-arg"]
    );
    // Exporting the same profile again writes the same text.
    assert_eq!(text, to_yaml(&export(&p, &home)).unwrap());
}

#[test]
fn export_keeps_what_the_user_chose_and_the_ssh_machines() {
    let mut p = crate::profile::tests::sample("rt");
    p.node_image = Some("example/k3s:mine".into());
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let w = export(&p, &home);
    assert_eq!(w.node_image.as_deref(), Some("example/k3s:mine"));

    p.driver = DriverKind::Ssh;
    p.node_image = None;
    p.nodes[0].machine = Some("root@10.0.0.2".parse().unwrap());
    p.ssh = Some(crate::profile::SshSettings {
        cluster_id: "id".into(),
        key_file: Some("/keys/id".into()),
        known_hosts: None,
        accept_new_host_keys: true,
        adopt: false,
    });
    let text = to_yaml(&export(&p, &home)).unwrap();
    let file = parse_at(dir.path(), &text).unwrap();
    let mut args = start_args(&["start"]);
    file.apply(&mut args).unwrap();
    assert_eq!(args.driver, Some(DriverKind::Ssh));
    assert_eq!(args.machines.len(), 1);
    assert_eq!(args.ssh_key, Some(PathBuf::from("/keys/id")));
    assert!(args.ssh_accept_new_host_keys && !args.adopt);
    assert_eq!(file.name.unwrap().as_str(), "rt");

    // A Hyper-V cluster's chosen switch is written and read back.
    p.driver = DriverKind::Hyperv;
    p.ssh = None;
    p.nodes[0].machine = None;
    p.hyperv_switch = Some("LAN Switch".into());
    let text = to_yaml(&export(&p, &home)).unwrap();
    assert!(text.contains("hypervSwitch: LAN Switch"), "{text}");
    let mut args = start_args(&["start"]);
    parse_at(dir.path(), &text)
        .unwrap()
        .apply(&mut args)
        .unwrap();
    assert_eq!(args.hyperv_virtual_switch.as_deref(), Some("LAN Switch"));
}
