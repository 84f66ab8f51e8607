//! Crash consistency: `start`, `stop`, `delete` and `node add` killed with SIGKILL (no cleanup
//! can run) at random points, on the real Docker daemon with the k3s stand-in, including while
//! a slow loopback mirror is serving the k3s binary. After each kill the same command runs
//! again, then `delete`; the cluster must have ended working or fully removed: no container,
//! volume or network with its label, no profile, no held lock, no partial or temporary file in
//! `$TIMONEL_HOME` or beside the kubeconfig, and the user's kubeconfig still YAML that kubectl
//! reads, with the user's entries and none of the deleted cluster's.
//!
//! The schedule is random from a seed: `TIMONEL_KILL_SEED=<n>` replays one (a failure prints
//! it), `TIMONEL_KILL_ITERATIONS=<n>` sets how many kills (default 8, about two minutes). Kill
//! points are chosen by watching progress (time since launch, containers appearing or
//! disappearing, bytes of the partial download), never by sleeping. A long run:
//! `TIMONEL_KILL_ITERATIONS=200 cargo test --test crash -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mirror::{asset_path, Fault, Mirror};
use support::sandbox::*;

/// The commands killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Start,
    /// `start` with an empty cache, downloading from a slow HTTP mirror.
    Download,
    Stop,
    Delete,
    NodeAdd,
}

const VICTIMS: [Victim; 5] = [
    Victim::Start,
    Victim::Download,
    Victim::Stop,
    Victim::Delete,
    Victim::NodeAdd,
];

/// When to kill, judged by polling what can be seen from outside.
#[derive(Debug, Clone, Copy)]
enum When {
    /// This long after the process was launched.
    Millis(u64),
    /// When the cluster has at least this many containers, then `extra` ms later.
    Containers { at_least: usize, extra: u64 },
    /// When the cluster has no container left (delete is removing volumes and networks).
    NoContainers,
    /// When the partial download in the cache has reached this many bytes.
    PartialBytes(u64),
}

impl When {
    /// The same point, half as far into the command.
    fn sooner(self) -> When {
        match self {
            When::Millis(ms) => When::Millis(ms / 2),
            When::Containers { at_least, extra } => When::Containers {
                at_least,
                extra: extra / 2,
            },
            When::NoContainers => When::NoContainers,
            When::PartialBytes(n) => When::PartialBytes(n / 2),
        }
    }
}

/// One kill of `victim` at `when` in a new sandbox (with a slow mirror for downloads), then the
/// same command again, `delete`, and the checks. Whether the kill landed before the command ended.
fn kill_once(runtime: &tokio::runtime::Runtime, victim: Victim, when: When) -> bool {
    let sb = Sandbox::new("crash");
    let slow = (victim == Victim::Download).then(|| {
        let mirror = runtime.block_on(Mirror::start(sb.mirror.dir.path().to_path_buf()));
        mirror.fault_always(
            &asset_path(VERSION, "k3s"),
            Fault::Slow {
                chunk: 64 * 1024,
                delay: Duration::from_millis(20),
            },
        );
        mirror
    });
    let url = slow.as_ref().map(|m| m.download_base().to_string());
    one_kill(&sb, victim, when, url.as_deref())
}

/// splitmix64: a small, seedable generator, so that a seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// Prints the seed when the test fails, so the run can be replayed.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\ncrash suite failed; replay it with TIMONEL_KILL_SEED={}",
                self.0
            );
        }
    }
}

fn pick_when(rng: &mut Rng, victim: Victim, binary_len: u64) -> When {
    // The windows match how long each command takes with the stand-in: start and node add a
    // second or a few, stop and delete well under one (a point past the end is halved and tried
    // again).
    match (victim, rng.below(3)) {
        (Victim::Start, 0) | (Victim::NodeAdd, 0) => When::Millis(rng.below(4000)),
        (Victim::Start, _) => When::Containers {
            at_least: 1,
            extra: rng.below(2500),
        },
        (Victim::NodeAdd, _) => When::Containers {
            at_least: 2,
            extra: rng.below(1500),
        },
        (Victim::Download, 0) => When::Millis(rng.below(1500)),
        (Victim::Download, _) => {
            When::PartialBytes(binary_len / 10 + rng.below(binary_len * 8 / 10))
        }
        (Victim::Stop, _) => When::Millis(rng.below(600)),
        (Victim::Delete, 0) => When::NoContainers,
        (Victim::Delete, _) => When::Millis(rng.below(500)),
    }
}

fn container_count(profile: &str) -> usize {
    leftovers(profile)
        .iter()
        .filter(|l| l.starts_with("container"))
        .count()
}

/// Every file under `root` (recursively), for the partial-file and lock checks.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn partial_bytes(home: &Path) -> u64 {
    files_under(home)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Polls until `when` is reached, then SIGKILLs `child`. False when the command ended first.
fn kill_at(child: &mut Child, when: When, sb: &Sandbox) -> bool {
    let launched = Instant::now();
    let mut seen_at: Option<Instant> = None;
    let deadline = launched + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("--- finished before {when:?}: {status}");
            return false;
        }
        assert!(Instant::now() < deadline, "{when:?} never came");
        let reached = match when {
            When::Millis(ms) => launched.elapsed() >= Duration::from_millis(ms),
            When::Containers { at_least, extra } => {
                if seen_at.is_none() && container_count(&sb.profile) >= at_least {
                    seen_at = Some(Instant::now());
                }
                seen_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(extra))
            }
            When::NoContainers => container_count(&sb.profile) == 0,
            When::PartialBytes(n) => partial_bytes(&sb.timonel_home()) >= n,
        };
        if reached {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            eprintln!(
                "--- killed at {when:?}, {} ms after launch: {status}",
                launched.elapsed().as_millis()
            );
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_args() -> Vec<&'static str> {
    vec![
        "start",
        "--driver",
        "docker",
        "--kubernetes-version",
        VERSION,
    ]
}

fn victim_args(victim: Victim) -> Vec<&'static str> {
    match victim {
        Victim::Start | Victim::Download => start_args(),
        Victim::Stop => vec!["stop"],
        Victim::Delete => vec!["delete"],
        Victim::NodeAdd => vec!["node", "add"],
    }
}

/// The command with this sandbox's environment, and the slow mirror when downloading.
fn command(sb: &Sandbox, args: &[&str], mirror: Option<&str>) -> Command {
    let mut c = sb.cmd(args);
    if let Some(url) = mirror {
        c.env("TIMONEL_BINARY_MIRROR", url);
    }
    c
}

fn run_logged(sb: &Sandbox, args: &[&str], mirror: Option<&str>) -> std::process::Output {
    let out = command(sb, args, mirror).output().unwrap();
    eprintln!(
        "$ timonel {} -> {}\n{}",
        args.join(" "),
        out.status,
        stderr(&out)
    );
    out
}

/// One kill: set up, launch, kill, run the command again, delete, check.
/// Returns whether the kill landed before the command ended.
fn one_kill(sb: &Sandbox, victim: Victim, when: When, mirror: Option<&str>) -> bool {
    std::fs::create_dir_all(sb.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&sb.kubeconfig, USERS_KUBECONFIG).unwrap();
    if matches!(victim, Victim::Stop | Victim::Delete | Victim::NodeAdd) {
        assert!(sb.start(&[]).status.success(), "setup start failed");
    }
    let args = victim_args(victim);
    let mut child = command(sb, &args, mirror)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = kill_at(&mut child, when, sb);

    let again = run_logged(sb, &args, mirror);
    let err = stderr(&again);
    assert!(
        !err.contains("panicked"),
        "{victim:?} again panicked: {err}"
    );
    match victim {
        // Start and stop again must finish what the killed one began.
        Victim::Start | Victim::Download => {
            assert!(again.status.success(), "start again after the kill failed");
            let status = sb.run(&["status"]);
            assert_eq!(status.status.code(), Some(0), "cluster not working");
        }
        Victim::Stop => {
            assert!(again.status.success(), "stop again after the kill failed");
            let status = sb.run(&["status"]);
            assert_eq!(status.status.code(), Some(3), "nodes not stopped");
        }
        Victim::Delete => assert!(again.status.success(), "delete again failed"),
        // `node add` again either adds (or finishes) a node or says clearly why not.
        Victim::NodeAdd => assert!(
            again.status.success() || err.contains("error"),
            "node add again failed without an error message: {err}"
        ),
    }
    let deleted = run_logged(sb, &["delete"], None);
    assert!(deleted.status.success(), "delete after the kill failed");
    assert_clean(sb);
    killed
}

/// Nothing of the profile is left, and the user's kubeconfig is whole.
fn assert_clean(sb: &Sandbox) {
    assert_eq!(sb.leftovers(), Vec::<String>::new(), "Docker objects left");
    let home = sb.timonel_home();
    assert!(
        !home.join("profiles").join(&sb.profile).exists(),
        "profile folder left"
    );
    assert!(
        !home.join("machines").join(&sb.profile).exists(),
        "machine folder left"
    );
    let kube_dir = sb.kubeconfig.parent().unwrap();
    let mut files = files_under(&home);
    files.extend(files_under(kube_dir));
    let half_made: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".partial") || name.contains(".tmp") || name.contains("timonel-tmp")
        })
        .collect();
    assert!(half_made.is_empty(), "partial files left: {half_made:?}");
    // kubectl's lock beside the kubeconfig is a file that exists while held.
    let kube_locks: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.starts_with(kube_dir) && p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(
        kube_locks.is_empty(),
        "kubeconfig lock left: {kube_locks:?}"
    );
    // timonel's own locks are OS locks: none may still be held.
    for lock in files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".lock"))
    {
        let f = std::fs::File::open(lock).unwrap();
        assert!(f.try_lock().is_ok(), "{} is still locked", lock.display());
    }
    // A further command that takes the profile's lock does not wait for anyone: `stop` takes
    // it, then finds no profile.
    let out = sb
        .cmd(&["stop"])
        .env("TIMONEL_LOCK_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("does not exist"),
        "stop after delete: {}",
        stderr(&out)
    );
    sb.mark_deleted();
    assert_kubeconfig_whole(sb);
}

fn assert_kubeconfig_whole(sb: &Sandbox) {
    let v = read_yaml(&sb.kubeconfig);
    let names: Vec<String> = ["contexts", "clusters", "users"]
        .iter()
        .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(&sb.profile)),
        "entries of the deleted cluster left: {names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("work")).count() == 3,
        "the user's entries are gone: {names:?}"
    );
    let view = Command::new("kubectl")
        .args(["config", "view", "--kubeconfig"])
        .arg(&sb.kubeconfig)
        .output()
        .unwrap();
    assert!(
        view.status.success(),
        "kubectl config view: {}",
        stderr(&view)
    );
}

#[test]
#[ignore = "needs a docker daemon"]
fn sigkill_at_random_points_ends_working_or_fully_removed() {
    if !require_docker() {
        return;
    }
    let _daemon = daemon_shared();
    let seed = env_u64("TIMONEL_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let iterations = env_u64("TIMONEL_KILL_ITERATIONS").unwrap_or(8);
    eprintln!("crash suite: TIMONEL_KILL_SEED={seed} TIMONEL_KILL_ITERATIONS={iterations}");
    let _report = SeedReport(seed);
    let mut rng = Rng(seed);

    // The slow mirror: the k3s binary in 64 KiB pieces, 20 ms apart (a few seconds in all).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let binary_len = std::fs::metadata(standin_binary()).unwrap().len();
    let offset = rng.below(VICTIMS.len() as u64);
    let mut killed = 0;
    for i in 0..iterations {
        // Every kind of command once before any twice, from a seeded first one.
        let victim = VICTIMS[((i + offset) % VICTIMS.len() as u64) as usize];
        let mut when = pick_when(&mut rng, victim, binary_len);
        // A command that ends before its kill point is run again with the point halved (commands
        // get faster; the schedule must still land inside them), up to three times.
        for attempt in 1..=3 {
            eprintln!(
                "=== kill {}/{iterations}, attempt {attempt}: {victim:?} at {when:?}",
                i + 1
            );
            if kill_once(&runtime, victim, when) {
                killed += 1;
                break;
            }
            when = when.sooner();
        }
    }
    // Most kill points land before the command ends; a few may come too late.
    assert!(
        killed * 2 >= iterations,
        "only {killed} of {iterations} commands were killed before they ended"
    );
}
