//! The Printer: every user-facing line goes through here, to stderr. stdout carries data only.
//! The only place that knows indicatif.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use timonel_driver::Reporter;

use crate::env;

/// How colour is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// How much is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Writes step lines, warnings and progress to stderr.
#[derive(Debug)]
pub struct Printer {
    verbosity: Verbosity,
    color: bool,
    progress: bool,
    /// The spinner or bar of the step in progress, if any.
    active: Mutex<Option<ProgressBar>>,
    /// `-o json` on commands that stream: one JSON event per line on stdout instead of lines
    /// for people on stderr.
    events: AtomicBool,
}

/// One line of the `-o json` event stream (documented in the README).
#[derive(Debug, serde::Serialize)]
struct Event<'a> {
    /// `step`, `warning`, `info` or `error`.
    #[serde(rename = "type")]
    kind: &'a str,
    /// For steps: `started`, `finished` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u128>,
    /// For errors: a stable reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
    /// Milliseconds since the Unix epoch.
    time_ms: u128,
}

/// Writes data to stdout and flushes it. A reader that went away (`timonel … | head -1`) comes
/// back as an `io::ErrorKind::BrokenPipe` error for the caller to return with `?`: the command
/// stops there and `main` ends it quietly with exit code 0. Unlike `print!`, this never panics.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    write_stdout_bytes(args.to_string().as_bytes())
}

/// [`write_stdout`] for bytes (logs, command output, completion scripts).
pub fn write_stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(reader_gone_as_broken_pipe)
}

/// Windows says "the reader went away" in more than one way: `ERROR_NO_DATA` (232, "the pipe is
/// being closed") and `ERROR_BROKEN_PIPE` (109), which std calls `BrokenPipe`, but also
/// `ERROR_PIPE_NOT_CONNECTED` (233), which it does not (seen under Wine with `| head`). All three
/// become `BrokenPipe`, so that callers and `main` have one kind to look for.
fn reader_gone_as_broken_pipe(e: std::io::Error) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::BrokenPipe && reader_gone(e.raw_os_error(), cfg!(windows)) {
        return std::io::Error::new(std::io::ErrorKind::BrokenPipe, e);
    }
    e
}

/// Whether an OS error code from a write to stdout means its reader is gone, on Windows
/// (`windows`) or elsewhere, where `EPIPE` is already `BrokenPipe`.
fn reader_gone(raw_os_error: Option<i32>, windows: bool) -> bool {
    const ERROR_BROKEN_PIPE: i32 = 109;
    const ERROR_NO_DATA: i32 = 232;
    const ERROR_PIPE_NOT_CONNECTED: i32 = 233;
    windows
        && matches!(
            raw_os_error,
            Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED)
        )
}

/// `println!` for command data: `outln!("{ip}")?;`. See [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes one event line. A closed stdout is not reported here: the event stream is a side
/// channel of a command that goes on (or is already failing), and nothing here panics.
fn emit(event: Event<'_>) {
    if let Ok(mut line) = serde_json::to_string(&event) {
        line.push('\n');
        let _ = write_stdout_bytes(line.as_bytes());
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Writes an `error` event (for `main`, when the command ran in event mode).
pub fn emit_error(message: &str, reason: &str, hint: Option<&str>) {
    emit(Event {
        kind: "error",
        event: None,
        message,
        duration_ms: None,
        reason: Some(reason),
        hint,
        time_ms: now_ms(),
    });
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether what goes to stderr (step lines, log lines) is coloured: `--color always`, or
/// `auto` with stderr a terminal, `NO_COLOR` unset and, on Windows, a console that takes ANSI
/// sequences (see [`console_takes_ansi`]).
pub fn stderr_color(choice: ColorChoice) -> bool {
    color_decision(
        choice,
        std::io::stderr().is_terminal(),
        env_set(env::NO_COLOR),
        console_takes_ansi,
    )
}

/// The colour decision; `takes_ansi` is asked only for a terminal that may get colour (on
/// Windows it changes the console's mode). `--color always` colours even where the console
/// would show the sequences raw: the user asked for them (e.g. for a log viewer).
fn color_decision(
    choice: ColorChoice,
    terminal: bool,
    no_color: bool,
    takes_ansi: impl FnOnce() -> bool,
) -> bool {
    match choice {
        ColorChoice::Always => {
            if terminal {
                takes_ansi();
            }
            true
        }
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && !no_color && takes_ansi(),
    }
}

/// Whether the Windows console behind stderr shows ANSI colour sequences: it turns on the
/// console's virtual terminal processing (Windows 10 and later; MSYS terminals take them as
/// they are). An older console, where that fails, gets no colour rather than escape codes.
/// Progress bars do not depend on it: indicatif draws through `console`, which moves the cursor
/// with the console API there.
#[cfg(windows)]
fn console_takes_ansi() -> bool {
    console::colors_enabled_stderr()
}

/// Terminals elsewhere take ANSI sequences.
#[cfg(not(windows))]
fn console_takes_ansi() -> bool {
    true
}

impl Printer {
    pub fn new(verbosity: Verbosity, color: ColorChoice, no_progress: bool) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let color = stderr_color(color);
        let progress = stderr_tty
            && verbosity == Verbosity::Normal
            && !no_progress
            && !env_set(env::TIMONEL_NO_PROGRESS)
            && !env_set(env::CI)
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Self {
            verbosity,
            color,
            progress,
            active: Mutex::new(None),
            events: AtomicBool::new(false),
        }
    }

    /// Switches to the JSON event stream on stdout.
    pub fn set_events(&self, on: bool) {
        self.events.store(on, Ordering::Relaxed);
    }

    pub fn events(&self) -> bool {
        self.events.load(Ordering::Relaxed)
    }

    fn event(&self, kind: &str, event: Option<&str>, message: &str, took: Option<Duration>) {
        emit(Event {
            kind,
            event,
            message,
            duration_ms: took.map(|d| d.as_millis()),
            reason: None,
            hint: None,
            time_ms: now_ms(),
        });
    }

    /// A printer that prints nothing (tests, `--quiet`).
    pub fn quiet() -> Self {
        Self::new(Verbosity::Quiet, ColorChoice::Never, true)
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn line(&self, text: &str) {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        match active.as_ref() {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    /// A finished step: `✓ Created node dev (1.2s)`.
    pub fn done(&self, message: &str, took: Option<Duration>) {
        if self.events() {
            return self.event("step", Some("finished"), message, took);
        }
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let time = match took {
            Some(d) if d >= Duration::from_millis(100) || self.verbosity == Verbosity::Verbose => {
                format!(" ({:.1}s)", d.as_secs_f64())
            }
            _ => String::new(),
        };
        self.line(&format!("{} {message}{time}", self.paint("32", "✓")));
    }

    /// Something worth knowing that does not stop the command. Shown even with `--quiet`.
    pub fn warn(&self, message: &str) {
        if self.events() {
            return self.event("warning", None, message, None);
        }
        self.line(&format!("{} {message}", self.paint("33", "! warning:")));
    }

    /// A plain informational line.
    pub fn info(&self, message: &str) {
        if self.events() {
            return self.event("info", None, message.trim(), None);
        }
        if self.verbosity > Verbosity::Quiet {
            self.line(message);
        }
    }

    /// Starts a step; the returned guard shows a spinner on a TTY and prints `✓ done_message`
    /// when [`Step::finish`] is called. Dropped without finish, it just clears the spinner.
    pub fn step(&self, running: &str) -> Step<'_> {
        if self.events() {
            self.event("step", Some("started"), running, None);
        } else if self.progress {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes:>10} {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(running.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
        } else if self.verbosity == Verbosity::Verbose {
            self.line(&format!("… {running}"));
        }
        Step {
            printer: self,
            started: Instant::now(),
            running: running.to_string(),
            finished: false,
        }
    }

    fn clear_active(&self) {
        if let Some(bar) = self.active.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// A step in progress.
pub struct Step<'a> {
    printer: &'a Printer,
    started: Instant,
    running: String,
    finished: bool,
}

impl Step<'_> {
    /// Ends the step with a `✓` line; returns how long it took.
    pub fn finish(mut self, message: &str) -> Duration {
        let took = self.started.elapsed();
        self.finished = true;
        self.printer.clear_active();
        self.printer.done(message, Some(took));
        took
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        self.printer.clear_active();
        if !self.finished && self.printer.events() {
            self.printer.event(
                "step",
                Some("failed"),
                &self.running,
                Some(self.started.elapsed()),
            );
        }
    }
}

impl Reporter for Printer {
    fn step(&self, message: &str) {
        if self.events() {
            return self.event("info", None, message, None);
        }
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = active.as_ref() {
            bar.set_message(message.to_string());
        } else if self.verbosity == Verbosity::Verbose {
            drop(active);
            self.line(&format!("  {message}"));
        }
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = active.as_ref() {
            if let Some(total) = total {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
            }
            bar.set_position(done);
        }
    }
    fn warn(&self, message: &str) {
        Printer::warn(self, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_pipe_errors_mean_the_reader_is_gone() {
        for code in [109, 232, 233] {
            assert!(reader_gone(Some(code), true), "{code}");
            // Elsewhere these numbers are other errors (EPIPE is 32 and already BrokenPipe).
            assert!(!reader_gone(Some(code), false), "{code}");
        }
        assert!(!reader_gone(Some(5), true)); // ERROR_ACCESS_DENIED
        assert!(!reader_gone(None, true));
    }

    #[test]
    fn a_closed_reader_comes_back_as_broken_pipe_on_this_platform() {
        let e = reader_gone_as_broken_pipe(std::io::Error::from_raw_os_error(233));
        let expected = if cfg!(windows) {
            std::io::ErrorKind::BrokenPipe
        } else {
            std::io::Error::from_raw_os_error(233).kind()
        };
        assert_eq!(e.kind(), expected);
        let other = reader_gone_as_broken_pipe(std::io::Error::other("disk full"));
        assert_eq!(other.kind(), std::io::ErrorKind::Other);
        let epipe = reader_gone_as_broken_pipe(std::io::ErrorKind::BrokenPipe.into());
        assert_eq!(epipe.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_console_without_ansi_gets_no_colour_unless_asked() {
        use ColorChoice::*;
        let asked = &std::cell::Cell::new(0);
        let ansi = |takes: bool| {
            move || {
                asked.set(asked.get() + 1);
                takes
            }
        };
        assert!(color_decision(Auto, true, false, ansi(true)));
        assert!(!color_decision(Auto, true, false, ansi(false)));
        assert!(color_decision(Always, true, false, ansi(false)));
        assert_eq!(
            asked.get(),
            3,
            "a console is asked (on Windows: switched to ANSI)"
        );
        // Not a terminal, NO_COLOR, --color never: the console is left alone.
        assert!(!color_decision(Auto, false, false, ansi(true)));
        assert!(!color_decision(Auto, true, true, ansi(true)));
        assert!(!color_decision(Never, true, false, ansi(true)));
        assert!(color_decision(Always, false, true, ansi(true)));
        assert_eq!(asked.get(), 3);
    }
}
