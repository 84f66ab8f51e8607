//! timonel and its kvm helper (`timonel-kvm`, drivers/kvm): the real binary finds the helper,
//! says exactly what to install when it is missing, and starts it only for commands that touch
//! kvm. The protocol itself is tested against the real helper in drivers/kvm/tests/helper.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TIMONEL: &str = env!("CARGO_BIN_EXE_timonel");

/// `timonel ARGS` with its own home and the given environment, no helper from the caller's.
fn timonel(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    timonel_at(Path::new(TIMONEL), home, args, env)
}

fn timonel_at(exe: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("TIMONEL_HOME", home)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env("NO_COLOR", "1")
        .env_remove("TIMONEL_PROFILE")
        .env_remove("TIMONEL_DRIVER")
        .env_remove("TIMONEL_KVM_HELPER")
        .env_remove("TIMONEL_KVM_URI");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    eprintln!(
        "$ timonel {} -> {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_missing_helper_named_by_the_variable_says_what_to_install() {
    let home = tempfile::tempdir().unwrap();
    let nowhere = home.path().join("no-such-helper");
    let out = timonel(
        home.path(),
        &["start", "--driver", "kvm"],
        &[("TIMONEL_KVM_HELPER", nowhere.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the kvm driver is not usable"), "{err}");
    assert!(
        err.contains(&format!("TIMONEL_KVM_HELPER is `{}`", nowhere.display())),
        "{err}"
    );
    for fix in [
        "cargo install --path drivers/kvm",
        "libvirt-dev pkg-config",
        "libvirt-devel",
    ] {
        assert!(err.contains(fix), "no `{fix}` in:\n{err}");
    }
    // Nothing was created for the cluster.
    let profiles = timonel(home.path(), &["profile", "list", "-o", "json"], &[]);
    assert!(
        !text(&profiles.stdout).contains("\"kvm\""),
        "{}",
        text(&profiles.stdout)
    );
}

/// timonel alone in a directory (a hard link when it can be), so nothing is beside it.
fn lone_timonel(dir: &Path) -> PathBuf {
    let exe = dir.join(format!("timonel{}", std::env::consts::EXE_SUFFIX));
    if std::fs::hard_link(TIMONEL, &exe).is_err() {
        std::fs::copy(TIMONEL, &exe).unwrap();
    }
    exe
}

#[test]
fn a_helper_nowhere_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = lone_timonel(bin.path());
    let empty_path = tempfile::tempdir().unwrap();
    let out = timonel_at(
        &exe,
        home.path(),
        &["start", "--driver", "kvm"],
        &[("PATH", empty_path.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "`timonel-kvm` (timonel itself links no libvirt), which was not found (looked beside \
             timonel in {} and on PATH)",
            bin.path().display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: install the helper"), "{err}");
}

/// A helper that only records that it was started, then exits.
#[cfg(unix)]
fn recording_helper(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("started");
    let helper = dir.join("timonel-kvm");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (helper, marker)
}

#[cfg(unix)]
#[test]
fn commands_that_do_not_touch_kvm_never_start_the_helper() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (helper, marker) = recording_helper(dir.path());
    let env = [("TIMONEL_KVM_HELPER", helper.to_str().unwrap())];
    for args in [&["version"][..], &["status"], &["ip"], &["profile", "list"]] {
        timonel(home.path(), args, &env);
        assert!(
            !marker.exists(),
            "`timonel {}` started the helper",
            args.join(" ")
        );
    }
    // The same helper is started by a command that needs kvm, and its early end is reported.
    let out = timonel(home.path(), &["start", "--driver", "kvm"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "--uri qemu:///system"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("its helper `{}` ended", helper.display())),
        "{err}"
    );
}

/// The helper cargo built beside the timonel under test (scripts/test.sh builds it), when there.
/// Under CI=true a missing helper fails the test; elsewhere it is skipped.
fn built_helper() -> Option<PathBuf> {
    let helper =
        Path::new(TIMONEL).with_file_name(format!("timonel-kvm{}", std::env::consts::EXE_SUFFIX));
    if helper.is_file() {
        return Some(helper);
    }
    let why = format!(
        "`{}` is not built (cargo build -p timonel-driver-kvm --bin timonel-kvm)",
        helper.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping: {why}");
    None
}

#[cfg(target_os = "linux")]
#[test]
fn doctor_reaches_libvirt_through_the_helper_beside_timonel() {
    if built_helper().is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // libvirt's in-process test driver: the whole way (timonel, helper, libvirt) without a
    // daemon.
    let out = timonel(
        home.path(),
        &["doctor", "-o", "json"],
        &[("TIMONEL_KVM_URI", "test:///default")],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kvm = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "driver kvm")
        .cloned()
        .unwrap();
    assert_eq!(kvm["verdict"], "ok", "{kvm}");
    assert!(
        kvm["detail"].as_str().unwrap().starts_with("libvirt "),
        "{kvm}"
    );
}
