//! End to end on real Podman (rootful) through its Docker-compatible API, with the k3s
//! stand-in, judged by the real kubectl: the Docker driver with `DOCKER_HOST` at Podman's
//! socket, as a user with Podman instead of Docker would run it.
//!
//! The socket is `$TIMONEL_PODMAN_SOCKET`, else `/run/podman/podman.sock`; scripts/test.sh
//! starts the service there (scripts/start-podman.sh). Marked ignored (it needs the service);
//! under CI=true a missing service fails it, elsewhere it skips with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::io::{Read, Write};
use std::process::{Command, Output};

use support::sandbox::*;

fn socket() -> String {
    std::env::var("TIMONEL_PODMAN_SOCKET").unwrap_or_else(|_| "/run/podman/podman.sock".into())
}

/// Whether Podman's service answers `/_ping` on the socket (CI=true: it must).
#[cfg(unix)]
fn require_podman() -> bool {
    let answer = std::os::unix::net::UnixStream::connect(socket()).and_then(|mut s| {
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    let ok = answer
        .as_ref()
        .is_ok_and(|t| t.starts_with("HTTP/1.") && t.contains(" 200 ") && t.contains("Libpod"));
    if !ok {
        let message = format!(
            "Podman's Docker API does not answer on {} ({answer:?}): start it with scripts/start-podman.sh",
            socket()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipping: {message}");
    }
    ok
}

#[cfg(not(unix))]
fn require_podman() -> bool {
    eprintln!("skipping: the Podman lane runs on Linux");
    false
}

/// timonel in the sandbox, against Podman.
fn run(sb: &Sandbox, args: &[&str]) -> Output {
    let out = sb
        .cmd(args)
        .env("DOCKER_HOST", format!("unix://{}", socket()))
        .output()
        .unwrap();
    eprintln!(
        "$ timonel {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--url", &format!("unix://{}", socket())])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers, volumes and networks in Podman labelled with the profile.
fn podman_leftovers(profile: &str) -> Vec<String> {
    let filter = format!("label=dev.timonel.cluster={profile}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
    ] {
        found.extend(
            podman(&args)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("{kind} {l}")),
        );
    }
    found
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
