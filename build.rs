//! Records the commit timonel is built from, for `timonel version`: `TIMONEL_GIT_COMMIT` is
//! `git rev-parse --short=12 HEAD`, with `-dirty` when tracked files differ from it. Without git
//! (a source tarball, no git binary) it is `$TIMONEL_COMMIT` if set, else `unknown`.
//!
//! The script reruns only when HEAD moves (HEAD, the branch it points to, packed refs), the
//! index changes, or a source folder changes, so an unchanged tree builds without it.

use std::path::{Path, PathBuf};
use std::process::Command;

const FALLBACK_ENV: &str = "TIMONEL_COMMIT";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed={FALLBACK_ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    let (commit, time) = match git_commit(&manifest_dir) {
        Some(found) => found,
        None => (
            std::env::var(FALLBACK_ENV)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown".to_string()),
            "0".to_string(),
        ),
    };
    println!("cargo:rustc-env=TIMONEL_GIT_COMMIT={commit}");
    // Unix seconds of the commit (0: unknown), for `doctor`'s clock check.
    println!("cargo:rustc-env=TIMONEL_GIT_COMMIT_TIME={time}");
}

/// Runs git in `dir`; its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit of the repository whose top is `dir`, and its time (Unix seconds), or `None`
/// when `dir` is not the top of a git work tree (e.g. an unpacked crate inside someone else's
/// repository).
fn git_commit(dir: &Path) -> Option<(String, String)> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    watch(dir);
    let hash = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    let time = git(dir, &["log", "-1", "--format=%ct", "HEAD"]).unwrap_or_else(|| "0".into());
    let commit = if status.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    };
    Some((commit, time))
}

/// Tells cargo what to watch: the files that move with HEAD (worktrees keep HEAD and the
/// index apart from the shared refs; `--git-path` finds each) and the sources.
fn watch(dir: &Path) {
    let mut paths = vec![
        "HEAD".to_string(),
        "index".to_string(),
        "packed-refs".to_string(),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch);
    }
    for path in paths {
        if let Some(file) = git(dir, &["rev-parse", "--git-path", &path]) {
            let file = dir.join(file);
            if file.exists() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
    for source in ["src", "drivers", "images", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={source}");
    }
}
