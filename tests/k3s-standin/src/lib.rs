//! `k3s-standin`: a **test double** of k3s for timonel's test suite. It is not k3s and
//! runs no Kubernetes component. It reproduces the bootstrap contract a local-cluster
//! tool relies on (see `docs/k3s-contract.md` §8): `--version`, a strict `server`
//! CLI and config file, CAs and token under the data dir, the admin kubeconfig, the
//! supervisor/API port answering `/ping`, `/cacerts`, health, discovery, nodes and
//! system pods well enough for a real kubectl, an `agent` that joins with the token's
//! CA hash, the built-in `kubectl get nodes`, and `ctr images import|ls`.
//!
//! It builds as a fully static binary so it can be `/bin/k3s` in a scratch container.
//! Stand-in-only knobs (all optional): `K3S_STANDIN_VERSION`, `K3S_STANDIN_COMMIT`,
//! `K3S_STANDIN_READY_DELAY`, `K3S_STANDIN_NODE_DIR`, `K3S_STANDIN_KUBECONFIG_DEFAULT_PATH`.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod ctr;
pub mod fsutil;
pub mod http;
pub mod images;
pub mod join;
pub mod kubeconfig;
pub mod kubectl;
pub mod logfmt;
pub mod net;
pub mod nodes;
pub mod objects;
pub mod pki;
pub mod replica;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod token;

const COMMANDS: &str = "server, agent, kubectl, ctr";

/// Prints a urfave/cli-style usage error and returns the exit code.
pub fn usage_error(e: &cli::UsageError, command: &str) -> i32 {
    eprintln!("{e}\n");
    eprintln!("Run 'k3s {command} --help' for the accepted flags.");
    logfmt::fatal(&e.0);
    1
}

fn print_version() {
    println!("k3s version {} ({})", runtime::version(), runtime::commit());
    println!("go version go1.22.8");
}

fn help() -> String {
    format!(
        "NAME:\n   k3s - Kubernetes, but small and simple (timonel's test stand-in)\n\nUSAGE:\n   k3s [global options] command [command options]\n\nCOMMANDS:\n   {COMMANDS}\n\nGLOBAL OPTIONS:\n   --debug        (logging) Turn on debug logs\n   --help, -h     show help\n   --version, -v  print the version\n"
    )
}

/// Runs the multi-call binary with `argv` (including the program name); returns the exit code.
pub fn main_with(argv: Vec<String>) -> i32 {
    let program = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default();
    let rest = argv.get(1..).unwrap_or_default();
    match program.as_str() {
        "kubectl" => return kubectl::run(rest),
        "ctr" => return ctr::run(rest),
        "k3s-server" => return server::run(rest),
        "k3s-agent" => return agent::run(rest),
        _ => {}
    }
    let mut args = rest;
    while let Some(first) = args.first() {
        match first.as_str() {
            "--debug" | "-debug" => args = &args[1..],
            _ => break,
        }
    }
    match args.first().map(String::as_str) {
        Some("--version" | "-v" | "-version") => {
            print_version();
            0
        }
        Some("--help" | "-h" | "help") | None => {
            print!("{}", help());
            0
        }
        Some("server") => server::run(&args[1..]),
        Some("agent") => agent::run(&args[1..]),
        Some("kubectl") => kubectl::run(&args[1..]),
        Some("ctr") => ctr::run(&args[1..]),
        Some(flag) if flag.starts_with('-') => {
            let name = flag
                .trim_start_matches('-')
                .split('=')
                .next()
                .unwrap_or_default();
            usage_error(&cli::not_defined(name), "")
        }
        Some(other) => {
            eprintln!("No help topic for '{other}'");
            3
        }
    }
}
