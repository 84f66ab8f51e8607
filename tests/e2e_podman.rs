//! End to end on real Podman (rootful) through its Docker-compatible API, with the k3s
//! stand-in, judged by the real kubectl: the Docker driver with `DOCKER_HOST` at Podman's
//! socket, as a user with Podman instead of Docker would run it.
//!
//! The socket is `$TIMONEL_PODMAN_SOCKET`, else `/run/podman/podman.sock`; scripts/test.sh
//! starts the service there (scripts/start-podman.sh). Marked ignored (it needs the service);
//! under CI=true a missing service fails it, elsewhere it skips with the reason.

#![cfg(unix)] // Podman's service is a unix socket
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::io::{Read, Write};
use std::process::{Command, Output};

use support::sandbox::*;

fn socket() -> String {
    std::env::var("TIMONEL_PODMAN_SOCKET").unwrap_or_else(|_| "/run/podman/podman.sock".into())
}

/// Whether Podman's service answers `/_ping` on the socket (CI=true: it must).
fn require_podman() -> bool {
    require_service(&socket(), "scripts/start-podman.sh")
}

/// The service's whole answer to `GET /_ping`.
fn ping(socket: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn require_service(socket: &str, how: &str) -> bool {
    let answer = ping(socket);
    let ok = answer
        .as_ref()
        .is_ok_and(|t| t.starts_with("HTTP/1.") && t.contains(" 200 ") && t.contains("Libpod"));
    if !ok {
        let message = format!(
            "Podman's Docker API does not answer on {socket} ({answer:?}): start it with {how}"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipping: {message}");
    }
    ok
}

/// timonel in the sandbox, against Podman.
fn run(sb: &Sandbox, args: &[&str]) -> Output {
    run_on(&socket(), sb, args)
}

fn run_on(socket: &str, sb: &Sandbox, args: &[&str]) -> Output {
    let out = sb
        .cmd(args)
        .env("DOCKER_HOST", format!("unix://{socket}"))
        .output()
        .unwrap();
    log_output("timonel", args, &out);
    out
}

/// `timonel start` of the stand-in on the engine at `socket`.
fn start_on(socket: &str, sb: &Sandbox) -> Output {
    run_on(
        socket,
        sb,
        &[
            "start",
            "--driver",
            "docker",
            "--kubernetes-version",
            VERSION,
        ],
    )
}

fn podman(args: &[&str]) -> String {
    podman_on(&socket(), args)
}

fn podman_on(socket: &str, args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--url", &format!("unix://{socket}")])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers, volumes and networks in Podman labelled with the profile.
fn podman_leftovers(profile: &str) -> Vec<String> {
    leftovers_in(
        &["podman", "--url", &format!("unix://{}", socket())],
        profile,
    )
}

/// Deletes the profile through Podman when the test ends early.
struct PodmanGuard<'a>(&'a Sandbox);

impl Drop for PodmanGuard<'_> {
    fn drop(&mut self) {
        let _ = run(self.0, &["delete"]);
        self.0.mark_deleted();
    }
}

#[test]
#[ignore = "needs Podman's Docker API service (scripts/start-podman.sh)"]
fn podman_start_stop_delete_with_kubectl_as_the_judge() {
    if !require_podman() {
        return;
    }
    let sb = Sandbox::new("pod");
    let _guard = PodmanGuard(&sb);
    let volumes_before = podman(&["volume", "ls", "-q"]);

    let out = run(
        &sb,
        &[
            "start",
            "--driver",
            "docker",
            "--nodes",
            "2",
            "--kubernetes-version",
            VERSION,
        ],
    );
    assert!(out.status.success(), "start on Podman failed");
    // The driver line names the engine, and that it runs as root.
    let err = stderr(&out);
    assert!(
        err.contains("Using the docker driver (Podman ") && err.contains("rootful)"),
        "{err}"
    );
    assert!(!err.contains("(Docker "), "{err}");

    // The node image was built into Podman's own store, with its configuration.
    let entrypoint = podman(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        "timonel/k3s:v1.31.2-k3s1",
    ]);
    assert_eq!(entrypoint.trim(), r#"["/bin/k3s"]"#);

    let nodes = sb.ready_nodes();
    let agent = format!("{}-m02", sb.profile);
    assert_eq!(nodes, vec![sb.profile.clone(), agent], "kubectl get nodes");

    let st = run(&sb, &["status", "-o", "json"]);
    assert_eq!(st.status.code(), Some(0), "status of a running cluster");
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    assert_eq!(v["api"], "ready");

    let ip = stdout(&run(&sb, &["ip"])).trim().to_string();
    let podman_ip = podman(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"timonel-{}\").IPAddress}}}}",
            sb.profile
        ),
        &format!("timonel-{}", sb.profile),
    ]);
    assert_eq!(ip, podman_ip.trim());

    assert!(run(&sb, &["stop"]).status.success());
    let st = run(&sb, &["status"]);
    assert_eq!(st.status.code(), Some(3), "status of a stopped cluster");
    let out = run(&sb, &["start"]);
    assert!(out.status.success(), "start again failed");
    eventually(
        "both nodes Ready again",
        std::time::Duration::from_secs(60),
        || sb.ready_nodes().len() == 2,
    );

    let out = run(&sb, &["delete"]);
    assert!(out.status.success(), "delete failed");
    assert_eq!(podman_leftovers(&sb.profile), Vec::<String>::new());
    // No anonymous volume left either (the image's VOLUMEs, the probe containers').
    assert_eq!(podman(&["volume", "ls", "-q"]), volumes_before);
    assert!(
        !sb.timonel_home()
            .join("profiles")
            .join(&sb.profile)
            .exists(),
        "the profile is still there"
    );
}

/// Rootless Podman (`scripts/start-podman.sh --rootless USER`, socket in
/// `$TIMONEL_PODMAN_ROOTLESS_SOCKET`): named rootless; on cgroup v1 (these machines) refused
/// before anything is created, since k3s's kubelet would get no cgroups.
#[test]
#[ignore = "needs rootless Podman's service (scripts/start-podman.sh --rootless USER)"]
fn rootless_podman_is_named_and_refused_on_cgroup_v1_before_anything_is_created() {
    let Ok(socket) = std::env::var("TIMONEL_PODMAN_ROOTLESS_SOCKET") else {
        let message = "TIMONEL_PODMAN_ROOTLESS_SOCKET is not set: scripts/test.sh starts rootless Podman (scripts/start-podman.sh --rootless USER) and sets it";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipping: {message}");
        return;
    };
    if !require_service(&socket, "scripts/start-podman.sh --rootless USER") {
        return;
    }
    let sb = Sandbox::new("podrl");
    let images_before = podman_on(&socket, &["images", "-q"]);
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let out = start_on(&socket, &sb);
    let err = stderr(&out);
    if cgroup_v2 {
        // Usable: the driver line says rootless (whether k3s then runs is not judged here).
        assert!(
            err.contains("Podman ") && err.contains("rootless)"),
            "{err}"
        );
        let _ = run_on(&socket, &sb, &["delete"]);
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("Podman 4.") && err.contains("runs rootless on cgroup v1"),
            "{err}"
        );
        assert!(err.contains("cgroup v2"), "the fix is named: {err}");
        // Nothing was created: no image built, no container, volume or network.
        assert_eq!(podman_on(&socket, &["images", "-q"]), images_before);
        let filter = format!("label=dev.timonel.cluster={}", sb.profile);
        assert_eq!(
            podman_on(&socket, &["ps", "-a", "-q", "--filter", &filter]),
            ""
        );
        assert_eq!(
            podman_on(&socket, &["volume", "ls", "-q", "--filter", &filter]),
            ""
        );
        assert_eq!(
            podman_on(&socket, &["network", "ls", "-q", "--filter", &filter]),
            ""
        );
    }
    sb.mark_deleted();
}

/// Whether this process may raise resource limits (CAP_SYS_RESOURCE in its effective set).
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Podman as root without CAP_SYS_RESOURCE and with its default limits fails every container
/// ("error setting rlimit type 7"), whatever its privileges: a real engine that cannot run the
/// node. timonel must say so, with the fix, before creating the node, and not blame privileges.
#[test]
#[ignore = "needs podman, and a machine without CAP_SYS_RESOURCE to provoke the failure"]
fn an_engine_that_cannot_start_containers_is_refused_before_the_node_is_created() {
    if has_cap_sys_resource() {
        eprintln!("skipping: this machine has CAP_SYS_RESOURCE, so Podman's default limits apply and the failure cannot be provoked");
        return;
    }
    if !require_podman() {
        return;
    }
    // A second service on the same storage, without scripts/start-podman.sh's limits.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("podman.sock");
    let mut service = Command::new("podman")
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .env_remove("CONTAINERS_CONF")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = sock.display().to_string();
    eventually(
        "the second Podman service to answer",
        std::time::Duration::from_secs(30),
        || ping(&socket).is_ok_and(|t| t.contains(" 200 ")),
    );
    let sb = Sandbox::new("podbroken");
    let out = start_on(&socket, &sb);
    let err = stderr(&out);
    let _ = service.kill();
    let _ = service.wait();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start the node's container"), "{err}");
    assert!(err.contains("error setting rlimit"), "{err}");
    assert!(err.contains("default_ulimits"), "the fix is named: {err}");
    assert!(
        !err.contains("allows privileged containers"),
        "privileges blamed: {err}"
    );
    assert_eq!(podman_leftovers(&sb.profile), Vec::<String>::new());
    sb.mark_deleted();
}
