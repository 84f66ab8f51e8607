//! `timonel run -- CMD`: an ephemeral cluster around one command, on the real Docker daemon
//! with the k3s stand-in, the real kubectl as CMD, and real signals. Each test checks that
//! nothing is left (containers, volumes, networks labelled with the cluster, the profile) and
//! that the user's kubeconfig is untouched. Marked ignored (they need a daemon);
//! scripts/test.sh runs them. Under CI=true a missing daemon fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::sandbox::*;

const USER_KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\ncurrent-context: \"\"\n# the user's own file: not a byte may change\n";

/// `timonel <args>` in the sandbox's environment, with no `-p` (`run` makes up a profile).
fn timonel(sb: &Sandbox, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_timonel"));
    c.args(args)
        .env("TIMONEL_HOME", sb.timonel_home())
        .env("KUBECONFIG", &sb.kubeconfig)
        .env("TIMONEL_BINARY_MIRROR", sb.mirror.url())
        .env("TIMONEL_NO_PROGRESS", "1")
        .env_remove("TIMONEL_PROFILE")
        .env_remove("TIMONEL_DRIVER");
    c
}

/// `run`'s start flags for the stand-in.
const START: [&str; 5] = ["run", "--driver", "docker", "--kubernetes-version", VERSION];

fn show(args: &[&str], out: &Output) {
    eprintln!(
        "$ timonel {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Writes the user's kubeconfig; returns its bytes.
fn user_kubeconfig(sb: &Sandbox) -> Vec<u8> {
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, USER_KUBECONFIG).unwrap();
    USER_KUBECONFIG.as_bytes().to_vec()
}

/// The profiles in the sandbox's timonel home.
fn profiles(sb: &Sandbox) -> Vec<String> {
    match std::fs::read_dir(sb.timonel_home().join("profiles")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Nothing of cluster `profile` is left, and the user's kubeconfig is as it was.
fn assert_nothing_left(sb: &Sandbox, profile: &str, kubeconfig: &[u8]) {
    assert_eq!(
        leftovers(profile),
        Vec::<String>::new(),
        "docker objects left"
    );
    assert_eq!(profiles(sb), Vec::<String>::new(), "profiles left");
    assert_eq!(
        std::fs::read(&sb.kubeconfig).unwrap(),
        kubeconfig,
        "the user's kubeconfig changed"
    );
}

/// The `run-<hex>` profile `run` made up, from what it printed.
fn made_up_profile(err: &str) -> String {
    let start = err.find("`run-").expect("run names its cluster") + 1;
    let len = err[start..].find('`').unwrap();
    err[start..start + len].to_string()
}

#[test]
#[ignore = "needs a docker daemon"]
fn kubectl_runs_against_a_fresh_cluster_that_is_then_deleted() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("run");
    let before = user_kubeconfig(&sb);
    let mut args = START.to_vec();
    args.extend(["--", "kubectl", "get", "nodes", "--no-headers"]);
    let out = timonel(&sb, &args).output().unwrap();
    show(&args, &out);
    let profile = made_up_profile(&stderr(&out));
    // Cleanup even if an assertion below fails.
    let _guard = DeleteOnDrop(&sb, profile.clone());
    assert_eq!(out.status.code(), Some(0));
    // kubectl's stdout passes through; timonel's own lines are on stderr.
    let nodes = stdout(&out);
    let ready: Vec<&str> = nodes
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .collect();
    assert_eq!(ready.len(), 1, "one Ready node in {nodes:?}");
    assert!(ready[0].starts_with(&profile), "{nodes:?}");
    assert!(!stdout(&out).contains("Starting cluster"));
    assert_nothing_left(&sb, &profile, &before);
}

#[test]
#[ignore = "needs a docker daemon"]
fn the_command_s_exit_code_is_run_s_and_nothing_is_left() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("run7");
    // No kubeconfig of the user's at all: it stays absent.
    let mut args = START.to_vec();
    args.extend(["--", "sh", "-c", "test -s \"$KUBECONFIG\" && exit 7"]);
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(leftovers(&sb.profile), Vec::<String>::new());
    assert_eq!(profiles(&sb), Vec::<String>::new());
    assert!(!sb.kubeconfig.exists(), "run wrote the user's kubeconfig");

    // A command that cannot be found: said so, the cluster deleted, 127.
    let mut args = START.to_vec();
    args.extend(["--", "timonel-no-such-command"]);
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("cannot run `timonel-no-such-command`"));
    assert_eq!(leftovers(&sb.profile), Vec::<String>::new());
    assert_eq!(profiles(&sb), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
#[ignore = "needs a docker daemon"]
fn sigterm_while_the_command_runs_stops_it_and_deletes_everything() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("runterm");
    let before = user_kubeconfig(&sb);
    let marker = sb.home.path().join("cmd.pid");
    let got = sb.home.path().join("cmd.signal");
    // The command records the SIGTERM it is sent on, and its pid once it is running.
    let script = format!(
        "trap 'kill $sleeper; echo TERM > {got}; exit 143' TERM; sleep 600 & sleeper=$!; echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; wait",
        got = got.display(),
        pid = marker.display()
    );
    let mut args = START.to_vec();
    args.extend(["--", "sh", "-c", &script]);
    let mut child = sb
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the command to start", Duration::from_secs(240), || {
        marker.exists() || child.try_wait().unwrap().is_some()
    });
    assert!(child.try_wait().unwrap().is_none(), "timonel ended early");
    let cmd_pid = std::fs::read_to_string(&marker).unwrap().trim().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    show(&args, &out);
    assert_eq!(out.status.code(), Some(143));
    assert_eq!(
        std::fs::read_to_string(&got).unwrap_or_default().trim(),
        "TERM",
        "the command was not sent SIGTERM"
    );
    assert!(
        !Path::new(&format!("/proc/{cmd_pid}")).exists(),
        "the command (pid {cmd_pid}) is still running"
    );
    assert_nothing_left(&sb, &sb.profile, &before);
}

#[test]
#[ignore = "needs a docker daemon"]
fn keep_on_failure_keeps_the_cluster_and_says_how_to_delete_it() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("runkeep");
    let before = user_kubeconfig(&sb);
    let mut args = START.to_vec();
    args.extend(["--keep-on-failure", "--", "sh", "-c", "exit 3"]);
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("timonel delete -p {}", sb.profile)),
        "{err}"
    );
    assert!(
        !leftovers(&sb.profile).is_empty(),
        "the cluster was not kept"
    );
    assert_eq!(profiles(&sb), vec![sb.profile.clone()]);
    assert_eq!(std::fs::read(&sb.kubeconfig).unwrap(), before);

    // `run -p` on a profile that exists is refused: it would delete that cluster.
    let again = sb.run(&["run", "--", "true"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert!(!leftovers(&sb.profile).is_empty());

    sb.ok(&["delete"]);
    assert_nothing_left(&sb, &sb.profile, &before);
}

/// Deletes a made-up profile when the test ends, however it ends.
struct DeleteOnDrop<'a>(&'a Sandbox, String);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = timonel(self.0, &["delete", "-p", &self.1]).output();
    }
}

#[test]
fn run_refuses_what_would_touch_stdout_or_a_kubeconfig() {
    let home = tempfile::tempdir().unwrap();
    let timonel = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_timonel"))
            .args(args)
            .env("TIMONEL_HOME", home.path().join("timonel"))
            .env("KUBECONFIG", home.path().join("kube/config"))
            .env_remove("TIMONEL_PROFILE")
            .output()
            .unwrap();
        show(args, &out);
        out
    };
    for (flags, says) in [
        (vec!["-o", "json"], "-o json"),
        (vec!["--kubeconfig", "/tmp/elsewhere"], "--kubeconfig"),
    ] {
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend(["--", "true"]);
        let out = timonel(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert_eq!(timonel(&["run"]).status.code(), Some(2), "CMD is required");
    // Nothing was created.
    assert!(!home.path().join("timonel/profiles").exists());
    assert!(!home.path().join("kube").exists());
}
