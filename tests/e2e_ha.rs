//! A cluster with several servers on the real Docker daemon, with the k3s stand-in, judged by
//! kubectl: the API load balancer in front of the servers keeps the kubeconfig working when the
//! first server dies, follows `node add --control-plane` / `node delete`, keeps its port
//! across stop and start, and goes with `delete`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::Command;
use std::time::Duration;

use support::sandbox::*;

fn status(sb: &Sandbox) -> serde_json::Value {
    let out = sb.run(&["status", "-o", "json"]);
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn backends(sb: &Sandbox) -> Vec<String> {
    let v = status(sb);
    let mut b: Vec<String> = v["load_balancer"]["backends"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    b.sort();
    b
}

fn kubeconfig_server(sb: &Sandbox) -> String {
    let v = read_yaml(&sb.kubeconfig);
    v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == sb.profile.as_str())
        .map(|c| c["cluster"]["server"].as_str().unwrap().to_string())
        .unwrap()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
}

/// The servers' addresses as `IP:6443`, sorted.
fn server_addrs(sb: &Sandbox) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&sb.ok(&["node", "list", "-o", "json"])).unwrap();
    let mut a: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "server")
        .map(|n| format!("{}:6443", n["ip"].as_str().unwrap()))
        .collect();
    a.sort();
    a
}

fn nodes_answer(sb: &Sandbox) -> bool {
    sb.kubectl(&["get", "nodes", "--no-headers", "--request-timeout=5s"])
        .status
        .success()
}

#[test]
#[ignore = "needs a docker daemon"]
fn the_api_survives_the_first_server_through_the_load_balancer() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("lb-ha");
    assert!(sb.start(&["--control-planes", "3"]).status.success());
    let p = sb.profile.clone();
    let lb = format!("timonel-{p}-lb");

    // The kubeconfig points at the balancer, published on 127.0.0.1, with every server behind.
    let v = status(&sb);
    let url = v["load_balancer"]["url"].as_str().unwrap().to_string();
    assert_eq!(v["load_balancer"]["state"], "running");
    assert_eq!(kubeconfig_server(&sb), url);
    let port = docker(&["port", &lb, "6443/tcp"]);
    assert!(port.starts_with("127.0.0.1:"), "{port}");
    assert_eq!(url, format!("https://{port}"));
    assert_eq!(backends(&sb), server_addrs(&sb));
    assert_eq!(backends(&sb).len(), 3);
    let text = sb.ok(&["status"]);
    assert!(
        text.contains(&format!("lb:      running ({url} → ")),
        "{text}"
    );
    assert_eq!(sb.ready_nodes().len(), 3);
    // The first server runs embedded etcd (--cluster-init), so it shows the etcd role.
    let first = stdout(&sb.kubectl(&["get", "node", &p, "--no-headers"]));
    assert!(first.contains("etcd"), "{first}");

    // The first server dies; kubectl keeps answering with no user action.
    docker(&["kill", &format!("timonel-{p}")]);
    assert!(
        !running(&format!("timonel-{p}")),
        "killed, and not restarted"
    );
    eventually(
        "kubectl to answer through the balancer",
        Duration::from_secs(60),
        || nodes_answer(&sb),
    );
    for _ in 0..5 {
        assert!(nodes_answer(&sb), "every connection reaches a live server");
    }
    assert_eq!(
        kubeconfig_server(&sb),
        url,
        "the kubeconfig was not touched"
    );
    let logs = Command::new("docker").args(["logs", &lb]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stderr).into_owned();
    assert!(logs.contains("is down"), "{logs}");

    // `start` brings the first server back; a server added or deleted updates the backends.
    sb.ok(&["start"]);
    assert!(running(&format!("timonel-{p}")));
    let added = sb
        .ok(&["node", "add", "--control-plane"])
        .trim()
        .to_string();
    assert_eq!(backends(&sb).len(), 4);
    assert_eq!(backends(&sb), server_addrs(&sb));
    eventually(
        "the balancer to read 4 backends",
        Duration::from_secs(10),
        || {
            let out = Command::new("docker").args(["logs", &lb]).output().unwrap();
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .any(|l| l.contains("backends:") && l.matches(":6443").count() == 4)
        },
    );
    sb.ok(&["node", "delete", &added]);
    assert_eq!(backends(&sb).len(), 3);
    assert_eq!(backends(&sb), server_addrs(&sb));

    // stop / start keep the port.
    sb.ok(&["stop"]);
    assert!(!running(&lb));
    assert_eq!(status(&sb)["load_balancer"]["state"], "stopped");
    sb.ok(&["start"]);
    assert!(running(&lb));
    assert_eq!(docker(&["port", &lb, "6443/tcp"]), port);
    assert_eq!(kubeconfig_server(&sb), url);
    eventually("kubectl after a restart", Duration::from_secs(60), || {
        nodes_answer(&sb)
    });

    sb.ok(&["delete"]);
    assert_eq!(sb.leftovers(), Vec::<String>::new());
    assert_eq!(
        docker(&["ps", "-a", "-q", "--filter", &format!("name=^{lb}$")]),
        ""
    );
}

#[test]
#[ignore = "needs a docker daemon"]
fn several_servers_without_the_balancer_program_are_refused_before_anything_is_made() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("lb-none");
    let missing = sb.home.path().join("no-timonel-lb");
    let out = sb
        .cmd(&start_args(&["--control-planes", "3"]))
        .env("TIMONEL_LB", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("timonel-lb") && err.contains("TIMONEL_LB"),
        "{err}"
    );
    assert!(err.contains("scripts/build-lb.sh"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
    assert!(!sb.profile_dir().exists());
}

#[test]
#[ignore = "needs a docker daemon"]
fn an_interrupted_start_leaves_no_load_balancer() {
    use std::io::{BufRead, BufReader};
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("lb-int");
    let args = start_args(&["-v", "--control-planes", "3"]);
    let mut child = sb
        .cmd(&args)
        .env("TIMONEL_LB", balancer_binary())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Interrupted once the balancer runs: its container exists.
    for line in lines.map_while(Result::ok) {
        let at_balancer = line.contains("API load balancer on");
        seen.push(line);
        if at_balancer {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
        }
    }
    let status = child.wait().unwrap();
    let log = seen.join("\n");
    eprintln!("{log}");
    assert!(
        seen.iter().any(|l| l.contains("API load balancer on")),
        "never reached the balancer:\n{log}"
    );
    assert_eq!(status.code(), Some(130), "{log}");
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "{log}");
    assert!(!sb.profile_dir().exists());
    sb.mark_deleted();
}
