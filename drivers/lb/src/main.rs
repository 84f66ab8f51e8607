//! `timonel-lb --listen ADDR --backends FILE`: see the library's documentation.

fn main() -> std::process::ExitCode {
    timonel_lb::main_with(std::env::args().skip(1).collect())
}
