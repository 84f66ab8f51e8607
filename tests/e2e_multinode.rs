//! Multi-node and HA on the real Docker daemon with the k3s stand-in, judged by kubectl.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::Command;

use support::sandbox::*;

fn node_ips(sb: &Sandbox) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&sb.ok(&["node", "list", "-o", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["ip"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs a docker daemon"]
fn three_nodes_add_delete_and_stable_addresses() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("multi");
    assert!(sb.start(&["--nodes", "3"]).status.success());
    let p = &sb.profile;
    let mut ready = sb.ready_nodes();
    ready.sort();
    assert_eq!(
        ready,
        vec![p.clone(), format!("{p}-m02"), format!("{p}-m03")]
    );

    // Roles: one server, two agents.
    let v: serde_json::Value =
        serde_json::from_str(&sb.ok(&["node", "list", "-o", "json"])).unwrap();
    let roles: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["server", "agent", "agent"]);

    // node add → a fourth Ready node; node delete → gone from Kubernetes and Docker.
    let added = sb.ok(&["node", "add"]).trim().to_string();
    assert_eq!(added, format!("{p}-m04"));
    assert_eq!(sb.ready_nodes().len(), 4);
    sb.ok(&["node", "delete", &added]);
    let after = sb.ready_nodes();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&added));
    let gone = Command::new("docker")
        .args(["inspect", &format!("timonel-{added}")])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "container of the deleted node still exists"
    );
    // The first server cannot be deleted on its own.
    let refused = sb.run(&["node", "delete", p]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("timonel delete"),
        "{}",
        stderr(&refused)
    );

    // stop/start keeps every node's address.
    let before = node_ips(&sb);
    assert!(before.iter().all(|(_, ip)| !ip.is_empty()));
    sb.ok(&["stop"]);
    assert!(sb.start(&[]).status.success());
    assert_eq!(node_ips(&sb), before);
    assert_eq!(sb.ready_nodes().len(), 3);

    sb.ok(&["delete"]);
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_single_server_cluster_refuses_more_servers() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("solo");
    assert!(sb.start(&[]).status.success());
    let out = sb.run(&["node", "add", "--control-plane"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--control-planes 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node_ips(&sb).len(), 1, "nothing was added");
}
