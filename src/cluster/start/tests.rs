//! `start` against the fake driver: planning, rollback, resume and interrupts, in milliseconds
//! and without a daemon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use timonel_driver::fake::FakeDriver;
use timonel_driver::{Driver, MachineName, NodeKind, NodeRole, StopMode};

use super::plan;
use super::*;
use crate::distro::k3s;
use crate::distro::ready::WaitFor;
use crate::home::Home;
use crate::output::Printer;

const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Y2E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
users:
- name: default
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
";

pub(super) struct World {
    _dir: tempfile::TempDir,
    pub ctx: Ctx,
    pub fake: FakeDriver,
    kubeconfig: std::path::PathBuf,
}

pub(super) fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let fake = FakeDriver::new();
    fake.write_on_server_start(k3s::KUBECONFIG_PATH, K3S_YAML.as_bytes());
    let ctx = Ctx::new(Printer::quiet(), home, "dev".parse().unwrap())
        .with_driver(Arc::new(fake.clone()));
    World {
        kubeconfig: dir.path().join("kube").join("config"),
        _dir: dir,
        ctx,
        fake,
    }
}

pub(super) fn opts(w: &World, nodes: u32, control_planes: u32) -> StartOptions {
    StartOptions {
        driver: None,
        version: Some("v1.31.2+k3s1".to_string()),
        nodes,
        control_planes,
        cpus: None,
        memory_mib: None,
        wait: WaitFor::None,
        wait_timeout: Duration::from_secs(2),
        keep_context: false,
        kubeconfig: Some(w.kubeconfig.clone()),
        standalone: false,
        disable: Vec::new(),
        env: Vec::new(),
        // An image of the user's: nothing is downloaded.
        node_image: Some("fake/k3s:v1.31.2-k3s1".to_string()),
        ca_certs: Vec::new(),
        registry_mirrors: Vec::new(),
        k3s_args: Default::default(),
        vm_image: None,
        disk_mib: None,
        hyperv_switch: None,
        apiserver_port: None,
        listen_address: IpAddr::from([127, 0, 0, 1]),
        ports: Vec::new(),
        mounts: Vec::new(),
        keep_on_failure: false,
        preload: false,
        sources: Default::default(),
        ssh: None,
    }
}

pub(super) fn m(name: &str) -> MachineName {
    name.parse().unwrap()
}

#[tokio::test]
async fn a_fresh_start_creates_every_node_and_merges_the_context() {
    let w = world();
    start(&w.ctx, opts(&w, 3, 1), &Cancel::default())
        .await
        .unwrap();
    let nodes = w.fake.nodes();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.values().all(|running| *running));
    let profile = w.ctx.store.load(&w.ctx.profile).unwrap();
    assert_eq!(profile.phase, Phase::Running);
    // The first server runs first; the others join it.
    assert_eq!(w.fake.calls()[..2], ["create dev", "start dev"]);
    let agent = w.fake.spec(&m("dev-m02")).unwrap();
    let config = agent
        .files
        .iter()
        .find(|f| f.path == k3s::CONFIG_PATH)
        .unwrap();
    let timonel_driver::FileSource::Bytes(bytes) = &config.source else {
        panic!("config.yaml is not bytes")
    };
    assert!(String::from_utf8_lossy(bytes).contains("https://10.99.0.1:6443"));
    let kubeconfig = std::fs::read_to_string(&w.kubeconfig).unwrap();
    assert!(kubeconfig.contains("current-context: dev"), "{kubeconfig}");
    let server = profile.server().unwrap();
    assert!(kubeconfig.contains(&format!("https://127.0.0.1:{}", server.api_port.unwrap())));
}

#[tokio::test]
async fn a_standalone_start_and_delete_touch_no_kubeconfig_of_the_user_s() {
    let w = world();
    let mut o = opts(&w, 2, 1);
    o.standalone = true;
    start(&w.ctx, o, &Cancel::default()).await.unwrap();
    assert!(!w.kubeconfig.exists(), "the user's kubeconfig was written");
    let profile = w.ctx.store.load(&w.ctx.profile).unwrap();
    assert_eq!(profile.phase, Phase::Running);
    assert_eq!(profile.kubeconfig, None);
    let own = w
        .ctx
        .store
        .dir(&w.ctx.profile)
        .join(crate::cluster::KUBECONFIG_FILE);
    assert!(std::fs::read_to_string(own)
        .unwrap()
        .contains("current-context: dev"));

    crate::cluster::delete_standalone(&w.ctx).await.unwrap();
    assert!(w.fake.nodes().is_empty());
    assert!(!w.ctx.store.exists(&w.ctx.profile));
    assert!(!w.kubeconfig.exists());
}

#[tokio::test]
async fn roles_and_ports_are_planned_per_node_kind() {
    let w = world();
    let o = opts(&w, 4, 2);
    let containers = plan::ports(&o, NodeKind::Container, false).unwrap();
    assert_eq!((containers.api.len(), containers.ssh.len()), (2, 0));
    assert_ne!(containers.api[0], containers.api[1]);
    let vms = plan::ports(&o, NodeKind::Vm, false).unwrap();
    assert_eq!((vms.api.len(), vms.ssh.len()), (2, 4));
    let machines = plan::ports(&o, NodeKind::Machine, false).unwrap();
    assert_eq!(machines.api, vec![k3s::API_PORT; 2]);

    assert_eq!(containers.balancer, None);
    // Servers behind a load balancer: one port more, and --apiserver-port is the balancer's.
    let mut o3 = opts(&w, 3, 3);
    o3.apiserver_port = Some(free_ports(o3.listen_address, 1, None).unwrap()[0]);
    let balanced = plan::ports(&o3, NodeKind::Container, true).unwrap();
    assert_eq!(balanced.balancer, o3.apiserver_port);
    assert_eq!(balanced.api.len(), 3);
    assert!(!balanced.api.contains(&balanced.balancer.unwrap()));
    // Machines serve the API on their own port 6443; only the balancer's port is here.
    let machines = plan::ports(&o3, NodeKind::Machine, true).unwrap();
    assert_eq!(machines.api, vec![k3s::API_PORT; 3]);
    assert_eq!(machines.balancer, o3.apiserver_port);

    let fetched = artifacts::Fetched {
        version: "v1.31.2+k3s1".into(),
        ..Default::default()
    };
    let profile = plan::profile(
        &w.ctx,
        &o,
        timonel_driver::DriverKind::Fake,
        &fetched,
        None,
        None,
        &containers,
    )
    .unwrap();
    let roles: Vec<NodeRole> = profile.nodes.iter().map(|n| n.role).collect();
    assert_eq!(
        roles,
        [
            NodeRole::Server,
            NodeRole::Server,
            NodeRole::Agent,
            NodeRole::Agent
        ]
    );
    assert!(profile.embedded_etcd);
    assert_eq!(profile.nodes[1].api_port, Some(containers.api[1]));
    assert_eq!(profile.nodes[2].api_port, None);
}

#[tokio::test]
async fn a_failed_start_removes_what_it_created() {
    let w = world();
    w.fake.fail_create(&m("dev-m03"));
    let err = start(&w.ctx, opts(&w, 3, 1), &Cancel::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Driver(_)), "{err:?}");
    assert!(
        w.fake.nodes().is_empty(),
        "left behind: {:?}",
        w.fake.nodes()
    );
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_none());
    assert!(!w.kubeconfig.exists());
}

#[tokio::test]
async fn keep_on_failure_keeps_the_nodes() {
    let w = world();
    w.fake.fail_create(&m("dev-m02"));
    let mut o = opts(&w, 2, 1);
    o.keep_on_failure = true;
    start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    assert_eq!(w.fake.nodes().len(), 1);
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_some());
}

#[tokio::test]
async fn an_interrupted_start_reports_it_and_leaves_nothing() {
    let w = world();
    let cancel = Cancel::default();
    cancel.cancel();
    let err = start(&w.ctx, opts(&w, 2, 1), &cancel).await.unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err:?}");
    assert!(w.fake.nodes().is_empty());
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_none());
}

#[tokio::test]
async fn a_resume_starts_the_same_nodes_and_creates_none() {
    let w = world();
    start(&w.ctx, opts(&w, 2, 1), &Cancel::default())
        .await
        .unwrap();
    for node in ["dev", "dev-m02"] {
        w.fake.stop(&m(node), StopMode::Force).await.unwrap();
    }
    let before = w.fake.calls().len();
    start(&w.ctx, opts(&w, 1, 1), &Cancel::default())
        .await
        .unwrap();
    let calls = w.fake.calls()[before..].to_vec();
    assert!(calls.iter().all(|c| !c.starts_with("create")), "{calls:?}");
    assert!(calls.contains(&"start dev-m02".to_string()), "{calls:?}");
    assert!(w.fake.nodes().values().all(|running| *running));
}

#[tokio::test]
async fn a_resume_refuses_flags_that_would_change_the_cluster() {
    let w = world();
    start(&w.ctx, opts(&w, 2, 1), &Cancel::default())
        .await
        .unwrap();
    let profile = w.ctx.store.load(&w.ctx.profile).unwrap();
    let mut o = opts(&w, 3, 1);
    o.cpus = Some(4.0);
    o.version = Some("v1.30.0+k3s1".into());
    let found = conflicts(&profile, &o);
    assert!(
        found.iter().any(|c| c.starts_with("--nodes 3")),
        "{found:?}"
    );
    assert!(found.contains(&"--cpus".to_string()), "{found:?}");
    assert!(found.iter().any(|c| c.starts_with("--kubernetes-version")));
    assert!(conflicts(&profile, &opts(&w, 1, 1)).is_empty());
    let err = start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    assert!(matches!(err, Error::User(_)), "{err:?}");
}

#[tokio::test]
async fn a_kubeconfig_that_never_appears_is_a_node_timeout() {
    let w = world();
    // No server writes its kubeconfig.
    w.fake.write_on_server_start("/unrelated", b"x");
    let fake = FakeDriver::new();
    let ctx = Ctx::new(Printer::quiet(), w.ctx.home.clone(), "dev".parse().unwrap())
        .with_driver(Arc::new(fake.clone()));
    let mut o = opts(&w, 1, 1);
    o.wait_timeout = Duration::from_millis(300);
    let err = start(&ctx, o, &Cancel::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Driver(timonel_driver::DriverError::Timeout { .. })
        ),
        "{err:?}"
    );
    let reason = crate::cli::report::reason_code(&anyhow::Error::from(err));
    assert_eq!(reason, "NODE_TIMEOUT");
    assert!(fake.nodes().is_empty());
}

fn small_host() -> timonel_driver::HostCapacity {
    timonel_driver::HostCapacity {
        source: "the fake host".into(),
        cpus: Some(4),
        memory_bytes: Some(8 << 30),
        free_disk_bytes: None,
    }
}

#[tokio::test]
async fn more_than_the_host_has_is_refused_before_anything_is_created() {
    let w = world();
    w.fake.set_host(small_host());
    let mut o = opts(&w, 3, 1);
    o.memory_mib = Some(4096);
    let err = start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    let text = format!(
        "{err} {}",
        timonel_driver::Hint::hint(&err).unwrap_or_default()
    );
    assert!(text.contains("3 node(s) x 4.0 GiB"), "{text}");
    assert!(text.contains("8.0 GiB in total"), "{text}");
    assert!(
        text.contains("--memory") && text.contains("--nodes"),
        "{text}"
    );
    let mut o = opts(&w, 1, 1);
    o.cpus = Some(512.0);
    let err = start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    assert!(err.to_string().contains("512 CPUs per node"), "{err}");
    assert_eq!(w.fake.calls(), ["host_resources -", "host_resources -"]);
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_none());
}

#[tokio::test]
async fn what_the_host_has_starts() {
    let w = world();
    w.fake.set_host(small_host());
    let mut o = opts(&w, 2, 1);
    o.memory_mib = Some(4096);
    o.cpus = Some(4.0);
    start(&w.ctx, o, &Cancel::default()).await.unwrap();
    assert_eq!(w.fake.calls()[0], "host_resources -");
    assert_eq!(w.fake.nodes().len(), 2);
}

#[tokio::test]
async fn a_resume_removes_a_node_an_interrupted_node_add_left() {
    let w = world();
    start(&w.ctx, opts(&w, 1, 1), &Cancel::default())
        .await
        .unwrap();
    // What a `node add` killed after recording its node leaves: the record, pending.
    let mut p = w.ctx.store.load(&w.ctx.profile).unwrap();
    let mut half = p.nodes[0].clone();
    half.name = m("dev-m02");
    half.index = 2;
    half.role = NodeRole::Agent;
    half.api_port = None;
    half.pending = true;
    p.nodes.push(half);
    p.phase = crate::profile::Phase::Stopped;
    w.ctx.store.save(&p).unwrap();
    start(&w.ctx, opts(&w, 1, 1), &Cancel::default())
        .await
        .unwrap();
    let p = w.ctx.store.load(&w.ctx.profile).unwrap();
    assert_eq!(p.nodes.len(), 1, "{:?}", p.nodes);
    assert!(w.fake.calls().contains(&"delete dev-m02".to_string()));
    assert_eq!(w.fake.nodes().len(), 1);
}

#[tokio::test]
async fn mounts_on_a_driver_that_cannot_share_folders_are_refused_before_anything_is_made() {
    let w = world();
    let mut o = opts(&w, 1, 1);
    o.mounts = vec![timonel_driver::Mount {
        host: w._dir.path().to_path_buf(),
        node: "/data".into(),
        read_only: true,
    }];
    let err = start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    let text = timonel_driver::error_chain(&err);
    assert!(
        text.contains("--mount cannot be used with the fake driver"),
        "{text}"
    );
    assert!(w.fake.calls().is_empty(), "{:?}", w.fake.calls());
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_none());
}

#[tokio::test]
async fn a_hyperv_switch_on_another_driver_is_refused_before_anything_is_made() {
    let w = world();
    let mut o = opts(&w, 1, 1);
    o.hyperv_switch = Some("LAN".into());
    let err = start(&w.ctx, o, &Cancel::default()).await.unwrap_err();
    let text = timonel_driver::error_chain(&err);
    assert!(
        text.contains("--hyperv-virtual-switch applies to the hyperv driver, not to fake"),
        "{text}"
    );
    assert!(w.fake.calls().is_empty(), "{:?}", w.fake.calls());
    assert!(w.ctx.store.try_load(&w.ctx.profile).unwrap().is_none());
}
