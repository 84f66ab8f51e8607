//! One running helper: calls written to its stdin, answers read from its stdout by one task and
//! handed to the call that waits for them (calls run concurrently), its stderr kept for the
//! error when it dies.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use timonel_driver::{DriverError, Reporter, SilentReporter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::locate::{Unavailable, INSTALL_FIX};
use crate::protocol::{Answer, Call, Event, Reply, Request, PROTOCOL};

/// The last lines of the helper's stderr kept for an error.
const STDERR_TAIL: usize = 12;

/// A running helper process.
pub(crate) struct Connection {
    path: PathBuf,
    stdin: tokio::sync::Mutex<ChildStdin>,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU64,
}

/// The calls waiting for answers, and why the helper ended once it has.
#[derive(Default)]
struct Shared {
    waiting: HashMap<u64, mpsc::UnboundedSender<Event>>,
    ended: Option<Ended>,
}

/// How the helper ended: its exit status (or why reading it stopped) and its last stderr lines.
#[derive(Debug, Clone)]
struct Ended {
    how: String,
    stderr: Vec<String>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connection {
    /// Starts the helper at `path` for the libvirt connection `uri` and greets it.
    pub(crate) async fn start(path: &Path, uri: &str) -> Result<Self, Unavailable> {
        let mut cmd = Command::new(path);
        cmd.arg("--uri")
            .arg(uri)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group: a Ctrl-C at the terminal reaches timonel, which still needs the
        // helper to clean up. The helper ends when timonel closes its stdin (or exits).
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| Unavailable {
            reason: format!("its helper `{}` could not be started: {e}", path.display()),
            fix: INSTALL_FIX.to_string(),
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Unavailable {
                reason: "the helper's pipes were not set up".to_string(),
                fix: INSTALL_FIX.to_string(),
            });
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stderr_task = tokio::spawn(keep_stderr(stderr));
        tokio::spawn(read_answers(child, stdout, stderr_task, shared.clone()));
        let conn = Self {
            path: path.to_path_buf(),
            stdin: tokio::sync::Mutex::new(stdin),
            shared,
            next_id: AtomicU64::new(1),
        };
        conn.hello().await?;
        Ok(conn)
    }

    async fn hello(&self) -> Result<(), Unavailable> {
        let fix =
            format!("install the helper built from the same source as this timonel: {INSTALL_FIX}");
        match self.call(Request::Hello, &SilentReporter).await {
            Ok(Reply::Hello { protocol, .. }) if protocol == PROTOCOL => Ok(()),
            Ok(Reply::Hello { protocol, version }) => Err(Unavailable {
                reason: format!(
                    "its helper `{}` (version {version}) speaks protocol {protocol}, this timonel \
                     speaks {PROTOCOL}",
                    self.path.display()
                ),
                fix,
            }),
            Ok(other) => Err(Unavailable {
                reason: format!(
                    "its helper `{}` answered the greeting with `{}`",
                    self.path.display(),
                    other.name()
                ),
                fix,
            }),
            Err(DriverError::NotAvailable { reason, fix, .. }) => Err(Unavailable { reason, fix }),
            Err(e) => Err(Unavailable {
                reason: e.to_string(),
                fix: timonel_driver::Hint::hint(&e).unwrap_or(fix),
            }),
        }
    }

    /// Sends `request` and waits for its result, passing progress to `report`.
    pub(crate) async fn call(
        &self,
        request: Request,
        report: &dyn Reporter,
    ) -> Result<Reply, DriverError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(ended) = &shared.ended {
                return Err(self.ended_error(ended));
            }
            shared.waiting.insert(id, tx);
        }
        // A call given up (its future dropped) is forgotten; the helper's answer is ignored.
        let _forget = Forget {
            id,
            shared: &self.shared,
        };
        let mut line = serde_json::to_string(&Call { id, request })
            .map_err(|e| DriverError::backend("writing a call to the kvm helper", e))?;
        line.push('\n');
        let written = {
            let mut stdin = self.stdin.lock().await;
            match stdin.write_all(line.as_bytes()).await {
                Ok(()) => stdin.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = written {
            // The helper is gone: its reader ends and says how; this is only the trace.
            tracing::debug!("writing to the kvm helper failed: {e}");
        }
        while let Some(event) = rx.recv().await {
            match event {
                Event::Step(m) => report.step(&m),
                Event::Progress { done, total } => report.progress(done, total),
                Event::Warn(m) => report.warn(&m),
                Event::Done(result) => return result.map_err(DriverError::from),
            }
        }
        let ended = lock(&self.shared).ended.clone().unwrap_or(Ended {
            how: "it stopped answering".to_string(),
            stderr: Vec::new(),
        });
        Err(self.ended_error(&ended))
    }

    /// The error of every call once the helper has ended.
    fn ended_error(&self, ended: &Ended) -> DriverError {
        let path = self.path.display();
        let last = if ended.stderr.is_empty() {
            String::new()
        } else {
            format!("; its last output:\n    {}", ended.stderr.join("\n    "))
        };
        if ended
            .stderr
            .iter()
            .any(|l| l.contains("error while loading shared libraries"))
        {
            return DriverError::NotAvailable {
                driver: "kvm".to_string(),
                reason: format!("its helper `{path}` cannot start ({}){last}", ended.how),
                fix:
                    "install libvirt's library (`sudo apt-get install libvirt0` on Debian/Ubuntu, \
                      `sudo dnf install libvirt-libs` on Fedora) and the rest of libvirt to run \
                      VMs (libvirt-daemon-system, qemu-system-x86, qemu-utils)"
                        .to_string(),
            };
        }
        DriverError::Backend {
            op: "using the kvm driver".to_string(),
            message: format!("its helper `{path}` ended: {}{last}", ended.how),
            hint: Some(format!(
                "check that `{path} --version` runs; if it does not, {INSTALL_FIX}"
            )),
        }
    }
}

/// Removes a call from the waiting list when it ends or is given up.
struct Forget<'a> {
    id: u64,
    shared: &'a Mutex<Shared>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.shared).waiting.remove(&self.id);
    }
}

/// Hands each answer to its call until the helper's stdout ends; then records how it ended and
/// wakes every waiting call.
async fn read_answers(
    mut child: Child,
    stdout: ChildStdout,
    stderr_task: JoinHandle<Vec<String>>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let broken = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Answer>(&line) {
                Ok(answer) => dispatch(&shared, answer),
                Err(e) => {
                    let shown: String = line.chars().take(200).collect();
                    break Some(format!("it wrote `{shown}`, which is not an answer ({e})"));
                }
            },
            Ok(None) => break None,
            Err(e) => break Some(format!("reading its output failed: {e}")),
        }
    };
    if broken.is_some() {
        let _ = child.start_kill();
    }
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => format!("it exited with {status}"),
        Ok(Err(e)) => format!("waiting for it failed: {e}"),
        Err(_) => "it closed its output but did not exit".to_string(),
    };
    let stderr = tokio::time::timeout(Duration::from_secs(2), stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut shared = lock(&shared);
    shared.ended = Some(Ended {
        how: broken.unwrap_or(status),
        stderr,
    });
    shared.waiting.clear();
}

fn dispatch(shared: &Mutex<Shared>, answer: Answer) {
    let mut shared = lock(shared);
    let done = matches!(answer.event, Event::Done(_));
    if let Some(tx) = shared.waiting.get(&answer.id) {
        let _ = tx.send(answer.event);
    }
    if done {
        shared.waiting.remove(&answer.id);
    }
}

/// The helper's diagnostics: traced as they come (`-v`), the last lines kept for an error.
async fn keep_stderr(stderr: ChildStderr) -> Vec<String> {
    let mut tail = VecDeque::new();
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "timonel_kvm", "{line}");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}
