//! `timonel pause` / `unpause` end to end on the real Docker daemon with the k3s stand-in,
//! judged by `docker inspect` and the real kubectl: the containers freeze (Docker's `paused`)
//! and thaw without a restart (same `StartedAt`), kubectl gives up while they are frozen and
//! answers again after; `status`, `start`, `stop` and `delete` on a paused cluster.
//! Marked ignored (they need a daemon); under CI=true a missing daemon fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::sandbox::*;

/// `docker inspect --format <format>` of each container, in order.
fn inspect(containers: &[String], format: &str) -> Vec<String> {
    containers
        .iter()
        .map(|c| {
            let out = Command::new("docker")
                .args(["inspect", "--format", format, c])
                .output()
                .unwrap();
            assert!(out.status.success(), "docker inspect {c}: {}", stderr(&out));
            stdout(&out).trim().to_string()
        })
        .collect()
}

/// Polls until kubectl lists every node of the profile Ready.
fn all_ready(sb: &Sandbox, nodes: &[&str]) {
    eventually(
        "every node Ready in kubectl",
        Duration::from_secs(90),
        || {
            let out = sb.kubectl(&["get", "nodes", "--no-headers", "--request-timeout=5s"]);
            out.status.success() && {
                let text = stdout(&out);
                nodes.iter().all(|n| {
                    text.lines()
                        .any(|l| l.split_whitespace().take(2).eq([*n, "Ready"]))
                })
            }
        },
    );
}

#[test]
#[ignore = "needs a docker daemon"]
fn pause_freezes_the_nodes_and_unpause_thaws_them_without_a_restart() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("hq-pause");
    assert!(sb.start(&["--nodes", "2"]).status.success(), "start failed");
    let server = sb.profile.clone();
    let agent = format!("{}-m02", sb.profile);
    let nodes = [server.as_str(), agent.as_str()];
    let containers: Vec<String> = nodes.iter().map(|n| format!("timonel-{n}")).collect();
    all_ready(&sb, &nodes);
    let started = inspect(&containers, "{{.State.StartedAt}}");

    // pause: Docker has both containers paused; the result names them.
    let out = sb.run(&["pause", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["state"], "paused");
    assert_eq!(v["changed"], serde_json::json!([server, agent]));
    assert_eq!(
        inspect(&containers, "{{.State.Status}} {{.State.Paused}}"),
        vec!["paused true"; 2]
    );

    // status: Paused per node and for the cluster, exit 2, the frozen API not waited for.
    let asked = Instant::now();
    let st = sb.run(&["status", "-o", "json"]);
    assert_eq!(st.status.code(), Some(2), "status of a paused cluster");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "status waited for a frozen API server ({:?})",
        asked.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    assert_eq!(v["state"], "paused");
    assert_eq!(v["api"], "paused");
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(
            (&n["host"], &n["k3s"]),
            (&"paused".into(), &"paused".into())
        );
    }
    let text = sb.run(&["status"]);
    assert!(
        stdout(&text).contains("state:   paused"),
        "{}",
        stdout(&text)
    );

    // kubectl gets no answer from a frozen API server.
    let out = sb.kubectl(&["get", "nodes", "--request-timeout=3s"]);
    assert!(!out.status.success(), "kubectl answered a paused cluster");

    // Pausing again: said so, exit 0, nothing changed.
    let again = sb.run(&["pause"]);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("already paused"),
        "{}",
        stderr(&again)
    );

    // unpause: running again, kubectl answers, and nothing restarted.
    let out = sb.run(&["unpause"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("The API server answers"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        inspect(&containers, "{{.State.Status}} {{.State.Paused}}"),
        vec!["running false"; 2]
    );
    all_ready(&sb, &nodes);
    assert_eq!(
        inspect(&containers, "{{.State.StartedAt}}"),
        started,
        "a container was restarted"
    );
    assert_eq!(sb.run(&["status"]).status.code(), Some(0));
    let again = sb.run(&["unpause"]);
    assert!(again.status.success());
    assert!(stderr(&again).contains("not paused"), "{}", stderr(&again));
}

#[test]
#[ignore = "needs a docker daemon"]
fn start_stop_and_delete_on_a_paused_cluster() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("hq-pause-life");
    assert!(sb.start(&[]).status.success(), "start failed");
    let containers = vec![format!("timonel-{}", sb.profile)];
    let started = inspect(&containers, "{{.State.StartedAt}}");

    // start on a paused cluster unpauses it, says so, and restarts nothing.
    sb.ok(&["pause"]);
    let out = sb.start(&[]);
    assert!(out.status.success(), "start of a paused cluster");
    assert!(
        stderr(&out).contains("is paused: unpausing 1 node(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(inspect(&containers, "{{.State.Status}}"), vec!["running"]);
    assert_eq!(inspect(&containers, "{{.State.StartedAt}}"), started);
    let readyz = sb.kubectl(&["get", "--raw", "/readyz", "--request-timeout=10s"]);
    assert_eq!(stdout(&readyz).trim(), "ok");

    // stop on a paused cluster stops it; a stopped cluster cannot be paused.
    sb.ok(&["pause"]);
    assert!(
        sb.run(&["stop"]).status.success(),
        "stop of a paused cluster"
    );
    assert_eq!(inspect(&containers, "{{.State.Status}}"), vec!["exited"]);
    for cmd in ["pause", "unpause"] {
        let out = sb.run(&[cmd]);
        assert_eq!(out.status.code(), Some(1), "{cmd} of a stopped cluster");
        let err = stderr(&out);
        assert!(err.contains("it is stopped"), "{err}");
        assert!(err.contains("timonel start -p"), "{err}");
    }

    // delete on a paused cluster removes everything.
    assert!(sb.start(&[]).status.success());
    sb.ok(&["pause"]);
    assert!(
        sb.run(&["delete"]).status.success(),
        "delete of a paused cluster"
    );
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    sb.mark_deleted();
}
