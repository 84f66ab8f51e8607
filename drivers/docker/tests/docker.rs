//! The Docker driver against a real daemon (`scripts/start-docker.sh` starts one).
//!
//! Without a daemon each test says why and returns (skips); with `CI=true` it fails instead.
//! The stand-in "k3s" is busybox-static (`apt-get install busybox-static`): it becomes the
//! node image's `/bin/k3s`, and is also placed at `/bin/busybox` so the node's service can be
//! `busybox sh -c '…'` as PID 1, which exits on SIGTERM.
//!
//! Every test uses its own cluster name and a guard that deletes the cluster by label on drop,
//! then checks that nothing labelled with it is left.

// Helpers outside `#[test]` functions panic on purpose too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
};
use timonel_driver::{
    Availability, ClusterName, Cmd, CommandError, Driver, DriverError, FilePlacement, Hint,
    MachineSpec, MachineState, NodeImageSource, NodeRole, PortMapping, Reporter, ServiceSpec,
    StopMode,
};
use timonel_driver_docker::{
    DockerDriver, LABEL_CLUSTER, LABEL_IMAGE, LABEL_SECURITY, OPTION_SECURITY,
    OPTION_SECURITY_CACHE, PROBE_IMAGE,
};

const BUSYBOX: &str = "/bin/busybox";
/// PID 1 of the test nodes: waits until SIGTERM, then exits 0.
const SERVICE: &str = "trap 'exit 0' TERM INT; sleep 100000 & wait";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The driver, or None (after saying why) when the daemon or busybox is missing.
async fn require_docker() -> Option<DockerDriver> {
    let driver = DockerDriver::connect();
    if let Availability::Unusable { reason, fix } = driver.probe().await {
        let message = format!(
            "no usable Docker daemon: {reason} (fix: {fix}; or run scripts/start-docker.sh)"
        );
        assert!(!ci(), "{message}");
        eprintln!("skipping: {message}");
        return None;
    }
    if !Path::new(BUSYBOX).exists() {
        let message = format!("{BUSYBOX} is missing (apt-get install busybox-static)");
        assert!(!ci(), "{message}");
        eprintln!("skipping: {message}");
        return None;
    }
    Some(driver)
}

fn unique_cluster(tag: &str) -> ClusterName {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{n}", std::process::id() % 100_000)
        .parse()
        .unwrap()
}

/// Deletes the cluster (and any extra containers) by label on drop, then checks for leftovers.
struct ClusterGuard {
    cluster: ClusterName,
    extra_containers: Vec<String>,
}

impl ClusterGuard {
    fn new(cluster: &ClusterName) -> Self {
        Self {
            cluster: cluster.clone(),
            extra_containers: Vec::new(),
        }
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let extra = std::mem::take(&mut self.extra_containers);
        let panicking = std::thread::panicking();
        // A fresh runtime on a fresh thread: Drop may run inside a test's runtime.
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let driver = DockerDriver::connect();
                let docker = bollard::Docker::connect_with_defaults().unwrap();
                for name in extra {
                    let opts = RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build();
                    let _ = docker.remove_container(&name, Some(opts)).await;
                }
                driver
                    .delete_cluster(&cluster)
                    .await
                    .map_err(|e| e.to_string())?;
                leftovers(&cluster).await
            })
        })
        .join();
        match result {
            Ok(Ok(left)) if left.is_empty() => {}
            Ok(Ok(left)) if !panicking => panic!("left behind for {}: {left:?}", self.cluster),
            Ok(Err(e)) if !panicking => panic!("delete_cluster {} failed: {e}", self.cluster),
            _ => {}
        }
    }
}

/// Containers, volumes and networks still labelled with `cluster`.
async fn leftovers(cluster: &ClusterName) -> Result<Vec<String>, String> {
    let docker = bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .map_err(|e| e.to_string())?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_CLUSTER}={cluster}")])]);
    let mut left = Vec::new();
    let containers = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    left.extend(
        containers
            .into_iter()
            .map(|c| format!("container {:?}", c.names)),
    );
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    left.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| format!("volume {}", v.name)),
    );
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    left.extend(
        networks
            .into_iter()
            .map(|n| format!("network {:?}", n.name)),
    );
    Ok(left)
}

#[derive(Default)]
struct Recorder {
    steps: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn step(&self, message: &str) {
        self.steps.lock().unwrap().push(message.to_string());
    }
    fn progress(&self, _: u64, _: Option<u64>) {}
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

/// A node image built from `binary` alone, its sha256 hashed by the driver.
fn source<'a>(binary: &'a Path, version: &'a str) -> NodeImageSource<'a> {
    NodeImageSource {
        version,
        binary,
        binary_sha256: None,
        airgap: None,
        airgap_sha256: None,
    }
}

/// A bollard client of the daemon under test, for what the driver does not expose.
async fn raw_docker() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// A copy of the host's busybox standing for a k3s binary, in a folder of its own.
fn busybox_binary() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("k3s");
    std::fs::copy(BUSYBOX, &binary).unwrap();
    (dir, binary)
}

/// The node image all tests share, built once per test binary from busybox.
async fn test_image(driver: &DockerDriver) -> String {
    static IMAGE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            driver
                .ensure_node_image(
                    &source(Path::new(BUSYBOX), "v0.0.0+timonel-test"),
                    &Recorder::default(),
                )
                .await
                .unwrap()
        })
        .await
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node_spec(cluster: &ClusterName, index: u32, image: &str) -> MachineSpec {
    let mut spec = MachineSpec::new(
        cluster.machine(index),
        cluster.clone(),
        NodeRole::Server,
        index,
    );
    spec.image = Some(image.to_string());
    spec.memory_mib = Some(256);
    spec.cpus = Some(0.5);
    spec.files = vec![FilePlacement::host_file("/bin/busybox", 0o755, BUSYBOX)];
    spec.service = Some(ServiceSpec {
        program: "/bin/busybox".into(),
        args: vec!["sh".into(), "-c".into(), SERVICE.into()],
        env: vec![("TIMONEL_TEST".into(), "yes".into())],
    });
    spec
}

fn busybox(args: &[&str]) -> Cmd {
    Cmd::new("/bin/busybox")
        .args(args.iter().copied())
        .timeout(Duration::from_secs(30))
}

#[tokio::test]
async fn node_image_is_built_locally_and_reused() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let (_dir, binary) = busybox_binary();
    let version = format!("v0.0.1+build{}", std::process::id());
    let report = Recorder::default();
    let image = driver
        .ensure_node_image(&source(&binary, &version), &report)
        .await
        .unwrap();
    assert_eq!(
        image,
        format!("timonel/k3s:v0.0.1-build{}", std::process::id())
    );
    assert!(report
        .steps
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.contains("building")));

    let docker = raw_docker().await;
    let first = docker.inspect_image(&image).await.unwrap();
    let config = first.config.clone().unwrap();
    assert_eq!(config.entrypoint, Some(vec!["/bin/k3s".to_string()]));
    assert_eq!(config.cmd, Some(vec!["agent".to_string()]));
    let env = config.env.unwrap();
    assert!(
        env.contains(&"PATH=/bin:/usr/bin:/sbin:/usr/sbin:/bin/aux".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"CRI_CONFIG_FILE=/var/lib/rancher/k3s/agent/etc/crictl.yaml".to_string()));
    let volumes = config.volumes.unwrap();
    for v in [
        "/var/lib/kubelet",
        "/var/lib/rancher/k3s",
        "/var/lib/cni",
        "/var/log",
    ] {
        assert!(volumes.contains(&v.to_string()), "{volumes:?}");
    }
    let labels = config.labels.unwrap();
    assert_eq!(labels["dev.timonel.image"], "node");
    assert_eq!(labels["dev.timonel.k3s-version"], version);
    assert_eq!(labels["dev.timonel.k3s-sha256"].len(), 64);

    // Second call: reused, no build.
    let again = Recorder::default();
    assert_eq!(
        driver
            .ensure_node_image(&source(&binary, &version), &again)
            .await
            .unwrap(),
        image
    );
    assert!(
        again.steps.lock().unwrap().is_empty(),
        "{:?}",
        again.steps.lock().unwrap()
    );
    assert_eq!(docker.inspect_image(&image).await.unwrap().id, first.id);

    // A changed binary: rebuilt under the same tag, the old build removed.
    let mut data = std::fs::read(&binary).unwrap();
    data.extend_from_slice(b"changed");
    std::fs::write(&binary, data).unwrap();
    let changed = Recorder::default();
    driver
        .ensure_node_image(&source(&binary, &version), &changed)
        .await
        .unwrap();
    let rebuilt = docker.inspect_image(&image).await.unwrap();
    assert_ne!(rebuilt.id, first.id);
    assert!(changed
        .steps
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.contains("changed")));
    assert!(
        docker
            .inspect_image(first.id.as_deref().unwrap())
            .await
            .is_err(),
        "old build kept"
    );

    let _ = docker
        .remove_image(
            &image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}

/// The airgap tarball travels in the image: a node made from it finds the tarball in k3s's
/// images folder (its volume holds a link to the image's one copy), and a changed tarball
/// rebuilds the image.
#[tokio::test]
async fn node_image_carries_the_airgap_images_into_every_node() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let airgap = dir.path().join("k3s-airgap-images-amd64.tar.zst");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&airgap, &content).unwrap();
    let version = format!("v0.0.2+airgap{}", std::process::id());
    let mut src = source(Path::new(BUSYBOX), &version);
    src.airgap = Some(&airgap);
    let report = Recorder::default();
    let image = driver.ensure_node_image(&src, &report).await.unwrap();
    let docker = raw_docker().await;
    let _image_guard = ImageGuard(image.clone());
    let labels = docker
        .inspect_image(&image)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    let sha = sha256_hex(&content);
    assert_eq!(labels["dev.timonel.airgap-sha256"], sha);

    let cluster = unique_cluster("airgap");
    let _guard = ClusterGuard::new(&cluster);
    let spec = node_spec(&cluster, 1, &image);
    driver.create(&spec, &report).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    let node = driver.access(&spec.name).await.unwrap();
    let linked = "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst";
    let out = node.run(&busybox(&["readlink", linked])).await.unwrap();
    assert_eq!(
        out.stdout.trim(),
        "/var/lib/timonel/airgap/k3s-airgap-images-amd64.tar.zst"
    );
    let out = node.run(&busybox(&["sha256sum", linked])).await.unwrap();
    assert!(out.stdout.starts_with(&sha), "{}", out.stdout);
    // The volume holds the link, not a copy.
    let out = node
        .run(&busybox(&["du", "-s", "/var/lib/rancher/k3s"]))
        .await
        .unwrap();
    let kib: u64 = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib < 100, "the volume has {kib} KiB");
    driver.delete(&spec.name).await.unwrap();

    // Same files: reused. A changed tarball: rebuilt, and said why.
    let again = Recorder::default();
    driver.ensure_node_image(&src, &again).await.unwrap();
    assert!(again.steps.lock().unwrap().is_empty());
    std::fs::write(&airgap, b"other images").unwrap();
    let changed = Recorder::default();
    driver.ensure_node_image(&src, &changed).await.unwrap();
    let steps = changed.steps.lock().unwrap().clone();
    assert!(
        steps.iter().any(|s| s.contains("airgap images changed")),
        "{steps:?}"
    );
}

/// Removes a test's image when dropped.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn lifecycle_exec_copy_stop_start_delete() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let image = test_image(&driver).await;
    let cluster = unique_cluster("life");
    let _guard = ClusterGuard::new(&cluster);
    let port = free_port();
    let mut spec = node_spec(&cluster, 1, &image);
    spec.ports = vec![PortMapping {
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        node_port: 6443,
        protocol: "tcp".into(),
    }];
    spec.files.push(FilePlacement::bytes(
        "/etc/rancher/k3s/config.yaml",
        0o600,
        "token: abc\n",
    ));
    spec.files
        .push(FilePlacement::bytes("/opt/new/dir/file", 0o640, "deep"));
    let report = Recorder::default();

    driver.create(&spec, &report).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    driver
        .create(&spec, &report)
        .await
        .expect("create twice is Ok");
    let mut other = spec.clone();
    other.cpus = Some(1.0);
    let err = driver.create(&other, &report).await.unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists { .. }), "{err}");

    driver.start(&spec.name).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Running
    );
    let ip = driver.ip(&spec.name).await.unwrap();
    let IpAddr::V4(v4) = ip else { panic!("{ip}") };
    assert_eq!(v4.octets()[3], 2, "first node is .2: {ip}");
    assert_eq!(
        driver.endpoint(&spec.name, 6443).await.unwrap(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    );
    assert!(matches!(
        driver.endpoint(&spec.name, 9999).await,
        Err(DriverError::NotFound { .. })
    ));

    let node = driver.access(&spec.name).await.unwrap();
    let out = node
        .run(&busybox(&["cat", "/etc/rancher/k3s/config.yaml"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, "token: abc\n");
    let modes = node
        .run(&busybox(&[
            "stat",
            "-c",
            "%a %n",
            "/etc/rancher/k3s/config.yaml",
            "/opt/new/dir/file",
            "/opt/new",
            "/tmp",
            "/bin/k3s",
            "/etc/ssl/certs/ca-certificates.crt",
        ]))
        .await
        .unwrap();
    assert_eq!(
        modes.stdout,
        "600 /etc/rancher/k3s/config.yaml\n640 /opt/new/dir/file\n755 /opt/new\n1777 /tmp\n755 /bin/k3s\n644 /etc/ssl/certs/ca-certificates.crt\n"
    );
    let env = node
        .run(&busybox(&["cat", "/proc/1/environ"]))
        .await
        .unwrap();
    assert!(env.stdout.contains("TIMONEL_TEST=yes"), "{:?}", env.stdout);
    let os = node
        .run(&busybox(&["cat", "/etc/os-release"]))
        .await
        .unwrap();
    assert!(os.stdout.contains("ID=timonel") && os.stdout.contains("v0.0.0+timonel-test"));
    let hostname = node.run(&busybox(&["hostname"])).await.unwrap();
    assert_eq!(hostname.stdout.trim(), spec.hostname);

    // stdin, stderr and exit codes, a missing program, a timeout.
    let fed = node
        .run(&busybox(&["cat"]).stdin(b"through stdin".to_vec()))
        .await
        .unwrap();
    assert_eq!(fed.stdout, "through stdin");
    let err = node
        .run(&busybox(&["sh", "-c", "echo out; echo why >&2; exit 3"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(3));
    assert_eq!(err.stderr().trim(), "why");
    let env_cmd = busybox(&["sh", "-c", "echo $GREETING"]).env("GREETING", "hi");
    assert_eq!(node.run(&env_cmd).await.unwrap().stdout, "hi\n");
    let missing = node.run(&Cmd::new("/no/such/program")).await.unwrap_err();
    assert!(
        matches!(missing, CommandError::NotFound { .. }),
        "{missing}"
    );
    let slow = busybox(&["sleep", "5"]).timeout(Duration::from_millis(300));
    assert!(matches!(
        node.run(&slow).await,
        Err(CommandError::Timeout { .. })
    ));

    // Round trip of a multi-MB host file, streamed.
    let dir = tempfile::tempdir().unwrap();
    let big: PathBuf = dir.path().join("big.bin");
    let data: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    node.copy_in(&[
        FilePlacement::host_file("/var/lib/rancher/k3s/agent/images/big.bin", 0o644, &big),
        FilePlacement::bytes("/tmp/a/b/small.txt", 0o600, "small"),
    ])
    .await
    .unwrap();
    assert_eq!(
        node.copy_out("/var/lib/rancher/k3s/agent/images/big.bin")
            .await
            .unwrap(),
        data
    );
    assert_eq!(node.copy_out("/tmp/a/b/small.txt").await.unwrap(), b"small");
    assert!(node
        .copy_out("/no/such/file")
        .await
        .unwrap_err()
        .is_not_found());
    let tmp = node
        .run(&busybox(&["stat", "-c", "%a", "/tmp"]))
        .await
        .unwrap();
    assert_eq!(
        tmp.stdout.trim(),
        "1777",
        "copy_in must not change existing directories"
    );

    // Graceful stop: PID 1 gets SIGTERM and exits long before the deadline.
    let started = Instant::now();
    driver
        .stop(&spec.name, StopMode::graceful(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "SIGTERM ignored? {:?}",
        started.elapsed()
    );
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    assert!(matches!(
        driver.ip(&spec.name).await,
        Err(DriverError::InvalidState { .. })
    ));
    // Stopped, the published port is still known (the lead keeps it).
    assert_eq!(
        driver.endpoint(&spec.name, 6443).await.unwrap().port(),
        port
    );

    driver.start(&spec.name).await.unwrap();
    assert_eq!(
        driver.ip(&spec.name).await.unwrap(),
        ip,
        "same address after a restart"
    );
    let node = driver.access(&spec.name).await.unwrap();
    let kept = node
        .run(&busybox(&[
            "stat",
            "-c",
            "%s",
            "/var/lib/rancher/k3s/agent/images/big.bin",
        ]))
        .await
        .unwrap();
    assert_eq!(
        kept.stdout.trim(),
        data.len().to_string(),
        "the k3s volume survives a restart"
    );

    driver.stop(&spec.name, StopMode::Force).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Stopped
    );
    driver
        .stop(&spec.name, StopMode::Force)
        .await
        .expect("stopping a stopped node is Ok");

    driver.delete(&spec.name).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::NotCreated
    );
    driver
        .delete(&spec.name)
        .await
        .expect("deleting twice is Ok");
    let left = leftovers(&cluster).await.unwrap();
    assert_eq!(
        left,
        vec![format!("network Some(\"timonel-{cluster}\")")],
        "only the network remains"
    );

    let removed = driver.delete_cluster(&cluster).await.unwrap();
    assert_eq!(removed, vec![format!("network timonel-{cluster}")]);
    assert!(leftovers(&cluster).await.unwrap().is_empty());
}

#[tokio::test]
async fn contract_suite() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let image = test_image(&driver).await;
    let cluster = unique_cluster("contract");
    let _guard = ClusterGuard::new(&cluster);
    let spec = node_spec(&cluster, 1, &image);
    timonel_driver::contract::suite(&driver, &spec).await;
}

#[tokio::test]
async fn delete_cluster_by_label_after_records_are_gone() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let image = test_image(&driver).await;
    let cluster = unique_cluster("orphan");
    let _guard = ClusterGuard::new(&cluster);
    let (a, b) = (
        node_spec(&cluster, 1, &image),
        node_spec(&cluster, 2, &image),
    );
    let report = Recorder::default();
    // Two nodes created in parallel share one network.
    let (ra, rb) = tokio::join!(driver.create(&a, &report), driver.create(&b, &report));
    ra.unwrap();
    rb.unwrap();
    driver.start(&a.name).await.unwrap();
    driver.start(&b.name).await.unwrap();
    let ip_b = driver.ip(&b.name).await.unwrap();
    let IpAddr::V4(v4) = ip_b else { panic!() };
    assert_eq!(v4.octets()[3], 3, "second node is .3");
    // The nodes reach each other by name on the cluster network.
    let node = driver.access(&a.name).await.unwrap();
    let ping = node
        .run(&busybox(&["ping", "-c", "1", "-W", "5", b.name.as_str()]))
        .await;
    assert!(ping.is_ok(), "{ping:?}");
    drop(driver);

    let fresh = DockerDriver::connect();
    assert!(fresh.list_clusters().await.unwrap().contains(&cluster));
    let removed = fresh.delete_cluster(&cluster).await.unwrap();
    let count = |kind: &str| removed.iter().filter(|l| l.starts_with(kind)).count();
    assert_eq!(count("container "), 2, "{removed:?}");
    assert_eq!(count("volume "), 10, "{removed:?}");
    assert_eq!(count("network "), 1, "{removed:?}");
    assert!(!fresh.list_clusters().await.unwrap().contains(&cluster));
    assert!(leftovers(&cluster).await.unwrap().is_empty());
    assert!(
        fresh.delete_cluster(&cluster).await.unwrap().is_empty(),
        "nothing left the second time"
    );
}

#[tokio::test]
async fn foreign_container_with_our_name_is_left_alone() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let image = test_image(&driver).await;
    let cluster = unique_cluster("foreign");
    let mut guard = ClusterGuard::new(&cluster);
    let spec = node_spec(&cluster, 1, &image);
    let name = format!("timonel-{}", spec.name);
    guard.extra_containers.push(name.clone());
    let docker = raw_docker().await;
    let plain = bollard::models::ContainerCreateBody {
        image: Some(image.clone()),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            plain,
        )
        .await
        .unwrap();

    // An image that is not there is never pulled: a typed error, nothing created.
    let missing = node_spec(&cluster, 2, "timonel/k3s:no-such-tag");
    let err = driver
        .create(&missing, &Recorder::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(leftovers(&cluster).await.unwrap().is_empty());

    let err = driver
        .create(&spec, &Recorder::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::AlreadyExists { .. }), "{err}");
    assert!(
        err.hint()
            .unwrap()
            .contains(&format!("docker rm -f {name}")),
        "{:?}",
        err.hint()
    );
    assert!(
        driver.delete(&spec.name).await.is_err(),
        "deleting a foreign container must be refused"
    );
    assert!(driver
        .delete_cluster(&cluster)
        .await
        .unwrap()
        .iter()
        .all(|l| !l.contains("container")));
    let still = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let labels = still.config.unwrap().labels.unwrap_or_default();
    assert!(
        !labels.contains_key(LABEL_CLUSTER),
        "foreign container untouched: {labels:?}"
    );
}

#[tokio::test]
async fn refused_privileges_fall_back_to_capabilities_with_a_warning() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let image = test_image(&driver).await;
    let cluster = unique_cluster("caps");
    let _guard = ClusterGuard::new(&cluster);
    let spec = node_spec(&cluster, 1, &image);
    let report = Recorder::default();
    driver.create(&spec, &report).await.unwrap();
    driver.start(&spec.name).await.unwrap();
    assert_eq!(
        driver.state(&spec.name).await.unwrap(),
        MachineState::Running
    );

    let docker = raw_docker().await;
    let c = docker
        .inspect_container(
            &format!("timonel-{}", spec.name),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap();
    let host = c.host_config.unwrap();
    let security = c.config.unwrap().labels.unwrap()[LABEL_SECURITY].clone();
    let warnings = report.warnings.lock().unwrap().clone();
    eprintln!("security profile: {security}; warnings: {warnings:?}");
    if warnings.is_empty() {
        assert_eq!(security, "privileged");
        assert_eq!(host.privileged, Some(true));
        return; // this daemon accepts privileged containers: nothing to fall back from
    }
    // This host (and any sandbox that refuses --privileged): the user was told, and the node
    // runs with the capability profile.
    assert!(
        warnings[0].contains("refuses privileged containers"),
        "{warnings:?}"
    );
    assert_ne!(security, "privileged");
    assert_ne!(host.privileged, Some(true));
    let caps = host.cap_add.unwrap();
    for cap in ["SYS_ADMIN", "NET_ADMIN", "NET_RAW"] {
        assert!(caps.contains(&cap.to_string()), "{caps:?}");
    }
    assert!(host
        .security_opt
        .unwrap()
        .contains(&"seccomp=unconfined".to_string()));
    let node = driver.access(&spec.name).await.unwrap();
    let status = node
        .run(&busybox(&["grep", "CapEff", "/proc/1/status"]))
        .await
        .unwrap();
    // CAP_SYS_ADMIN is bit 21.
    let eff = u64::from_str_radix(status.stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(eff & (1 << 21), 0, "SYS_ADMIN missing: {}", status.stdout);

    // Forcing privileged on a daemon that refuses it: a typed error with a hint, at start.
    let mut forced = node_spec(&cluster, 2, &image);
    forced
        .options
        .insert(OPTION_SECURITY.into(), "privileged".into());
    let quiet = Recorder::default();
    driver.create(&forced, &quiet).await.unwrap();
    assert!(quiet.warnings.lock().unwrap().is_empty());
    let err = driver.start(&forced.name).await.unwrap_err();
    assert!(
        err.hint()
            .is_some_and(|h| h.contains("docker.security=capabilities")),
        "{err}"
    );
}

/// A cached binary that no longer matches the sha256 it was verified with (changed in place,
/// size and mtime kept) is caught while the image streams: no image is kept, and the error
/// says which file to remove.
#[tokio::test]
async fn a_binary_that_changed_after_it_was_verified_builds_no_image() {
    let Some(driver) = require_docker().await else {
        return;
    };
    let (_dir, binary) = busybox_binary();
    let version = format!("v0.0.0+timonel-mismatch-{}", std::process::id());
    let wrong = "0".repeat(64);
    let mut src = source(&binary, &version);
    src.binary_sha256 = Some(&wrong);
    let err = driver
        .ensure_node_image(&src, &Recorder::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match its sha256"),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default().to_string();
    assert!(
        hint.contains("remove") && hint.contains(&binary.display().to_string()),
        "{hint}"
    );
    let image = timonel_driver_docker::node_image_ref(&version).unwrap();
    let docker = raw_docker().await;
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "{image} was kept"
    );
}

/// `start` learns the daemon's security verdict beside the download: with a spec that has no
/// image yet, through the small probe image, leaving no container, and remembering the verdict
/// on disk so that a later run (another driver value) creates its node without probing.
#[tokio::test]
async fn learning_ahead_needs_no_node_image_and_leaves_nothing() {
    use timonel_driver::NodeImages;
    let Some(driver) = require_docker().await else {
        return;
    };
    let cluster = unique_cluster("ahead");
    let _guard = ClusterGuard::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let verdicts = dir.path().join("cache/docker-security.json");
    let mut ahead = MachineSpec::new(cluster.machine(1), cluster.clone(), NodeRole::Server, 1);
    ahead
        .options
        .insert(OPTION_SECURITY_CACHE.into(), verdicts.display().to_string());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    NodeImages::learn_ahead(&driver, &ahead).await.unwrap();

    assert_eq!(leftovers(&cluster).await.unwrap(), Vec::<String>::new());
    let text = std::fs::read_to_string(&verdicts).unwrap();
    let all: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let (key, verdict) = all.into_iter().next().unwrap();
    assert!(key.ends_with("|probe|privileged"), "{key}");
    let verdict = timonel_driver_docker::SecurityProfile::parse(&verdict).unwrap();
    let docker = raw_docker().await;
    let probe = docker.inspect_image(PROBE_IMAGE).await.unwrap();
    let labels = probe.config.unwrap().labels.unwrap_or_default();
    assert_eq!(labels.get(LABEL_IMAGE).map(String::as_str), Some("probe"));

    // Another process (a fresh driver) creates the node with the remembered verdict: no
    // probe container is made again (the daemon's events would list its name twice: the
    // probes are named by node, process and profile), and the node carries the verdict.
    let fresh = DockerDriver::connect();
    let image = test_image(&fresh).await;
    let mut spec = node_spec(&cluster, 1, &image);
    spec.options = ahead.options.clone();
    fresh.create(&spec, &Recorder::default()).await.unwrap();
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&since.to_string())
        .until(&until.to_string())
        .filters(&HashMap::from([
            ("type", vec!["container".to_string()]),
            ("event", vec!["create".to_string()]),
        ]))
        .build();
    use futures_util::StreamExt;
    let created: Vec<String> = docker
        .events(Some(options))
        .filter_map(|e| async move { e.ok()?.actor?.attributes?.get("name").cloned() })
        .collect()
        .await;
    let probes: Vec<&String> = created
        .iter()
        .filter(|n| n.contains(&format!("{}-security-probe", spec.name)))
        .collect();
    assert!(
        !probes.is_empty(),
        "the events show no probe at all: {created:?}"
    );
    let mut once = probes.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), probes.len(), "probed again: {created:?}");
    let c = docker
        .inspect_container(
            &format!("timonel-{}", spec.name),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        c.config.unwrap().labels.unwrap()[LABEL_SECURITY],
        verdict.to_string()
    );
}

#[tokio::test]
async fn unreachable_daemon_is_a_clear_unusable() {
    let driver = DockerDriver::connect_with_host("unix:///tmp/timonel-no-such-dir/docker.sock");
    match driver.probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(reason.contains("unreachable"), "{reason}");
            assert!(
                reason.contains("/tmp/timonel-no-such-dir/docker.sock"),
                "{reason}"
            );
            assert!(
                fix.contains("DOCKER_HOST") && fix.contains("systemctl start docker"),
                "{fix}"
            );
        }
        ready => panic!("expected Unusable, got {ready:?}"),
    }
    let cluster = unique_cluster("down");
    let err = driver.state(&cluster.machine(1)).await.unwrap_err();
    assert!(matches!(err, DriverError::NotAvailable { .. }), "{err}");
    assert!(err.hint().is_some());
    let bad = DockerDriver::connect_with_host("ftp://nowhere");
    assert!(matches!(bad.probe().await, Availability::Unusable { .. }));
}
