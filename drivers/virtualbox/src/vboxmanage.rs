//! Running VBoxManage through the [`Runner`]: `LANG=C`, classification of `error:` lines (also on
//! exit 0), retries with backoff on transient errors, version-dependent option spellings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use timonel_driver::{Cmd, CommandError, Output, Runner};

use crate::error::{classify, classify_failed, CallError, ErrorKind};

/// How transient errors (session locks, "object is not ready") are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub tries: u32,
    /// The pause before the second try; it doubles after each try.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            tries: 5,
            first_delay: Duration::from_millis(200),
        }
    }
}

/// VBoxManage, run through a [`Runner`].
pub struct VBoxManage {
    runner: Arc<dyn Runner>,
    program: PathBuf,
    pub retry: RetryPolicy,
}

impl VBoxManage {
    pub fn new(runner: Arc<dyn Runner>, program: PathBuf) -> Self {
        Self {
            runner,
            program,
            retry: RetryPolicy::default(),
        }
    }

    pub fn program(&self) -> &PathBuf {
        &self.program
    }

    /// The command, with the locale pinned: since 7.0 messages are translated.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd::new(self.program.to_string_lossy())
            .args(args)
            .env("LANG", "C")
            .env("LC_ALL", "C")
    }

    /// Runs once, retrying transient errors. An `error:` line on stderr fails the call even with
    /// exit 0; a `startvm` that printed its success line succeeds even with exit 1.
    pub async fn run(&self, cmd: Cmd) -> Result<Output, CallError> {
        let mut delay = self.retry.first_delay;
        let mut tries = 1;
        loop {
            match self.run_once(&cmd).await {
                Err(e) if e.is(&ErrorKind::Transient) && tries < self.retry.tries => {
                    tracing::debug!(command = %e.argv, tries, "VirtualBox busy; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Shorthand for `run(cmd(args))`.
    pub async fn call<I, S>(&self, args: I) -> Result<Output, CallError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.run(self.cmd(args)).await
    }

    async fn run_once(&self, cmd: &Cmd) -> Result<Output, CallError> {
        let out = match self.runner.run(cmd).await {
            Ok(out) => out,
            Err(CommandError::Exited {
                argv,
                code,
                stdout,
                stderr,
            }) => {
                if cmd.args.first().map(String::as_str) == Some("startvm")
                    && stdout.contains("has been successfully started")
                    && classify(&stderr).is_none()
                {
                    // Vagrant: "some systems return an exit code 1 for some reason".
                    return Ok(Output {
                        code: 0,
                        stdout,
                        stderr,
                    });
                }
                let error = classify_failed(&stderr, &stdout);
                return Err(CallError {
                    argv,
                    code,
                    stdout,
                    stderr,
                    error,
                    spawn: None,
                });
            }
            Err(spawn) => {
                return Err(CallError {
                    argv: cmd.to_string(),
                    code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                    error: None,
                    spawn: Some(spawn),
                })
            }
        };
        // "VBoxManage will sometimes not set the return code" (minikube).
        if let Some(error) = classify(&out.stderr) {
            return Err(CallError {
                argv: cmd.to_string(),
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
                error: Some(error),
                spawn: None,
            });
        }
        Ok(out)
    }
}

/// `modifyvm` option spellings: 7.x takes kebab-case, 6.1 only the old words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelling {
    pub kebab: bool,
}

impl Spelling {
    /// `old` on 6.1, `new` on 7.x.
    pub fn pick(self, old: &'static str, new: &'static str) -> &'static str {
        if self.kebab {
            new
        } else {
            old
        }
    }
    /// A per-adapter option: `--natpf1` / `--nat-pf1`.
    pub fn nic(self, old: &'static str, new: &'static str, slot: u8) -> String {
        format!("{}{slot}", self.pick(old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timonel_driver::scripted::ScriptedRunner;

    fn vbox(runner: &ScriptedRunner) -> VBoxManage {
        let mut v = VBoxManage::new(Arc::new(runner.clone()), PathBuf::from("VBoxManage"));
        v.retry.first_delay = Duration::from_millis(1);
        v
    }

    const NOT_READY: &str = "VBoxManage: error: The object is not ready\n";

    #[tokio::test]
    async fn retries_transient_errors_then_succeeds() {
        let runner = ScriptedRunner::new()
            .expect(["VBoxManage", "startvm", "dev", "--type", "headless"])
            .fails(1, NOT_READY)
            .expect(["VBoxManage", "startvm", "dev", "--type", "headless"])
            .fails(1, NOT_READY)
            .expect(["VBoxManage", "startvm", "dev", "--type", "headless"])
            .returns("VM \"dev\" has been successfully started.\n");
        vbox(&runner)
            .call(["startvm", "dev", "--type", "headless"])
            .await
            .unwrap();
        runner.assert_done();
    }

    #[tokio::test]
    async fn gives_up_after_the_last_try() {
        let mut runner = ScriptedRunner::new();
        for _ in 0..5 {
            runner = runner
                .expect(["VBoxManage", "controlvm", "dev", "poweroff"])
                .fails(1, NOT_READY);
        }
        let err = vbox(&runner)
            .call(["controlvm", "dev", "poweroff"])
            .await
            .unwrap_err();
        assert!(err.is(&ErrorKind::Transient));
        runner.assert_done();
    }

    #[tokio::test]
    async fn an_error_line_fails_even_with_exit_zero() {
        let runner = ScriptedRunner::new()
            .expect(["VBoxManage", "startvm", "dev", "--type", "headless"])
            .returns_output(Output {
                code: 0,
                stdout: "Waiting for VM \"dev\" to power on...\n".into(),
                stderr: "VBoxManage.exe: error: VT-x is not available (VERR_VMX_NO_VMX)\n".into(),
            });
        let err = vbox(&runner)
            .call(["startvm", "dev", "--type", "headless"])
            .await
            .unwrap_err();
        assert!(err.is(&ErrorKind::Virtualization));
    }

    #[tokio::test]
    async fn startvm_success_line_wins_over_exit_one_and_progress_is_fine() {
        let runner = ScriptedRunner::new()
            .expect(["VBoxManage", "startvm", "dev", "--type", "headless"])
            .returns_output(Output {
                code: 1,
                stdout: "Waiting for VM \"dev\" to power on...\nVM \"dev\" has been successfully started.\n".into(),
                stderr: String::new(),
            })
            .expect(["VBoxManage", "controlvm", "dev", "poweroff"])
            .returns_output(Output {
                code: 0,
                stdout: String::new(),
                stderr: "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n".into(),
            });
        let v = vbox(&runner);
        v.call(["startvm", "dev", "--type", "headless"])
            .await
            .unwrap();
        v.call(["controlvm", "dev", "poweroff"]).await.unwrap();
        runner.assert_done();
    }

    #[test]
    fn commands_pin_the_locale() {
        let runner = ScriptedRunner::new();
        let cmd = vbox(&runner).cmd(["list", "vms"]);
        assert!(cmd.env.contains(&("LANG".into(), "C".into())));
        assert!(cmd.env.contains(&("LC_ALL".into(), "C".into())));
    }

    #[test]
    fn spells_options_by_version() {
        let six = Spelling { kebab: false };
        let seven = Spelling { kebab: true };
        assert_eq!(six.nic("--natpf", "--nat-pf", 1), "--natpf1");
        assert_eq!(seven.nic("--natpf", "--nat-pf", 1), "--nat-pf1");
        assert_eq!(seven.pick("--ostype", "--os-type"), "--os-type");
    }
}
