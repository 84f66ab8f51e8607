//! `timonel doctor`'s checks of the host. Each check reads what it needs through [`HostFiles`]
//! (a root folder, `/` on a real host, a temp dir in tests) or takes the measured values as
//! arguments, and returns a [`Check`] with a verdict and, when not ok, the fix. Nothing here
//! changes the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How a check came out. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do; always present when the verdict is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn not_ok(
        name: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            verdict,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The host's `/proc`, `/sys` and `/lib/modules`, under `root`.
#[derive(Debug, Clone)]
pub struct HostFiles {
    root: PathBuf,
}

impl HostFiles {
    /// The real host.
    pub fn real() -> Self {
        Self::at("/")
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn read(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute)).ok()
    }

    fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).exists()
    }
}

/// What k3s's kubelet needs from cgroups (cpuset and io are used when present).
const REQUIRED_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
const WANTED_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// cgroup version, and whether the controllers k3s needs are available and handed down to
/// child groups (to the user's own service too when `uid` is not root, for rootless Docker).
pub fn cgroups(host: &HostFiles, uid: Option<u32>) -> Check {
    const NAME: &str = "cgroups";
    let Some(available) = host.read("/sys/fs/cgroup/cgroup.controllers") else {
        if host.exists("/sys/fs/cgroup/memory") || host.exists("/sys/fs/cgroup/cpu") {
            return Check::not_ok(
                NAME,
                Verdict::Warn,
                "cgroup v1: k3s runs, but Kubernetes keeps v1 in maintenance only",
                "boot with cgroup v2 (kernel option `systemd.unified_cgroup_hierarchy=1`)",
            );
        }
        return Check::not_ok(
            NAME,
            Verdict::Fail,
            "no cgroup file system at /sys/fs/cgroup",
            "mount cgroup2 at /sys/fs/cgroup (systemd does this at boot)",
        );
    };
    let available = words(&available);
    let missing: Vec<&str> = REQUIRED_CONTROLLERS
        .into_iter()
        .filter(|c| !available.contains(c))
        .collect();
    if !missing.is_empty() {
        return Check::not_ok(
            NAME,
            Verdict::Fail,
            format!("cgroup v2 without the {} controller(s)", missing.join(", ")),
            "enable them in the kernel (e.g. `cgroup_enable=memory` on Raspberry Pi OS) and reboot",
        );
    }
    let enabled = host
        .read("/sys/fs/cgroup/cgroup.subtree_control")
        .unwrap_or_default();
    let not_delegated = |enabled: &str| -> Vec<&str> {
        let enabled = words(enabled);
        WANTED_CONTROLLERS
            .into_iter()
            .filter(|c| available.contains(c) && !enabled.contains(c))
            .collect()
    };
    let root_missing = not_delegated(&enabled);
    if !root_missing.is_empty() {
        return Check::not_ok(
            NAME,
            Verdict::Warn,
            format!(
                "cgroup v2; not handed down to child groups: {}",
                root_missing.join(", ")
            ),
            "let systemd manage cgroups (it enables them), or `echo +cpu +memory +pids > /sys/fs/cgroup/cgroup.subtree_control` as root",
        );
    }
    if let Some(uid) = uid.filter(|u| *u != 0) {
        let service = format!("/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service");
        if let Some(user) = host.read(&format!("{service}/cgroup.controllers")) {
            let user_missing = not_delegated(&user);
            if !user_missing.is_empty() {
                return Check::not_ok(
                    NAME,
                    Verdict::Warn,
                    format!(
                        "cgroup v2; not delegated to user@{uid}.service: {} (rootless Docker needs them)",
                        user_missing.join(", ")
                    ),
                    "add `[Service]\\nDelegate=cpu cpuset io memory pids` in /etc/systemd/system/user@.service.d/delegate.conf, then `sudo systemctl daemon-reload` and log in again",
                );
            }
        }
    }
    Check::ok(
        NAME,
        format!(
            "cgroup v2; {} available and delegated",
            REQUIRED_CONTROLLERS.join(", ")
        ),
    )
}

/// A kernel module k3s needs.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    pub needed_for: &'static str,
    /// What shows the module's feature is in the running kernel, loaded or built in.
    pub sign: Sign,
}

#[derive(Debug, Clone, Copy)]
pub enum Sign {
    /// This file exists (e.g. the sysctls the module adds).
    Path(&'static str),
    /// `/proc/filesystems` lists this file system.
    Filesystem(&'static str),
}

pub const BR_NETFILTER: Module = Module {
    name: "br_netfilter",
    needed_for: "Services need pod traffic on the node bridge to pass iptables",
    sign: Sign::Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
};

pub const OVERLAY: Module = Module {
    name: "overlay",
    needed_for: "containerd in the nodes keeps images on overlayfs",
    sign: Sign::Filesystem("overlay"),
};

/// Whether a kernel module is loaded, built in, or at least loadable.
pub fn kernel_module(host: &HostFiles, module: Module) -> Check {
    let Module {
        name, needed_for, ..
    } = module;
    let check = format!("module {name}");
    let loaded = host
        .read("/proc/modules")
        .is_some_and(|m| m.lines().any(|l| l.split_whitespace().next() == Some(name)))
        || host.exists(&format!("/sys/module/{name}"));
    if loaded {
        return Check::ok(&check, "loaded");
    }
    let present = match module.sign {
        Sign::Path(path) => host.exists(path),
        Sign::Filesystem(fs) => host
            .read("/proc/filesystems")
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs))),
    };
    if present {
        return Check::ok(&check, "in the running kernel");
    }
    let release = host
        .read("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let listed = |file: &str| {
        host.read(&format!("/lib/modules/{release}/{file}"))
            .is_some_and(|text| {
                text.lines().any(|l| {
                    let path = l.split(':').next().unwrap_or("");
                    let file = path.rsplit('/').next().unwrap_or("");
                    file.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(".ko"))
                })
            })
    };
    if !release.is_empty() && listed("modules.builtin") {
        return Check::ok(&check, "built into the kernel");
    }
    let persist = format!(
        "`sudo modprobe {name}`, and `echo {name} | sudo tee /etc/modules-load.d/timonel.conf` to load it at boot"
    );
    if !release.is_empty() && listed("modules.dep") {
        return Check::not_ok(
            &check,
            Verdict::Warn,
            format!("not loaded (loadable); {needed_for}"),
            persist,
        );
    }
    Check::not_ok(
        &check,
        Verdict::Fail,
        format!("not loaded and not found for kernel `{release}`; {needed_for}"),
        format!("install the kernel's modules package, then {persist}"),
    )
}

/// `fs.inotify.max_user_instances` and `max_user_watches` against what several k3s nodes on
/// one kernel need; too low is the usual cause of "too many open files" in k3s in Docker.
pub fn inotify(host: &HostFiles) -> Vec<Check> {
    [
        ("max_user_instances", 512u64),
        ("max_user_watches", 524_288u64),
    ]
    .into_iter()
    .map(|(key, minimum)| {
        let name = format!("fs.inotify.{key}");
        let value = host
            .read(&format!("/proc/sys/fs/inotify/{key}"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let fix = format!(
            "`sudo sysctl -w {name}={minimum}`, and `echo {name}={minimum} | sudo tee /etc/sysctl.d/99-timonel.conf` to keep it"
        );
        match value {
            Some(v) if v >= minimum => Check::ok(&name, format!("{v} (at least {minimum})")),
            Some(v) => Check::not_ok(
                &name,
                Verdict::Warn,
                format!("{v}, below {minimum}: k3s nodes may fail with \"too many open files\""),
                fix,
            ),
            None => Check::not_ok(
                &name,
                Verdict::Warn,
                "cannot read it from /proc/sys/fs/inotify",
                fix,
            ),
        }
    })
    .collect()
}

/// Free space where the cache and VM disks go: a cached release with its airgap images is a
/// few hundred MiB, a VM node's disk grows to its size.
pub fn free_disk(home: &Path, free: Option<u64>) -> Check {
    const NAME: &str = "disk space";
    const GIB: u64 = 1024 * 1024 * 1024;
    let fix = format!(
        "free space on the file system of `{}`, or point TIMONEL_HOME at a roomier one",
        home.display()
    );
    match free {
        None => Check::not_ok(
            NAME,
            Verdict::Warn,
            format!("cannot measure the free space under `{}`", home.display()),
            fix,
        ),
        Some(bytes) => {
            let detail = format!(
                "{} free under `{}`",
                crate::cli::cache::human_size(bytes),
                home.display()
            );
            if bytes < 2 * GIB {
                Check::not_ok(
                    NAME,
                    Verdict::Fail,
                    format!("{detail}; at least 2 GiB are needed"),
                    fix,
                )
            } else if bytes < 10 * GIB {
                Check::not_ok(
                    NAME,
                    Verdict::Warn,
                    format!("{detail}; 10 GiB are advised"),
                    fix,
                )
            } else {
                Check::ok(NAME, detail)
            }
        }
    }
}

/// Free bytes on the file system holding `path` (or its nearest existing parent).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // the field types differ between Linux and macOS
pub fn measure_free(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(existing).ok()?;
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Free bytes on the volume holding `path` (or its nearest existing parent).
#[cfg(windows)]
pub fn measure_free(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    fs4::available_space(existing).ok()
}

#[cfg(not(any(unix, windows)))]
pub fn measure_free(_path: &Path) -> Option<u64> {
    None
}

/// The clock against the time of the commit timonel was built from: a clock before it is
/// certainly wrong, and TLS certificates then look "not yet valid".
pub fn clock(now: SystemTime, built: SystemTime) -> Check {
    const NAME: &str = "clock";
    let show = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    match built.duration_since(now) {
        Ok(behind) if behind > Duration::from_secs(60) => Check::not_ok(
            NAME,
            Verdict::Fail,
            format!(
                "{} is before this timonel was made ({}): certificates will look not yet valid",
                show(now),
                show(built)
            ),
            "set the clock (enable NTP: `sudo timedatectl set-ntp true`)",
        ),
        _ => Check::ok(NAME, format!("{} (UTC)", show(now))),
    }
}

/// The proxy settings the nodes get: each must be a URL, and one on this machine's loopback
/// is the node's own loopback inside a node.
pub fn proxies(get: impl Fn(&str) -> Option<String>) -> Check {
    const NAME: &str = "proxy";
    let pick = |upper: &str| {
        get(upper)
            .or_else(|| get(&upper.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let mut shown = Vec::new();
    for key in ["HTTP_PROXY", "HTTPS_PROXY"] {
        let Some(value) = pick(key) else { continue };
        let text = if value.contains("://") {
            value.trim().to_string()
        } else {
            format!("http://{}", value.trim())
        };
        let Ok(mut url) = url::Url::parse(&text) else {
            return Check::not_ok(
                NAME,
                Verdict::Fail,
                format!("{key} is not a URL"),
                format!("set {key} to `http://host:port`"),
            );
        };
        // Never print credentials.
        if !url.username().is_empty() || url.password().is_some() {
            let _ = url.set_username("***");
            let _ = url.set_password(None);
        }
        if crate::artifact::sources::is_loopback(&url) {
            return Check::not_ok(
                NAME,
                Verdict::Warn,
                format!("{key}={url} is this machine's loopback, which inside a node is the node itself: image pulls in the nodes fail"),
                format!("set {key} to an address the nodes can reach (this machine's LAN address)"),
            );
        }
        shown.push(format!("{key}={url}"));
    }
    if shown.is_empty() {
        return Check::ok(NAME, "none set");
    }
    if let Some(no_proxy) = pick("NO_PROXY") {
        shown.push(format!("NO_PROXY={}", no_proxy.trim()));
    }
    Check::ok(NAME, format!("{} (passed to the nodes)", shown.join(", ")))
}

/// The worst verdict (ok for no checks).
pub fn worst(checks: &[Check]) -> Verdict {
    checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Ok)
}

#[cfg(test)]
mod tests;
