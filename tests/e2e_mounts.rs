//! Host folders in nodes (`start --mount HOST_DIR:NODE_DIR[:ro]`): refused clearly when they
//! cannot work, and bind-mounted into every node on the real Docker daemon — read-only when
//! asked, kept across stop/start, given to nodes `node add` makes. What a hostPath volume of a
//! pod would see is checked inside the node (the k3s stand-in runs no pods).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::Path;

use support::sandbox::*;

/// A start that must be refused before anything exists: non-zero, the reason on stderr, no
/// profile left behind.
fn refused<S: AsRef<str>>(sb: &Sandbox, args: &[S], reason: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = sb.run(&args);
    assert!(
        !out.status.success(),
        "timonel {} succeeded",
        args.join(" ")
    );
    let err = stderr(&out);
    assert!(err.contains(reason), "expected `{reason}` in:\n{err}");
    assert!(
        !sb.timonel_home()
            .join("profiles")
            .join(&sb.profile)
            .exists(),
        "a refused start left a profile"
    );
}

#[test]
fn bad_mounts_are_refused_before_anything_is_made() {
    let sb = Sandbox::new("mnt-bad");
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().display().to_string();
    let start = |m: &str| -> Vec<String> {
        ["start", "--driver", "docker", "--mount", m]
            .map(String::from)
            .to_vec()
    };
    refused(&sb, &start("src:/data"), "is a relative path");
    let missing = format!("{host}/nope:/data");
    refused(&sb, &start(&missing), "does not exist");
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let file = format!("{host}/f:/data");
    refused(&sb, &start(&file), "is not a folder");
    let owned = format!("{host}:/var/lib/rancher/k3s/x");
    refused(&sb, &start(&owned), "which k3s owns in the node");
    let relative_node = format!("{host}:data");
    refused(&sb, &start(&relative_node), "is not an absolute path");
    refused(&sb, &start("/data"), "is not HOST_DIR:NODE_DIR");
    let a = format!("{host}:/data");
    refused(
        &sb,
        &["start", "--driver", "docker", "--mount", &a, "--mount", &a],
        "two mounts share the node folder `/data`",
    );
    // The ssh driver's nodes are other machines: refused before any of them is contacted.
    refused(
        &sb,
        &["start", "--node", "root@192.0.2.1:22", "--mount", &a],
        "cannot be used with the ssh driver",
    );
}

/// Runs `script` in a node with the static busybox the test put in the read-only mount (the
/// node image has only /bin/k3s, and the stand-in unpacks no tools).
fn node_sh(sb: &Sandbox, node: Option<&str>, script: &str) -> std::process::Output {
    let mut args = vec!["ssh"];
    if let Some(n) = node {
        args.extend(["--node", n]);
    }
    args.extend(["--", "/data/busybox", "sh", "-c", script]);
    sb.run(&args)
}

/// A statically linked busybox of the host's, to run commands in the nodes.
fn static_busybox() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/bin/busybox");
    let ok = std::process::Command::new("file")
        .arg(&path)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"));
    if ok {
        return Some(path);
    }
    let why = "no statically linked /bin/busybox (apt-get install busybox-static)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping: {why}");
    None
}

fn profile_mounts(sb: &Sandbox) -> serde_json::Value {
    let file = sb
        .timonel_home()
        .join("profiles")
        .join(&sb.profile)
        .join("profile.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["mounts"].clone()
}

#[test]
#[ignore = "needs a docker daemon"]
fn host_folders_are_in_every_node_read_only_when_asked() {
    if !require_docker() {
        return;
    }
    let Some(busybox) = static_busybox() else {
        return;
    };
    let sb = Sandbox::new("mnt");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(busybox, src.path().join("busybox")).unwrap();
    std::fs::write(src.path().join("hello.txt"), "from the host\n").unwrap();
    let ro = format!("{}:/data:ro", src.path().display());
    let rw = format!("{}:/work", out.path().display());
    assert!(sb.start(&["--mount", &ro, "--mount", &rw]).status.success());
    let p = sb.profile.clone();
    assert_eq!(
        profile_mounts(&sb),
        serde_json::json!([
            {"host": src.path(), "node": "/data", "read_only": true},
            {"host": out.path(), "node": "/work"},
        ])
    );

    let listed: serde_json::Value =
        serde_json::from_str(&sb.ok(&["profile", "list", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["mounts"], serde_json::json!([ro, rw]));
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["mounts"], serde_json::json!([ro, rw]));

    let read = |node: Option<&str>| stdout(&node_sh(&sb, node, "cat /data/hello.txt"));
    assert_eq!(read(None), "from the host\n");
    // Read-only: the node cannot write there, and the host folder is untouched.
    let write = node_sh(&sb, None, "echo x > /data/new.txt");
    assert!(!write.status.success(), "a write to a :ro mount succeeded");
    assert!(
        stderr(&write).contains("Read-only file system"),
        "{}",
        stderr(&write)
    );
    assert!(!src.path().join("new.txt").exists());
    // Read-write: what the node writes is on the host.
    assert!(node_sh(&sb, None, "echo from the node > /work/out.txt")
        .status
        .success());
    assert_eq!(
        std::fs::read_to_string(out.path().join("out.txt")).unwrap(),
        "from the node\n"
    );
    // A change on the host is seen at once (a bind mount, not a copy).
    std::fs::write(src.path().join("hello.txt"), "changed\n").unwrap();
    assert_eq!(read(None), "changed\n");

    // stop/start keeps the mounts.
    sb.ok(&["stop"]);
    sb.ok(&["start"]);
    assert_eq!(read(None), "changed\n");
    // A resume asking for other mounts is refused, and names the flag.
    let other = format!("{}:/other", src.path().display());
    let out2 = sb.run(&["start", "--mount", &other]);
    assert!(!out2.status.success());
    assert!(stderr(&out2).contains("--mount"), "{}", stderr(&out2));

    // node add: the new agent has them too.
    let added = sb.ok(&["node", "add"]).trim().to_string();
    assert_eq!(added, format!("{p}-m02"));
    assert_eq!(read(Some(&added)), "changed\n");
    assert!(!node_sh(&sb, Some(&added), "touch /data/x").status.success());
    assert!(!src.path().join("x").exists());
    assert!(
        Path::new(&src.path().join("hello.txt")).exists(),
        "the host folder is intact"
    );

    sb.ok(&["delete"]);
    sb.mark_deleted();
    assert!(
        src.path().join("hello.txt").exists() && out.path().join("out.txt").exists(),
        "delete removed files of a host folder"
    );
}
