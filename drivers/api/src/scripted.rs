//! A [`Runner`] that replays a script of expected commands, in order, for tests.
//!
//! ```
//! # use timonel_driver::{scripted::ScriptedRunner, Cmd, Runner};
//! # tokio_test_block(async {
//! let runner = ScriptedRunner::new()
//!     .expect(["VBoxManage", "showvminfo", "dev", "--machinereadable"]).returns("VMState=\"running\"\n")
//!     .expect(["VBoxManage", "controlvm", "dev", "acpipowerbutton"]).returns_ok();
//! runner.run(&Cmd::new("VBoxManage").args(["showvminfo", "dev", "--machinereadable"])).await.unwrap();
//! runner.run(&Cmd::new("VBoxManage").args(["controlvm", "dev", "acpipowerbutton"])).await.unwrap();
//! runner.assert_done();
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::CommandError;
use crate::runner::{check_exit, Cmd, Output, Runner};

#[derive(Debug, Clone)]
struct Expectation {
    argv: Vec<String>,
    /// When set, the command's stdin must equal this.
    stdin: Option<Vec<u8>>,
    output: Output,
}

#[derive(Debug, Default)]
struct Script {
    pending: VecDeque<Expectation>,
    ran: Vec<Cmd>,
    failure: Option<String>,
}

/// Replays expected commands in order and fails, with a message that explains itself, on any
/// command nobody expected. Clones share the same script.
#[derive(Debug, Clone, Default)]
pub struct ScriptedRunner {
    script: Arc<Mutex<Script>>,
    target: String,
}

/// The builder returned by [`ScriptedRunner::expect`]: say what the command returns.
pub struct ExpectBuilder {
    runner: ScriptedRunner,
    argv: Vec<String>,
    stdin: Option<Vec<u8>>,
}

impl ExpectBuilder {
    /// The command must also receive exactly this stdin.
    pub fn with_stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }
    /// Exits 0, printing `stdout`.
    pub fn returns(self, stdout: impl Into<String>) -> ScriptedRunner {
        self.returns_output(Output::ok(stdout))
    }
    /// Exits 0, printing nothing.
    pub fn returns_ok(self) -> ScriptedRunner {
        self.returns_output(Output::default())
    }
    /// Exits with `code`, printing `stderr`.
    pub fn fails(self, code: i32, stderr: impl Into<String>) -> ScriptedRunner {
        self.returns_output(Output {
            code,
            stdout: String::new(),
            stderr: stderr.into(),
        })
    }
    /// Returns this exact output (non-zero codes become errors, as with a real runner).
    pub fn returns_output(self, output: Output) -> ScriptedRunner {
        self.runner.lock().pending.push_back(Expectation {
            argv: self.argv,
            stdin: self.stdin,
            output,
        });
        self.runner
    }
}

impl ScriptedRunner {
    pub fn new() -> Self {
        Self {
            script: Arc::default(),
            target: "scripted".to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        // A panic in another test thread must not hide this runner's own report.
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Expects `argv` (program first) as the next command.
    pub fn expect<I, S>(self, argv: I) -> ExpectBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExpectBuilder {
            runner: self,
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    /// Every command that ran, in order.
    pub fn commands(&self) -> Vec<Cmd> {
        self.lock().ran.clone()
    }

    /// How many commands ran.
    pub fn count(&self) -> usize {
        self.lock().ran.len()
    }

    /// Panics unless every expectation was used, in order, and nothing unexpected ran.
    #[track_caller]
    pub fn assert_done(&self) {
        let script = self.lock();
        if let Some(failure) = &script.failure {
            panic!("{failure}");
        }
        if let Some(next) = script.pending.front() {
            panic!(
                "{} expected command(s) never ran; the next was `{}` (after {} command(s) ran)",
                script.pending.len(),
                next.argv.join(" "),
                script.ran.len()
            );
        }
    }
}

#[async_trait]
impl Runner for ScriptedRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let mut script = self.lock();
        let n = script.ran.len() + 1;
        script.ran.push(cmd.clone());
        let got = cmd.argv().join(" ");
        let message = match script.pending.front() {
            None => Some(format!(
                "unexpected command #{n} `{got}`; the script expected no more commands"
            )),
            Some(next) if next.argv.iter().map(String::as_str).ne(cmd.argv()) => Some(format!(
                "unexpected command #{n} `{got}`; expected `{}`",
                next.argv.join(" ")
            )),
            Some(next) if next.stdin.is_some() && next.stdin != cmd.stdin => Some(format!(
                "command #{n} `{got}` got stdin {:?}; expected {:?}",
                cmd.stdin
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
                next.stdin
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            )),
            Some(_) => None,
        };
        if let Some(message) = message {
            script.failure.get_or_insert_with(|| message.clone());
            return Err(CommandError::Unexpected { message });
        }
        let Some(expectation) = script.pending.pop_front() else {
            unreachable!("checked above");
        };
        check_exit(cmd, expectation.output)
    }

    fn target(&self) -> &str {
        &self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str]) -> Cmd {
        Cmd::new(argv[0]).args(argv[1..].iter().copied())
    }

    #[tokio::test]
    async fn replays_in_order() {
        let r = ScriptedRunner::new()
            .expect(["a", "1"])
            .returns("one")
            .expect(["b"])
            .fails(2, "nope");
        assert_eq!(r.run(&cmd(&["a", "1"])).await.unwrap().stdout, "one");
        let err = r.run(&cmd(&["b"])).await.unwrap_err();
        assert_eq!(err.code(), Some(2));
        assert_eq!(err.stderr(), "nope");
        r.assert_done();
        assert_eq!(r.count(), 2);
    }

    #[tokio::test]
    async fn explains_an_unexpected_command() {
        let r = ScriptedRunner::new()
            .expect(["VBoxManage", "showvminfo", "dev", "--machinereadable"])
            .returns_ok();
        let err = r
            .run(&cmd(&[
                "VBoxManage",
                "startvm",
                "dev",
                "--type",
                "headless",
            ]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected command #1 `VBoxManage startvm dev --type headless`; expected `VBoxManage showvminfo dev --machinereadable`"
        );
        let panic = std::panic::catch_unwind(|| r.assert_done()).unwrap_err();
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("unexpected command #1"), "{text}");
    }

    #[tokio::test]
    async fn reports_unused_expectations_and_extra_commands() {
        let r = ScriptedRunner::new().expect(["a"]).returns_ok();
        let panic = std::panic::catch_unwind(|| r.assert_done()).unwrap_err();
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("never ran; the next was `a`"), "{text}");
        r.run(&cmd(&["a"])).await.unwrap();
        let err = r.run(&cmd(&["b"])).await.unwrap_err();
        assert!(
            err.to_string().contains("expected no more commands"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn checks_stdin_when_asked() {
        let r = ScriptedRunner::new()
            .expect(["sh"])
            .with_stdin("echo hi")
            .returns("hi");
        let err = r
            .run(&cmd(&["sh"]).stdin(b"rm -rf /".to_vec()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("got stdin"), "{err}");
    }
}
