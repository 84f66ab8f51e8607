//! The balancer's program, `timonel-lb` (drivers/lb): where it is (`TIMONEL_LB`, else beside
//! timonel's executable, else on PATH) and whether it can run alone in a scratch image on the
//! daemon's machine (a static ELF for its architecture). A candidate that cannot is passed
//! over and named in the error, with what to do.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use timonel_driver::DriverError;

/// The program's name.
pub const PROGRAM: &str = "timonel-lb";
/// Environment: the program's path, instead of looking for it.
pub const ENV_PROGRAM: &str = "TIMONEL_LB";

/// How to get the program, for every error that means it is missing or unfit.
pub const BUILD_FIX: &str = "build it from timonel's source with `scripts/build-lb.sh` (a static \
Linux binary) and put it beside timonel or on PATH, or set TIMONEL_LB to its path; without it, \
create the cluster with one server (no --control-planes)";

/// What a file is, as far as running it in a scratch container goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elf {
    /// A static 64-bit little-endian ELF for this machine (`x86_64`, `aarch64`, or another
    /// `e_machine` number).
    Static(&'static str),
    /// It needs a dynamic loader and libraries a scratch image does not have.
    Dynamic,
    Other,
}

/// Reads enough of `bytes` (the start of a file) to tell.
pub fn classify(bytes: &[u8]) -> Elf {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // 64-bit (class 2), little-endian (data 1) only: what timonel's build makes.
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Elf::Other;
    }
    let (Some(machine), Some(phoff), Some(phentsize), Some(phnum)) =
        (u16_at(18), u64_at(32), u16_at(54), u16_at(56))
    else {
        return Elf::Other;
    };
    for i in 0..u64::from(phnum) {
        let at = phoff.saturating_add(i.saturating_mul(u64::from(phentsize)));
        // PT_INTERP: a dynamic loader is named.
        match usize::try_from(at).ok().and_then(u32_at) {
            Some(3) => return Elf::Dynamic,
            Some(_) => {}
            None => return Elf::Other,
        }
    }
    Elf::Static(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        _ => "another architecture",
    })
}

/// The daemon's `Architecture` (`x86_64`, `aarch64`, `arm64`) as ELF names it.
pub fn elf_arch(daemon: &str) -> &str {
    match daemon {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    }
}

/// `timonel-lb` on every host, Windows included: it is a Linux program (Docker Desktop runs
/// Linux containers), never run by this host.
fn file_name() -> String {
    PROGRAM.to_string()
}

/// Why a candidate is passed over, or `None` when it fits.
fn unfit(path: &Path, arch: &str) -> Option<String> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("`{}` cannot be read: {e}", path.display()));
    let n = match n {
        Ok(n) => n,
        Err(e) => return Some(e),
    };
    head.truncate(n);
    match classify(&head) {
        Elf::Static(a) if a == elf_arch(arch) => None,
        Elf::Static(a) => Some(format!(
            "`{}` is built for {a}, and the Docker daemon runs on {arch}",
            path.display()
        )),
        Elf::Dynamic => Some(format!(
            "`{}` is dynamically linked (a plain `cargo build`), and the balancer runs alone in a scratch image",
            path.display()
        )),
        Elf::Other => Some(format!(
            "`{}` is not a 64-bit Linux program",
            path.display()
        )),
    }
}

/// The program for a daemon on `arch`, from the given variable, own executable and PATH.
pub fn locate_in(
    explicit: Option<OsString>,
    own_exe: Option<PathBuf>,
    path: Option<OsString>,
    arch: &str,
) -> Result<PathBuf, DriverError> {
    let missing = |reason: String| DriverError::NotAvailable {
        driver: "docker".into(),
        reason: format!(
            "the load balancer of a cluster with several servers needs `{PROGRAM}`: {reason}"
        ),
        fix: BUILD_FIX.to_string(),
    };
    if let Some(explicit) = explicit.filter(|v| !v.is_empty()) {
        let explicit = PathBuf::from(explicit);
        if !explicit.is_file() {
            return Err(missing(format!(
                "{ENV_PROGRAM} is `{}`, which is not a file",
                explicit.display()
            )));
        }
        return match unfit(&explicit, arch) {
            None => Ok(explicit),
            Some(why) => Err(missing(format!("{ENV_PROGRAM} names it, but {why}"))),
        };
    }
    let mut candidates = Vec::new();
    let mut looked = Vec::new();
    if let Some(dir) = own_exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join(file_name()));
        looked.push(format!("beside timonel in {}", dir.display()));
    }
    candidates.extend(
        path.iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(file_name())),
    );
    looked.push("on PATH".to_string());
    let mut passed = Vec::new();
    for c in candidates.into_iter().filter(|c| c.is_file()) {
        match unfit(&c, arch) {
            None => return Ok(c),
            Some(why) => passed.push(why),
        }
    }
    let mut reason = format!("not found (looked {})", looked.join(" and "));
    if !passed.is_empty() {
        reason = format!("none fits: {}", passed.join("; "));
    }
    Err(missing(reason))
}

/// The program for a daemon on `arch`, as this process finds it.
pub fn locate(arch: &str) -> Result<PathBuf, DriverError> {
    locate_in(
        std::env::var_os(ENV_PROGRAM),
        std::env::current_exe().ok(),
        std::env::var_os("PATH"),
        arch,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A minimal ELF header with one program header of type `ptype`.
    fn elf(machine: u16, ptype: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b
    }

    #[test]
    fn tells_static_dynamic_and_other_files() {
        assert_eq!(classify(&elf(0x3e, 1)), Elf::Static("x86_64"));
        assert_eq!(classify(&elf(0xb7, 6)), Elf::Static("aarch64"));
        assert_eq!(classify(&elf(0x3e, 3)), Elf::Dynamic);
        assert_eq!(classify(b"#!/bin/sh\n"), Elf::Other);
        assert_eq!(classify(&elf(0x3e, 1)[..60]), Elf::Other, "truncated");
        // This test program itself: what `cargo build` makes on Linux is dynamic.
        #[cfg(all(target_os = "linux", not(target_feature = "crt-static")))]
        {
            let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
            assert_eq!(classify(&me[..4096]), Elf::Dynamic);
        }
    }

    #[test]
    fn finds_a_fitting_program_and_says_why_others_do_not() {
        let (exe_dir, path_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let exe = exe_dir.path().join("timonel");
        let path = std::env::join_paths([path_dir.path()]).unwrap();
        let err = locate_in(None, Some(exe.clone()), Some(path.clone()), "x86_64").unwrap_err();
        let text = format!(
            "{err} {}",
            timonel_driver::Hint::hint(&err).unwrap_or_default()
        );
        assert!(
            text.contains("beside timonel in") && text.contains("on PATH"),
            "{text}"
        );
        assert!(text.contains("scripts/build-lb.sh"), "{text}");
        // A dynamic one beside timonel is passed over for a static one on PATH.
        std::fs::write(exe_dir.path().join(file_name()), elf(0x3e, 3)).unwrap();
        let err = locate_in(None, Some(exe.clone()), Some(path.clone()), "x86_64").unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        let on_path = path_dir.path().join(file_name());
        std::fs::write(&on_path, elf(0x3e, 1)).unwrap();
        assert_eq!(
            locate_in(None, Some(exe.clone()), Some(path.clone()), "x86_64").unwrap(),
            on_path
        );
        // Another architecture's daemon.
        let err = locate_in(None, Some(exe.clone()), Some(path), "aarch64").unwrap_err();
        assert!(err.to_string().contains("built for x86_64"), "{err}");
        // The variable wins, and must name a fitting file.
        let err = locate_in(
            Some(exe_dir.path().join("nope").into()),
            Some(exe),
            None,
            "x86_64",
        )
        .unwrap_err();
        assert!(err.to_string().contains(ENV_PROGRAM), "{err}");
    }
}
