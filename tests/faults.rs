//! Fault injection on the real Docker daemon with the k3s stand-in: interrupts at many points,
//! a daemon restart, killed and removed node containers, a full disk while caching, awkward
//! kubeconfigs, concurrent profiles. Marked ignored (they need a daemon); scripts/test.sh runs
//! them. Under CI=true a missing daemon fails them.
//!
//! Restarting dockerd disturbs every other Docker test: every test here holds a shared file
//! lock, the restart test holds it exclusively (and restores the daemon before it returns).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::sandbox::*;

/// The node image every profile shares (built from the stand-in for [`VERSION`]).
const NODE_IMAGE: &str = "timonel/k3s:v1.31.2-k3s1";

// ---------------------------------------------------------------------------------------------
// Helpers.

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns false) with a printed reason outside CI; fails under CI=true.
fn require(cond: bool, why: &str) -> bool {
    if !cond {
        assert!(!in_ci(), "CI=true and this test cannot run: {why}");
        eprintln!("skipping: {why}");
    }
    cond
}

fn profile_dir(sb: &Sandbox) -> PathBuf {
    sb.timonel_home().join("profiles").join(&sb.profile)
}

/// Names of the contexts, clusters and users in a kubeconfig file (empty when it is missing).
fn kubeconfig_names(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    let v = read_yaml(path);
    let mut names = Vec::new();
    for key in ["contexts", "clusters", "users"] {
        if let Some(items) = v[key].as_array() {
            for item in items {
                if let Some(n) = item["name"].as_str() {
                    names.push(format!("{key}/{n}"));
                }
            }
        }
    }
    names
}

/// `timonel/*` image references, to see that no image but the shared node image is left.
fn timonel_images() -> BTreeSet<String> {
    let out = Command::new("docker")
        .args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "timonel/*",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that nothing of `sb`'s profile is left: Docker objects, profile folder, kubeconfig
/// entries.
fn assert_nothing_left(sb: &Sandbox, when: &str) {
    assert_eq!(
        sb.leftovers(),
        Vec::<String>::new(),
        "{when}: Docker objects left"
    );
    assert!(!profile_dir(sb).exists(), "{when}: profile folder left");
    let names = kubeconfig_names(&sb.kubeconfig);
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(&format!("/{}", sb.profile))),
        "{when}: kubeconfig entries left: {names:?}"
    );
}

fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        stderr(&out)
    );
    stdout(&out).trim().to_string()
}

fn status_json(sb: &Sandbox) -> (Option<i32>, serde_json::Value) {
    let out = sb.run(&["status", "-o", "json"]);
    let v = serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v)
}

/// A child timonel whose stderr lines arrive on a channel as they are written.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(sb: &Sandbox, args: &[&str]) -> Self {
        Self::spawn_cmd(sb.cmd(args))
    }

    fn spawn_cmd(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `timeout`) until `n` lines have been written; false if the child ended first.
    fn wait_lines(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return false,
            }
        }
        true
    }

    fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the child to exit (killing it after `timeout`) and collects the rest of stderr.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "timonel did not exit within {timeout:?} of the interrupt:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"))
    }
}

/// Where to interrupt a command: after its k-th stderr line, or after a delay.
#[derive(Debug, Clone, Copy)]
enum Point {
    AfterLine(usize),
    AfterMillis(u64),
}

/// Runs `args` in `sb`, interrupts it at `point`, and returns whether it was interrupted before
/// it finished (exit 130 or killed by the signal) or finished anyway (exit 0).
fn interrupt_at(sb: &Sandbox, args: &[&str], point: Point) -> bool {
    let mut w = Watched::spawn(sb, args);
    match point {
        Point::AfterLine(k) => {
            if !w.wait_lines(k, Duration::from_secs(60)) {
                let (status, log) = w.finish(Duration::from_secs(60));
                assert!(status.success(), "{point:?}: {status}\n{log}");
                return false;
            }
        }
        Point::AfterMillis(ms) => std::thread::sleep(Duration::from_millis(ms)),
    }
    w.interrupt();
    let (status, log) = w.finish(Duration::from_secs(90));
    eprintln!("--- {args:?} interrupted at {point:?}: {status}\n{log}");
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => false,
        (Some(130), _) | (None, Some(2)) => true,
        other => panic!("{point:?}: unexpected exit {other:?}\n{log}"),
    }
}

fn write_other_kubeconfig(sb: &Sandbox) {
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, USERS_KUBECONFIG).unwrap();
}

fn start_args() -> Vec<&'static str> {
    vec![
        "start",
        "-v",
        "--driver",
        "docker",
        "--kubernetes-version",
        VERSION,
    ]
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
#[ignore = "needs a docker daemon"]
fn sigint_at_twenty_points_of_start_and_delete_leaves_nothing() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let images_before = timonel_images();

    // A reference run: how many stderr lines a whole `start -v` writes (it also builds the
    // node image, so later runs are as fast as a user's warm start).
    let reference = Sandbox::new("int-ref");
    let out = reference.cmd(&start_args()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let total = stderr(&out).lines().count();
    assert!(
        total >= 8,
        "too few step lines to spread over:\n{}",
        stderr(&out)
    );
    reference.ok(&["delete"]);
    assert_nothing_left(&reference, "reference");

    // Start: after 14 lines spread evenly from the first to the last step (the last few lines
    // are the summary, written when nothing is left to interrupt), plus timed points.
    let last_step = total - 4;
    let mut points: Vec<Point> = (0..14)
        .map(|i| Point::AfterLine(1 + i * (last_step - 1) / 13))
        .collect();
    points.dedup_by_key(|p| match p {
        Point::AfterLine(k) => *k,
        Point::AfterMillis(_) => 0,
    });
    points.extend([Point::AfterMillis(30), Point::AfterMillis(150)]);
    let mut interrupted = 0;
    for point in &points {
        let sb = Sandbox::new("int");
        write_other_kubeconfig(&sb);
        let before = read_yaml(&sb.kubeconfig);
        if interrupt_at(&sb, &start_args(), *point) {
            interrupted += 1;
        } else {
            // It finished before the interrupt landed: a normal delete cleans it.
            sb.ok(&["delete"]);
        }
        assert_nothing_left(&sb, &format!("start interrupted at {point:?}"));
        assert_eq!(
            read_yaml(&sb.kubeconfig),
            before,
            "kubeconfig changed at {point:?}"
        );
    }
    assert!(
        interrupted >= points.len() / 2,
        "only {interrupted} of {} start runs were interrupted before they finished",
        points.len()
    );

    // Delete: a running cluster, interrupted after its first line and at timed points. Once
    // it has begun, a delete finishes what it was asked (exit 0, nothing left). A signal that
    // lands before timonel handles signals (the first milliseconds of the process) kills it
    // before it has touched anything: then the cluster is whole and a second delete removes it.
    for point in [
        Point::AfterLine(1),
        Point::AfterMillis(5),
        Point::AfterMillis(40),
        Point::AfterMillis(120),
        Point::AfterMillis(250),
    ] {
        let sb = Sandbox::new("intdel");
        write_other_kubeconfig(&sb);
        let before = read_yaml(&sb.kubeconfig);
        let out = sb.cmd(&start_args()).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let whole = sb.leftovers();
        let stopped = interrupt_at(&sb, &["delete", "-v"], point);
        if stopped {
            assert!(
                matches!(point, Point::AfterMillis(_)),
                "delete interrupted after it began ({point:?}) gave up instead of finishing"
            );
            assert_eq!(
                sb.leftovers(),
                whole,
                "delete killed at {point:?} removed a part"
            );
            assert!(
                profile_dir(&sb).exists(),
                "delete killed at {point:?} removed a part"
            );
            sb.ok(&["delete"]);
        }
        assert_nothing_left(&sb, &format!("delete interrupted at {point:?}"));
        assert_eq!(read_yaml(&sb.kubeconfig), before);
    }

    let new_images: Vec<String> = timonel_images()
        .difference(&images_before)
        .filter(|i| i.as_str() != NODE_IMAGE)
        // The API load balancer's image, shared like the node image (made by tests/e2e_ha.rs).
        .filter(|i| !i.starts_with("timonel/lb:"))
        .cloned()
        .collect();
    assert_eq!(new_images, Vec::<String>::new(), "images left behind");
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_killed_or_removed_node_container_is_reported_and_repaired() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("kill");
    assert!(sb.start(&[]).status.success());
    let container = format!("timonel-{}", sb.profile);
    let port = docker_ok(&[
        "inspect",
        "--format",
        "{{(index (index .NetworkSettings.Ports \"6443/tcp\") 0).HostPort}}",
        &container,
    ]);
    let ip = sb.ok(&["ip"]).trim().to_string();
    // The kubeconfig from the first start: it keeps working only if the data (CA) survives.
    let old_kubeconfig = std::fs::read_to_string(&sb.kubeconfig).unwrap();

    // docker kill: the container exists but is not running.
    docker_ok(&["kill", &container]);
    let (code, v) = status_json(&sb);
    assert_eq!(code, Some(3), "status after docker kill: {v}");
    assert_ne!(v["nodes"][0]["host"], "running", "{v}");
    assert!(sb.start(&[]).status.success(), "start after docker kill");
    let (code, v) = status_json(&sb);
    assert_eq!(code, Some(0), "status after repair: {v}");

    // docker rm -f: the container is gone; start recreates it from the profile.
    docker_ok(&["rm", "-f", &container]);
    let (code, v) = status_json(&sb);
    assert_eq!(code, Some(3), "status after docker rm -f: {v}");
    assert_ne!(v["nodes"][0]["host"], "running", "{v}");
    assert!(sb.start(&[]).status.success(), "start after docker rm -f");
    let (code, v) = status_json(&sb);
    assert_eq!(
        code,
        Some(0),
        "status after the container was recreated: {v}"
    );
    assert_eq!(sb.ok(&["ip"]).trim(), ip, "same address");
    assert_eq!(
        docker_ok(&[
            "inspect",
            "--format",
            "{{(index (index .NetworkSettings.Ports \"6443/tcp\") 0).HostPort}}",
            &container,
        ]),
        port,
        "same API port"
    );
    let old = sb.home.path().join("old-kubeconfig");
    std::fs::write(&old, old_kubeconfig).unwrap();
    let out = Command::new("kubectl")
        .args(["get", "--raw", "/readyz"])
        .env("KUBECONFIG", &old)
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).trim() == "ok",
        "the first kubeconfig no longer works (data lost with the container?): {}",
        stderr(&out)
    );
    sb.ok(&["delete"]);
    assert_nothing_left(&sb, "after delete");
}

/// Stops dockerd (SIGTERM to the PID in /var/run/docker.pid) and starts it again with
/// scripts/start-docker.sh when dropped, whatever happened in between.
struct DaemonRestart;

impl DaemonRestart {
    fn stop() -> Self {
        let pid = std::fs::read_to_string("/var/run/docker.pid").unwrap();
        let pid = pid.trim().to_string();
        let guard = DaemonRestart;
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        eventually("dockerd exits", Duration::from_secs(60), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        guard
    }

    fn start_again(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/start-docker.sh");
        let out = Command::new("bash").arg(script).output().unwrap();
        assert!(out.status.success(), "start-docker.sh: {}", stderr(&out));
    }
}

impl Drop for DaemonRestart {
    fn drop(&mut self) {
        let docker_up = Command::new("docker")
            .args(["info", "--format", "x"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !docker_up {
            self.start_again();
        }
    }
}

#[test]
#[ignore = "needs a docker daemon"]
fn status_tells_the_truth_across_a_daemon_restart_and_start_recovers() {
    if !require_docker() {
        return;
    }
    let local = std::env::var("DOCKER_HOST")
        .map(|h| h.starts_with("unix://"))
        .unwrap_or(true);
    if !require(
        is_root() && local && Path::new("/var/run/docker.pid").exists(),
        "restarting dockerd needs root and a local daemon with /var/run/docker.pid",
    ) {
        return;
    }
    // Everything else in this file waits while the daemon is down.
    let _daemon = daemon_exclusive();
    let sb = Sandbox::new("restart");
    assert!(sb.start(&[]).status.success());
    assert_eq!(status_json(&sb).0, Some(0));

    let restart = DaemonRestart::stop();
    // The daemon is gone: status cannot claim the cluster runs.
    let out = sb.run(&["status", "-o", "json"]);
    // Exit 3 (a node is not known to run) and JSON that says why, or a plain error.
    let said = format!("{}{}", stdout(&out), stderr(&out)).to_lowercase();
    assert!(
        said.contains("docker") && said.contains("not running"),
        "status should say the Docker daemon is not running: {said}"
    );
    match serde_json::from_str::<serde_json::Value>(&stdout(&out)) {
        Ok(v) => {
            assert_eq!(out.status.code(), Some(3), "{v}");
            assert_ne!(v["nodes"][0]["host"], "running", "{v}");
            assert_ne!(v["nodes"][0]["k3s"], "running", "{v}");
            assert_ne!(v["nodes"][0]["kubernetes"], "Ready", "{v}");
            assert_ne!(v["api"], "ready", "{v}");
        }
        Err(_) => assert_eq!(out.status.code(), Some(1), "no JSON and not an error"),
    }

    restart.start_again();
    // unless-stopped: the daemon brings the node back; status reports what it sees meanwhile,
    // with an exit code that matches its JSON, until all is up again.
    eventually(
        "status reports the cluster up again",
        Duration::from_secs(90),
        || {
            let (code, v) = status_json(&sb);
            let host_running = v["nodes"][0]["host"] == "running";
            match code {
                Some(3) => assert!(!host_running, "exit 3 with a running node: {v}"),
                Some(4) => assert!(
                    host_running && v["api"] != "ready" || v["nodes"][0]["kubernetes"] != "Ready",
                    "exit 4: {v}"
                ),
                _ => {}
            }
            code == Some(0)
        },
    );
    // And start is a no-op resume that succeeds; kubectl agrees.
    assert!(
        sb.start(&[]).status.success(),
        "start after the daemon restart"
    );
    assert_eq!(status_json(&sb).0, Some(0));
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&readyz).trim(), "ok");
    sb.ok(&["delete"]);
    assert_nothing_left(&sb, "after delete");
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", stderr(&out));
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "remount ro: {}", stderr(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn all_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_full_disk_while_caching_is_a_clear_error_and_leaves_no_corrupt_entry() {
    if !require_docker() {
        return;
    }
    if !require(
        is_root(),
        "mounting a small tmpfs as TIMONEL_HOME needs root",
    ) {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("full");
    // A release whose binary (16 MiB) does not fit the 6 MiB home.
    let release = sb.mirror.dir.path().join(VERSION);
    let big: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(release.join("k3s"), &big).unwrap();
    let airgap = std::fs::read(release.join("k3s-airgap-images-amd64.tar.zst")).unwrap();
    let sha = |d: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(d))
    };
    std::fs::write(
        release.join("sha256sum-amd64.txt"),
        format!(
            "{}  k3s-airgap-images-amd64.tar.zst\n{}  k3s\n",
            sha(&airgap),
            sha(&big)
        ),
    )
    .unwrap();
    let tmpfs = Tmpfs::mount("6m");
    let home = tmpfs.path().join("home");
    let mut cmd = sb.cmd(&start_args());
    let out = cmd.env("TIMONEL_HOME", &home).output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left")
            || err.to_lowercase().contains("disk is full")
            || err.contains("space"),
        "the error should say the disk is full: {err}"
    );
    // No cache entry, no half-written file under a final name. A `.partial` may remain: the
    // next fetch resumes it. Nothing else but the profile lock and the cache's own lock and
    // metadata files, the home's id, and the Docker driver's remembered security verdict
    // (learnt beside the download: whole, or not there).
    if let Ok(text) = std::fs::read_to_string(home.join("cache/docker-security.json")) {
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_ok(),
            "a half-written verdict file: {text:?}"
        );
    }
    let files = all_files(&home);
    eprintln!("left in TIMONEL_HOME: {files:?}");
    for f in &files {
        let name = Path::new(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let allowed = name.ends_with(".partial")
            || name.ends_with(".lock")
            || f.starts_with("locks/")
            || f == "home-id"
            || f == "cache/docker-security.json"
            || name == "sha256sum-amd64.txt"
            || name.starts_with("sha256sum-amd64.txt.");
        assert!(
            allowed,
            "unexpected file `{f}` after a full disk: {files:?}"
        );
        assert_ne!(
            name, "k3s",
            "a k3s binary was cached though it could not be complete"
        );
    }
    assert!(!home.join("profiles").join(&sb.profile).exists());
    assert_eq!(sb.leftovers(), Vec::<String>::new());
    assert!(
        !sb.kubeconfig.exists(),
        "kubeconfig created by a failed start"
    );
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_symlinked_kubeconfig_stays_a_symlink_and_its_target_is_updated() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("kcsym");
    let real_dir = sb.home.path().join("dotfiles");
    std::fs::create_dir_all(&real_dir).unwrap();
    let target = real_dir.join("kubeconfig");
    std::fs::write(&target, USERS_KUBECONFIG).unwrap();
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &sb.kubeconfig).unwrap();
    let before = read_yaml(&target);

    assert!(sb.start(&[]).status.success());
    let meta = std::fs::symlink_metadata(&sb.kubeconfig).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "the symlink was replaced by a file"
    );
    assert_eq!(std::fs::read_link(&sb.kubeconfig).unwrap(), target);
    let names = kubeconfig_names(&target);
    assert!(
        names.contains(&format!("contexts/{}", sb.profile)),
        "{names:?}"
    );
    assert!(names.contains(&"contexts/work".to_string()), "{names:?}");
    let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
    assert_eq!(stdout(&readyz).trim(), "ok");

    sb.ok(&["delete"]);
    assert!(std::fs::symlink_metadata(&sb.kubeconfig)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read_yaml(&target), before);
    assert_nothing_left(&sb, "after delete");
}

#[test]
#[ignore = "needs a docker daemon"]
fn a_read_only_kubeconfig_fails_start_cleanly_and_is_untouched() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let mut sb = Sandbox::new("kcro");
    // Root ignores file modes: as root the kubeconfig lives on a read-only mount.
    let tmpfs = is_root().then(|| Tmpfs::mount("1m"));
    let dir = match &tmpfs {
        Some(t) => t.path().to_path_buf(),
        None => sb.home.path().join("ro"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    std::fs::write(&path, USERS_KUBECONFIG).unwrap();
    match &tmpfs {
        Some(t) => t.remount_read_only(),
        None => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
    sb.kubeconfig = path.clone();

    let out = sb.start(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&path.display().to_string()) || err.contains("kubeconfig"),
        "the error should name the kubeconfig: {err}"
    );
    assert!(
        err.to_lowercase().contains("read-only") || err.to_lowercase().contains("permission"),
        "the error should say why: {err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), USERS_KUBECONFIG);
    assert_eq!(
        all_files(&dir),
        vec!["config".to_string()],
        "files added next to it"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nodes left running");
    assert!(!profile_dir(&sb).exists(), "profile left");
    if tmpfs.is_none() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
#[ignore = "needs a docker daemon"]
fn an_invalid_kubeconfig_fails_start_cleanly_and_is_untouched() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let sb = Sandbox::new("kcbad");
    let garbage = "apiVersion: v1\nclusters: [ {name: oops\n  - : :\n";
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, garbage).unwrap();
    let out = sb.start(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&sb.kubeconfig.display().to_string()),
        "the error should name the file: {err}"
    );
    assert_eq!(std::fs::read_to_string(&sb.kubeconfig).unwrap(), garbage);
    assert_eq!(
        all_files(sb.kubeconfig.parent().unwrap()),
        vec!["config".to_string()],
        "files added next to it"
    );
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "nodes left running");
    assert!(!profile_dir(&sb).exists(), "profile left");
}

#[test]
#[ignore = "needs a docker daemon"]
fn four_profiles_started_at_once_are_all_ready_and_distinct() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let boxes: Vec<Sandbox> = (0..4).map(|i| Sandbox::new(&format!("par{i}"))).collect();
    let children: Vec<Child> = boxes
        .iter()
        .map(|sb| {
            sb.cmd(&start_args())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (sb, child) in boxes.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: {}", sb.profile, stderr(&out));
    }
    let mut ports = BTreeSet::new();
    let mut subnets = BTreeSet::new();
    for sb in &boxes {
        assert_eq!(status_json(sb).0, Some(0), "{}", sb.profile);
        let readyz = sb.kubectl(&["get", "--raw", "/readyz"]);
        assert_eq!(stdout(&readyz).trim(), "ok", "{}", sb.profile);
        ports.insert(docker_ok(&[
            "inspect",
            "--format",
            "{{(index (index .NetworkSettings.Ports \"6443/tcp\") 0).HostPort}}",
            &format!("timonel-{}", sb.profile),
        ]));
        subnets.insert(docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Subnet}}",
            &format!("timonel-{}", sb.profile),
        ]));
    }
    assert_eq!(ports.len(), 4, "API ports: {ports:?}");
    assert_eq!(subnets.len(), 4, "subnets: {subnets:?}");
    let deletes: Vec<Child> = boxes
        .iter()
        .map(|sb| sb.cmd(&["delete"]).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for (sb, child) in boxes.iter().zip(deletes) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: {}", sb.profile, stderr(&out));
        assert_nothing_left(sb, "after the concurrent deletes");
    }
}

#[test]
#[ignore = "needs a docker daemon"]
fn an_interrupt_while_a_server_never_answers_ends_start_at_once() {
    if !require_docker() {
        return;
    }
    // A channel server that takes connections and never answers a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/channels", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    let sb = Sandbox::new("fault-hang");
    let mut cmd = sb.cmd(&[
        "start",
        "-v",
        "--driver",
        "docker",
        "--kubernetes-version",
        "stable",
    ]);
    cmd.env("TIMONEL_CHANNEL_URL", &url);
    let mut w = Watched::spawn_cmd(cmd);
    // Wait for the step that asks the channel server, then interrupt once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w
        .seen
        .iter()
        .any(|l| l.contains("… resolving the k3s version"))
    {
        assert!(
            w.wait_lines(
                w.seen.len() + 1,
                deadline.saturating_duration_since(Instant::now())
            ),
            "no `… resolving the k3s version` line within 60 s:\n{}",
            w.seen.join("\n")
        );
    }
    w.interrupt();
    // One interrupt is enough: `finish` panics if it has not ended well within the requests'
    // own timeouts.
    let (status, log) = w.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(!log.contains("interrupted again"), "{log}");
    assert_nothing_left(&sb, "an interrupt while resolving");
}
