//! kubectl's kubeconfig lock: the file `<kubeconfig>.lock`, created exclusively before reading and
//! removed after writing.
//!
//! client-go (`tools/clientcmd/loader.go`, `lockFile`) creates `<file>.lock` with `O_CREATE|O_EXCL`
//! next to the file *as named* (not the symlink target), writes nothing into it, and fails at once
//! if it exists. We create the same file, so kubectl and timonel exclude each other, but we wait
//! for it (polling every [`POLL_INTERVAL`] up to a timeout) instead of failing, and we write our
//! PID followed by a newline into ours.
//!
//! A lock left behind by a crash blocks kubectl forever (kind#1425), so we recover stale locks:
//! - a lock file older than `stale_after` (60 s by default; kubectl holds its lock for
//!   milliseconds) is stale, whoever wrote it;
//! - a lock file holding the PID of a process that no longer exists is stale at once (unix:
//!   `kill(pid, 0)` answers `ESRCH`). On other systems a PID is never taken as dead; only age
//!   counts. A PID from another PID namespace or host (a home directory shared over NFS) can
//!   look dead: that is the price of not waiting a minute after every crash.
//!
//! To break a stale lock we first rename it to a unique name and look at it again, so that two
//! waiters who both saw the same stale lock cannot remove a fresh one taken in between (the
//! renamed file is put back when it turns out fresh).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::KubeconfigError;

/// How often a waiter looks at the lock again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The lock file kubectl uses for `path`: the same name with `.lock` appended.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Holds `<file>.lock`; removes it when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            tracing::warn!(lock = %self.path.display(), error = %err, "failed to remove the kubeconfig lock");
        }
    }
}

/// What a lock file tells about its holder.
#[derive(Debug, Clone, Copy)]
struct Holder {
    pid: Option<u32>,
    age: Duration,
}

impl Holder {
    fn read(lock: &Path) -> io::Result<Holder> {
        let meta = fs::metadata(lock)?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        // Read after stat: a holder that is still writing its PID looks like kubectl's empty
        // lock for a moment, which only the age rule can break.
        let pid = fs::read_to_string(lock)?.trim().parse::<u32>().ok();
        Ok(Holder { pid, age })
    }

    fn stale_reason(&self, stale_after: Duration) -> Option<String> {
        if self.age >= stale_after {
            return Some(format!("older than {stale_after:?}"));
        }
        match self.pid {
            Some(pid) if pid != std::process::id() && process_is_gone(pid) => {
                Some(format!("process {pid} is gone"))
            }
            _ => None,
        }
    }
}

/// Whether no process with this PID exists. Conservative: `false` when unsure.
#[cfg(unix)]
fn process_is_gone(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(not(unix))]
fn process_is_gone(_pid: u32) -> bool {
    false
}

/// Take `<path>.lock`, waiting up to `timeout` while another process holds it.
pub(crate) fn acquire(
    path: &Path,
    timeout: Duration,
    stale_after: Duration,
) -> Result<LockGuard, KubeconfigError> {
    let lock = lock_path(path);
    let start = Instant::now();
    let mut announced = false;
    loop {
        match try_create(&lock) {
            Ok(()) => {
                tracing::debug!(lock = %lock.display(), waited = ?start.elapsed(), "took the kubeconfig lock");
                return Ok(LockGuard { path: lock });
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(KubeconfigError::Lock { lock, source }),
        }
        let holder = match Holder::read(&lock) {
            Ok(holder) => holder,
            // Released between our create and our look: try again at once.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(KubeconfigError::Lock { lock, source }),
        };
        if let Some(reason) = holder.stale_reason(stale_after) {
            break_stale(&lock, stale_after, &reason);
            continue;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(KubeconfigError::LockTimeout {
                lock,
                after: timeout,
                holder: holder.pid,
            });
        }
        if !announced {
            tracing::info!(lock = %lock.display(), holder = ?holder.pid, "waiting for another process to release the kubeconfig lock");
            announced = true;
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

fn try_create(lock: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(lock)?;
    let written = writeln!(file, "{}", std::process::id());
    if let Err(err) = written {
        drop(file);
        let _ = fs::remove_file(lock);
        return Err(err);
    }
    Ok(())
}

/// Remove a lock judged stale. Never fails: at worst we look at the lock again next round.
fn break_stale(lock: &Path, stale_after: Duration, reason: &str) {
    let mut aside = lock.as_os_str().to_owned();
    aside.push(format!(".stale-{}-{}", std::process::id(), unique_suffix()));
    let aside = PathBuf::from(aside);
    if let Err(err) = fs::rename(lock, &aside) {
        // NotFound: another waiter broke it first.
        tracing::debug!(lock = %lock.display(), error = %err, "could not move the stale lock aside");
        return;
    }
    match Holder::read(&aside) {
        Ok(holder) if holder.stale_reason(stale_after).is_none() => {
            // A fresh lock was taken between our look and our rename: put it back.
            if let Err(err) = fs::hard_link(&aside, lock) {
                tracing::warn!(lock = %lock.display(), error = %err, "could not restore a kubeconfig lock moved aside");
            }
        }
        _ => {
            tracing::warn!(lock = %lock.display(), reason, "removed a stale kubeconfig lock");
        }
    }
    if let Err(err) = fs::remove_file(&aside) {
        tracing::warn!(file = %aside.display(), error = %err, "could not remove a stale kubeconfig lock");
    }
}

fn unique_suffix() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_name_appends_dot_lock() {
        assert_eq!(
            lock_path(Path::new("/x/.kube/config")),
            PathBuf::from("/x/.kube/config.lock")
        );
    }

    #[test]
    fn lock_file_holds_our_pid_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let guard = acquire(&config, Duration::from_secs(1), Duration::from_secs(60)).unwrap();
        let lock = lock_path(&config);
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(guard);
        assert!(!lock.exists());
    }

    #[test]
    fn own_pid_is_never_taken_for_dead() {
        let holder = Holder {
            pid: Some(std::process::id()),
            age: Duration::ZERO,
        };
        assert!(holder.stale_reason(Duration::from_secs(60)).is_none());
        let old = Holder {
            age: Duration::from_secs(61),
            ..holder
        };
        assert!(old.stale_reason(Duration::from_secs(60)).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn dead_pid_is_detected() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(process_is_gone(pid));
        assert!(!process_is_gone(std::process::id()));
        // PID 1 exists (EPERM or Ok both mean alive).
        assert!(!process_is_gone(1));
    }

    #[test]
    fn stale_lock_moved_aside_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("config.lock");
        fs::write(&lock, "").unwrap();
        break_stale(&lock, Duration::ZERO, "test");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn fresh_lock_moved_aside_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("config.lock");
        fs::write(&lock, "").unwrap();
        break_stale(&lock, Duration::from_secs(60), "test");
        assert!(lock.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
