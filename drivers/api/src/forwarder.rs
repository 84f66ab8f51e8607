//! Simulated host tools as Windows programs, for driver tests built for Windows and run under
//! Wine (scripts/test-windows.sh). Wine cannot start the Linux simulators in `tests/simulators`,
//! so a test puts a copy of `win-forwarder.exe` (tests/win-forwarder) where the driver expects
//! `powershell.exe` or `VBoxManage.exe`; the copy relays its run to `tests/windows/relay.py`,
//! which runs the simulator on the Linux side.
//!
//! The lane sets [`ENV_FORWARDER`] (the built forwarder; `bcryptprimitives.dll`, which Wine
//! needs, beside it), [`ENV_RELAY_PORT`] and [`ENV_RELAY_SECRET`].

use std::path::{Path, PathBuf};

/// The built `win-forwarder.exe`.
pub const ENV_FORWARDER: &str = "TIMONEL_WIN_FORWARDER";
/// The relay's port on 127.0.0.1.
pub const ENV_RELAY_PORT: &str = "TIMONEL_RELAY_PORT";
/// The secret the relay asks for.
pub const ENV_RELAY_SECRET: &str = "TIMONEL_RELAY_SECRET";

fn var(name: &str) -> std::io::Result<String> {
    std::env::var(name).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{name} is not set: run these tests through scripts/test-windows.sh"),
        )
    })
}

/// Link or copy `from` to `to`.
fn place(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// Puts `<dir>/<name>.exe`, which runs the relay's simulator `target` (`powershell`,
/// `vboxmanage` or `echo`) with `env` added to the environment it relays, and returns its path.
pub fn install(
    dir: &Path,
    name: &str,
    target: &str,
    env: &[(&str, &str)],
) -> std::io::Result<PathBuf> {
    let forwarder = PathBuf::from(var(ENV_FORWARDER)?);
    let exe = dir.join(format!("{name}.exe"));
    place(&forwarder, &exe)?;
    let dll = "bcryptprimitives.dll";
    if let Some(built) = forwarder.parent().map(|d| d.join(dll)) {
        if built.exists() && !dir.join(dll).exists() {
            place(&built, &dir.join(dll))?;
        }
    }
    let mut config = format!(
        "port={}\nsecret={}\ntarget={target}\n",
        var(ENV_RELAY_PORT)?,
        var(ENV_RELAY_SECRET)?
    );
    for (key, value) in env {
        config.push_str(&format!("env.{key}={value}\n"));
    }
    std::fs::write(exe.with_extension("relay"), config)?;
    Ok(exe)
}
