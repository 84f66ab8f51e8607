//! Runs the built stand-in as a server on loopback and drives it with the real kubectl.

// Test code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use timonel_k3s_standin::{fsutil, http, net::HttpsUrl, pki, tls};

const BIN: &str = env!("CARGO_BIN_EXE_k3s-standin");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `probe` every 200 ms until it returns Some, or panics after `timeout`.
fn poll<T>(
    what: impl std::fmt::Display,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed on drop; its stderr/stdout go to `log`.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        poll("process exit", timeout, || child.try_wait().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test cluster's paths.
struct Env {
    dir: tempfile::TempDir,
    port: u16,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("config.yaml"),
            "write-kubeconfig-mode: \"0600\"\n",
        )
        .unwrap();
        Self {
            dir,
            port: free_port(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path("kubeconfig.yaml")
    }

    fn command(&self, node_dir: &str, log: &str) -> (Command, PathBuf) {
        let log = self.path(log);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("K3S_CONFIG_FILE", self.path("config.yaml"))
            .env("K3S_STANDIN_NODE_DIR", self.path(node_dir))
            .env(
                "K3S_STANDIN_KUBECONFIG_DEFAULT_PATH",
                self.path("default-k3s.yaml"),
            )
            .env("K3S_STANDIN_READY_DELAY", "1s")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        (cmd, log)
    }

    fn start_server(&self) -> Proc {
        let (mut cmd, log) = self.command("server-node", "server.log");
        cmd.args([
            "server",
            "--bind-address",
            "127.0.0.1",
            "--node-name",
            "standin-server",
        ])
        .arg("--https-listen-port")
        .arg(self.port.to_string())
        .arg("--data-dir")
        .arg(self.path("server-data"))
        .arg("--write-kubeconfig")
        .arg(self.kubeconfig())
        .args(["--tls-san", "api.example.test", "--disable=traefik"]);
        Proc {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn start_agent(&self, name: &str, token: &str) -> Proc {
        let (mut cmd, log) = self.command(&format!("{name}-node"), &format!("{name}.log"));
        cmd.env("K3S_URL", format!("https://127.0.0.1:{}", self.port))
            .env("K3S_TOKEN", token)
            .args(["agent", "--node-name", name, "--data-dir"])
            .arg(self.path(&format!("{name}-data")));
        Proc {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn token(&self) -> String {
        fs::read_to_string(self.path("server-data/server/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn url(&self) -> HttpsUrl {
        HttpsUrl {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .unwrap()
    }

    /// Waits for `/ping`, then for `kubectl get --raw /readyz` to say ok.
    fn wait_ready(&self, server: &Proc) {
        let insecure = tls::insecure_client_config().unwrap();
        poll(
            format_args!("/ping (server {:?})", server.log),
            Duration::from_secs(30),
            || {
                http::request(insecure.clone(), &self.url(), "GET", "/ping", &[], b"")
                    .ok()
                    .filter(|r| r.status == 200 && r.text() == "pong")
            },
        );
        poll("kubectl get --raw /readyz", Duration::from_secs(30), || {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok")
                .then_some(())
        });
    }

    fn get_nodes(&self) -> String {
        let out = self.kubectl(&["get", "nodes"]);
        assert!(
            out.status.success(),
            "kubectl get nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn ready_rows(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn server_agent_and_restart_with_real_kubectl() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        panic!("kubectl is required for this test (/usr/bin/kubectl v1.32 on the dev machines)");
    }
    let env = Env::new();
    let mut server = env.start_server();
    env.wait_ready(&server);
    let log = server.log();
    let order = [
        "Starting k3s v1.31.2+k3s1 (0123abcd)",
        "Wrote kubeconfig",
        "Server node token is available at",
        "Kube API server is now running",
        "k3s is up and running",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|m| {
            log.find(m)
                .unwrap_or_else(|| panic!("`{m}` not in log:\n{log}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log lines out of order:\n{log}"
    );
    assert!(log.contains("time=\"") && log.contains("level=info msg=\"k3s is up and running\""));

    // Token = K10<sha256 of server-ca.crt>::server:<password>, 0600, with symlinks.
    let token = env.token();
    let ca = fs::read(env.path("server-data/server/tls/server-ca.crt")).unwrap();
    let prefix = format!("K10{}::server:", fsutil::sha256_hex(&ca));
    assert!(token.starts_with(&prefix), "{token}");
    assert!(token.len() > prefix.len());
    let server_dir = env.path("server-data/server");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server_dir.join("token")), 0o600);
    for link in ["node-token", "agent-token"] {
        assert!(fs::symlink_metadata(server_dir.join(link))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // Kubeconfig: 0600, and the default path is a symlink to it.
    assert_eq!(mode(&env.kubeconfig()), 0o600);
    assert_eq!(
        fs::read_link(env.path("default-k3s.yaml")).unwrap(),
        fs::canonicalize(env.kubeconfig()).unwrap()
    );
    let kc = fs::read_to_string(env.kubeconfig()).unwrap();
    assert!(
        kc.contains(&format!("server: https://127.0.0.1:{}", env.port)),
        "{kc}"
    );

    // Without a client certificate: 401 Status; /ping and /cacerts need no auth.
    let trusting = tls::client_config(&pki::certs_from_pem(&ca), None).unwrap();
    let r = http::request(trusting.clone(), &env.url(), "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 401);
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);
    let r = http::request(
        trusting.clone(),
        &env.url(),
        "GET",
        "/api/v1/nodes",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let r = http::request(trusting, &env.url(), "GET", "/cacerts", &[], b"").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, ca.as_slice()));

    // The serving certificate verifies for the tls-san name too (rustls checks the SAN).
    let by_name = HttpsUrl {
        host: "localhost".into(),
        port: env.port,
    };
    let r = http::request(
        tls::client_config(&pki::certs_from_pem(&ca), None).unwrap(),
        &by_name,
        "GET",
        "/ping",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.text(), "pong");

    // kubectl: nodes, version, system pods (traefik disabled), JSON.
    let nodes = poll("server node Ready", Duration::from_secs(20), || {
        let t = env.get_nodes();
        (ready_rows(&t) == ["standin-server"]).then_some(t)
    });
    let header: Vec<&str> = nodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert!(nodes.contains("control-plane,master"), "{nodes}");
    assert!(nodes.contains("v1.31.2+k3s1"), "{nodes}");
    let out = env.kubectl(&["version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Server Version: v1.31.2+k3s1"));
    let out = env.kubectl(&["get", "pods", "-n", "kube-system"]);
    let pods = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    for name in ["coredns-", "local-path-provisioner-", "metrics-server-"] {
        assert!(
            pods.lines()
                .any(|l| l.starts_with(name) && l.contains("Running")),
            "{pods}"
        );
    }
    assert!(!pods.contains("traefik"), "{pods}");
    let out = env.kubectl(&["get", "nodes", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &json["items"][0];
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "k3s"
    );
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.31.2+k3s1");

    // An agent joins: two Ready nodes.
    let agent = env.start_agent("standin-agent", &token);
    let mut last = String::new();
    let found = poll("two Ready nodes", Duration::from_secs(30), || {
        last = env.get_nodes();
        Some(ready_rows(&last) == ["standin-agent", "standin-server"])
            .filter(|ok| *ok)
            .or_else(|| (agent.log().contains("level=fatal")).then_some(false))
    });
    assert!(found, "agent failed:\n{}\nnodes:\n{last}", agent.log());
    assert!(agent
        .log()
        .contains("Successfully registered node standin-agent"));
    assert!(env.path("standin-agent-node/password").exists());
    // The built-in `kubectl get nodes` prints the same table.
    let out = Command::new(BIN)
        .args(["kubectl", "--kubeconfig"])
        .arg(env.kubeconfig())
        .args(["get", "nodes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ready_rows(&String::from_utf8_lossy(&out.stdout)),
        ["standin-agent", "standin-server"]
    );

    // A token with the wrong CA hash is rejected with k3s's message, and, as k3s does, the
    // agent tries again every 2 s instead of exiting.
    let bad = format!("K10{}::server:whatever", "0".repeat(64));
    let mut rejected = env.start_agent("bad-agent", &bad);
    let expected = format!(
        "Failed to validate connection to cluster at https://127.0.0.1:{}: token CA hash does not match the Cluster CA certificate hash: {} != {}",
        env.port,
        "0".repeat(64),
        fsutil::sha256_hex(&ca)
    );
    poll("the second rejected join", Duration::from_secs(20), || {
        (rejected.log().matches(&expected).count() >= 2).then_some(())
    });
    assert!(
        rejected.child.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        rejected.log()
    );
    drop(rejected);

    // The same node name with another node password is rejected.
    let (mut cmd, log) = env.command("other-node-dir", "dup.log");
    cmd.env("K3S_URL", format!("https://127.0.0.1:{}", env.port))
        .env("K3S_TOKEN", &token)
        .args(["agent", "--node-name", "standin-agent", "--data-dir"])
        .arg(env.path("dup-data"));
    let mut dup = Proc {
        child: cmd.spawn().unwrap(),
        log,
    };
    assert!(!dup.wait_exit(Duration::from_secs(20)).success());
    assert!(
        dup.log()
            .contains("Node password rejected, duplicate hostname"),
        "{}",
        dup.log()
    );

    // SIGTERM ends the server with status 0.
    drop(agent);
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log());

    // A restart keeps the CA and token, and the registered nodes.
    let server = env.start_server();
    env.wait_ready(&server);
    assert_eq!(env.token(), token);
    assert_eq!(
        fs::read(env.path("server-data/server/tls/server-ca.crt")).unwrap(),
        ca
    );
    let nodes = poll("nodes after restart", Duration::from_secs(20), || {
        let t = env.get_nodes();
        ready_rows(&t)
            .contains(&"standin-server".to_string())
            .then_some(t)
    });
    assert!(
        nodes.contains("standin-agent"),
        "persisted agent node missing:\n{nodes}"
    );
    // Deleting a node through the API removes it.
    let out = env.kubectl(&["delete", "node", "standin-agent"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.get_nodes().contains("standin-agent"));
}

/// k3s's agent does not need its server up first: it tries to join every 2 s until the server
/// answers. When it has joined it imports what its images folder lists, following symlinks.
#[cfg(unix)]
#[test]
fn an_agent_started_before_its_server_joins_when_the_server_is_up() {
    let env = Env::new();
    fs::write(
        env.path("config.yaml"),
        "write-kubeconfig-mode: \"0600\"\ntoken: early-secret\n",
    )
    .unwrap();
    let images = env.path("early-agent-data/agent/images");
    fs::create_dir_all(&images).unwrap();
    fs::write(env.path("stored.tar.zst"), vec![7u8; 200_000]).unwrap();
    std::os::unix::fs::symlink(
        env.path("stored.tar.zst"),
        images.join("k3s-airgap-images-amd64.tar.zst"),
    )
    .unwrap();
    std::os::unix::fs::symlink(env.path("gone.tar"), images.join("broken.tar")).unwrap();

    let agent = env.start_agent("early-agent", "early-secret");
    let refused = format!(
        "Failed to validate connection to cluster at https://127.0.0.1:{}: failed to get CA certs",
        env.port
    );
    poll("a refused join", Duration::from_secs(20), || {
        agent.log().contains(&refused).then_some(())
    });
    assert!(!agent.log().contains("Importing images"), "{}", agent.log());

    let server = env.start_server();
    poll("the server up", Duration::from_secs(20), || {
        server.log().contains("k3s is up and running").then_some(())
    });
    let mut last = String::new();
    poll("the early agent Ready", Duration::from_secs(30), || {
        last = env.get_nodes();
        (ready_rows(&last) == ["early-agent", "standin-server"]).then_some(())
    });
    let log = agent.log();
    let linked = images.join("k3s-airgap-images-amd64.tar.zst");
    assert!(
        log.contains(&format!("Importing images from {}", linked.display()))
            && log.contains(&format!("Imported images from {} in", linked.display())),
        "{log}"
    );
    let broken = images.join("broken.tar");
    assert!(
        log.contains(&format!(
            "Error encountered while importing {}: ",
            broken.display()
        )),
        "{log}"
    );
}

#[test]
fn api_answers_503_before_the_ready_delay() {
    let env = Env::new();
    let (mut cmd, log) = env.command("node", "slow.log");
    cmd.env("K3S_STANDIN_READY_DELAY", "30s")
        .args([
            "server",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
        ])
        .arg(env.port.to_string())
        .arg("--data-dir")
        .arg(env.path("data"))
        .arg("-o")
        .arg(env.kubeconfig());
    let server = Proc {
        child: cmd.spawn().unwrap(),
        log,
    };
    let insecure = tls::insecure_client_config().unwrap();
    poll("/ping", Duration::from_secs(30), || {
        http::request(insecure.clone(), &env.url(), "GET", "/ping", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let r = http::request(insecure, &env.url(), "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 503);
    assert!(!server.log().contains("k3s is up and running"));
}

#[test]
fn version_and_strict_flags() {
    let out = Command::new(BIN)
        .arg("--version")
        .env("K3S_STANDIN_VERSION", "v1.35.4+k3s1")
        .env("K3S_STANDIN_COMMIT", "5dc8fe68")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "k3s version v1.35.4+k3s1 (5dc8fe68)");
    assert!(lines[1].starts_with("go version go"));

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--foo"])
        .env("K3S_CONFIG_FILE", dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Incorrect Usage: flag provided but not defined: -foo"));

    // An unknown key in a config drop-in fails the same way.
    let config = dir.path().join("config.yaml");
    fs::write(&config, "").unwrap();
    fs::create_dir(dir.path().join("config.yaml.d")).unwrap();
    fs::write(dir.path().join("config.yaml.d/10-x.yaml"), "bogus-key: 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["server"])
        .env("K3S_CONFIG_FILE", &config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -bogus-key")
    );
}

fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[156] = b'0';
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(512 + data.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn ctr_images_import_and_ls() {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = tar_entry(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["example/app:1.0"],"Layers":[]}]"#,
    );
    tar.extend([0u8; 1024]);
    let mut child = Command::new(BIN)
        .args([
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
            "-",
        ])
        .env("K3S_DATA_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "unpacking docker.io/example/app:1.0 (sha256:{})...done\n",
            fsutil::sha256_hex(&tar)
        )
    );
    let out = Command::new(BIN)
        .args(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        .env("K3S_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "docker.io/example/app:1.0\n"
    );
}
