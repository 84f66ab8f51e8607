use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    // Into memory first: `generate` panics when its writer fails (a closed pipe), while
    // `write_stdout_bytes` hands that back to `main`, which ends the command quietly.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "timonel", &mut script);
    crate::output::write_stdout_bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}
