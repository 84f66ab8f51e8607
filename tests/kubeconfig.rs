//! The kubeconfig module driven through its public API on temp files, plus the real `kubectl`
//! (when installed) reading what we wrote.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns: failing loudly is their job

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use timonel::kubeconfig::{
    self, lock::lock_path, Change, ClusterCredentials, ContextChange, EntryKind, KubeconfigError,
    MergeOptions, RemoveOptions,
};
use timonel_driver::Hint;

const RICH: &str = r#"# my precious kubeconfig
apiVersion: v1
x-top-unknown:
  nested: [1, 2, {deep: true}]
clusters:
- cluster:
    certificate-authority-data: Zm9v
    server: https://10.0.0.1:6443
    x-cluster-unknown: keep-me
    extensions:
    - name: someone-else
      extension: {provider: other, when: "2024-01-01"}
  name: prod
  x-named-unknown: 7
- name: kind-dev
  cluster:
    server: https://127.0.0.1:40000
    insecure-skip-tls-verify: true
contexts:
- context:
    cluster: prod
    user: admin
    namespace: payments
  name: prod
- context: {cluster: kind-dev, user: kind-dev}
  name: kind-dev
current-context: prod
kind: Config
preferences:
  colors: true
  extensions:
  - name: pref-ext
    extension: {a: b}
users:
- name: admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: ["eks", "get-token", "--cluster-name", "prod"]
      env: null
      interactiveMode: IfAvailable
      provideClusterInfo: false
- name: kind-dev
  user:
    token: "12345"
    x-user-unknown: ["yes", "no", "on", "1.0"]
"#;

fn creds(port: u16) -> ClusterCredentials {
    ClusterCredentials {
        server: format!("https://127.0.0.1:{port}"),
        ca_data: "Q0EtREFUQQ==".to_string(),
        client_cert_data: "Q0xJRU5ULUNFUlQ=".to_string(),
        client_key_data: "Q0xJRU5ULUtFWQ==".to_string(),
    }
}

fn opts() -> MergeOptions {
    MergeOptions {
        set_current: true,
        lock_timeout: Duration::from_secs(5),
        stale_lock_after: Duration::from_secs(60),
    }
}

fn ropts() -> RemoveOptions {
    RemoveOptions {
        lock_timeout: Duration::from_secs(5),
        stale_lock_after: Duration::from_secs(60),
    }
}

fn parse(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Serialized with key order, so equality also checks that order survived.
fn ordered(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

fn names(doc: &Value, list: &str) -> Vec<String> {
    doc[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything in the directory: no temp files or lock files may be left behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn kubectl(args: &[&str]) -> Option<String> {
    let out = Command::new("kubectl")
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn merge_into_missing_file_creates_dir_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join(".kube").join("config");
    let outcome = kubeconfig::merge(&path, "timonel", &creds(7443), &opts()).unwrap();
    assert_eq!(outcome.change, Change::Created);
    assert!(outcome.file_created);
    assert_eq!(outcome.path, path);
    let doc = parse(&path);
    assert_eq!(doc["current-context"], "timonel");
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:7443"
    );
    assert_eq!(
        doc["users"][0]["user"]["client-key-data"],
        "Q0xJRU5ULUtFWQ=="
    );
    assert_eq!(doc["kind"], "Config");
    assert_eq!(listing(path.parent().unwrap()), ["config"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    // The real kubectl reads it.
    let p = path.to_str().unwrap();
    if let Some(out) = kubectl(&["config", "get-contexts", "--kubeconfig", p, "-o", "name"]) {
        assert_eq!(out.trim(), "timonel");
        let view = kubectl(&["config", "view", "--kubeconfig", p, "--raw", "-o", "json"]).unwrap();
        let view: Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["current-context"], "timonel");
        assert_eq!(
            view["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:7443"
        );
        assert_eq!(
            view["users"][0]["user"]["client-certificate-data"],
            "Q0xJRU5ULUNFUlQ="
        );
    } else {
        eprintln!("kubectl not installed: skipped the kubectl cross-check");
    }
}

#[test]
fn merge_keeps_everything_else_and_remove_restores_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let original = parse(&path);

    let outcome = kubeconfig::merge(&path, "timonel", &creds(7443), &opts()).unwrap();
    assert_eq!(outcome.change, Change::Created);
    assert_eq!(outcome.previous_context.as_deref(), Some("prod"));
    let merged = parse(&path);
    assert_eq!(names(&merged, "clusters"), ["prod", "kind-dev", "timonel"]);
    assert_eq!(names(&merged, "contexts"), ["prod", "kind-dev", "timonel"]);
    assert_eq!(names(&merged, "users"), ["admin", "kind-dev", "timonel"]);
    assert_eq!(merged["current-context"], "timonel");
    for key in ["x-top-unknown", "preferences", "apiVersion", "kind"] {
        assert_eq!(ordered(&merged[key]), ordered(&original[key]), "{key}");
    }
    for list in ["clusters", "contexts", "users"] {
        for i in 0..2 {
            assert_eq!(
                ordered(&merged[list][i]),
                ordered(&original[list][i]),
                "{list}[{i}]"
            );
        }
    }
    // Strings that look like other types keep their type.
    assert_eq!(merged["users"][1]["user"]["x-user-unknown"][0], "yes");
    assert_eq!(merged["users"][1]["user"]["token"], "12345");

    let removed = kubeconfig::remove(&path, "timonel", &ropts()).unwrap();
    assert_eq!(removed.removed, EntryKind::ALL.to_vec());
    assert_eq!(
        removed.current_context,
        ContextChange::Restored("prod".into())
    );
    let after = parse(&path);
    assert_eq!(ordered(&after), ordered(&original));
    assert_eq!(listing(dir.path()), ["config"]);
}

#[test]
fn merge_twice_is_idempotent_and_skips_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    kubeconfig::merge(&path, "timonel", &creds(7443), &opts()).unwrap();
    // A comment added by hand survives because nothing needs writing.
    let mut text = fs::read_to_string(&path).unwrap();
    text.insert_str(0, "# hand-written\n");
    fs::write(&path, &text).unwrap();
    let again = kubeconfig::merge(&path, "timonel", &creds(7443), &opts()).unwrap();
    assert_eq!(again.change, Change::Unchanged);
    assert_eq!(again.previous_context, None);
    assert_eq!(fs::read_to_string(&path).unwrap(), text);

    // A new port updates in place: still one entry each, previous context still recorded.
    let moved = kubeconfig::merge(&path, "timonel", &creds(8443), &opts()).unwrap();
    assert_eq!(moved.change, Change::Updated);
    let doc = parse(&path);
    assert_eq!(names(&doc, "clusters"), ["prod", "kind-dev", "timonel"]);
    assert_eq!(
        doc["clusters"][2]["cluster"]["server"],
        "https://127.0.0.1:8443"
    );
    let removed = kubeconfig::remove(&path, "timonel", &ropts()).unwrap();
    assert_eq!(
        removed.current_context,
        ContextChange::Restored("prod".into())
    );
}

#[test]
fn keep_context_leaves_current_context_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let o = MergeOptions {
        set_current: false,
        ..opts()
    };
    kubeconfig::merge(&path, "timonel", &creds(1), &o).unwrap();
    assert_eq!(parse(&path)["current-context"], "prod");
    let removed = kubeconfig::remove(&path, "timonel", &ropts()).unwrap();
    assert_eq!(removed.current_context, ContextChange::Kept);
    assert_eq!(parse(&path)["current-context"], "prod");
}

#[test]
fn foreign_entry_with_our_name_is_refused_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let before = fs::read(&path).unwrap();
    let err = kubeconfig::merge(&path, "prod", &creds(1), &opts()).unwrap_err();
    assert!(
        matches!(&err, KubeconfigError::Foreign { kind: EntryKind::Cluster, name, .. } if name == "prod"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("`{}`", path.display())),
        "{message}"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("--kubeconfig"), "{hint}");
    assert!(hint.contains("delete-cluster prod"), "{hint}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(listing(dir.path()), ["config"]);
    // remove leaves foreign entries alone as well
    let removed = kubeconfig::remove(&path, "prod", &ropts()).unwrap();
    assert!(removed.nothing_removed());
    assert_eq!(
        removed.kept_foreign,
        [EntryKind::Cluster, EntryKind::Context]
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn remove_when_nothing_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    assert!(kubeconfig::remove(&path, "timonel", &ropts())
        .unwrap()
        .nothing_removed());
    assert!(!path.exists());
    fs::write(&path, RICH).unwrap();
    let r = kubeconfig::remove(&path, "timonel", &ropts()).unwrap();
    assert!(r.nothing_removed() && r.kept_foreign.is_empty());
    assert_eq!(fs::read_to_string(&path).unwrap(), RICH);
}

#[test]
fn lock_held_by_another_times_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let lock = lock_path(&path);
    fs::write(&lock, "").unwrap(); // kubectl's lock: empty
    let o = MergeOptions {
        lock_timeout: Duration::from_millis(600),
        ..opts()
    };
    let start = Instant::now();
    let err = kubeconfig::merge(&path, "timonel", &creds(1), &o).unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(err, KubeconfigError::LockTimeout { holder: None, .. }),
        "{err:?}"
    );
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(err.to_string().contains("config.lock"), "{err}");
    assert!(err.hint().unwrap().contains("delete"));
    assert_eq!(fs::read_to_string(&path).unwrap(), RICH);
    assert!(
        lock.exists(),
        "someone else's fresh lock must not be removed"
    );
}

#[test]
fn waits_for_a_lock_that_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let lock = lock_path(&path);
    fs::write(&lock, "").unwrap();
    let releaser = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::remove_file(lock).unwrap();
        })
    };
    let start = Instant::now();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    releaser.join().unwrap();
    assert!(!lock.exists());
    assert_eq!(names(&parse(&path), "contexts"), ["timonel"]);
}

#[test]
fn stale_lock_by_age_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let lock = lock_path(&path);
    let file = fs::File::create(&lock).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    drop(file);
    let start = Instant::now();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!lock.exists());
    assert_eq!(listing(dir.path()), ["config"]);
}

#[cfg(unix)]
#[test]
fn lock_of_a_dead_process_is_recovered_and_of_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let lock = lock_path(&path);
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    fs::write(&lock, format!("{dead_pid}\n")).unwrap();
    let start = Instant::now();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!lock.exists());

    let mut live = Command::new("sleep").arg("30").spawn().unwrap();
    fs::write(&lock, format!("{}\n", live.id())).unwrap();
    let o = MergeOptions {
        lock_timeout: Duration::from_millis(300),
        ..opts()
    };
    let err = kubeconfig::merge(&path, "other", &creds(1), &o).unwrap_err();
    live.kill().unwrap();
    live.wait().unwrap();
    assert!(
        matches!(err, KubeconfigError::LockTimeout { holder: Some(pid), .. } if pid == live.id()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&live.id().to_string()));
}

#[test]
fn concurrent_merges_from_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let o = MergeOptions {
                    lock_timeout: Duration::from_secs(30),
                    ..opts()
                };
                kubeconfig::merge(&path, &format!("p{i}"), &creds(7000 + i), &o).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let doc = parse(&path);
    let mut contexts = names(&doc, "contexts");
    contexts.sort();
    let mut expected: Vec<String> = ["kind-dev", "prod"].map(String::from).to_vec();
    expected.extend((0..8).map(|i| format!("p{i}")));
    expected.sort();
    assert_eq!(contexts, expected);
    assert_eq!(names(&doc, "users").len(), 10);
    assert_eq!(listing(dir.path()), ["config"]);
}

/// Child half of [`concurrent_merges_from_processes_lose_nothing`]: does nothing unless run by it.
#[test]
fn child_process_merge() {
    let (Some(path), Some(name)) = (
        std::env::var_os("TIMONEL_TEST_KC_PATH"),
        std::env::var("TIMONEL_TEST_KC_NAME").ok(),
    ) else {
        return;
    };
    let o = MergeOptions {
        lock_timeout: Duration::from_secs(60),
        ..opts()
    };
    for round in 0..5 {
        kubeconfig::merge(Path::new(&path), &name, &creds(round), &o).unwrap();
    }
}

#[test]
fn concurrent_merges_from_processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(&exe)
                .args(["--exact", "child_process_merge", "--test-threads=1"])
                .env("TIMONEL_TEST_KC_PATH", &path)
                .env("TIMONEL_TEST_KC_NAME", format!("proc{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran the merge (and was not filtered out).
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    let mut contexts = names(&parse(&path), "contexts");
    contexts.sort();
    assert_eq!(contexts, ["proc0", "proc1", "proc2", "proc3"]);
    assert_eq!(listing(dir.path()), ["config"]);
}

#[cfg(unix)]
#[test]
fn symlinked_kubeconfig_stays_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real").join("config");
    fs::write(&real, RICH).unwrap();
    let link = dir.path().join("config");
    std::os::unix::fs::symlink("real/config", &link).unwrap();
    let outcome = kubeconfig::merge(&link, "timonel", &creds(1), &opts()).unwrap();
    assert_eq!(outcome.path, real);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("real/config"));
    assert_eq!(
        names(&parse(&real), "contexts"),
        ["prod", "kind-dev", "timonel"]
    );
    kubeconfig::remove(&link, "timonel", &ropts()).unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(names(&parse(&real), "contexts"), ["prod", "kind-dev"]);
    assert_eq!(listing(&dir.path().join("real")), ["config"]);
    assert_eq!(listing(dir.path()), ["config", "real"]);
}

#[test]
fn read_only_file_is_refused_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    let mut perms = fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    fs::set_permissions(&path, perms).unwrap();
    let err = kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap_err();
    assert!(matches!(err, KubeconfigError::ReadOnly { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("--kubeconfig"));
    assert_eq!(fs::read_to_string(&path).unwrap(), RICH);
    assert!(fs::metadata(&path).unwrap().permissions().readonly());
    assert_eq!(listing(dir.path()), ["config"]);
}

#[test]
fn invalid_yaml_is_refused_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let broken = "users:\n- name: x\n  user: {client-key-data: SECRETKEY\n";
    fs::write(&path, broken).unwrap();
    let err = kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap_err();
    assert!(matches!(err, KubeconfigError::Parse { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(!chain.contains("SECRETKEY"), "{chain}");
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    assert_eq!(listing(dir.path()), ["config"]);

    fs::write(&path, "clusters: {a: 1}\n").unwrap();
    let err = kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap_err();
    assert!(matches!(err, KubeconfigError::Invalid { .. }), "{err:?}");
    assert!(kubeconfig::remove(&path, "timonel", &ropts()).is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), "clusters: {a: 1}\n");
}

#[cfg(unix)]
#[test]
fn rewritten_file_gets_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn bom_and_utf16_input_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, format!("\u{feff}{RICH}")).unwrap();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert!(!bytes.starts_with(b"\xEF\xBB\xBF"));
    assert_eq!(
        names(&parse(&path), "contexts"),
        ["prod", "kind-dev", "timonel"]
    );

    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(RICH.encode_utf16().flat_map(u16::to_le_bytes));
    fs::write(&path, utf16).unwrap();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    assert_eq!(
        names(&parse(&path), "users"),
        ["admin", "kind-dev", "timonel"]
    );
}

#[test]
fn kubectl_rewrites_keep_our_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    fs::write(&path, RICH).unwrap();
    kubeconfig::merge(&path, "timonel", &creds(1), &opts()).unwrap();
    let p = path.to_str().unwrap();
    // kubectl rewrites the whole file in its own format.
    if kubectl(&["config", "use-context", "kind-dev", "--kubeconfig", p]).is_none() {
        eprintln!("kubectl not installed: skipped");
        return;
    }
    kubectl(&["config", "use-context", "timonel", "--kubeconfig", p]).unwrap();
    let removed = kubeconfig::remove(&path, "timonel", &ropts()).unwrap();
    assert_eq!(removed.removed, EntryKind::ALL.to_vec());
    assert_eq!(
        removed.current_context,
        ContextChange::Restored("prod".into())
    );
    let out = kubectl(&["config", "get-contexts", "--kubeconfig", p, "-o", "name"]).unwrap();
    assert_eq!(out.lines().collect::<Vec<_>>(), ["kind-dev", "prod"]);
}

#[test]
fn kubeconfig_env_list_rules() {
    // The only test in this binary that touches KUBECONFIG.
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let list = std::env::join_paths([&a, &b, &c]).unwrap();
    std::env::set_var("KUBECONFIG", &list);
    assert_eq!(
        kubeconfig::resolve_target(None).unwrap(),
        c,
        "none exists: the last"
    );
    fs::write(&b, "").unwrap();
    assert_eq!(
        kubeconfig::resolve_target(None).unwrap(),
        b,
        "the first that exists"
    );
    let explicit = dir.path().join("explicit");
    assert_eq!(
        kubeconfig::resolve_target(Some(&explicit)).unwrap(),
        explicit
    );
    std::env::remove_var("KUBECONFIG");
    if let Some(home) = dirs::home_dir() {
        assert_eq!(
            kubeconfig::resolve_target(None).unwrap(),
            home.join(".kube").join("config")
        );
    }
}

#[test]
fn standalone_output_is_read_by_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("standalone");
    fs::write(&path, kubeconfig::standalone("timonel", &creds(6443))).unwrap();
    let p = path.to_str().unwrap();
    match kubectl(&["config", "view", "--kubeconfig", p, "--raw", "-o", "json"]) {
        Some(view) => {
            let view: Value = serde_json::from_str(&view).unwrap();
            assert_eq!(view["current-context"], "timonel");
            assert_eq!(view["contexts"][0]["context"]["cluster"], "timonel");
            assert_eq!(
                view["users"][0]["user"]["client-key-data"],
                "Q0xJRU5ULUtFWQ=="
            );
        }
        None => eprintln!("kubectl not installed: skipped"),
    }
}
