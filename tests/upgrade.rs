//! Upgrades: a home, cache and kubeconfig as the previous release wrote them keep working, and
//! a profile from a newer timonel is refused by every command, never rewritten or removed.
//!
//! `tests/fixtures/schema-1/` is a home written by the release whose profile schema is 1 (a
//! stopped two-node Docker profile `old`, its saved credentials, `config.json`, a cached
//! release, and a kubeconfig holding the user's `work` entries beside `old`'s). `@ROOT@` in
//! its files stands for the folder it is copied to. When the format changes, keep this
//! folder, add `schema-<n>/`, and migrate (docs/architecture.md, "Where things go").

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::sandbox::{read_yaml, require_docker, stderr, stdout};
use timonel::profile::SCHEMA;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-1");
const VERSION: &str = "v1.31.2+k3s1";

/// A copy of the fixture in a temporary folder, `@ROOT@` replaced by its path.
struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(Path::new(FIXTURE), dir.path(), dir.path());
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.root().join("timonel")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.root().join("kube/config")
    }

    fn profile_file(&self, name: &str) -> PathBuf {
        self.home().join("profiles").join(name).join("profile.json")
    }

    /// `timonel <args>` on this home and kubeconfig, with no mirror but `mirror`.
    fn run(&self, args: &[&str], mirror: Option<&Path>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_timonel"));
        c.args(args)
            .env("TIMONEL_HOME", self.home())
            .env("KUBECONFIG", self.kubeconfig())
            .env("TIMONEL_NO_PROGRESS", "1")
            .env("TIMONEL_LOCK_TIMEOUT", "5s")
            .env_remove("TIMONEL_PROFILE")
            .env_remove("TIMONEL_DRIVER")
            .env_remove("TIMONEL_BINARY_MIRROR");
        if let Some(m) = mirror {
            c.env("TIMONEL_BINARY_MIRROR", format!("file://{}", m.display()));
        }
        let out = c.output().unwrap();
        eprintln!(
            "$ timonel {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out)
        );
        out
    }
}

fn copy_tree(from: &Path, to: &Path, root: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst, root);
            continue;
        }
        let bytes = std::fs::read(&src).unwrap();
        let bytes = match String::from_utf8(bytes) {
            Ok(text) => text
                .replace("@ROOT@", &root.display().to_string())
                .into_bytes(),
            Err(e) => e.into_bytes(),
        };
        std::fs::write(&dst, bytes).unwrap();
    }
}

/// The names of a kubeconfig's clusters, contexts and users, as `kind/name`.
fn names(kubeconfig: &Path) -> Vec<String> {
    let v = read_yaml(kubeconfig);
    let mut out = Vec::new();
    for key in ["clusters", "contexts", "users"] {
        for item in v[key].as_array().cloned().unwrap_or_default() {
            out.push(format!("{key}/{}", item["name"].as_str().unwrap()));
        }
    }
    out.sort();
    out
}

/// The user's own entries (named `work`), as parsed values.
fn user_entries(kubeconfig: &Path) -> Vec<serde_json::Value> {
    let v = read_yaml(kubeconfig);
    ["clusters", "contexts", "users"]
        .iter()
        .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
        .filter(|i| i["name"] == "work")
        .collect()
}

#[test]
fn a_schema_1_home_is_read_by_this_build() {
    let h = Installed::new();
    // The profile lists with what it was.
    let out = h.run(&["profile", "list", "-o", "json"], None);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let old = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "old")
        .unwrap_or_else(|| panic!("profile `old` not listed: {rows}"));
    assert_eq!(old["driver"], "docker", "{old}");
    assert_eq!(old["version"], VERSION, "{old}");
    assert_eq!(old["nodes"], 2, "{old}");
    assert_eq!(old["state"], "stopped", "{old}");
    assert!(old.get("error").is_none(), "{old}");

    // Its saved credentials are printed as they were saved.
    let out = h.run(&["kubeconfig", "-p", "old"], None);
    assert!(out.status.success());
    let saved = std::fs::read_to_string(h.home().join("profiles/old/kubeconfig.yaml")).unwrap();
    assert_eq!(stdout(&out), saved);

    // The defaults set with `config set` still apply.
    let out = h.run(&["config", "get", "nodes"], None);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "2");

    // The cached release is listed, and used: the mirror has only the checksums, no files.
    let out = h.run(&["cache", "list", "-o", "json"], None);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["version"], VERSION, "{list}");
    let mirror = tempfile::tempdir().unwrap();
    let arch_dir = h.home().join("cache/k3s").join(VERSION).join("amd64");
    let sums: String = ["k3s", "k3s-airgap-images-amd64.tar.zst"]
        .iter()
        .map(|a| {
            let data = std::fs::read(arch_dir.join(a)).unwrap();
            format!("{}  {a}\n", support::sha256_hex(&data))
        })
        .collect();
    std::fs::create_dir_all(mirror.path().join(VERSION)).unwrap();
    std::fs::write(
        mirror.path().join(VERSION).join("sha256sum-amd64.txt"),
        sums,
    )
    .unwrap();
    let out = h.run(
        &[
            "cache",
            "download",
            "--kubernetes-version",
            VERSION,
            "--arch",
            "amd64",
        ],
        Some(mirror.path()),
    );
    assert!(
        out.status.success(),
        "the cached files were not used: {}",
        stderr(&out)
    );
    let paths: Vec<PathBuf> = stdout(&out).lines().map(PathBuf::from).collect();
    assert_eq!(paths[0], arch_dir.join("k3s"));
}

#[test]
#[ignore = "needs a docker daemon"]
fn deleting_a_schema_1_profile_removes_only_its_own_kubeconfig_entries() {
    if !require_docker() {
        return;
    }
    let h = Installed::new();
    let before = names(&h.kubeconfig());
    assert!(before.contains(&"contexts/old".to_string()), "{before:?}");
    let users = user_entries(&h.kubeconfig());
    assert_eq!(users.len(), 3, "the fixture holds the user's entries");

    let out = h.run(&["delete", "-p", "old"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!h.home().join("profiles/old").exists());
    let after = names(&h.kubeconfig());
    let expected: Vec<String> = before
        .into_iter()
        .filter(|n| !n.ends_with("/old"))
        .collect();
    assert_eq!(after, expected);
    assert_eq!(user_entries(&h.kubeconfig()), users);
    let view = Command::new("kubectl")
        .args(["config", "view", "--kubeconfig"])
        .arg(h.kubeconfig())
        .output()
        .unwrap();
    assert!(view.status.success(), "{}", stderr(&view));
    // The cache is not the profile's: it stays.
    assert!(h.home().join("cache/k3s").join(VERSION).exists());
}

#[test]
fn a_profile_from_a_newer_timonel_is_refused_and_left_as_it_is() {
    let h = Installed::new();
    // `new` is `old` as a newer timonel would write it: a higher schema, a field unknown here.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.profile_file("old")).unwrap()).unwrap();
    let newer = SCHEMA + 1;
    v["schema"] = newer.into();
    v["name"] = "new".into();
    v["from_the_future"] = serde_json::json!({"kept": true});
    let file = h.profile_file("new");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let kubeconfig = std::fs::read(h.kubeconfig()).unwrap();

    let commands: [&[&str]; 9] = [
        &["start", "-p", "new", "--driver", "docker"],
        &["stop", "-p", "new"],
        &["delete", "-p", "new"],
        &["status", "-p", "new"],
        &["ip", "-p", "new"],
        &["kubeconfig", "-p", "new", "--merge"],
        &["node", "add", "-p", "new"],
        &["logs", "-p", "new"],
        &["ssh", "-p", "new", "--", "true"],
    ];
    for args in commands {
        let out = h.run(args, None);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} accepted a newer profile");
        assert!(
            err.contains(&file.display().to_string())
                && err.contains(&format!("schema {newer}"))
                && err.contains(&format!("knows {SCHEMA}")),
            "{args:?} does not name the file and both schemas: {err}"
        );
        assert!(err.contains("hint:"), "{args:?} gives no hint: {err}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "{args:?} touched it");
        assert_eq!(std::fs::read(h.kubeconfig()).unwrap(), kubeconfig);
    }

    // `profile list` shows it as unreadable, and why.
    let out = h.run(&["profile", "list", "-o", "json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "new")
        .unwrap();
    assert!(
        row["error"].as_str().unwrap().contains("newer timonel"),
        "{row}"
    );

    // `cache clean` keeps the version it names, even with `old` (the other user) gone.
    std::fs::remove_dir_all(h.home().join("profiles/old")).unwrap();
    let out = h.run(&["cache", "clean", "-o", "json"], None);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kept"][0]["version"], VERSION, "{report}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // `delete --all --purge` keeps it (and the home holding it) and says so.
    let out = h.run(&["delete", "--all", "--purge"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("new"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}
