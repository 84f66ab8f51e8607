//! The per-profile lock, held for the whole command.
//!
//! An OS advisory lock (`File::lock`) on `$TIMONEL_HOME/locks/<profile>.lock`: the kernel drops
//! it when the holder dies, so a lock left by a crashed or killed timonel is recovered at once.
//! The file holds the holder's PID and command, for the waiting message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "profile `{profile}` is busy: this command waited {} for {holder} to finish with it",
        humantime::format_duration(*waited)
    )]
    Timeout {
        profile: String,
        /// Who holds the lock, as [`acquire`]'s `on_wait` is told.
        holder: String,
        /// How long this command waited (the timeout it was given).
        waited: Duration,
    },
    #[error("cannot use the lock file `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl timonel_driver::Hint for LockError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Timeout { waited, .. } => Some(format!(
                "run this command again once that one has ended (stopping it frees the lock at once), \
                 or let it wait longer than {} with {}=10m",
                humantime::format_duration(*waited),
                crate::env::TIMONEL_LOCK_TIMEOUT
            )),
            Self::Io { .. } => None,
        }
    }
}

/// A held profile lock; released on drop.
#[derive(Debug)]
pub struct ProfileLock {
    file: File,
}

impl Drop for ProfileLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Takes the lock for `profile`, waiting up to `timeout`. `on_wait` is called once, with a
/// description of the holder, if the lock is busy.
pub fn acquire(
    locks_dir: &Path,
    profile: &str,
    timeout: Duration,
    on_wait: &mut dyn FnMut(&str),
) -> Result<ProfileLock, LockError> {
    let path = locks_dir.join(format!("{profile}.lock"));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    // The lock files name the commands that hold them: for the owner's eyes only.
    crate::fsutil::create_private_dir(locks_dir).map_err(io)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = describe_holder(&mut file);
                if started.elapsed() >= timeout {
                    return Err(LockError::Timeout {
                        profile: profile.to_string(),
                        holder,
                        waited: timeout,
                    });
                }
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let me = format!(
        "pid {}: {}",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(me.as_bytes()).map_err(io)?;
    Ok(ProfileLock { file })
}

fn describe_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "another timonel command".to_string()
    } else {
        format!("another timonel command ({text})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), "dev", Duration::from_secs(1), &mut |_| {}).unwrap();
        let mut waited = None;
        let err = acquire(dir.path(), "dev", Duration::from_millis(300), &mut |h| {
            waited = Some(h.to_string())
        })
        .unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        let holder = waited.expect("the waiter was told who holds the lock");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        // The message says how long *this* command waited, and for whom.
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "profile `dev` is busy: this command waited 300ms for {holder} to finish with it"
            )
        );
        let hint = timonel_driver::Hint::hint(&err).unwrap();
        assert!(
            hint.contains("longer than 300ms") && hint.contains("TIMONEL_LOCK_TIMEOUT=10m"),
            "{hint}"
        );
        drop(held);
        // Released on drop: the next taker gets it at once.
        acquire(dir.path(), "dev", Duration::from_millis(300), &mut |_| {
            panic!("should not wait")
        })
        .unwrap();
    }

    #[test]
    fn profiles_do_not_block_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let _a = acquire(dir.path(), "a", Duration::ZERO, &mut |_| {}).unwrap();
        let _b = acquire(dir.path(), "b", Duration::ZERO, &mut |_| {}).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_locks_folder_and_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("home/locks");
        let _held = acquire(&locks, "dev", Duration::ZERO, &mut |_| {}).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&locks), 0o700);
        assert_eq!(mode(&dir.path().join("home")), 0o700);
        assert_eq!(mode(&locks.join("dev.lock")), 0o600);
    }

    /// Not a test on its own: the child process of the two-process tests below. It takes the
    /// lock in `TIMONEL_TEST_LOCK_DIR`, says so on stdout, and holds it until killed.
    #[test]
    #[ignore = "helper process for the two-process lock tests"]
    fn child_holds_the_lock() {
        let Some(dir) = std::env::var_os("TIMONEL_TEST_LOCK_DIR") else {
            return;
        };
        let _held = acquire(Path::new(&dir), "dev", Duration::from_secs(5), &mut |_| {}).unwrap();
        println!("LOCKED");
        std::thread::sleep(Duration::from_secs(60));
    }

    fn spawn_holder(dir: &Path) -> std::process::Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::child_holds_the_lock",
                "--ignored",
                "--nocapture",
            ])
            .env("TIMONEL_TEST_LOCK_DIR", dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "child never took the lock");
            match lines.next() {
                Some(Ok(line)) if line.contains("LOCKED") => break,
                Some(_) => {}
                None => panic!("child exited before taking the lock"),
            }
        }
        child
    }

    #[test]
    fn another_process_holding_the_lock_makes_us_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_holder(dir.path());
        let mut holder = String::new();
        let err = acquire(dir.path(), "dev", Duration::from_millis(500), &mut |h| {
            holder = h.to_string()
        })
        .unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        assert!(holder.contains(&format!("pid {}", child.id())), "{holder}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_lock_left_by_a_killed_process_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_holder(dir.path());
        child.kill().unwrap();
        child.wait().unwrap();
        // The lock file is still there, with the dead holder's PID in it, but the lock is free.
        assert!(dir.path().join("dev.lock").exists());
        acquire(dir.path(), "dev", Duration::from_secs(5), &mut |_| {}).unwrap();
    }
}
