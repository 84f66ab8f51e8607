use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    {
        // Before anything else, even parsing the command line: an interrupt at any point is seen
        // (a process under load can take tens of milliseconds to get this far).
        let _in_runtime = runtime.enter();
        timonel::cluster::listen_for_interrupts(timonel::cli::quit_interrupted);
    }
    let cli = timonel::cli::Cli::parse_args();
    init_tracing(
        cli.global.verbose,
        timonel::output::stderr_color(cli.global.color),
    );
    tracing::debug!(
        version = env!("CARGO_PKG_VERSION"),
        os = std::env::consts::OS,
        arch = std::env::consts::ARCH,
        "timonel starting"
    );
    let events = cli.streams_events();
    match runtime.block_on(timonel::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (`timonel status | head`) is not a failure.
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            if events {
                let hint = timonel::cli::report::hint_of(&err);
                timonel::output::emit_error(
                    &format!("{err:#}"),
                    timonel::cli::report::reason_code(&err),
                    hint.as_deref(),
                );
            }
            let _ = writeln!(std::io::stderr(), "{}", timonel::cli::report::render(&err));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr, coloured only when the printer's lines are (`--color`, `NO_COLOR`, a
/// terminal): escape codes in a log file or a CI log are noise.
fn init_tracing(verbose: u8, color: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 | 1 => "warn",
        2 => "timonel=debug,timonel_driver=debug,info",
        _ => "trace",
    };
    let filter = std::env::var(timonel::env::TIMONEL_LOG)
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .try_init();
}
