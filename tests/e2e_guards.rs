//! Guards on the real Docker daemon: requests the host cannot take are refused before anything
//! is created; homes sharing a daemon keep to their own clusters; an interrupted `node add` is
//! finished by the next one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::sandbox::*;

/// `docker <args>`'s stdout, trimmed ("" when it fails).
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `timonel -p <profile> <args>` with `sb`'s home, kubeconfig and mirror.
fn run_as(sb: &Sandbox, profile: &str, args: &[&str]) -> Output {
    let like = sb.cmd(&[]);
    let mut c = Command::new(like.get_program());
    c.args(["-p", profile]).args(args);
    for (k, v) in like.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().unwrap();
    eprintln!(
        "$ timonel -p {profile} {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

fn home_id(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.timonel_home().join("home-id"))
        .unwrap()
        .trim()
        .to_string()
}

fn exists(container: &str) -> bool {
    !docker(&["ps", "-a", "-q", "--filter", &format!("name=^{container}$")]).is_empty()
}

/// No Docker object and no profile: the refusal came before anything was made.
fn nothing_made(sb: &Sandbox) {
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    assert!(!sb
        .timonel_home()
        .join("profiles")
        .join(&sb.profile)
        .exists());
}

#[test]
#[ignore = "needs a docker daemon"]
fn more_than_the_host_has_is_refused_and_nothing_is_created() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("guard-res");
    let ncpu = docker(&["info", "--format", "{{.NCPU}}"]);
    for (flag, value, want) in [
        ("--memory", "9999999g", "9999999.0 GiB"),
        ("--cpus", "512", "512 CPUs per node"),
    ] {
        let began = Instant::now();
        let out = sb.start(&[flag, value, "--nodes", "2"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(err.contains("Docker daemon's machine"), "{err}");
        if flag == "--cpus" {
            assert!(err.contains(&format!("has {ncpu}")), "{err}");
        } else {
            assert!(
                err.contains("2 node(s) x") && err.contains("in total"),
                "{err}"
            );
        }
        assert!(err.contains(flag), "the hint names the flag: {err}");
        // Refused before the artifacts and the node image: no k3s was even fetched.
        assert!(!sb.timonel_home().join("cache").exists());
        assert!(began.elapsed() < Duration::from_secs(30));
        nothing_made(&sb);
    }
    // VM-only flags are refused on containers instead of being silently ignored.
    for args in [
        &["--vm-image", "/nonexistent.qcow2"][..],
        &["--disk-size", "30g"][..],
    ] {
        let out = sb.start(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{} only apply to VM drivers", args[0])),
            "{err}"
        );
        assert!(err.contains("--driver kvm"), "{err}");
        nothing_made(&sb);
    }
}

#[test]
#[ignore = "needs a docker daemon"]
fn homes_sharing_a_daemon_keep_to_their_own_clusters() {
    if !require_docker() {
        return;
    }
    let a = Sandbox::new("guard-a");
    let b = Sandbox::new("guard-b");
    assert!(a.start(&[]).status.success());
    assert!(b.start(&[]).status.success());
    let (ida, idb) = (home_id(&a), home_id(&b));
    assert_ne!(ida, idb);
    let label = "{{index .Config.Labels \"dev.timonel.home\"}}";
    assert_eq!(
        docker(&["inspect", "-f", label, &format!("timonel-{}", a.profile)]),
        ida
    );
    let net_label = "{{index .Labels \"dev.timonel.home\"}}";
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            "-f",
            net_label,
            &format!("timonel-{}", b.profile)
        ]),
        idb
    );

    // B may not take A's name.
    let taken = run_as(
        &b,
        &a.profile,
        &[
            "start",
            "--driver",
            "docker",
            "--kubernetes-version",
            VERSION,
        ],
    );
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        stderr(&taken).contains("another timonel home"),
        "{}",
        stderr(&taken)
    );
    assert!(!b.timonel_home().join("profiles").join(&a.profile).exists());

    // An unlabelled cluster, as an older timonel left it.
    let legacy = format!("{}-legacy", b.profile);
    docker(&[
        "volume",
        "create",
        "--label",
        &format!("dev.timonel.cluster={legacy}"),
        &format!("timonel-{legacy}-data"),
    ]);

    // B's delete --all: B's cluster goes; A's and the legacy one stay, listed with the way out.
    let all = b.run(&["delete", "--all"]);
    assert!(all.status.success());
    let said = stderr(&all);
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
    assert!(exists(&format!("timonel-{}", a.profile)));
    assert_eq!(leftovers(&legacy).len(), 1);
    for want in [
        a.profile.as_str(),
        legacy.as_str(),
        "--include-foreign",
        "timonel delete -p NAME",
        "older timonel",
    ] {
        assert!(said.contains(want), "{want} missing from: {said}");
    }
    // A is untouched: still Ready.
    assert_eq!(a.ready_nodes(), vec![a.profile.clone()]);

    // By name, B removes a cluster it did not make (the legacy one).
    assert!(run_as(&b, &legacy, &["delete"]).status.success());
    assert!(leftovers(&legacy).is_empty());

    // A's own cluster whose profile is gone is A's orphan: A's delete --all removes it.
    std::fs::remove_dir_all(a.timonel_home().join("profiles").join(&a.profile)).unwrap();
    let all = a.run(&["delete", "--all"]);
    assert!(all.status.success());
    assert!(stderr(&all).contains("with no profile"), "{}", stderr(&all));
    assert!(a.leftovers().is_empty(), "{:?}", a.leftovers());
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_killed_node_add_is_finished_by_the_next_one() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("guard-add");
    assert!(sb.start(&[]).status.success());
    let p = sb.profile.clone();
    let second = format!("{p}-m02");
    let profile_file = sb
        .timonel_home()
        .join("profiles")
        .join(&p)
        .join("profile.json");

    // Killed as soon as the node is recorded: before, during or just after its creation.
    let mut child = sb.cmd(&["node", "add"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&profile_file)
        .unwrap_or_default()
        .contains("\"pending\": true")
    {
        assert!(
            Instant::now() < deadline,
            "node add never recorded the node"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "node add ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // status tells it is pending (and is not all good).
    let status = sb.run(&["status", "-o", "json"]);
    assert_ne!(status.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let pending: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["pending"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(pending, [second.as_str()]);

    // The next node add finishes that node instead of adding a third.
    let out = sb.run(&["node", "add"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), second);
    assert!(
        stderr(&out).contains("interrupted `node add`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.ready_nodes(), vec![p.clone(), second.clone()]);
    assert!(!exists(&format!("timonel-{p}-m03")));
    let v: serde_json::Value = serde_json::from_str(&sb.ok(&["status", "-o", "json"])).unwrap();
    assert!(v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n.get("pending").is_none()));

    // And the one after adds a third node as usual.
    assert_eq!(sb.ok(&["node", "add"]).trim(), format!("{p}-m03"));
    assert_eq!(sb.ready_nodes().len(), 3);
}
