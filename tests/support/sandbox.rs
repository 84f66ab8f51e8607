//! For the end-to-end tests: a sandboxed timonel (its own home and kubeconfig), a local k3s
//! release mirror serving the stand-in, daemon checks, and leftover checks by label.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The k3s version the stand-in pretends to be in these tests.
pub const VERSION: &str = "v1.31.2+k3s1";

/// Whether the Docker daemon answers. Under `CI=true` a missing daemon fails the test; elsewhere
/// the test prints why and returns early.
pub fn require_docker() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and no Docker daemon answers: scripts/test.sh starts one (scripts/start-docker.sh)");
        }
        eprintln!("skipping: no Docker daemon answers (start one with scripts/start-docker.sh)");
    }
    ok
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The static stand-in binary: `$TIMONEL_STANDIN`, else what scripts/build-standin.sh builds
/// (it is quick when the binary is up to date, and prints the path).
pub fn standin_binary() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| built("TIMONEL_STANDIN", "build-standin.sh"))
        .clone()
}

/// The static API load balancer program: `$TIMONEL_LB`, else what scripts/build-lb.sh builds.
pub fn balancer_binary() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| built("TIMONEL_LB", "build-lb.sh"))
        .clone()
}

/// The program `$<var>` names, else the one `scripts/<script>` builds and prints the path of.
fn built(var: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts").join(script))
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("scripts/{script} printed no path"));
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// A `file://` mirror with the real release layout, serving the stand-in as [`VERSION`]:
/// `<dir>/<version>/{k3s, sha256sum-amd64.txt, k3s-airgap-images-amd64.tar.zst}`.
pub struct StandinMirror {
    pub dir: tempfile::TempDir,
}

impl StandinMirror {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let binary = std::fs::read(standin_binary()).unwrap();
        // A stand-in airgap tarball: k3s would import it; the stand-in reads it and logs so.
        let airgap = b"not really images: a test stand-in airgap tarball".to_vec();
        super::publish(
            dir.path(),
            VERSION,
            &[
                ("k3s", &binary),
                ("k3s-airgap-images-amd64.tar.zst", &airgap),
            ],
        );
        Self { dir }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// `start --driver docker --kubernetes-version VERSION` and `extra`: a start for the stand-in.
pub fn start_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "start",
        "--driver",
        "docker",
        "--kubernetes-version",
        VERSION,
    ];
    args.extend_from_slice(extra);
    args
}

/// A timonel sandbox: its own TIMONEL_HOME and KUBECONFIG, a unique profile name, and a guard
/// that deletes the profile (and anything labelled with it) when dropped.
pub struct Sandbox {
    pub home: tempfile::TempDir,
    pub profile: String,
    pub kubeconfig: PathBuf,
    pub mirror: StandinMirror,
    /// Set by [`Sandbox::mark_deleted`]: the drop guard then only sweeps labels.
    deleted: std::cell::Cell<bool>,
}

impl Sandbox {
    pub fn new(prefix: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let profile = format!(
            "{prefix}-{}-{:x}",
            std::process::id() % 100000,
            nanos % 0xffff
        );
        let kubeconfig = home.path().join("kube/config");
        Self {
            home,
            profile,
            kubeconfig,
            mirror: StandinMirror::new(),
            deleted: std::cell::Cell::new(false),
        }
    }

    pub fn timonel_home(&self) -> PathBuf {
        self.home.path().join("timonel")
    }

    /// The profile's folder under the sandbox's home.
    pub fn profile_dir(&self) -> PathBuf {
        self.timonel_home().join("profiles").join(&self.profile)
    }

    /// `timonel <args>` with this sandbox's environment and `-p <profile>`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        // The profile first: everything after `--` belongs to the command (`timonel ssh -- …`).
        let mut full = vec!["-p", &self.profile];
        full.extend_from_slice(args);
        self.cmd_unnamed(&full)
    }

    /// `timonel <args>` with this sandbox's environment and no `-p` (the profile comes from
    /// elsewhere, e.g. a cluster file's `name`).
    pub fn cmd_unnamed(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_timonel"));
        c.args(args)
            .env("TIMONEL_HOME", self.timonel_home())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("TIMONEL_BINARY_MIRROR", self.mirror.url())
            .env("TIMONEL_NO_PROGRESS", "1")
            .env_remove("TIMONEL_PROFILE")
            .env_remove("TIMONEL_DRIVER");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("run timonel");
        log_output("timonel", args, &out);
        out
    }

    /// [`Sandbox::run`] without `-p`.
    pub fn run_unnamed(&self, args: &[&str]) -> Output {
        let out = self.cmd_unnamed(args).output().expect("run timonel");
        log_output("timonel", args, &out);
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "timonel {} failed", args.join(" "));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `timonel start` for the stand-in: the test version, from the mirror, on docker. Several
    /// servers get the API load balancer built by scripts/build-lb.sh (`TIMONEL_LB`).
    pub fn start(&self, extra: &[&str]) -> Output {
        let args = start_args(extra);
        let mut c = self.cmd(&args);
        if extra.contains(&"--control-planes") {
            c.env("TIMONEL_LB", balancer_binary());
        }
        let out = c.output().expect("run timonel");
        log_output("timonel", &args, &out);
        out
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run kubectl");
        log_output("kubectl", args, &out);
        out
    }

    /// The names of the Ready nodes kubectl lists, sorted.
    pub fn ready_nodes(&self) -> Vec<String> {
        let out = self.kubectl(&["get", "nodes", "--no-headers"]);
        assert!(out.status.success(), "kubectl get nodes failed");
        let mut v: Vec<String> = stdout(&out)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// Docker objects still labelled with this profile.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.profile)
    }
}

impl Sandbox {
    /// The test has seen the profile deleted: the drop guard skips its `delete` (which, for a
    /// profile with no file, asks every driver that can find clusters by label, libvirt too).
    pub fn mark_deleted(&self) {
        self.deleted.set(true);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.deleted.get() {
            let _ = self.cmd(&["delete"]).output();
        }
        cleanup_label(&self.profile);
    }
}

/// Shows a command and what it printed in the test's output: `$ <program> <args> -> <status>`,
/// then its stdout and stderr.
pub fn log_output(program: &str, args: &[&str], out: &Output) {
    eprintln!(
        "$ {program} {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every container, volume and network labelled `dev.timonel.cluster=<profile>`.
pub fn leftovers(profile: &str) -> Vec<String> {
    leftovers_in(&["docker"], profile)
}

/// [`leftovers`] as another CLI with docker's commands sees them (`["podman", "--url", …]`).
pub fn leftovers_in(cli: &[&str], profile: &str) -> Vec<String> {
    let filter = format!("label=dev.timonel.cluster={profile}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
    ] {
        let out = Command::new(cli[0])
            .args(&cli[1..])
            .args(&args)
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.trim().is_empty() {
                found.push(format!("{kind} {line}"));
            }
        }
    }
    found
}

fn cleanup_label(profile: &str) {
    let filter = format!("label=dev.timonel.cluster={profile}");
    let ids = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    };
    for id in ids(&["ps", "-a", "-q", "--filter", &filter]) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &id])
            .output();
    }
    for id in ids(&["volume", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &id])
            .output();
    }
    for id in ids(&["network", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker").args(["network", "rm", &id]).output();
    }
}

/// A TCP port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns true or `timeout` passes.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not happen within {timeout:?}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn read_yaml(path: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A user's own kubeconfig, with one context of their own that timonel must keep.
pub const USERS_KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: work
  cluster:
    server: https://work.example:6443
    insecure-skip-tls-verify: true
contexts:
- name: work
  context:
    cluster: work
    user: work-admin
current-context: work
users:
- name: work-admin
  user:
    token: not-a-real-token
"#;

/// A lock on a file shared by every process running these tests: shared by the ordinary tests,
/// exclusive while the daemon is restarted.
pub struct DaemonLock(#[allow(dead_code)] std::fs::File);

fn lock_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("timonel-faults-dockerd.lock"))
        .unwrap()
}

pub fn daemon_shared() -> DaemonLock {
    let f = lock_file();
    f.lock_shared().unwrap();
    DaemonLock(f)
}

pub fn daemon_exclusive() -> DaemonLock {
    let f = lock_file();
    f.lock().unwrap();
    DaemonLock(f)
}
