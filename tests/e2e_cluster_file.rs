//! The cluster file end to end: `start --config` on the real Docker daemon with the k3s
//! stand-in, judged by kubectl; `config export` of it; the cluster deleted and created again
//! from the exported file. A bad file is refused before anything is touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::Path;
use std::process::Command;

use support::sandbox::*;

/// The host port Docker publishes `node_port/tcp` of `container` on.
fn published(container: &str, node_port: u16) -> String {
    let out = Command::new("docker")
        .args(["port", container, &format!("{node_port}/tcp")])
        .output()
        .unwrap();
    stdout(&out).trim().to_string()
}

/// Each node's labels, as kubectl shows them.
fn labels(sb: &Sandbox) -> serde_json::Map<String, serde_json::Value> {
    let out = sb.kubectl(&["get", "nodes", "-o", "json"]);
    assert!(out.status.success(), "kubectl get nodes -o json failed");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"].clone(),
            )
        })
        .collect()
}

fn yaml(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
#[ignore = "needs a docker daemon"]
fn start_from_a_file_export_it_and_create_the_cluster_again_from_the_export() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("cfile");
    let p = sb.profile.clone();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: timonel.dev/v1alpha1\nkind: Cluster\nname: {p}\ndriver: docker\n\
             kubernetesVersion: {VERSION}\nservers: 1\nagents: 1\ndisable: [traefik]\n\
             env: [TIMONEL_TEST=cluster-file]\nports: [\"{port}:80\"]\n\
             k3sArgs:\n  server: [\"--node-label=lane=server\"]\n  \
             agent: [\"--node-label=lane=agent\"]\n  all: [\"--node-label=tier=all\"]\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // The file names the profile; its nodes are what kubectl sees Ready.
    let out = sb.run_unnamed(&["start", "--config", file]);
    assert!(out.status.success(), "start --config failed");
    assert_eq!(sb.ready_nodes(), [p.clone(), format!("{p}-m02")]);
    let server = format!("timonel-{p}");
    assert!(
        published(&server, 80).ends_with(&format!(":{port}")),
        "port {port} is not published: {}",
        published(&server, 80)
    );
    // The k3s arguments reached the nodes they were for, as k3s node labels.
    let l = labels(&sb);
    let m02 = format!("{p}-m02");
    assert_eq!(l[p.as_str()]["lane"], "server", "{l:?}");
    assert_eq!(l[m02.as_str()]["lane"], "agent", "{l:?}");
    for node in [p.as_str(), m02.as_str()] {
        assert_eq!(l[node]["tier"], "all", "{l:?}");
    }

    // Export: to stdout, then to a file that is never overwritten without --force.
    let exported = sb.ok(&["config", "export"]);
    let v = yaml(&exported);
    assert_eq!(v["apiVersion"], "timonel.dev/v1alpha1");
    assert_eq!(v["name"], p.as_str());
    assert_eq!(v["kubernetesVersion"], VERSION);
    assert_eq!(
        (v["servers"].as_u64(), v["agents"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["ports"][0], format!("{port}:80/tcp").as_str());
    assert_eq!(v["disable"][0], "traefik");
    assert_eq!(v["env"][0], "TIMONEL_TEST=cluster-file");
    assert_eq!(v["k3sArgs"]["server"][0], "--node-label=lane=server");
    assert_eq!(v["k3sArgs"]["agent"][0], "--node-label=lane=agent");
    assert_eq!(v["k3sArgs"]["all"][0], "--node-label=tier=all");
    let out_file = dir.path().join("exported.yaml");
    let out_path = out_file.to_str().unwrap();
    sb.ok(&["config", "export", "-o", out_path]);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), exported);
    std::fs::write(&out_file, "mine\n").unwrap();
    let refused = sb.run(&["config", "export", "-o", out_path]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "mine\n");
    sb.ok(&["config", "export", "-o", out_path, "--force"]);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), exported);

    // Delete, then the exported file creates the same cluster again.
    sb.ok(&["delete"]);
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    let out = sb.run_unnamed(&["start", "--config", out_path]);
    assert!(out.status.success(), "start --config of the export failed");
    assert_eq!(sb.ready_nodes(), [p.clone(), format!("{p}-m02")]);
    assert!(published(&server, 80).ends_with(&format!(":{port}")));
    assert_eq!(labels(&sb)[m02.as_str()]["lane"], "agent");
    assert_eq!(sb.ok(&["config", "export"]), exported);

    sb.ok(&["delete"]);
    sb.mark_deleted();
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
}

#[test]
fn a_bad_file_is_refused_with_its_place_before_anything_is_touched() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("cluster.yaml");
    std::fs::write(
        &file,
        "apiVersion: timonel.dev/v1alpha1\nkind: Cluster\nname: cfile-bad\nservers: 1\n  \nagent: 2\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_timonel"))
            .args(args)
            .env("TIMONEL_HOME", home.path().join("timonel"))
            .env("KUBECONFIG", home.path().join("kubeconfig"))
            .env_remove("TIMONEL_PROFILE")
            .env_remove("TIMONEL_DRIVER")
            .output()
            .unwrap()
    };
    let out = run(&["start", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let place = format!("{}:6:1: unknown field `agent`", file.display());
    assert!(err.contains(&place), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!Path::new(&home.path().join("timonel/profiles/cfile-bad")).exists());
    assert!(!home.path().join("kubeconfig").exists());

    // -o json reports it as the final error event.
    let out = run(&["start", "--config", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("unknown field `agent`"),
        "{}",
        stdout(&out)
    );

    // Export of a profile that does not exist says how to make one.
    let out = run(&["config", "export", "-p", "cfile-none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cfile-none"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs a docker daemon"]
fn run_makes_its_cluster_from_the_file() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("cfrun");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: timonel.dev/v1alpha1\nkind: Cluster\ndriver: docker\n\
             kubernetesVersion: {VERSION}\nservers: 1\nagents: 2\n"
        ),
    )
    .unwrap();
    let out = sb.run(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--",
        "kubectl",
        "get",
        "nodes",
        "--no-headers",
    ]);
    assert!(out.status.success(), "run --config failed");
    let nodes = stdout(&out);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(nodes.lines().all(|l| l.contains(" Ready ")), "{nodes}");
    sb.mark_deleted();
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
}
