//! Test hosts for the SSH driver's end-to-end tests: real Debian 12 machines with systemd as PID
//! 1 and Debian's sshd, made as Docker containers from the image scripts/build-test-ssh-host.sh
//! builds (users `alice`/`alice-pw` with passwordless sudo, `bob`/`bob-pw` without sudo; root
//! logs in with keys only).
//!
//! Each [`TestHosts`] gets its own bridge network `timonel-test-ssh-<prefix>-<random>`; its hosts
//! are `<network>-h1`, `<network>-h2`, … (also their hostnames). No port is published: this
//! machine reaches a host's sshd on its bridge IP, port 22. Dropping the [`TestHosts`] removes
//! the containers and the network; [`remove_leftover_test_hosts`] removes what crashed runs left.
//!
//! Everything is labelled `timonel.test=ssh-host` plus `timonel.test.owner=<pid>-<start time>` of
//! the test process, so a cleanup never touches the hosts of a test that is still running (nextest
//! runs tests as concurrent processes).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// The label on every container and network this module makes.
pub const LABEL: &str = "timonel.test=ssh-host";
const OWNER_LABEL: &str = "timonel.test.owner";
const NETWORK_LABEL: &str = "timonel.test.network";
const NETWORK_PREFIX: &str = "timonel-test-ssh-";
/// How long a host may take from `docker run` to an sshd that answers.
const BOOT_DEADLINE: Duration = Duration::from_secs(90);

/// The test host image: `$TIMONEL_TEST_SSH_HOST_IMAGE`, else what scripts/build-test-ssh-host.sh
/// prints (it answers at once when the image exists; building it needs root). `None`, with the
/// reason printed, when there is none. Asked once per process.
pub fn test_host_image() -> Option<String> {
    static IMAGE: OnceLock<Option<String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Ok(image) = std::env::var("TIMONEL_TEST_SSH_HOST_IMAGE") {
                if !image.trim().is_empty() {
                    return Some(image.trim().to_string());
                }
            }
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-ssh-host.sh");
            match Command::new("bash").arg(&script).output() {
                Ok(o) if o.status.success() => {
                    let stdout = String::from_utf8_lossy(&o.stdout);
                    let tag = stdout.lines().last().unwrap_or("").trim().to_string();
                    if tag.is_empty() {
                        eprintln!("build-test-ssh-host.sh printed no image tag");
                        None
                    } else {
                        Some(tag)
                    }
                }
                Ok(o) => {
                    eprintln!(
                        "build-test-ssh-host.sh failed ({}):\n{}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    );
                    None
                }
                Err(e) => {
                    eprintln!("cannot run {}: {e}", script.display());
                    None
                }
            }
        })
        .clone()
}

/// [`test_host_image`] for a test: under `CI=true` a missing image fails the test; elsewhere the
/// test prints why and should return early on `None`.
pub fn require_test_host_image() -> Option<String> {
    let image = test_host_image();
    if image.is_none() {
        let why = "no SSH test host image (scripts/build-test-ssh-host.sh builds it, as root; \
                   or set TIMONEL_TEST_SSH_HOST_IMAGE)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and {why}");
        }
        eprintln!("skipping: {why}");
    }
    image
}

/// A set of test hosts on their own Docker network; dropping it removes them.
pub struct TestHosts {
    pub network: String,
    pub hosts: Vec<TestHost>,
}

/// One test host (a running container).
pub struct TestHost {
    pub container: String,
    pub ip: IpAddr,
    /// Its ed25519 host key as a public key line: `ssh-ed25519 AAAA…` (no comment).
    pub host_key: String,
}

impl TestHosts {
    /// A fresh network and `n` booted hosts on it, each with sshd answering on `<ip>:22`.
    /// `prefix` names them (lowercase letters, digits and `-`, at most 24 characters, so that the
    /// container names are valid hostnames). Panics when the image is missing or a host does
    /// not come up in time (with its logs).
    pub fn create(prefix: &str, n: usize) -> TestHosts {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= 24
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "test host prefix {prefix:?}: use at most 24 of [a-z0-9-]"
        );
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_leftover_test_hosts);
        let image =
            test_host_image().expect("no SSH test host image (see scripts/build-test-ssh-host.sh)");

        let network = format!("{NETWORK_PREFIX}{prefix}-{:08x}", rand::random::<u32>());
        let owner = format!("{OWNER_LABEL}={}", owner_of(std::process::id()).unwrap());
        docker_ok(&[
            "network", "create", "--label", LABEL, "--label", &owner, &network,
        ]);
        // From here on, dropping `set` removes whatever was made, also when a host panics.
        let mut set = TestHosts {
            network,
            hosts: Vec::new(),
        };
        let network = set.network.clone();
        set.hosts = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=n)
                .map(|i| {
                    let (image, network, owner) = (&image, &network, &owner);
                    scope.spawn(move || start_host(image, network, owner, i))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        set
    }

    /// The hosts' `known_hosts` lines, one per line.
    pub fn known_hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.known_hosts_line() + "\n")
            .collect()
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let filter = format!("label={NETWORK_LABEL}={}", self.network);
        for id in lines(&docker(&["ps", "-a", "-q", "--filter", &filter])) {
            let _ = docker(&["rm", "-f", "-v", &id]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Removes the test hosts and networks that earlier, no longer running test processes left
/// (containers labelled `timonel.test=ssh-host`, networks named `timonel-test-ssh-*`). Those of
/// live processes stay. [`TestHosts::create`] calls it once per process.
pub fn remove_leftover_test_hosts() {
    let stale = |owner: &str| owner.is_empty() || !owner_alive(owner);
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ]);
    for line in lines(&out) {
        let (id, owner) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if stale(owner.trim()) {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
    }
    let out = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("name={NETWORK_PREFIX}"),
        "--format",
        &format!("{{{{.Name}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ]);
    for line in lines(&out) {
        let (name, owner) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if name.starts_with(NETWORK_PREFIX) && stale(owner.trim()) {
            let _ = docker(&["network", "rm", name]);
        }
    }
}

impl TestHost {
    /// `<ip> <host key>`, a line for a `known_hosts` file.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}", self.ip, self.host_key)
    }

    /// Runs `script` with `sh -c` as root on the host (`docker exec`).
    pub fn exec(&self, script: &str) -> Output {
        docker(&["exec", &self.container, "sh", "-c", script])
    }

    /// Runs `script` with `sh -c` as `user` on the host (`docker exec -u`).
    pub fn exec_as(&self, user: &str, script: &str) -> Output {
        docker(&["exec", "-u", user, &self.container, "sh", "-c", script])
    }

    /// Lets `public_key_line` (`ssh-ed25519 AAAA… comment`) log in as `user`: appends it to
    /// `~user/.ssh/authorized_keys`, with the directory 0700 and the file 0600, owned by `user`.
    pub fn authorize(&self, user: &str, public_key_line: &str) {
        let script = r#"set -eu
u=$1
home=$(getent passwd "$u" | cut -d: -f6)
group=$(id -gn "$u")
install -d -m 0700 -o "$u" -g "$group" "$home/.ssh"
printf '%s\n' "$2" >>"$home/.ssh/authorized_keys"
chown "$u:$group" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys""#;
        let out = docker(&[
            "exec",
            &self.container,
            "sh",
            "-c",
            script,
            "sh",
            user,
            public_key_line.trim(),
        ]);
        assert!(
            out.status.success(),
            "authorizing a key for {user} on {}: {}",
            self.container,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The machine's state as an uninstall must leave it: compare a snapshot taken before the
    /// install with one taken after the uninstall. Sections, each sorted:
    ///
    /// - `## files`: every path under `/` with its type (`f`, `d`, `l` with its target, …) —
    ///   not contents or times, which logins and daemons touch. Left out, because they change by
    ///   themselves or by merely logging in and running sudo, not by installing software:
    ///   `/proc`, `/sys`, `/dev` (kernel views); `/tmp`, `/var/tmp` (scratch space);
    ///   `/run/systemd`, `/run/user`, `/run/log` (systemd's, logind's and journald's runtime
    ///   state: sessions, units' runtime files); `/run/sshd*` and `/run/motd.dynamic` (sshd's
    ///   privilege separation dir and pid, pam_motd's per-login file); `/run/sudo` (sudo's
    ///   timestamps); `/run/utmp` and `/var/log` (login records `wtmp`, `btmp`, `lastlog`, and
    ///   the journal and logs, which an install may rightly add to); `/var/lib/systemd` (timer
    ///   stamps, random seed, linger, coredumps); `/var/cache` (caches); `/root/.ssh` and
    ///   `/home/*/.ssh` (keys the test itself authorizes).
    /// - `## links`: network interface names (`ip -o link`), e.g. a leftover `cni0`.
    /// - `## mounts`: mount points (`/proc/self/mountinfo`), except `/run/user/*` (logind mounts
    ///   one per logged-in user).
    /// - `## unit files`: `systemctl list-unit-files` names and states, except `transient` units
    ///   (login sessions' scopes).
    /// - `## iptables`, `## ip6tables` (when installed): the rules of every table, without the
    ///   `#` comment lines (dates) and the packet counters. A table with no rules, no chains of
    ///   its own and every policy ACCEPT filters nothing and is left out: with the nf_tables
    ///   backend a table stays once a chain was made in it, even after its rules are gone.
    pub fn snapshot(&self) -> String {
        const SCRIPT: &str = r###"
echo '## files'
find / \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /var/tmp \
    -o -path /run/systemd -o -path /run/user -o -path /run/log -o -path '/run/sshd*' \
    -o -path /run/motd.dynamic -o -path /run/sudo -o -path /run/utmp \
    -o -path /var/log -o -path /var/lib/systemd -o -path /var/cache \
    -o -path /root/.ssh -o -path '/home/*/.ssh' \) -prune \
    -o -type l -printf '%y %p -> %l\n' -o -printf '%y %p\n' 2>/dev/null | LC_ALL=C sort
echo '## links'
ip -o link | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | LC_ALL=C sort
echo '## mounts'
awk '$5 !~ /^\/run\/user\// { print $5 }' /proc/self/mountinfo | LC_ALL=C sort
echo '## unit files'
systemctl list-unit-files --no-legend --no-pager | awk '$2 != "transient" { print $1, $2 }' | LC_ALL=C sort
for t in iptables ip6tables; do
    if command -v $t-save >/dev/null; then
        echo "## $t"
        $t-save 2>/dev/null | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//' | awk '
            /^\*/ { table = $0; body = ""; content = 0; next }
            /^COMMIT/ { if (content) printf "%s\n%sCOMMIT\n", table, body; next }
            /^:/ { if ($2 != "ACCEPT") content = 1; body = body $0 "\n"; next }
            { content = 1; body = body $0 "\n" }'
    fi
done
exit 0
"###;
        let out = self.exec(SCRIPT);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "snapshot of {} failed ({}): {}",
            self.container,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Starts host `i` of `network` and waits until it is up.
fn start_host(image: &str, network: &str, owner: &str, i: usize) -> TestHost {
    let container = format!("{network}-h{i}");
    let network_label = format!("{NETWORK_LABEL}={network}");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "--hostname",
        &container,
        "--network",
        network,
        "--label",
        LABEL,
        "--label",
        owner,
        "--label",
        &network_label,
        // systemd as PID 1 without --privileged: it mounts, makes cgroups and namespaces for
        // units (SYS_ADMIN), sets up the network (NET_ADMIN), wants /run tmpfs and the cgroup
        // tree, and stops on SIGRTMIN+3.
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-e",
        "container=docker",
        "--stop-signal",
        "SIGRTMIN+3",
        image,
        "/lib/systemd/systemd",
    ]);
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip_text = stdout(&docker_ok(&["inspect", "--format", &format, &container]));
    let ip: IpAddr = ip_text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{container}: IP address {ip_text:?}: {e}"));

    let deadline = Instant::now() + BOOT_DEADLINE;
    let mut last = String::from("nothing yet");
    loop {
        if host_ready(&container, ip, &mut last) {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "test host {container} ({ip}) not up within {BOOT_DEADLINE:?}: {last}\n{}",
                diagnostics(&container)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let key = docker(&[
        "exec",
        &container,
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);
    let line = stdout(&key);
    let host_key = line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        key.status.success() && host_key.starts_with("ssh-ed25519 AAAA"),
        "{container}: no ed25519 host key: {line:?} {}",
        String::from_utf8_lossy(&key.stderr)
    );
    TestHost {
        container,
        ip,
        host_key,
    }
}

/// Whether systemd has finished booting (running or degraded), ssh.service is active and sshd
/// greets on `ip:22`; `last` says what was seen when not.
fn host_ready(container: &str, ip: IpAddr, last: &mut String) -> bool {
    let out = docker(&[
        "exec",
        container,
        "sh",
        "-c",
        "systemctl is-system-running; systemctl is-active ssh.service",
    ]);
    let text = stdout(&out);
    let mut words = text.split_whitespace();
    let (system, ssh) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !matches!(system, "running" | "degraded") || ssh != "active" {
        *last = format!(
            "system {system:?}, ssh.service {ssh:?} {}",
            stderr(&out).trim()
        );
        if !stdout(&docker(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            container,
        ]))
        .contains("true")
        {
            panic!(
                "test host {container} stopped while booting\n{}",
                diagnostics(container)
            );
        }
        return false;
    }
    match ssh_banner(SocketAddr::new(ip, 22)) {
        Ok(banner) if banner.starts_with("SSH-2.0-") => true,
        Ok(banner) => {
            *last = format!("{ip}:22 greets with {banner:?}");
            false
        }
        Err(e) => {
            *last = format!("{ip}:22: {e}");
            false
        }
    }
}

fn ssh_banner(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The tail of `docker logs` and, when the container still runs, systemd's view.
fn diagnostics(container: &str) -> String {
    let logs = docker(&["logs", "--tail", "40", container]);
    let state = docker(&[
        "exec",
        container,
        "sh",
        "-c",
        "systemctl --failed --no-pager; systemctl status ssh.service --no-pager; \
         journalctl -b --no-pager -n 30",
    ]);
    format!(
        "--- docker logs --tail 40 {container}:\n{}{}\n--- systemd:\n{}{}",
        stdout(&logs),
        stderr(&logs),
        stdout(&state),
        stderr(&state)
    )
}

/// `<pid>-<start time>` of a process (start time in clock ticks since boot, from
/// `/proc/<pid>/stat`), which tells it apart from a later process with the same PID.
fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, start time field 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}-{start}"))
}

fn owner_alive(owner: &str) -> bool {
    owner
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
        .and_then(owner_of)
        .is_some_and(|now| now == owner)
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

fn docker_ok(args: &[&str]) -> Output {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        stderr(&out).trim()
    );
    out
}

fn lines(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What differs between two snapshots: lines only in `a` (`-`) or only in `b` (`+`); empty
/// when the machine is as it was.
pub fn snapshot_diff(a: &str, b: &str) -> String {
    let la: std::collections::BTreeSet<&str> = a.lines().collect();
    let lb: std::collections::BTreeSet<&str> = b.lines().collect();
    let mut out = String::new();
    for l in la.difference(&lb) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in lb.difference(&la) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

/// Asserts each host's snapshot equals its `before` one (same order); `when` says at which point
/// of the test, for the failure message.
pub fn assert_as_before<'a>(
    hosts: impl IntoIterator<Item = &'a TestHost>,
    before: &[String],
    when: &str,
) {
    for (h, b) in hosts.into_iter().zip(before) {
        let d = snapshot_diff(b, &h.snapshot());
        assert_eq!(d, "", "{} is not as it was {when}", h.container);
    }
}
