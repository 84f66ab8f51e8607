//! `timonel start --driver ssh` end to end: machines that already exist (test hosts: Debian 12
//! containers running real systemd and Debian's openssh-server, made by these tests) get k3s
//! (the stand-in) over real SSH, with systemd units; judged by kubectl through the merged
//! kubeconfig. Then stop/start, and delete must leave every machine as it was. Refusals (wrong
//! host key, wrong password, no sudo, an existing k3s) must come before anything changes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::sandbox::*;
use support::ssh_hosts::{assert_as_before, snapshot_diff as diff, TestHost, TestHosts};

/// A login key for the test hosts, and a known_hosts file of our own (the user's
/// ~/.ssh/known_hosts is never touched).
struct Keys {
    key: PathBuf,
    public: String,
    known_hosts: PathBuf,
}

fn keys(sb: &Sandbox) -> Keys {
    let dir = sb.home.path().join("client-key");
    let key = timonel_driver_vm::SshKey::ensure(&dir, "e2e-ssh").unwrap();
    Keys {
        key: key.private_path.clone(),
        public: key.public_openssh(),
        known_hosts: sb.home.path().join("known_hosts"),
    }
}

fn write_known_hosts(path: &Path, hosts: &[&TestHost]) {
    let text: String = hosts
        .iter()
        .map(|h| format!("{}\n", h.known_hosts_line()))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn unit_state(host: &TestHost, unit: &str) -> String {
    let out = host.exec(&format!("systemctl is-active {unit} || true"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn three_machines_make_three_ready_nodes_and_delete_leaves_them_as_they_were() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("e2e", 3);
    let [h1, h2, h3] = [&hosts.hosts[0], &hosts.hosts[1], &hosts.hosts[2]];
    let sb = Sandbox::new("ssh3");
    let keys = keys(&sb);
    // h1: root with the key; h2: alice (passwordless sudo) with the key; h3: alice with her
    // password only, and a host key trusted on first use.
    h1.authorize("root", &keys.public);
    h2.authorize("alice", &keys.public);
    write_known_hosts(&keys.known_hosts, &[h1, h2]);
    // Another Rancher product's folder on h3: k3s's own goes inside it, and it must stay.
    assert!(h3
        .exec("mkdir -p /etc/rancher/other && echo keep > /etc/rancher/other/file")
        .status
        .success());
    // An active host firewall on h2 (a stand-in unit named ufw): warned about, not refused.
    assert!(h2
        .exec("systemd-run --unit=ufw sleep infinity >/dev/null 2>&1")
        .status
        .success());
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();

    let nodes = vec![
        format!("root@{}", h1.ip),
        format!("alice@{}", h2.ip),
        format!("alice@{}", h3.ip),
    ];
    let out = sb
        .cmd(&[])
        .env("TIMONEL_SSH_PASSWORD", "alice-pw")
        .args(start_args(&keys, &nodes, &["--ssh-accept-new-host-keys"]))
        .output()
        .unwrap();
    eprintln!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "start failed");
    let p = &sb.profile;
    assert!(
        stderr(&out).contains(&format!("{p}-m02: ufw is active")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        sb.ready_nodes(),
        vec![p.clone(), format!("{p}-m02"), format!("{p}-m03")]
    );
    // h3's key was recorded; the others were already there.
    let known = std::fs::read_to_string(&keys.known_hosts).unwrap();
    assert_eq!(known.lines().count(), 3, "{known}");
    assert!(known.contains(&h3.known_hosts_line()), "{known}");

    // Real systemd units on the machines; the API at the first machine's address.
    assert_eq!(unit_state(h1, "k3s"), "active");
    assert_eq!(unit_state(h2, "k3s-agent"), "active");
    assert_eq!(unit_state(h3, "k3s-agent"), "active");
    assert_eq!(sb.ok(&["ip"]).trim(), h1.ip.to_string());
    // The service's journal on the machine.
    let logs = sb
        .cmd(&["logs", "--node", &format!("{p}-m03")])
        .env("TIMONEL_SSH_PASSWORD", "alice-pw")
        .output()
        .unwrap();
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(
        stdout(&logs).contains("Successfully registered node"),
        "{}",
        stdout(&logs)
    );
    let server = sb.kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    assert_eq!(stdout(&server).trim(), format!("https://{}:6443", h1.ip));

    // stop: the services stop (the machines stay up); start: they come back.
    let with_password = |args: &[&str]| {
        let out = sb
            .cmd(args)
            .env("TIMONEL_SSH_PASSWORD", "alice-pw")
            .output()
            .unwrap();
        eprintln!(
            "$ timonel {}\n{}{}",
            args.join(" "),
            stdout(&out),
            stderr(&out)
        );
        assert!(out.status.success(), "timonel {} failed", args.join(" "));
        stdout(&out)
    };
    with_password(&["stop"]);
    assert_ne!(unit_state(h1, "k3s"), "active");
    assert_ne!(unit_state(h3, "k3s-agent"), "active");
    // status: every node's k3s is stopped (exit 3: a node is not running).
    let status = sb
        .cmd(&["status", "-o", "json"])
        .env("TIMONEL_SSH_PASSWORD", "alice-pw")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let k3s: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["k3s"].as_str().unwrap())
        .collect();
    assert_eq!(k3s, ["stopped", "stopped", "stopped"], "{status:#}");
    with_password(&["start"]);
    assert_eq!(sb.ready_nodes().len(), 3);

    // What a real k3s leaves besides its files (the stand-in makes none of it): a CNI bridge
    // and a flannel interface, KUBE-/FLANNEL chains, a pod volume mount. delete removes them.
    let k3s_traces = h2.exec(
        "set -e; ip link add cni0 type bridge; ip link add flannel.1 type bridge; \
         iptables -N KUBE-SERVICES; iptables -A INPUT -j KUBE-SERVICES; iptables -N FLANNEL-FWD; \
         mkdir -p /var/lib/kubelet/pods/p1/volumes; mount -t tmpfs tmpfs /var/lib/kubelet/pods/p1/volumes",
    );
    assert!(
        k3s_traces.status.success(),
        "{}",
        String::from_utf8_lossy(&k3s_traces.stderr)
    );
    assert_ne!(diff(&before[1], &h2.snapshot()), "");

    // delete: each machine as it was (files, units, interfaces, firewall rules, mounts).
    with_password(&["delete"]);
    assert_as_before(&hosts.hosts, &before, "after delete");
    assert!(!sb.timonel_home().join("profiles").join(p).exists());
}

fn start_args(keys: &Keys, nodes: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "start".into(),
        "--driver".into(),
        "ssh".into(),
        "--kubernetes-version".into(),
        VERSION.into(),
        "--ssh-key".into(),
        keys.key.display().to_string(),
        "--ssh-known-hosts".into(),
        keys.known_hosts.display().to_string(),
    ];
    for n in nodes {
        args.push("--node".into());
        args.push(n.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A refused start: non-zero exit, the message names the cause, and nothing changed: not on the
/// machines, not in timonel's profiles, not in the kubeconfig.
fn assert_refused(
    sb: &Sandbox,
    out: &std::process::Output,
    hosts: &[&TestHost],
    before: &[String],
    wants: &[&str],
) {
    let text = format!("{}{}", stdout(out), stderr(out));
    assert!(
        !out.status.success(),
        "start should have been refused:\n{text}"
    );
    for w in wants {
        assert!(text.contains(w), "`{w}` missing from:\n{text}");
    }
    assert_as_before(hosts.iter().copied(), before, "after the refused start");
    assert!(
        !sb.timonel_home()
            .join("profiles")
            .join(&sb.profile)
            .join("profile.json")
            .exists(),
        "a refused start left a profile"
    );
    assert!(
        !sb.kubeconfig.exists(),
        "a refused start wrote a kubeconfig"
    );
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn wrong_host_key_wrong_password_no_sudo_and_foreign_k3s_are_refused_before_any_change() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("refuse", 2);
    let [h1, h2] = [&hosts.hosts[0], &hosts.hosts[1]];
    let sb = Sandbox::new("sshno");
    let keys = keys(&sb);
    h1.authorize("root", &keys.public);
    h2.authorize("root", &keys.public);
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let both = [h1, h2];
    let run = |nodes: &[String], extra: &[&str], password: Option<&str>| {
        let mut cmd = sb.cmd(&[]);
        cmd.args(start_args(&keys, nodes, extra));
        match password {
            Some(p) => cmd.env("TIMONEL_SSH_PASSWORD", p),
            None => cmd.env_remove("TIMONEL_SSH_PASSWORD"),
        };
        let out = cmd.output().unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        out
    };
    let nodes = vec![format!("root@{}", h1.ip), format!("root@{}", h2.ip)];

    // Unknown host key, no trust on first use: refused, and known_hosts is not written.
    std::fs::write(&keys.known_hosts, format!("{}\n", h1.known_hosts_line())).unwrap();
    let out = run(&nodes, &[], None);
    assert_refused(
        &sb,
        &out,
        &both,
        &before,
        &[&h2.ip.to_string(), "not in", "--ssh-accept-new-host-keys"],
    );
    assert_eq!(
        std::fs::read_to_string(&keys.known_hosts)
            .unwrap()
            .lines()
            .count(),
        1
    );

    // A different key recorded for h2 (h1's): refused even with trust on first use.
    std::fs::write(
        &keys.known_hosts,
        format!("{}\n{} {}\n", h1.known_hosts_line(), h2.ip, h1.host_key),
    )
    .unwrap();
    let out = run(&nodes, &["--ssh-accept-new-host-keys"], None);
    assert_refused(
        &sb,
        &out,
        &both,
        &before,
        &["does not match", "ssh-keygen -R"],
    );
    write_known_hosts(&keys.known_hosts, &both);

    // Wrong password (alice's key is not authorized): refused, saying what was tried.
    let out = run(
        &[format!("root@{}", h1.ip), format!("alice@{}", h2.ip)],
        &[],
        Some("not-her-password"),
    );
    assert_refused(
        &sb,
        &out,
        &both,
        &before,
        &["refused every login", "alice", "password"],
    );

    // Right password, but bob may not use sudo: refused with the sudoers fix.
    let out = run(
        &[format!("root@{}", h1.ip), format!("bob@{}", h2.ip)],
        &[],
        Some("bob-pw"),
    );
    assert_refused(
        &sb,
        &out,
        &both,
        &before,
        &["`bob` cannot run commands as root", "NOPASSWD"],
    );

    // Something else serves port 6443 on h1 (a socket systemd holds): refused.
    assert!(h1
        .exec(
            "systemd-run --unit=busy-6443 systemd-socket-activate --accept -l 6443 /bin/true >/dev/null 2>&1"
        )
        .status
        .success());
    let busy = (|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect((h1.ip, 6443)).is_ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    })();
    assert!(busy, "the test's listener on 6443 did not come up");
    let busy_snapshot = h1.snapshot();
    let out = run(&nodes, &[], None);
    assert_refused(
        &sb,
        &out,
        &[h1],
        &[busy_snapshot],
        &["something already listens on port 6443", "ss -ltnp"],
    );
    assert!(h1.exec("systemctl stop busy-6443").status.success());

    // A k3s timonel did not install: refused without --adopt.
    let marker = h2.exec("mkdir -p /var/lib/rancher/k3s && touch /usr/local/bin/k3s");
    assert!(marker.status.success());
    let with_k3s: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let out = run(&nodes, &[], None);
    assert_refused(
        &sb,
        &out,
        &both,
        &with_k3s,
        &["k3s is already installed", "--adopt"],
    );
    // Every problem of every machine is named at once: h1 is fine, so only h2 is listed.
    let text = stderr(&out);
    assert!(!text.contains(&format!("root@{} (", h1.ip)), "{text}");

    // --adopt replaces that k3s; delete then removes it too, leaving h2 as it was before it.
    let out = run(&nodes, &["--adopt"], None);
    assert!(out.status.success(), "start --adopt failed");
    assert_eq!(sb.ready_nodes().len(), 2);
    let size = h2.exec("stat -c %s /usr/local/bin/k3s");
    assert_ne!(String::from_utf8_lossy(&size.stdout).trim(), "0");
    sb.ok(&["delete"]);
    assert_as_before(both, &before, "after delete");
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn three_servers_on_three_machines_survive_losing_the_first() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("ha", 3);
    let sb = Sandbox::new("sshha");
    let keys = keys(&sb);
    for h in &hosts.hosts {
        h.authorize("root", &keys.public);
    }
    let all: Vec<&TestHost> = hosts.hosts.iter().collect();
    write_known_hosts(&keys.known_hosts, &all);
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let nodes: Vec<String> = hosts
        .hosts
        .iter()
        .map(|h| format!("root@{}", h.ip))
        .collect();
    let out = sb
        .cmd(&[])
        .args(start_args(
            &keys,
            &nodes,
            &[
                "--control-planes",
                "3",
                "--k3s-arg",
                "--node-label=lane=ha@server",
                "--k3s-arg=--kubelet-arg=eviction-hard=memory.available<5%",
            ],
        ))
        .env("TIMONEL_LB", balancer_binary())
        .env_remove("TIMONEL_SSH_PASSWORD")
        .output()
        .unwrap();
    eprintln!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "start failed");
    assert_eq!(sb.ready_nodes().len(), 3);
    // The kubeconfig points at the load balancer, a timonel-lb process on this machine.
    let port = balancer_port(&sb);
    assert_eq!(kubeconfig_server(&sb), format!("https://127.0.0.1:{port}"));
    let lb = balancer_process(&sb).expect("no timonel-lb process");
    let p = &sb.profile;
    let first = stdout(&sb.kubectl(&["get", "node", p, "--no-headers"]));
    assert!(first.contains("etcd"), "{first}");
    // Every machine runs a server; each one's certificate names every server's address, and
    // the others join the first.
    let [h1, h2, h3] = [&hosts.hosts[0], &hosts.hosts[1], &hosts.hosts[2]];
    for h in [h1, h2, h3] {
        assert_eq!(unit_state(h, "k3s"), "active");
        let config =
            h.exec("stat -c %a /etc/rancher/k3s/config.yaml && cat /etc/rancher/k3s/config.yaml");
        let config = String::from_utf8_lossy(&config.stdout).into_owned();
        assert!(config.starts_with("600\n"), "{config}");
        for other in [h1, h2, h3] {
            assert!(config.contains(&other.ip.to_string()), "{config}");
        }
    }
    // The k3s arguments reached the servers' command line through the systemd unit, as given
    // (every node's first, then the servers'; `%` survives systemd's specifiers).
    let shown = stdout(&sb.kubectl(&["get", "nodes", "-l", "lane=ha", "--no-headers"]));
    assert_eq!(shown.lines().count(), 3, "{shown}");
    let exec = h3.exec("systemctl show k3s -p ExecStart --value");
    let exec = String::from_utf8_lossy(&exec.stdout).into_owned();
    assert!(
        exec.contains("argv[]=/usr/local/bin/k3s server --kubelet-arg=eviction-hard=memory.available<5% --node-label=lane=ha ;"),
        "{exec}"
    );
    let joined = h2.exec("cat /etc/rancher/k3s/config.yaml");
    assert!(String::from_utf8_lossy(&joined.stdout).contains(&format!("https://{}:6443", h1.ip)));
    // The airgap images came from the cache, not from the machines' network.
    let images = h3.exec("ls /var/lib/rancher/k3s/agent/images/");
    assert!(
        String::from_utf8_lossy(&images.stdout).contains("k3s-airgap-images"),
        "{}",
        String::from_utf8_lossy(&images.stdout)
    );

    let status = sb.ok(&["status"]);
    assert!(
        status.contains(&format!("lb:      running (https://127.0.0.1:{port} → ")),
        "{status}"
    );

    // The first server's k3s stops behind timonel's back: the API keeps answering through the
    // balancer, with nothing asked of the user.
    assert!(h1.exec("systemctl stop k3s").status.success());
    eventually(
        "the API through the balancer",
        Duration::from_secs(20),
        || {
            let out = sb.kubectl(&["get", "nodes", "--no-headers"]);
            out.status.success() && stdout(&out).lines().count() == 3
        },
    );
    assert_eq!(kubeconfig_server(&sb), format!("https://127.0.0.1:{port}"));

    // stop ends the process and start makes it again on the same port.
    sb.ok(&["stop"]);
    assert!(!alive(&lb), "timonel-lb still runs after stop");
    let status = sb.run(&["status"]);
    assert!(
        stdout(&status).contains("timonel start"),
        "{}",
        stdout(&status)
    );
    sb.cmd(&["start"])
        .env("TIMONEL_LB", balancer_binary())
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("start after stop failed");
    assert_eq!(balancer_port(&sb), port);
    let lb = balancer_process(&sb).expect("no timonel-lb process after start");
    assert_eq!(
        stdout(&sb.kubectl(&["get", "--raw", "/readyz"])).trim(),
        "ok"
    );

    sb.ok(&["delete"]);
    assert!(!alive(&lb), "timonel-lb still runs after delete");
    assert_as_before(&hosts.hosts, &before, "after delete");
}

/// The load balancer's port, from the profile.
fn balancer_port(sb: &Sandbox) -> u16 {
    let text = std::fs::read_to_string(sb.profile_dir().join("profile.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["balancer_port"].as_u64().expect("no balancer_port") as u16
}

fn kubeconfig_server(sb: &Sandbox) -> String {
    let out = sb.kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    stdout(&out).trim().to_string()
}

/// The recorded timonel-lb process (pid, start time), when it runs.
fn balancer_process(sb: &Sandbox) -> Option<(u32, String)> {
    let text = std::fs::read_to_string(sb.profile_dir().join("lb-process.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lb = (
        v["pid"].as_u64()? as u32,
        v["started"].as_str()?.to_string(),
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", lb.0)).ok()?;
    assert!(
        String::from_utf8_lossy(&cmdline).contains("timonel-lb"),
        "pid {} is not timonel-lb",
        lb.0
    );
    alive(&lb).then_some(lb)
}

/// Whether the process still runs (the same pid with the same start: field 22 of its stat).
fn alive((pid, started): &(u32, String)) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[0] != "Z" && f.get(19) == Some(&started.as_str())
}

#[test]
#[ignore = "needs a docker daemon and the test host image"]
fn a_machine_joins_and_leaves_a_running_cluster() {
    if !require_docker() {
        return;
    }
    let hosts = TestHosts::create("add", 2);
    let [h1, h2] = [&hosts.hosts[0], &hosts.hosts[1]];
    let sb = Sandbox::new("sshadd");
    let keys = keys(&sb);
    h1.authorize("root", &keys.public);
    h2.authorize("alice", &keys.public);
    write_known_hosts(&keys.known_hosts, &[h1, h2]);
    let before: Vec<String> = hosts.hosts.iter().map(TestHost::snapshot).collect();
    let out = sb
        .cmd(&[])
        .args(start_args(&keys, &[format!("root@{}", h1.ip)], &[]))
        .env_remove("TIMONEL_SSH_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let p = &sb.profile;

    // Without a machine, or with one that is already a node: refused, nothing changes.
    let out = sb.run(&["node", "add"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--node user@host"),
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["node", "add", "--node", &format!("root@{}", h1.ip)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already node"), "{}", stderr(&out));
    assert_eq!(diff(&before[1], &h2.snapshot()), "");

    let added = sb.ok(&["node", "add", "--node", &format!("alice@{}", h2.ip)]);
    assert_eq!(added.trim(), format!("{p}-m02"));
    assert_eq!(sb.ready_nodes(), vec![p.clone(), format!("{p}-m02")]);
    assert_eq!(unit_state(h2, "k3s-agent"), "active");

    // Deleting the node uninstalls it from its machine; the cluster goes on.
    sb.ok(&["node", "delete", &format!("{p}-m02")]);
    assert_eq!(sb.ready_nodes(), vec![p.clone()]);
    assert_eq!(diff(&before[1], &h2.snapshot()), "", "h2 is not as it was");

    sb.ok(&["delete"]);
    assert_eq!(diff(&before[0], &h1.snapshot()), "", "h1 is not as it was");
}
