use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;

/// A fake host: `files` are (absolute path, content) written under a temp root.
fn host(files: &[(&str, &str)]) -> (tempfile::TempDir, HostFiles) {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let files = HostFiles::at(dir.path());
    (dir, files)
}

fn assert_not_ok(check: &Check, verdict: Verdict, detail: &str, fix: &str) {
    assert_eq!(check.verdict, verdict, "{check:?}");
    assert!(check.detail.contains(detail), "{check:?}");
    assert!(check.fix.as_deref().unwrap().contains(fix), "{check:?}");
}

const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

#[test]
fn cgroup_v2_with_every_controller_delegated_is_ok() {
    let (_d, h) = host(&[
        ("/sys/fs/cgroup/cgroup.controllers", ALL),
        ("/sys/fs/cgroup/cgroup.subtree_control", ALL),
    ]);
    let c = cgroups(&h, Some(0));
    assert_eq!(c.verdict, Verdict::Ok, "{c:?}");
    assert!(c.detail.starts_with("cgroup v2") && c.fix.is_none());
}

#[test]
fn cgroup_v2_without_memory_fails_and_undelegated_controllers_warn() {
    let (_d, h) = host(&[("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n")]);
    assert_not_ok(
        &cgroups(&h, Some(0)),
        Verdict::Fail,
        "memory",
        "cgroup_enable=memory",
    );

    let (_d, h) = host(&[
        ("/sys/fs/cgroup/cgroup.controllers", ALL),
        ("/sys/fs/cgroup/cgroup.subtree_control", "cpu memory\n"),
    ]);
    assert_not_ok(
        &cgroups(&h, Some(0)),
        Verdict::Warn,
        "cpuset, io, pids",
        "subtree_control",
    );
}

#[test]
fn cgroup_v2_not_delegated_to_the_users_service_warns() {
    let service = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cgroup.controllers";
    let (_d, h) = host(&[
        ("/sys/fs/cgroup/cgroup.controllers", ALL),
        ("/sys/fs/cgroup/cgroup.subtree_control", ALL),
        (service, "memory pids\n"),
    ]);
    assert_not_ok(
        &cgroups(&h, Some(1000)),
        Verdict::Warn,
        "user@1000.service: cpu, cpuset, io",
        "Delegate=",
    );
    // Root's own cgroups are not the user's business.
    assert_eq!(cgroups(&h, Some(0)).verdict, Verdict::Ok);
}

#[test]
fn cgroup_v1_warns_and_no_cgroups_fails() {
    let (_d, h) = host(&[("/sys/fs/cgroup/memory/tasks", "")]);
    assert_not_ok(
        &cgroups(&h, None),
        Verdict::Warn,
        "cgroup v1",
        "unified_cgroup_hierarchy",
    );
    let (_d, h) = host(&[]);
    assert_not_ok(&cgroups(&h, None), Verdict::Fail, "no cgroup", "cgroup2");
}

const RELEASE: &str = "6.1.0-28-amd64";

fn module(name: &'static str, needed_for: &'static str) -> Module {
    Module {
        name,
        needed_for,
        sign: Sign::Path("/nowhere"),
    }
}

#[test]
fn a_module_is_loaded_built_in_loadable_or_missing() {
    let proc_modules = "overlay 212992 0 - Live 0x0\nbridge 311296 1 br_netfilter, Live 0x0\n";
    let (_d, h) = host(&[("/proc/modules", proc_modules)]);
    assert_eq!(
        kernel_module(&h, module("overlay", "x")).verdict,
        Verdict::Ok
    );
    // Named as a user of another module is not loaded.
    let (_d, h2) = host(&[
        ("/proc/modules", proc_modules),
        ("/proc/sys/kernel/osrelease", &format!("{RELEASE}\n")),
        (
            &format!("/lib/modules/{RELEASE}/modules.dep"),
            "kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n",
        ),
    ]);
    assert_not_ok(
        &kernel_module(&h2, module("br_netfilter", "why")),
        Verdict::Warn,
        "loadable",
        "modprobe br_netfilter",
    );

    let (_d, h) = host(&[("/sys/module/br_netfilter/parameters/x", "")]);
    assert_eq!(
        kernel_module(&h, module("br_netfilter", "x")).verdict,
        Verdict::Ok
    );

    let (_d, h) = host(&[
        ("/proc/sys/kernel/osrelease", RELEASE),
        (
            &format!("/lib/modules/{RELEASE}/modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        ),
    ]);
    let c = kernel_module(&h, module("overlay", "x"));
    assert_eq!(
        (c.verdict, c.detail.as_str()),
        (Verdict::Ok, "built into the kernel")
    );

    // `overlay` is not `overlayfs`, and a missing module fails with the reason it matters.
    let (_d, h) = host(&[
        ("/proc/sys/kernel/osrelease", RELEASE),
        (
            &format!("/lib/modules/{RELEASE}/modules.dep"),
            "kernel/fs/overlayfs_extra.ko:\n",
        ),
    ]);
    assert_not_ok(
        &kernel_module(&h, module("overlay", "images need it")),
        Verdict::Fail,
        "images need it",
        "modules package",
    );
}

#[test]
fn a_module_built_into_the_running_kernel_is_found_by_its_sign() {
    let (_d, h) = host(&[
        ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n"),
        ("/proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n"),
    ]);
    for m in [BR_NETFILTER, OVERLAY] {
        let c = kernel_module(&h, m);
        assert_eq!(
            (c.verdict, c.detail.as_str()),
            (Verdict::Ok, "in the running kernel"),
            "{m:?}"
        );
    }
    let (_d, h) = host(&[("/proc/filesystems", "nodev\toverlayfs_not\n")]);
    assert_eq!(kernel_module(&h, OVERLAY).verdict, Verdict::Fail);
}

#[test]
fn inotify_limits_are_compared_with_the_thresholds() {
    let (_d, h) = host(&[
        ("/proc/sys/fs/inotify/max_user_instances", "128\n"),
        ("/proc/sys/fs/inotify/max_user_watches", "1048576\n"),
    ]);
    let checks = inotify(&h);
    assert_eq!(checks.len(), 2);
    assert_not_ok(
        &checks[0],
        Verdict::Warn,
        "128, below 512",
        "fs.inotify.max_user_instances=512",
    );
    assert_eq!(checks[1].verdict, Verdict::Ok, "{:?}", checks[1]);

    let (_d, h) = host(&[]);
    for c in inotify(&h) {
        assert_not_ok(&c, Verdict::Warn, "cannot read", "sysctl -w");
    }
}

#[test]
fn free_disk_thresholds() {
    const GIB: u64 = 1 << 30;
    let home = Path::new("/home/me/.timonel");
    assert_not_ok(
        &free_disk(home, Some(GIB)),
        Verdict::Fail,
        "1.0 GiB free",
        "TIMONEL_HOME",
    );
    assert_not_ok(
        &free_disk(home, Some(5 * GIB)),
        Verdict::Warn,
        "10 GiB are advised",
        "free space",
    );
    assert_eq!(free_disk(home, Some(50 * GIB)).verdict, Verdict::Ok);
    assert_not_ok(
        &free_disk(home, None),
        Verdict::Warn,
        "cannot measure",
        "free space",
    );
}

#[cfg(unix)]
#[test]
fn free_space_is_measured_on_the_nearest_existing_folder() {
    let dir = tempfile::tempdir().unwrap();
    assert!(measure_free(&dir.path().join("not/yet/there")).is_some_and(|b| b > 0));
}

#[test]
fn a_clock_before_the_build_fails() {
    let built = SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000);
    let c = clock(built - Duration::from_secs(86_400 * 400), built);
    assert_not_ok(&c, Verdict::Fail, "before this timonel was made", "set-ntp");
    assert_eq!(
        clock(built + Duration::from_secs(5), built).verdict,
        Verdict::Ok
    );
    assert_eq!(
        clock(built - Duration::from_secs(30), built).verdict,
        Verdict::Ok
    );
}

#[test]
fn proxies_are_shown_without_credentials_and_loopback_ones_warn() {
    let env = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    };
    assert_eq!(proxies(env(&[])).detail, "none set");
    let c = proxies(env(&[
        ("https_proxy", "http://me:secret@proxy.corp:3128"),
        ("NO_PROXY", "corp.example"),
    ]));
    assert_eq!(c.verdict, Verdict::Ok);
    assert!(
        !c.detail.contains("secret") && !c.detail.contains("me:"),
        "{c:?}"
    );
    assert!(
        c.detail.contains("proxy.corp:3128") && c.detail.contains("NO_PROXY=corp.example"),
        "{c:?}"
    );
    assert_not_ok(
        &proxies(env(&[("HTTP_PROXY", "127.0.0.1:3128")])),
        Verdict::Warn,
        "loopback",
        "LAN address",
    );
    assert_not_ok(
        &proxies(env(&[("HTTPS_PROXY", "http://[bad")])),
        Verdict::Fail,
        "not a URL",
        "HTTPS_PROXY",
    );
}

#[test]
fn the_worst_verdict_wins() {
    let ok = Check::ok("a", "");
    let warn = Check::not_ok("b", Verdict::Warn, "", "f");
    let fail = Check::not_ok("c", Verdict::Fail, "", "f");
    assert_eq!(worst(&[]), Verdict::Ok);
    assert_eq!(worst(&[ok.clone(), warn.clone()]), Verdict::Warn);
    assert_eq!(worst(&[warn, fail, ok]), Verdict::Fail);
}
