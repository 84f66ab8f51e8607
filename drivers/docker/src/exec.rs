//! Commands and files in a node container: the exec API and the archive API.

use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use timonel_driver::runner::check_exit;
use timonel_driver::{
    poll_until, Cmd, CommandError, DriverError, FilePlacement, NodeAccess, Output, Runner,
};

use crate::archive::{parent_dirs, single_file, tar_stream, validate, write_files, writer_failure};
use crate::client::{error_text, is_not_found};

/// Commands and files in one container (`docker exec`, `docker cp`), through the API.
#[derive(Clone)]
pub struct DockerExec {
    docker: Docker,
    container: String,
    target: String,
}

impl std::fmt::Debug for DockerExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExec")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl DockerExec {
    /// Access to `container` (name or id). The client should allow long requests: uploads use it.
    pub fn new(docker: Docker, container: impl Into<String>) -> Self {
        let container = container.into();
        Self {
            target: format!("docker exec {container}"),
            docker,
            container,
        }
    }

    async fn run_attached(&self, cmd: &Cmd, argv: &str) -> Result<Output, CommandError> {
        let io_err = |message: String| CommandError::Io {
            argv: argv.to_string(),
            source: std::io::Error::other(message),
        };
        let config = ExecConfig {
            cmd: Some(cmd.argv().into_iter().map(String::from).collect()),
            env: Some(cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            attach_stdin: Some(cmd.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&self.container, config)
            .await
            .map_err(|e| io_err(error_text(&e)))?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(64 * 1024),
        };
        let started = self
            .docker
            .start_exec(&exec.id, Some(options))
            .await
            .map_err(|e| io_err(error_text(&e)))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Err(io_err("the exec started detached".into()));
        };
        let feeder = cmd.stdin.clone().map(|data| {
            // Fed concurrently so a command that fills its stdout first cannot deadlock.
            tokio::spawn(async move {
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await;
            })
        });
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(chunk) = output.next().await {
            match chunk.map_err(|e| io_err(error_text(&e)))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        // The stream can end a moment before the daemon records the exit code.
        let code = poll_until(
            "the exit code",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let inspect = self.docker.inspect_exec(&exec.id).await?;
                Ok::<_, bollard::errors::Error>(match (inspect.running, inspect.exit_code) {
                    (Some(false), Some(code)) => Ok(code),
                    _ => Err("still running".to_string()),
                })
            },
        )
        .await
        .map_err(|e| io_err(e.to_string()))?;
        Ok(Output {
            code: i32::try_from(code).unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Which of `dirs` do not exist in the container. Asked all at once: one round trip's
    /// wait instead of one per directory.
    async fn missing_dirs(&self, dirs: Vec<String>) -> Result<Vec<String>, DriverError> {
        let asked = futures_util::future::join_all(dirs.iter().map(|dir| async move {
            let options = ContainerArchiveInfoOptionsBuilder::default()
                .path(dir)
                .build();
            match self
                .docker
                .get_container_archive_info(&self.container, Some(options))
                .await
            {
                Ok(_) => Ok(false),
                Err(e) if is_not_found(&e) => Ok(true),
                Err(e) => Err(DriverError::backend(
                    format!("looking up `{dir}` in `{}`", self.container),
                    error_text(&e),
                )),
            }
        }))
        .await;
        let mut missing = Vec::new();
        for (dir, answer) in dirs.into_iter().zip(asked) {
            if answer? {
                missing.push(dir);
            }
        }
        Ok(missing)
    }
}

#[async_trait]
impl Runner for DockerExec {
    async fn run(&self, cmd: &Cmd) -> Result<Output, CommandError> {
        let argv = cmd.to_string();
        let out = match tokio::time::timeout(cmd.timeout, self.run_attached(cmd, &argv)).await {
            Ok(out) => out?,
            Err(_) => {
                return Err(CommandError::Timeout {
                    argv,
                    after: cmd.timeout,
                })
            }
        };
        tracing::debug!(command = %argv, code = out.code, target = %self.target, "ran exec");
        // The runtime reports a program it cannot start as 126/127 with its own message.
        let combined = format!("{}{}", out.stdout, out.stderr);
        if matches!(out.code, 126 | 127)
            && (combined.contains("executable file not found")
                || combined.contains("no such file or directory"))
            && combined.contains("exec")
        {
            return Err(CommandError::NotFound {
                program: cmd.program.clone(),
            });
        }
        check_exit(cmd, out)
    }

    fn target(&self) -> &str {
        &self.target
    }
}

#[async_trait]
impl NodeAccess for DockerExec {
    async fn copy_in(&self, files: &[FilePlacement]) -> Result<(), DriverError> {
        if files.is_empty() {
            return Ok(());
        }
        validate(files)?;
        let missing = self.missing_dirs(parent_dirs(files)).await?;
        let owned: Vec<FilePlacement> = files.to_vec();
        let tar = tar_stream(move |b| write_files(b, &owned, &missing));
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        let uploaded = self
            .docker
            .upload_to_container(
                &self.container,
                Some(options),
                bollard::body_try_stream(tar.stream),
            )
            .await;
        // A host file that could not be read explains a failed upload better than the upload.
        if let Some(e) = writer_failure(tar.writer.await) {
            return Err(DriverError::io(
                format!("sending files to `{}`", self.container),
                e,
            ));
        }
        uploaded.map_err(|e| {
            crate::client::map_err(
                "copying files into",
                &format!("container `{}`", self.container),
                e,
            )
        })
    }

    async fn copy_out(&self, path: &str) -> Result<Vec<u8>, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let chunks: Vec<bytes::Bytes> = self
            .docker
            .download_from_container(&self.container, Some(options))
            .try_collect()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    DriverError::NotFound {
                        what: format!("`{path}` in container `{}`", self.container),
                    }
                } else {
                    DriverError::backend(
                        format!("copying `{path}` out of `{}`", self.container),
                        error_text(&e),
                    )
                }
            })?;
        single_file(&chunks.concat(), path)
    }
}
