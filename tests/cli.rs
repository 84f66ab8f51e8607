//! The binary's surface without any daemon: help, version, completions, profile listing, and
//! bad input refused with a clear message and the documented exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::process::{Command, Output};

/// `timonel ARGS` with its own home, the default profile and no colour.
fn command(home: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_timonel"));
    cmd.args(args)
        .env("TIMONEL_HOME", home)
        .env_remove("TIMONEL_PROFILE")
        .env("NO_COLOR", "1");
    cmd
}

fn timonel(home: &std::path::Path, args: &[&str]) -> Output {
    command(home, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let home = tempfile::tempdir().unwrap();
    let out = timonel(home.path(), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "start",
        "stop",
        "delete",
        "ip",
        "status",
        "kubeconfig",
        "profile",
        "version",
        "completion",
        "doctor",
    ] {
        assert!(
            help.contains(&format!("\n  {cmd} ")),
            "`{cmd}` missing from --help:\n{help}"
        );
    }
}

#[test]
fn version_json_is_data_on_stdout() {
    let home = tempfile::tempdir().unwrap();
    let out = timonel(home.path(), &["version", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d == "docker"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn completions_for_powershell_and_bash() {
    let home = tempfile::tempdir().unwrap();
    let ps = timonel(home.path(), &["completion", "powershell"]);
    assert!(ps.status.success());
    let script = text(&ps.stdout);
    assert!(
        script.contains("Register-ArgumentCompleter") && script.contains("timonel"),
        "{script}"
    );
    let bash = timonel(home.path(), &["completion", "bash"]);
    assert!(text(&bash.stdout).contains("complete -F"));
    let bad = timonel(home.path(), &["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn profile_list_reads_the_state_files() {
    let home = tempfile::tempdir().unwrap();
    let out = timonel(home.path(), &["profile", "list", "-o", "json"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    write_profile(home.path(), "dev");
    let broken = home.path().join("profiles/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("profile.json"), "{").unwrap();

    let out = timonel(home.path(), &["profile", "list", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "broken");
    assert_eq!(v[0]["state"], "invalid");
    assert_eq!(v[1]["name"], "dev");
    assert_eq!(v[1]["state"], "stopped");
    assert_eq!(v[1]["version"], "v1.31.2+k3s1");
    let table = text(&timonel(home.path(), &["profile", "list"]).stdout);
    assert!(
        table.contains("dev") && table.contains("stopped"),
        "{table}"
    );
}

#[test]
fn bad_profile_names_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["Dev", "a_b", "-x", "../../etc", "a;b", &"x".repeat(41)] {
        let out = timonel(home.path(), &["status", &format!("--profile={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("hint:"), "{bad}: {err}");
    }
    assert!(!home.path().join("profiles").exists());
}

#[test]
fn commands_on_a_missing_profile_say_how_to_create_it() {
    let home = tempfile::tempdir().unwrap();
    for cmd in [&["status"][..], &["ip"], &["stop"], &["kubeconfig"]] {
        let out = timonel(home.path(), &[cmd, &["-p", "ghost"]].concat());
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("profile `ghost` does not exist"),
            "{cmd:?}: {err}"
        );
        assert!(err.contains("timonel start -p ghost"), "{cmd:?}: {err}");
    }
}

/// Runs `timonel ARGS` with stdout a pipe whose reading end is already closed, as when the
/// reader (`| head -1`) has gone away before timonel writes.
fn timonel_into_closed_pipe(home: &std::path::Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = command(home, args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_reader_that_goes_away_ends_every_printing_command_quietly() {
    let home = tempfile::tempdir().unwrap();
    // Something for each listing command to print.
    let profile = write_profile(home.path(), "dev");
    std::fs::write(profile.join("kubeconfig.yaml"), "apiVersion: v1\n").unwrap();
    let cached = home.path().join("cache/k3s/v1.31.2+k3s1/amd64");
    std::fs::create_dir_all(&cached).unwrap();
    std::fs::write(cached.join("k3s"), "binary").unwrap();
    assert!(timonel(home.path(), &["config", "set", "memory", "4g"])
        .status
        .success());

    let commands: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["help", "start"],
        &["start", "--help"],
        &["version"],
        &["version", "-o", "json"],
        &["completion", "bash"],
        &["completion", "zsh"],
        &["completion", "fish"],
        &["completion", "powershell"],
        &["completion", "elvish"],
        &["config", "view"],
        &["config", "view", "-o", "json"],
        &["config", "get", "memory"],
        &["config", "export", "-p", "dev"],
        &["profile", "list"],
        &["profile", "list", "-o", "json"],
        &["cache", "list"],
        &["cache", "list", "-o", "json"],
        &["addons", "list", "-p", "dev"],
        &["addons", "list", "-p", "dev", "-o", "json"],
        &["kubeconfig", "-p", "dev"],
    ];
    for args in commands {
        // The command does print something when someone reads it...
        let read = timonel(home.path(), args);
        assert!(read.status.success(), "{args:?}: {}", text(&read.stderr));
        assert!(!read.stdout.is_empty(), "{args:?} printed nothing");
        // ...and ends quietly when nobody does.
        let out = timonel_into_closed_pipe(home.path(), args);
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("backtrace") && !err.contains("error"),
            "{args:?} complained about the closed pipe:\n{err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[cfg(unix)]
#[test]
fn timonel_home_and_its_cache_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A release to cache, served from a file:// mirror.
    support::publish(
        &tmp.path().join("release"),
        "v1.31.2+k3s1",
        &[("k3s", b"k3s binary")],
    );
    let home = tmp.path().join("home");

    let set = timonel(&home, &["config", "set", "memory", "4g"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert_eq!(mode(&home), 0o700);
    let mirror = format!("file://{}", tmp.path().join("release").display());
    let download = timonel(
        &home,
        &[
            "cache",
            "download",
            "--kubernetes-version",
            "v1.31.2+k3s1",
            "--arch",
            "amd64",
            "--no-airgap",
            "--binary-mirror",
            &mirror,
        ],
    );
    assert!(download.status.success(), "{}", text(&download.stderr));
    let cached = home.join("cache/k3s/v1.31.2+k3s1/amd64/k3s");
    assert_eq!(std::fs::read(&cached).unwrap(), b"k3s binary");
    for dir in cached.ancestors().skip(1) {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        if dir == home {
            break;
        }
    }
    // Files may be readable by others: nobody else can reach them.
    assert_eq!(mode(&cached) & 0o022, 0, "{:o}", mode(&cached));
}

#[test]
fn debug_logs_are_coloured_only_on_a_terminal_or_when_asked() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        command(home.path(), args)
            .env_remove("NO_COLOR")
            .env_remove("TIMONEL_LOG")
            .output()
            .unwrap()
    };
    // stderr is a pipe here, not a terminal.
    let piped = run(&["-vv", "version"]);
    assert!(piped.status.success());
    let log = text(&piped.stderr);
    assert!(
        log.contains("DEBUG") && log.contains("timonel starting"),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "escape codes in a piped log: {log:?}"
    );

    let forced = text(&run(&["-vv", "--color", "always", "version"]).stderr);
    assert!(forced.contains('\x1b'), "--color always: {forced:?}");
}

/// Writes a stopped docker profile `name` into `home`, as `start` would have left it.
fn write_profile(home: &std::path::Path, name: &str) -> std::path::PathBuf {
    let dir = home.join("profiles").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("profile.json"),
        serde_json::json!({
            "schema": 1, "name": name, "driver": "docker", "distribution": "k3s",
            "version": "v1.31.2+k3s1", "listen_address": "127.0.0.1", "token": "t",
            "nodes": [{"name": name, "role": "server", "index": 1}],
            "phase": "stopped", "created_at": 0
        })
        .to_string(),
    )
    .unwrap();
    dir
}

#[test]
fn a_lock_timeout_says_how_long_this_command_waited_and_for_whom() {
    let home = tempfile::tempdir().unwrap();
    write_profile(home.path(), "dev");
    // This test process holds the profile's lock, as a running `timonel start` would.
    let _held = timonel::lock::acquire(
        &home.path().join("locks"),
        "dev",
        std::time::Duration::ZERO,
        &mut |_| {},
    )
    .unwrap();
    let out = command(home.path(), &["kubeconfig", "--merge", "-p", "dev"])
        .env("TIMONEL_LOCK_TIMEOUT", "200ms")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "profile `dev` is busy: this command waited 200ms for another timonel command"
        ) && err.contains(&format!("(pid {}: ", std::process::id())),
        "{err}"
    );
    assert!(!err.contains("longer than 200ms for"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("TIMONEL_LOCK_TIMEOUT=10m"),
        "{err}"
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let home = tempfile::tempdir().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&timonel(home.path(), &["version", "-o", "json"]).stdout).unwrap();
    let commit = json["commit"].as_str().unwrap().to_string();
    let line = text(&timonel(home.path(), &["version"]).stdout);
    assert!(line.contains(&format!("(commit {commit}, ")), "{line}");

    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(out) if out.status.success() => {
            // Built from this checkout: its HEAD, marked dirty when the build saw local
            // changes (which the tree may or may not still have).
            let head = text(&out.stdout).trim().to_string();
            assert_eq!(head.len(), 12, "{head}");
            assert!(
                commit == head || commit == format!("{head}-dirty"),
                "`timonel version` says {commit}, HEAD is {head}"
            );
        }
        // No git here: the fallback.
        _ => assert!(
            commit == "unknown" || std::env::var("TIMONEL_COMMIT").is_ok_and(|c| c == commit),
            "{commit}"
        ),
    }
}

#[test]
fn doctor_reports_every_check_with_a_verdict_and_a_fix_when_not_ok() {
    let home = tempfile::tempdir().unwrap();
    let doctor = |args: &[&str]| {
        command(home.path(), args)
            .env("HTTPS_PROXY", "http://127.0.0.1:3128")
            .env_remove("https_proxy")
            .output()
            .unwrap()
    };
    let out = doctor(&["doctor", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let checks = report["checks"].as_array().unwrap();
    let rank = |v: &str| match v {
        "ok" => 0,
        "warn" => 1,
        "fail" => 2,
        other => panic!("unknown verdict {other}"),
    };
    let mut worst = 0;
    for c in checks {
        let (name, verdict) = (c["name"].as_str().unwrap(), c["verdict"].as_str().unwrap());
        assert!(
            !name.is_empty() && !c["detail"].as_str().unwrap().is_empty(),
            "{c}"
        );
        worst = worst.max(rank(verdict));
        match (verdict, c["fix"].as_str()) {
            ("ok", None) => {}
            ("ok", Some(_)) => panic!("an ok check with a fix: {c}"),
            (_, Some(fix)) => assert!(!fix.trim().is_empty(), "{c}"),
            (_, None) => panic!("a check that is not ok has no fix: {c}"),
        }
    }
    assert_eq!(rank(report["verdict"].as_str().unwrap()), worst);
    // Exit code by severity: 1 only when a check failed.
    assert_eq!(
        out.status.code(),
        Some(if worst == 2 { 1 } else { 0 }),
        "{report}"
    );

    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let mut expected = vec![
        "driver docker",
        "usable driver",
        "disk space",
        "clock",
        "proxy",
    ];
    if cfg!(target_os = "linux") {
        expected.extend([
            "cgroups",
            "module br_netfilter",
            "module overlay",
            "fs.inotify.max_user_instances",
            "fs.inotify.max_user_watches",
        ]);
    }
    for name in expected {
        assert!(names.contains(&name), "`{name}` missing from {names:?}");
    }
    // The proxy setting of this run is read: a loopback proxy is useless inside the nodes.
    let proxy = checks.iter().find(|c| c["name"] == "proxy").unwrap();
    assert_eq!(proxy["verdict"], "warn", "{proxy}");

    // The table for people: a row per check, its verdict, the fix under each row that is not
    // ok, and the exit code its own verdicts call for. (A second run reads the host again, so
    // a slow driver may answer differently: only the checks' names must match.)
    let run = doctor(&["doctor"]);
    let table = text(&run.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CHECK "), "{table}");
    let mut failed = false;
    for name in &names {
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for `{name}` in\n{table}"));
        let verdict = lines[i][name.len()..].split_whitespace().next().unwrap();
        failed |= rank(verdict) == 2;
        let fix_below = lines
            .get(i + 1)
            .is_some_and(|l| l.starts_with(' ') && l.trim_start().starts_with("fix: "));
        assert_eq!(fix_below, verdict != "ok", "`{name}` in\n{table}");
    }
    assert_eq!(run.status.code(), Some(i32::from(failed)), "{table}");
}
