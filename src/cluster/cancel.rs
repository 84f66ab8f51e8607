//! Interrupts: the first Ctrl-C (or SIGTERM) asks the running command to stop at the next safe
//! point and clean up; a second one quits at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

/// How many interrupts the process has had, once [`listen`] started counting.
static COUNT: OnceLock<watch::Receiver<u32>> = OnceLock::new();
/// Whether a command took charge of interrupts ([`Cancel::on_signals`]).
static CLAIMED: AtomicBool = AtomicBool::new(false);
/// The number of the first interrupting signal (SIGINT 2, SIGTERM 15), 0 before any.
static FIRST: AtomicI32 = AtomicI32::new(0);

/// The first signal that interrupted the process: 2 (SIGINT, Ctrl-C and Ctrl-Break on
/// Windows) or 15 (SIGTERM); `None` before any. An interrupted command exits with 128 + it.
pub fn first_signal() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

fn record(signal: i32) {
    let _ = FIRST.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Starts listening for interrupts for the whole process, as early as the runtime allows, so a
/// Ctrl-C that comes before a command is ready for it is not lost. Until a command claims them
/// with [`Cancel::on_signals`], an interrupt calls `unclaimed` (the command line quits with the
/// status of an interrupted command, as if nothing listened).
pub fn listen(unclaimed: fn()) {
    let (tx, rx) = watch::channel(0u32);
    if COUNT.set(rx).is_err() {
        return;
    }
    let mut signals = Signals::listen();
    tokio::spawn(async move {
        loop {
            record(signals.next().await);
            if !CLAIMED.load(Ordering::SeqCst) {
                unclaimed();
            }
            tx.send_modify(|n| *n += 1);
        }
    });
}

/// A cancellation flag shared by a command and its signal handler.
#[derive(Debug, Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Cancel {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Cancel {
    /// A flag that is set when the process gets SIGINT/SIGTERM (Ctrl-C / Ctrl-Break on Windows);
    /// `on_first` tells the user. A second signal calls `on_second`, which the command line
    /// makes quit at once.
    pub fn on_signals(
        on_first: impl Fn() + Send + Sync + 'static,
        on_second: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let cancel = Self::default();
        let tx = cancel.tx.clone();
        let Some(count) = COUNT.get() else {
            // Nothing listens for the process (tests): listen from here on.
            let mut signals = Signals::listen();
            tokio::spawn(async move {
                let seen = AtomicBool::new(false);
                loop {
                    record(signals.next().await);
                    if seen.swap(true, Ordering::SeqCst) {
                        on_second();
                        continue;
                    }
                    on_first();
                    let _ = tx.send(true);
                }
            });
            return cancel;
        };
        CLAIMED.store(true, Ordering::SeqCst);
        let mut count = count.clone();
        tokio::spawn(async move {
            // Interrupts that came before this command was ready count too.
            let mut handled = 0u32;
            loop {
                let n = *count.borrow_and_update();
                while handled < n {
                    handled += 1;
                    if handled == 1 {
                        on_first();
                        let _ = tx.send(true);
                    } else {
                        on_second();
                    }
                }
                if count.changed().await.is_err() {
                    return;
                }
            }
        });
        cancel
    }

    pub fn cancel(&self) {
        let _ = self.tx.send(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Runs `fut` unless cancelled first; for work that is safe to drop (waits, downloads).
    pub async fn or_cancel<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Interrupted> {
        tokio::select! {
            v = fut => Ok(v),
            _ = self.cancelled() => Err(Interrupted),
        }
    }

    /// `Err(Interrupted)` when cancelled: call between steps that change things.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_cancelled() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}

/// The command was interrupted by the user.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The signals that interrupt a command, listened to from creation on.
#[cfg(unix)]
struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Some((int, term)),
            _ => None,
        };
        Self { streams }
    }

    /// Waits for the next signal; returns its number.
    async fn next(&mut self) -> i32 {
        match &mut self.streams {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
                2
            }
        }
    }
}

/// Ctrl-C and Ctrl-Break in a console.
#[cfg(not(unix))]
struct Signals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
}

#[cfg(not(unix))]
impl Signals {
    fn listen() -> Self {
        // Registering a console handler fails only when the process has no console.
        #[allow(clippy::expect_used)]
        Self {
            ctrl_c: tokio::signal::windows::ctrl_c().expect("a console control handler"),
            ctrl_break: tokio::signal::windows::ctrl_break().expect("a console control handler"),
        }
    }

    /// Waits for the next Ctrl-C or Ctrl-Break; both count as SIGINT (2).
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.ctrl_c.recv() => {}
            _ = self.ctrl_break.recv() => {}
        }
        2
    }
}
