//! `k3s-standin`: timonel's test double of k3s (see the library docs). Not k3s.

fn main() -> std::process::ExitCode {
    let code = timonel_k3s_standin::main_with(std::env::args().collect());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
