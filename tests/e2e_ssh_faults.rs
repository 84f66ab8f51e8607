//! Faults around `timonel start --driver ssh` on real machines (the test hosts of
//! tests/support/ssh_hosts.rs: Debian 12 containers with systemd and Debian's sshd): a login
//! through a real ssh-agent only, a machine that is down while the cluster is deleted, and a
//! Ctrl-C while k3s is being installed on the machines. Each must end with the machines exactly
//! as they were before the start (see `TestHost::snapshot`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::sandbox::*;
use support::ssh_hosts::{assert_as_before, snapshot_diff as diff, TestHost, TestHosts};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A login key of our own, and a known_hosts file of our own (the user's ~/.ssh is never
/// touched).
struct Keys {
    key: PathBuf,
    public: String,
    known_hosts: PathBuf,
}

fn keys(sb: &Sandbox, hosts: &[&TestHost]) -> Keys {
    let dir = sb.home.path().join("client-key");
    let key = timonel_driver_vm::SshKey::ensure(&dir, "e2e-ssh-faults").unwrap();
    let known_hosts = sb.home.path().join("known_hosts");
    let text: String = hosts
        .iter()
        .map(|h| format!("{}\n", h.known_hosts_line()))
        .collect();
    std::fs::write(&known_hosts, text).unwrap();
    Keys {
        key: key.private_path.clone(),
        public: key.public_openssh(),
        known_hosts,
    }
}

/// `start --driver ssh` on `nodes` with the key file (when given) and our known_hosts file.
fn start_args(key: Option<&Path>, known_hosts: &Path, nodes: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "start".into(),
        "--driver".into(),
        "ssh".into(),
        "--kubernetes-version".into(),
        VERSION.into(),
        "--ssh-known-hosts".into(),
        known_hosts.display().to_string(),
    ];
    if let Some(key) = key {
        args.push("--ssh-key".into());
        args.push(key.display().to_string());
    }
    for n in nodes {
        args.push("--node".into());
        args.push(n.clone());
    }
    args
}

/// Runs a prepared timonel command, prints what it said, returns its output.
fn run(what: &str, cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    eprintln!(
        "$ timonel {what} -> {} in {:?}\n{}{}",
        out.status,
        started.elapsed(),
        stdout(&out),
        stderr(&out)
    );
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn profile_file(sb: &Sandbox) -> PathBuf {
    sb.timonel_home()
        .join("profiles")
        .join(&sb.profile)
        .join("profile.json")
}

/// A snapshot without the NAT rules of Docker's embedded DNS server (127.0.0.11), which Docker
/// writes into the container anew, with new random ports, each time the container starts: they
/// are the test bed's, not the machine's, and differ across a reboot of a test host.
fn without_docker_dns(snapshot: &str) -> String {
    snapshot
        .lines()
        .filter(|l| !l.contains("127.0.0.11"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Whether `ip:22` greets with an SSH banner now.
fn sshd_answers(ip: IpAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(ip, 22), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"SSH-2.0-"))
}

fn docker_ok(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        stderr(&out)
    );
}

fn container_ip(container: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
        .output()
        .unwrap();
    stdout(&out).trim().to_string()
}

/// A real ssh-agent (`ssh-agent -D -a <socket>`) of this test; killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new("/usr/bin/ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run /usr/bin/ssh-agent");
        let agent = Agent {
            child,
            socket,
            _dir: dir,
        };
        eventually(
            "ssh-agent listens on its socket",
            Duration::from_secs(10),
            || agent.socket.exists(),
        );
        agent
    }

    fn ssh_add(&self, args: &[&str]) -> Output {
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `timonel start -o json` child: its stdout events arrive on a channel as they are written;
/// stderr is collected on the side.
struct EventStream {
    child: Child,
    events: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl EventStream {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Self {
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    fn take(&mut self, line: String) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
        self.seen.push(v.clone());
        v
    }

    /// Waits (up to `timeout`) for an event `want` accepts; false when the stream ended first.
    fn wait_for(&mut self, timeout: Duration, want: impl Fn(&serde_json::Value) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    if want(&self.take(line)) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// SIGINT, as a terminal's Ctrl-C sends it (the same way tests/faults.rs does).
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -INT {}", self.child.id());
    }

    /// Waits for the exit (killing the child after `timeout`); returns the status, every event
    /// and stderr.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "timonel did not exit within {timeout:?}; events so far:\n{:#?}",
                    self.seen
                );
            }
            // Keep the pipe drained meanwhile.
            if let Ok(line) = self.events.recv_timeout(Duration::from_millis(20)) {
                self.take(line);
            }
        };
        while let Ok(line) = self.events.recv_timeout(Duration::from_secs(2)) {
            self.take(line);
        }
        let err = self.stderr.join().unwrap_or_default();
        (status, self.seen, err)
    }
}

fn is_event(v: &serde_json::Value, kind: &str, event: Option<&str>, prefix: &str) -> bool {
    v["type"] == kind
        && event.is_none_or(|e| v["event"] == e)
        && v["message"].as_str().is_some_and(|m| m.starts_with(prefix))
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn ssh_agent_login() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("agent", 1);
    let h1 = &hosts.hosts[0];
    let sb = Sandbox::new("sshagent");
    let keys = keys(&sb, &[h1]);
    // Only alice knows the key; it is loaded into a real ssh-agent.
    h1.authorize("alice", &keys.public);
    let agent = Agent::start();
    let added = agent.ssh_add(&[keys.key.to_str().unwrap()]);
    assert!(added.status.success(), "ssh-add: {}", stderr(&added));
    let listed = agent.ssh_add(&["-L"]);
    assert_eq!(
        stdout(&listed).lines().count(),
        1,
        "the agent should hold exactly our key: {}",
        stdout(&listed)
    );
    assert!(
        stdout(&listed).contains(keys.public.split_whitespace().nth(1).unwrap()),
        "{}",
        stdout(&listed)
    );
    // An empty HOME: no ~/.ssh/id_* to fall back on, so only the agent can log in.
    let home = tempfile::tempdir().unwrap();
    let with_agent = |args: &[&str]| {
        let mut cmd = sb.cmd(args);
        cmd.env("SSH_AUTH_SOCK", &agent.socket)
            .env("HOME", home.path())
            .env_remove("TIMONEL_SSH_PASSWORD")
            .env_remove("TIMONEL_SSH_KEY_PASSPHRASE");
        cmd
    };
    let before = vec![h1.snapshot()];
    let nodes = vec![format!("alice@{}", h1.ip)];

    let args = start_args(None, &keys.known_hosts, &nodes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("start (agent)", &mut with_agent(&args));
    assert!(out.status.success(), "start with the agent's key failed");
    assert_eq!(sb.ready_nodes(), vec![sb.profile.clone()]);
    assert_eq!(
        String::from_utf8_lossy(&h1.exec("systemctl is-active k3s").stdout).trim(),
        "active"
    );
    // The profile records no key file: later commands log in through the agent again.
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(profile_file(&sb)).unwrap()).unwrap();
    assert!(
        profile["ssh"]["cluster_id"].is_string() && profile["ssh"]["key_file"].is_null(),
        "no key file was given, yet one is recorded: {profile:#}"
    );

    // Without the agent (and no key file, no password) a second profile on the same machine
    // cannot log in: refused before anything changes, saying what was tried.
    let during = vec![h1.snapshot()];
    let other = Sandbox::new("sshnoagent");
    let mut cmd = other.cmd(&args);
    cmd.env_remove("SSH_AUTH_SOCK")
        .env("HOME", home.path())
        .env_remove("TIMONEL_SSH_PASSWORD");
    let out = run("start (no agent)", &mut cmd);
    let said = text(&out);
    assert!(!out.status.success(), "start without any key succeeded");
    assert!(said.contains("refused every login"), "{said}");
    assert!(said.contains("ssh-agent"), "{said}");
    assert!(said.contains("`alice`"), "{said}");
    assert!(
        !profile_file(&other).exists(),
        "a refused start left a profile"
    );
    assert_as_before(&hosts.hosts, &during, "after the refused start");
    assert_eq!(
        sb.ready_nodes(),
        vec![sb.profile.clone()],
        "the refused start disturbed the first cluster"
    );

    let out = run("delete (agent)", &mut with_agent(&["delete"]));
    assert!(out.status.success(), "delete with the agent's key failed");
    assert!(!profile_file(&sb).exists());
    assert_as_before(&hosts.hosts, &before, "after delete");
    // Nothing was written into the (empty) home folder: no ~/.ssh, no known_hosts.
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "timonel wrote into HOME: {left:?}");
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn delete_with_a_machine_down_fails_clearly_then_finishes() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("down", 2);
    let [h1, h2] = [&hosts.hosts[0], &hosts.hosts[1]];
    let sb = Sandbox::new("sshdown");
    let keys = keys(&sb, &[h1, h2]);
    h1.authorize("root", &keys.public);
    h2.authorize("root", &keys.public);
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let nodes = vec![format!("root@{}", h1.ip), format!("root@{}", h2.ip)];
    let args = start_args(Some(&keys.key), &keys.known_hosts, &nodes);
    let out = run(
        "start",
        sb.cmd(&[]).args(&args).env_remove("TIMONEL_SSH_PASSWORD"),
    );
    assert!(out.status.success(), "start failed");
    assert_eq!(sb.ready_nodes().len(), 2);

    // The second machine goes down (systemd shuts down; the container stops).
    docker_ok(&["stop", &h2.container]);
    assert!(!sshd_answers(h2.ip), "{} still answers", h2.container);
    let out = run("delete (h2 down)", &mut sb.cmd(&["delete"]));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&h2.ip.to_string()),
        "the unreachable machine is not named: {said}"
    );
    assert!(
        !said.contains(&format!("{}:22", h1.ip)),
        "the reachable machine is named as failed: {said}"
    );
    assert!(
        said.contains("timonel delete") && said.contains("again"),
        "the error does not say to run delete again: {said}"
    );
    // The profile stays, so the next delete knows the machines.
    assert!(profile_file(&sb).exists(), "the profile is gone");
    let list = sb.run(&["profile", "list", "-o", "json"]);
    assert!(list.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == sb.profile.as_str()),
        "{rows:#}"
    );
    // What could be removed was: the first machine is already as it was.
    assert_as_before(&hosts.hosts[..1], &before[..1], "after the half delete");

    // The machine comes back (it boots again, k3s-agent included); delete finishes.
    docker_ok(&["start", &h2.container]);
    assert_eq!(
        container_ip(&h2.container),
        h2.ip.to_string(),
        "the restarted test host has another address"
    );
    eventually(
        "the restarted host's sshd answers",
        Duration::from_secs(60),
        || sshd_answers(h2.ip),
    );
    let out = run("delete (h2 back)", &mut sb.cmd(&["delete"]));
    assert!(out.status.success(), "the second delete failed");
    assert!(!profile_file(&sb).exists(), "the profile is left");
    assert!(
        !sb.timonel_home()
            .join("profiles")
            .join(&sb.profile)
            .exists(),
        "the profile folder is left"
    );
    assert_as_before(&hosts.hosts[..1], &before[..1], "after the second delete");
    // The machine that went down was rebooted: the same but for Docker's DNS rules.
    let (b, a) = (
        without_docker_dns(&before[1]),
        without_docker_dns(&h2.snapshot()),
    );
    assert!(
        b.contains("## unit files") && b.contains("## iptables"),
        "{b}"
    );
    assert_eq!(
        diff(&b, &a),
        "",
        "{} is not as it was after the second delete",
        h2.container
    );
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn interrupt_during_install_leaves_the_machines_clean() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("intr", 2);
    let [h1, h2] = [&hosts.hosts[0], &hosts.hosts[1]];
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let nodes = vec![format!("root@{}", h1.ip), format!("root@{}", h2.ip)];

    // Ctrl-C when the server's install begins, when files are being placed on it (its record is
    // already there), and while the agent joins.
    let points: [(&str, Option<&str>, String); 3] = [
        ("step", Some("started"), "starting node".to_string()),
        ("info", None, format!("installing k3s on root@{}", h1.ip)),
        (
            "step",
            Some("started"),
            "starting 1 more node(s)".to_string(),
        ),
    ];
    for (kind, event, prefix) in &points {
        let sb = Sandbox::new("sshint");
        let keys = keys(&sb, &[h1, h2]);
        h1.authorize("root", &keys.public);
        h2.authorize("root", &keys.public);
        let mut cmd = sb.cmd(&[]);
        cmd.args(start_args(Some(&keys.key), &keys.known_hosts, &nodes))
            .args(["-o", "json"])
            .env_remove("TIMONEL_SSH_PASSWORD");
        let started = Instant::now();
        let mut stream = EventStream::spawn(cmd);
        let reached = stream.wait_for(Duration::from_secs(45), |v| {
            is_event(v, kind, *event, prefix)
        });
        if !reached {
            let (status, events, err) = stream.finish(Duration::from_secs(30));
            panic!("no {kind} event `{prefix}…` before the exit ({status}):\n{events:#?}\n{err}");
        }
        stream.interrupt();
        let (status, events, err) = stream.finish(Duration::from_secs(60));
        eprintln!(
            "--- interrupted at `{prefix}`: {status} after {:?}\n{}\n{err}",
            started.elapsed(),
            events
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            status.code(),
            Some(130),
            "interrupted at `{prefix}`: {status}"
        );
        let last = events.last().unwrap();
        assert_eq!(last["type"], "error", "{last}");
        assert_eq!(last["reason"], "INTERRUPTED", "{last}");
        assert!(
            events
                .iter()
                .any(|e| is_event(e, "step", Some("finished"), "Removed everything")),
            "no finished cleanup step after the interrupt at `{prefix}`"
        );
        assert!(
            !events
                .iter()
                .any(|e| is_event(e, "step", Some("finished"), "Cluster ready")),
            "the start was not interrupted at `{prefix}`: it finished"
        );
        assert!(
            !sb.timonel_home()
                .join("profiles")
                .join(&sb.profile)
                .exists(),
            "interrupted at `{prefix}`: the profile is left"
        );
        assert!(
            !sb.kubeconfig.exists()
                || !std::fs::read_to_string(&sb.kubeconfig)
                    .unwrap()
                    .contains(&sb.profile),
            "interrupted at `{prefix}`: kubeconfig entries are left"
        );
        assert_as_before(
            &hosts.hosts,
            &before,
            &format!("after the start interrupted at `{prefix}`"),
        );
    }
}
