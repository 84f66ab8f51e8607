//! `timonel-kvm`: the kvm driver in its own process. timonel starts it on the first kvm call
//! and speaks the line protocol of `timonel_driver_kvm_proxy::protocol` over its stdin and
//! stdout; it ends when timonel closes its stdin. Only this program links libvirt.
//!
//! ```text
//! timonel-kvm [--uri URI]     serve timonel (stdin/stdout); URI defaults to qemu:///system
//! timonel-kvm --version       the version and the protocol it speaks
//! ```

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use timonel_driver_kvm::{KvmDriver, DEFAULT_URI};
use timonel_driver_kvm_proxy::{protocol::PROTOCOL, server};

const USAGE: &str = "usage: timonel-kvm [--uri URI] | --version

timonel's kvm driver helper: timonel starts it itself for `--driver kvm` and talks to it over
stdin and stdout. Install it beside `timonel` (`cargo install --path drivers/kvm`).";

fn main() -> ExitCode {
    let mut uri = DEFAULT_URI.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" | "-V" => {
                println!("timonel-kvm {} (protocol {PROTOCOL})", server::VERSION);
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--uri" => match args.next() {
                Some(u) => uri = u,
                None => return usage("--uri needs a value"),
            },
            other => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    if std::io::stdin().is_terminal() {
        return usage("timonel-kvm is started by timonel, not by hand");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("timonel-kvm: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let driver = Arc::new(KvmDriver::new(uri));
    let served = runtime.block_on(server::serve(
        driver,
        tokio::io::stdin(),
        tokio::io::stdout(),
    ));
    // Calls still running when timonel went away are not waited for.
    runtime.shutdown_background();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("timonel-kvm: reading calls failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("timonel-kvm: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}
