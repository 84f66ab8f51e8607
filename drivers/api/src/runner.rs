//! One way to run every external command: host processes, `docker exec`, ssh, PowerShell,
//! VBoxManage. Helpers build [`Cmd`]s and parse [`Output`]s; runners run them.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::error::CommandError;

/// The default time limit of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A command to run: program, arguments, extra environment, optional stdin, a time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Program and arguments, as one vector.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }
}

impl fmt::Display for Cmd {
    /// The command line, for messages (arguments with spaces are quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for word in self.argv() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '"') {
                write!(f, "{word:?}")?;
            } else {
                f.write_str(word)?;
            }
        }
        Ok(())
    }
}

/// What a command printed, with its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
}

/// Runs commands somewhere: on the host, in a container, over ssh, or from a script in tests.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `cmd`. A non-zero exit is an error carrying argv, exit code and stderr.
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError>;
    /// Where commands run, for messages: `host`, `docker exec timonel`, `ssh timonel`.
    fn target(&self) -> &str;
}

/// Turns a finished process into `Ok(Output)` or `Err(CommandError::Exited)`.
pub fn check_exit(cmd: &Cmd, out: Output) -> Result<Output, CommandError> {
    if out.code == 0 {
        Ok(out)
    } else {
        Err(CommandError::Exited {
            argv: cmd.to_string(),
            code: out.code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Runs commands as host processes (tokio), killing them on timeout or drop.
#[derive(Debug, Clone, Default)]
pub struct HostRunner;

#[async_trait]
impl Runner for HostRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let argv = cmd.to_string();
        let mut command = tokio::process::Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CommandError::NotFound {
                    program: cmd.program.clone(),
                }
            } else {
                CommandError::Io {
                    argv: argv.clone(),
                    source,
                }
            }
        })?;
        if let (Some(data), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
            // Feed stdin concurrently so a child that fills its stdout pipe first cannot deadlock.
            tokio::spawn(async move {
                let _ = stdin.write_all(&data).await;
                let _ = stdin.shutdown().await;
            });
        }
        let finished = tokio::time::timeout(cmd.timeout, child.wait_with_output()).await;
        let output = match finished {
            Err(_) => {
                return Err(CommandError::Timeout {
                    argv,
                    after: cmd.timeout,
                })
            }
            Ok(Err(source)) => return Err(CommandError::Io { argv, source }),
            Ok(Ok(output)) => output,
        };
        let out = Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        tracing::debug!(command = %argv, code = out.code, "ran host command");
        check_exit(cmd, out)
    }

    fn target(&self) -> &str {
        "host"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_runner_reports_exit_and_stderr() {
        let cmd = Cmd::new("sh").args(["-c", "echo out; echo why >&2; exit 3"]);
        let err = HostRunner.run(&cmd).await.unwrap_err();
        assert_eq!(err.code(), Some(3));
        assert_eq!(err.stderr().trim(), "why");
        assert!(err.to_string().contains("exited with status 3"), "{err}");
    }

    #[tokio::test]
    async fn host_runner_feeds_stdin_and_times_out() {
        let cmd = Cmd::new("cat").stdin(b"hello".to_vec());
        assert_eq!(HostRunner.run(&cmd).await.unwrap().stdout, "hello");
        let slow = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100));
        assert!(matches!(
            HostRunner.run(&slow).await,
            Err(CommandError::Timeout { .. })
        ));
        let missing = Cmd::new("timonel-no-such-program");
        assert!(matches!(
            HostRunner.run(&missing).await,
            Err(CommandError::NotFound { .. })
        ));
    }
}
