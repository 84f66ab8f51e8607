//! The everyday commands: `config`, `cache` (no daemon needed), and on the real Docker daemon
//! with the k3s stand-in: `logs`, `image load`, `service`, `addons`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::Digest;
use support::sandbox::*;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// `timonel <args>` with only a home of its own (no daemon, no mirror).
fn bare(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_timonel"))
        .args(args)
        .env("TIMONEL_HOME", home)
        .env("TIMONEL_NO_PROGRESS", "1")
        .env_remove("TIMONEL_PROFILE")
        .env_remove("TIMONEL_BINARY_MIRROR")
        .env_remove("TIMONEL_DRIVER")
        .output()
        .unwrap();
    eprintln!(
        "$ timonel {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn config_set_get_unset_view_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("timonel");
    let file = home.join("config.json");

    let out = bare(&home, &["config", "view"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "", "nothing set: no data on stdout");

    for (k, v) in [
        ("memory", "4g"),
        ("cpus", "2"),
        ("driver", "docker"),
        ("kubernetes-version", "v1.31"),
        ("nodes", "3"),
        ("wait-timeout", "90s"),
    ] {
        let out = bare(&home, &["config", "set", k, v]);
        assert!(out.status.success(), "set {k}");
        assert_eq!(stdout(&out), "", "set prints its message on stderr");
        let got = bare(&home, &["config", "get", k]);
        assert!(got.status.success());
        assert_eq!(stdout(&got).trim(), v);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&bare(&home, &["config", "view", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["memory"], "4g");
    assert_eq!(json["wait-timeout"], "90s");
    let view = stdout(&bare(&home, &["config", "view"]));
    assert!(
        view.contains("memory = 4g") && view.contains("nodes = 3"),
        "{view}"
    );
    let defaults = timonel::config::load_defaults(&timonel::home::Home::at(home.clone())).unwrap();
    assert_eq!(defaults.memory_mib, Some(4096));
    assert_eq!(defaults.nodes, Some(3));

    // Refused: unknown keys (with the valid list) and bad values; the file is untouched.
    let before = std::fs::read_to_string(&file).unwrap();
    let out = bare(&home, &["config", "set", "colour", "blue"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("`colour`") && err.contains("kubernetes-version, nodes"),
        "{err}"
    );
    for (k, v, needle) in [
        ("memory", "lots", "not a size"),
        ("memory", "100m", "too little"),
        ("driver", "floppy", "floppy"),
        ("cpus", "0", "not a CPU count"),
        ("nodes", "40", "1 to 32"),
        ("wait-timeout", "soon", "not a duration"),
        ("kubernetes-version", "Banana!", "Banana!"),
    ] {
        let out = bare(&home, &["config", "set", k, v]);
        assert_eq!(out.status.code(), Some(1), "{k}={v} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains(needle) && err.contains("hint:"),
            "{k}={v}: {err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let out = bare(&home, &["config", "get", "colour"]);
    assert_eq!(out.status.code(), Some(1));

    // Unset: gone, and get says so.
    assert!(bare(&home, &["config", "unset", "memory"]).status.success());
    let out = bare(&home, &["config", "get", "memory"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not set"), "{}", stderr(&out));
    assert!(!stdout(&bare(&home, &["config", "view"])).contains("memory"));

    // A damaged file is reported with the way out.
    std::fs::write(&file, "{\"memory\": \"lots\"}").unwrap();
    let out = bare(&home, &["config", "view"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("damaged") && stderr(&out).contains("hint:"));
}

/// A `file://` mirror with two releases of fake (but checksummed) assets.
fn fake_mirror(dir: &Path, versions: &[&str]) {
    for v in versions {
        let release = dir.join(v);
        std::fs::create_dir_all(&release).unwrap();
        let binary = format!("fake k3s {v}").into_bytes();
        let airgap = format!("fake airgap images {v}").into_bytes();
        std::fs::write(release.join("k3s"), &binary).unwrap();
        std::fs::write(release.join("k3s-airgap-images-amd64.tar.zst"), &airgap).unwrap();
        std::fs::write(
            release.join("sha256sum-amd64.txt"),
            format!(
                "{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
                sha256_hex(&binary),
                sha256_hex(&airgap)
            ),
        )
        .unwrap();
    }
}

#[test]
fn cache_download_list_clean_with_a_file_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("timonel");
    let mirror = tmp.path().join("mirror");
    let (kept, old) = ("v1.31.2+k3s1", "v1.30.5+k3s1");
    fake_mirror(&mirror, &[kept, old]);
    let url = format!("file://{}", mirror.display());

    let out = bare(&home, &["cache", "list"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));

    for v in [kept, old] {
        let out = bare(
            &home,
            &[
                "cache",
                "download",
                "--kubernetes-version",
                v,
                "--arch",
                "amd64",
                "--binary-mirror",
                &url,
            ],
        );
        assert!(out.status.success(), "download {v}");
        let paths: Vec<PathBuf> = stdout(&out).lines().map(PathBuf::from).collect();
        assert_eq!(paths.len(), 2, "binary and airgap images: {paths:?}");
        assert_eq!(
            std::fs::read(&paths[0]).unwrap(),
            format!("fake k3s {v}").into_bytes()
        );
        assert_eq!(
            std::fs::read(&paths[1]).unwrap(),
            format!("fake airgap images {v}").into_bytes()
        );
    }
    // A corrupted mirror file is refused (the sha256 does not match).
    fake_mirror(&mirror, &["v1.29.9+k3s1"]);
    std::fs::write(mirror.join("v1.29.9+k3s1/k3s"), "tampered").unwrap();
    let out = bare(
        &home,
        &[
            "cache",
            "download",
            "--kubernetes-version",
            "v1.29.9+k3s1",
            "--arch",
            "amd64",
            "--binary-mirror",
            &url,
            "--no-airgap",
        ],
    );
    assert_eq!(out.status.code(), Some(1));

    let list: serde_json::Value =
        serde_json::from_slice(&bare(&home, &["cache", "list", "-o", "json"]).stdout).unwrap();
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["arches"][0]["assets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "k3s" && a["partial"] == false)
        })
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [kept, old]);
    let text = stdout(&bare(&home, &["cache", "list"]));
    assert!(
        text.contains(kept) && text.contains("k3s-airgap-images-amd64.tar.zst"),
        "{text}"
    );

    // A profile uses `kept`: clean removes the others only.
    let profile_dir = home.join("profiles/keepme");
    std::fs::create_dir_all(&profile_dir).unwrap();
    std::fs::write(
        profile_dir.join("profile.json"),
        serde_json::json!({
            "schema": 1, "name": "keepme", "driver": "docker", "distribution": "k3s",
            "version": kept, "listen_address": "127.0.0.1", "token": "t",
            "nodes": [], "phase": "stopped", "created_at": 1
        })
        .to_string(),
    )
    .unwrap();
    let out = bare(&home, &["cache", "clean", "-o", "json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<&str> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert!(removed.contains(&old), "{report}");
    assert!(!removed.contains(&kept), "{report}");
    assert_eq!(report["kept"][0]["version"], kept);
    assert!(report["freed"].as_u64().unwrap() > 0);
    let list: serde_json::Value =
        serde_json::from_slice(&bare(&home, &["cache", "list", "-o", "json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["version"], kept);
}

// ---- on the Docker daemon ----

fn container(node: &str) -> String {
    format!("timonel-{node}")
}

/// A file out of a node (`docker cp`), `None` when it is not there.
fn node_file(node: &str, path: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("docker")
        .args([
            "cp",
            &format!("{}:{path}", container(node)),
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let name = Path::new(path).file_name().unwrap();
    std::fs::read(dir.path().join(name)).ok()
}

/// What the stand-in's `ctr images import` recorded in a node: name → (digest, importedAt).
fn imported(node: &str) -> Vec<(String, String, u64)> {
    let Some(bytes) = node_file(node, "/var/lib/rancher/k3s/agent/standin-images.json") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
                i["importedAt"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn disabled_in_config(node: &str) -> Vec<String> {
    let yaml = node_file(node, "/etc/rancher/k3s/config.yaml").expect("config.yaml in the node");
    let v: serde_json::Value = serde_saphyr::from_str(&String::from_utf8(yaml).unwrap()).unwrap();
    v["disable"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A local image built FROM scratch (no pull), removed on drop.
struct LocalImage {
    tag: String,
    _dir: tempfile::TempDir,
}

impl LocalImage {
    fn build(tag: &str, content: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), content).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello.txt /hello.txt\n",
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", tag, dir.path().to_str().unwrap()])
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "docker build: {}", stderr(&out));
        Self {
            tag: tag.to_string(),
            _dir: dir,
        }
    }

    fn save(&self) -> Vec<u8> {
        let out = Command::new("docker")
            .args(["save", &self.tag])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

#[test]
#[ignore = "needs a docker daemon"]
fn logs_image_load_service_and_addons_on_two_nodes() {
    if !require_docker() {
        return;
    }
    let sb = Sandbox::new("every");
    let https = free_port();
    let out = sb.start(&["--nodes", "2", "--ports", &format!("{https}:443")]);
    assert!(out.status.success(), "start failed");
    let server = sb.profile.clone();
    let agent = format!("{}-m02", sb.profile);
    let nodes = [server.clone(), agent.clone()];

    // logs: the k3s log of the server by default, of another node with --node; --tail.
    let all = sb.ok(&["logs"]);
    assert!(all.contains("k3s is up and running"), "{all}");
    let last = sb.ok(&["logs", "--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert_eq!(last.trim_end(), all.trim_end().lines().last().unwrap());
    let agent_log = sb.ok(&["logs", "--node", &agent]);
    assert!(
        agent_log.contains(&format!("Successfully registered node {agent}")),
        "{agent_log}"
    );
    // The agent was started once the server answered: its first join worked (a failed one
    // costs k3s 2 s).
    assert!(
        !agent_log.contains("Failed to validate connection"),
        "{agent_log}"
    );
    // Both nodes read the airgap tarball through the link the node image put in their
    // images folder (a dangling link is an import error).
    let airgap_read =
        "Imported images from /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst";
    for log in [&all, &agent_log] {
        assert!(log.contains(airgap_read), "{log}");
        assert!(!log.contains("Error encountered while importing"), "{log}");
    }
    assert_ne!(agent_log, all);
    let out = sb.run(&["logs", "--node", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&agent), "the hint lists the nodes");

    // logs -f: streams, and Ctrl-C ends it cleanly.
    let mut child = sb
        .cmd(&["logs", "-f", "--tail", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a line from logs -f");
    assert!(!first.is_empty());
    // Still following: it has not exited on its own.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "logs -f ended by itself"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends logs -f with success");

    // image load from Docker: into each node, the bytes `docker save` gives; then skipped.
    let tag = format!("timonel-test/{}:1", sb.profile);
    let image = LocalImage::build(&tag, &format!("hello from {}", sb.profile));
    let saved_sha = sha256_hex(&image.save());
    let full_name = format!("docker.io/{tag}");
    let out = sb.run(&["image", "load", &tag]);
    assert!(out.status.success(), "image load");
    let err = stderr(&out);
    for node in &nodes {
        assert!(err.contains(&format!("{node}: loaded {tag}")), "{err}");
        let got = imported(node);
        let rec = got
            .iter()
            .find(|(n, _, _)| n == &full_name)
            .unwrap_or_else(|| panic!("{node}: {got:?}"));
        assert_eq!(
            rec.1, saved_sha,
            "{node} imported other bytes than `docker save` gives"
        );
    }
    let first_times: Vec<u64> = nodes
        .iter()
        .map(|n| {
            imported(n)
                .into_iter()
                .find(|(x, _, _)| x == &full_name)
                .unwrap()
                .2
        })
        .collect();
    let out = sb.run(&["image", "load", &tag, "-o", "json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "skipped"),
        "{rows}"
    );
    let again: Vec<u64> = nodes
        .iter()
        .map(|n| {
            imported(n)
                .into_iter()
                .find(|(x, _, _)| x == &full_name)
                .unwrap()
                .2
        })
        .collect();
    assert_eq!(first_times, again, "a skipped load imported again");

    // image load of an archive: the archive's own bytes.
    let tag2 = format!("timonel-test/{}:archive", sb.profile);
    let image2 = LocalImage::build(&tag2, "from an archive");
    let archive = sb.home.path().join("app.tar");
    std::fs::write(&archive, image2.save()).unwrap();
    let archive_sha = sha256_hex(&std::fs::read(&archive).unwrap());
    let out = sb.run(&["image", "load", archive.to_str().unwrap()]);
    assert!(out.status.success());
    for node in &nodes {
        let got = imported(node);
        assert!(
            got.iter()
                .any(|(n, d, _)| n == &format!("docker.io/{tag2}") && d == &archive_sha),
            "{node}: {got:?}"
        );
    }
    let out = sb.run(&["image", "load", "timonel-test/no-such-image:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("neither a file nor an image"),
        "{}",
        stderr(&out)
    );

    // service: traefik is a LoadBalancer whose 443 is published; kubernetes is ClusterIP.
    let url = sb.ok(&["service", "traefik", "-n", "kube-system", "--url"]);
    assert_eq!(url.trim(), format!("https://127.0.0.1:{https}"));
    let out = sb.run(&["service", "kubernetes"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("ClusterIP"), "{}", stdout(&out));
    assert!(stderr(&out).contains("port-forward"), "{}", stderr(&out));
    let out = sb.run(&["service", "kubernetes", "--url"]);
    assert_eq!(out.status.code(), Some(1));
    let out = sb.run(&["service", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no service `nope`"),
        "{}",
        stderr(&out)
    );

    // addons: disable traefik → config.yaml of the server lists it, k3s no longer serves it,
    // and it stays so across stop/start; enable → gone from config.yaml.
    let list: serde_json::Value =
        serde_json::from_str(&sb.ok(&["addons", "list", "-o", "json"])).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "traefik" && a["enabled"] == true));
    assert!(!disabled_in_config(&server).contains(&"traefik".to_string()));
    sb.ok(&["addons", "disable", "traefik"]);
    assert_eq!(disabled_in_config(&server), ["traefik"]);
    assert!(sb
        .ok(&["addons", "list"])
        .lines()
        .any(|l| l.starts_with("traefik") && l.contains("disabled")));
    let out = sb.run(&["service", "traefik", "-n", "kube-system"]);
    assert_eq!(out.status.code(), Some(1), "traefik is still served");
    let out = sb.run(&["addons", "disable", "traefik"]);
    assert!(out.status.success() && stderr(&out).contains("already disabled"));
    sb.ok(&["stop"]);
    assert!(sb.start(&[]).status.success(), "resume");
    assert_eq!(disabled_in_config(&server), ["traefik"]);
    assert_eq!(
        sb.run(&["service", "traefik", "-n", "kube-system"])
            .status
            .code(),
        Some(1)
    );
    let profile: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            sb.timonel_home()
                .join("profiles")
                .join(&sb.profile)
                .join("profile.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(profile["disable"], serde_json::json!(["traefik"]));
    sb.ok(&["addons", "enable", "traefik"]);
    assert!(disabled_in_config(&server).is_empty());
    assert!(sb
        .run(&["service", "traefik", "-n", "kube-system"])
        .status
        .success());
    let out = sb.run(&["addons", "disable", "trafik"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("traefik, servicelb"),
        "{}",
        stderr(&out)
    );
    drop(image);
    drop(image2);
}
