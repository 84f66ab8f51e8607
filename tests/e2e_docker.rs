//! End to end on the real Docker daemon with the k3s stand-in, judged by the real kubectl.
//! Marked ignored (they need a daemon); scripts/test.sh runs them. Under CI=true a missing
//! daemon fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::Command;
use std::time::Duration;

use support::sandbox::*;

const OTHER_KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: work
  cluster:
    server: https://work.example:6443
    insecure-skip-tls-verify: true
    x-unknown-cluster-field: keep me
contexts:
- name: work
  context:
    cluster: work
    user: work-admin
    namespace: team
current-context: work
users:
- name: work-admin
  user:
    token: not-a-real-token
x-top-level-extension: 42
"#;

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs a docker daemon"]
fn start_stop_resume_delete_with_kubectl_as_the_judge() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("e2e");
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, OTHER_KUBECONFIG).unwrap();
    let before = read_yaml(&sb.kubeconfig);

    let out = sb.start(&[]);
    assert!(out.status.success(), "start failed");
    // stdout carries data only: start prints nothing there.
    assert_eq!(stdout(&out), "");

    // The merged kubeconfig works for the real kubectl.
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert!(readyz.status.success());
    assert_eq!(stdout(&readyz).trim(), "ok");
    let nodes = sb.kubectl(&["get", "nodes", "--no-headers"]);
    assert!(nodes.status.success());
    let line = stdout(&nodes);
    assert!(
        line.contains(&sb.profile) && line.contains(" Ready "),
        "{line}"
    );
    let after = read_yaml(&sb.kubeconfig);
    assert_eq!(after["current-context"], sb.profile.as_str());
    assert!(
        after["x-top-level-extension"] == 42,
        "unknown field lost: {after}"
    );

    // KUBECONFIG with two files: ours found in the second.
    let other = sb.home.path().join("other.yaml");
    std::fs::write(
        &other,
        OTHER_KUBECONFIG.replace("current-context: work", "current-context: \"\""),
    )
    .unwrap();
    let list = std::env::join_paths([other.as_path(), sb.kubeconfig.as_path()]).unwrap();
    let out = Command::new("kubectl")
        .args(["--context", &sb.profile, "get", "--raw", "/readyz"])
        .env("KUBECONFIG", &list)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // ip is the container's address on the profile network.
    let ip = sb.ok(&["ip"]).trim().to_string();
    let container = format!("timonel-{}", sb.profile);
    let net = format!("timonel-{}", sb.profile);
    let docker_ip = inspect(
        &container,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    );
    assert_eq!(ip, docker_ip);
    let port = inspect(
        &container,
        "{{(index (index .NetworkSettings.Ports \"6443/tcp\") 0).HostPort}}",
    );
    assert!(!port.is_empty());

    // status: all up, exit 0, JSON parses.
    let st = sb.run(&["status", "-o", "json"]);
    assert_eq!(st.status.code(), Some(0), "status of a running cluster");
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    assert_eq!(v["api"], "ready");
    assert_eq!(v["nodes"][0]["kubernetes"], "Ready");

    // ssh: a command in the node (docker exec), its output and exit code passed through.
    let out = sb.run(&["ssh", "--", "/bin/k3s", "--version"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with(&format!("k3s version {VERSION}")),
        "{}",
        stdout(&out)
    );
    let out = sb.run(&["ssh", "--", "/bin/k3s", "server", "--no-such-flag"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-flag"), "{}", stderr(&out));
    let out = sb.run(&["ssh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timonel ssh -p"), "{}", stderr(&out));

    // stop: the node is down and status says so with its exit code.
    sb.ok(&["stop"]);
    assert_eq!(inspect(&container, "{{.State.Running}}"), "false");
    let st = sb.run(&["status"]);
    assert_eq!(st.status.code(), Some(3), "status of a stopped cluster");
    let ip_stopped = sb.run(&["ip"]);
    assert!(!ip_stopped.status.success());
    assert!(
        stderr(&ip_stopped).contains("stopped"),
        "{}",
        stderr(&ip_stopped)
    );

    // start again: the same port, the same address, the same data (same CA, so the old
    // kubeconfig still works).
    let out = sb.start(&[]);
    assert!(out.status.success(), "resume failed");
    assert!(stderr(&out).contains("Resuming"), "{}", stderr(&out));
    assert_eq!(sb.ok(&["ip"]).trim(), ip);
    assert_eq!(
        inspect(
            &container,
            "{{(index (index .NetworkSettings.Ports \"6443/tcp\") 0).HostPort}}"
        ),
        port
    );
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&readyz).trim(), "ok");

    // A flag that would change the cluster is refused, nothing touched.
    let out = sb.start(&["--memory", "4g"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--memory") && stderr(&out).contains("delete"),
        "{}",
        stderr(&out)
    );

    // delete: nothing left, and the kubeconfig is as it was.
    sb.ok(&["delete"]);
    assert_eq!(sb.leftovers(), Vec::<String>::new());
    assert!(!sb
        .timonel_home()
        .join("profiles")
        .join(&sb.profile)
        .exists());
    assert_eq!(
        read_yaml(&sb.kubeconfig),
        before,
        "kubeconfig changed by start+delete"
    );
    // Deleting again is fine.
    sb.ok(&["delete"]);
}

#[test]
#[ignore = "needs a docker daemon"]
fn bad_inputs_are_refused_before_anything_is_touched() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("bad");
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, OTHER_KUBECONFIG).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--memory", "lots"], "not a size"),
        (&["--cpus=0"], "--cpus"),
        (&["--disable", "trafik"], "trafik"),
        (&["--ports", "80"], "--ports"),
    ];
    for (args, needle) in cases {
        let out = sb.start(args);
        assert_ne!(out.status.code(), Some(0), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.contains("hint:") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_timonel"))
        .args(["start", "-p", "Not_Valid"])
        .env("TIMONEL_HOME", sb.timonel_home())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Not_Valid"));
    let out = sb.run(&[
        "start",
        "--driver",
        "docker",
        "--kubernetes-version",
        "Banana!",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Banana!"), "{}", stderr(&out));
    let out = sb.run(&["start", "--driver", "floppy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("floppy"));
    // Nothing was created and the kubeconfig is byte for byte the same.
    assert!(
        !sb.timonel_home().join("profiles").exists()
            || std::fs::read_dir(sb.timonel_home().join("profiles"))
                .unwrap()
                .next()
                .is_none()
    );
    assert_eq!(
        std::fs::read_to_string(&sb.kubeconfig).unwrap(),
        OTHER_KUBECONFIG
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new());
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_ready_timeout_names_what_was_not_ready_and_leaves_nothing() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("slow");
    let out = sb.start(&[
        "--env",
        "K3S_STANDIN_READY_DELAY=120s",
        "--wait-timeout",
        "4s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("was not ready after"), "{err}");
    assert!(err.contains("readyz"), "{err}");
    // The last lines of the node's k3s log come with the failure.
    assert!(err.contains("last lines of the k3s log"), "{err}");
    assert!(err.contains("Starting k3s"), "{err}");
    assert_eq!(sb.leftovers(), Vec::<String>::new());
    assert!(!sb
        .timonel_home()
        .join("profiles")
        .join(&sb.profile)
        .exists());
}

#[test]
#[ignore = "needs a docker daemon"]
fn two_starts_on_one_profile_make_one_cluster() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("twice");
    let mut a = sb.cmd(&[
        "start",
        "--driver",
        "docker",
        "--kubernetes-version",
        VERSION,
    ]);
    let mut b = sb.cmd(&[
        "start",
        "--driver",
        "docker",
        "--kubernetes-version",
        VERSION,
    ]);
    let a = a.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let b = b.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let both = format!("{}{}", stderr(&a), stderr(&b));
    assert!(
        both.contains("in use by"),
        "one start must have waited for the other: {both}"
    );
    assert!(
        both.contains("Resuming"),
        "the second start resumes the first's cluster: {both}"
    );
    let containers = leftovers(&sb.profile)
        .into_iter()
        .filter(|l| l.starts_with("container"))
        .count();
    assert_eq!(containers, 1);
}

#[test]
#[ignore = "needs a docker daemon"]
fn interrupting_start_at_any_point_leaves_nothing_behind() {
    if !require_docker() {
        return;
    }
    for delay_ms in [50u64, 300, 800, 1500, 2500] {
        let sb = Sandbox::new("int");
        let mut child = sb
            .cmd(&[
                "start",
                "--driver",
                "docker",
                "--kubernetes-version",
                VERSION,
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        // Interrupted (130) or, if start had already finished, success.
        assert!(
            matches!(status.code(), Some(130) | Some(0)),
            "after {delay_ms} ms: {status}"
        );
        if status.code() == Some(130) {
            assert_eq!(sb.leftovers(), Vec::<String>::new(), "after {delay_ms} ms");
        }
        sb.ok(&["delete"]);
        assert_eq!(
            sb.leftovers(),
            Vec::<String>::new(),
            "after delete ({delay_ms} ms)"
        );
    }
}

fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

#[test]
#[ignore = "needs a docker daemon"]
fn start_streams_json_events_for_ci() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("json");
    let out = sb.start(&["-o", "json"]);
    assert!(out.status.success());
    let ev = events(&out);
    let started: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "step" && e["event"] == "started")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let finished: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["type"] == "step" && e["event"] == "finished")
        .collect();
    // Every started step finished, with a duration; none failed.
    assert!(started.len() >= 4, "{started:?}");
    assert!(finished.len() >= started.len(), "{ev:?}");
    assert!(finished.iter().any(|e| e["duration_ms"].is_u64()));
    assert!(!ev
        .iter()
        .any(|e| e["event"] == "failed" || e["type"] == "error"));
    for needle in ["k3s", "node", "Cluster ready", "Context"] {
        assert!(
            finished
                .iter()
                .any(|e| e["message"].as_str().unwrap().contains(needle)),
            "no finished step mentions {needle}: {ev:?}"
        );
    }
    assert!(ev.iter().all(|e| e["time_ms"].is_u64()));

    // A failure ends the stream with an error event carrying a reason code and a hint.
    let sb2 = Sandbox::new("jsonfail");
    let out = sb2.start(&[
        "-o",
        "json",
        "--env",
        "K3S_STANDIN_READY_DELAY=120s",
        "--wait-timeout",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let ev = events(&out);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "error", "{ev:?}");
    assert_eq!(last["reason"], "READY_TIMEOUT");
    assert!(last["hint"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(
        ev.iter().any(|e| e["event"] == "failed"),
        "the step that failed is reported: {ev:?}"
    );
}

/// A file out of a node container (the node image has no shell or cat: use the archive API).
fn node_file(container: &str, path: &str, dir: &std::path::Path) -> (String, u32) {
    let dest = dir.join(path.rsplit('/').next().unwrap());
    let out = Command::new("docker")
        .args(["cp", &format!("{container}:{path}"), dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker cp {path}: {}", stderr(&out));
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777
    };
    #[cfg(not(unix))]
    let mode = 0;
    (std::fs::read_to_string(&dest).unwrap(), mode)
}

#[test]
#[ignore = "needs a docker daemon"]
fn proxy_ca_and_registry_mirror_reach_the_nodes() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("corp");
    let ca = sb.home.path().join("corp-ca.pem");
    let pem =
        "-----BEGIN CERTIFICATE-----\nMIIBfake+not+parsed+by+timonel\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let out = sb
        .cmd(&[
            "start",
            "--driver",
            "docker",
            "--kubernetes-version",
            VERSION,
            "--nodes",
            "2",
            "--ca-cert",
            ca.to_str().unwrap(),
            "--registry-mirror",
            "https://mirror.corp.example:5000",
        ])
        .env("HTTPS_PROXY", "http://proxy.corp.example:3128")
        .env("NO_PROXY", "corp.example")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    for node in [sb.profile.clone(), format!("{}-m02", sb.profile)] {
        let container = format!("timonel-{node}");
        let (text, mode) = node_file(
            &container,
            "/etc/ssl/certs/timonel-extra-ca-1.pem",
            dir.path(),
        );
        assert_eq!(text, pem);
        assert_eq!(mode, 0o644);
        let (text, mode) = node_file(&container, "/etc/rancher/k3s/registries.yaml", dir.path());
        assert!(
            text.contains("docker.io") && text.contains("https://mirror.corp.example:5000"),
            "{text}"
        );
        assert_eq!(mode, 0o600);
        let env = inspect(&container, "{{json .Config.Env}}");
        let env: Vec<String> = serde_json::from_str(&env).unwrap();
        assert!(
            env.contains(&"HTTPS_PROXY=http://proxy.corp.example:3128".to_string()),
            "{env:?}"
        );
        let no_proxy = env.iter().find(|e| e.starts_with("NO_PROXY=")).unwrap();
        for want in [
            "corp.example",
            "10.42.0.0/16",
            "10.43.0.0/16",
            ".svc",
            ".cluster.local",
            &sb.profile,
        ] {
            assert!(
                no_proxy.split(['=', ',']).any(|x| x == want),
                "{want} missing: {no_proxy}"
            );
        }
    }
    // A private key given as a CA is refused before anything is created.
    let key = sb.home.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let other = Sandbox::new("badca");
    let out = other.start(&["--ca-cert", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("private key"), "{}", stderr(&out));
    assert_eq!(other.leftovers(), Vec::<String>::new());
}
