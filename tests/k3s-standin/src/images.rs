//! The airgap images folder (`${data-dir}/agent/images`): k3s lists it when its agent starts and
//! imports every file in it, opening each entry by path (a symlink is followed). The stand-in
//! imports nothing: it reads each file to its end and logs what k3s logs.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use crate::logfmt;

/// Reads every file of `${data_dir}/agent/images` as k3s's import would, logging
/// `Importing images from <path>`, then `Imported images from <path> in <duration>` or
/// `Error encountered while importing <path>: <error>`.
pub fn preload(data_dir: &Path) {
    let dir = data_dir.join("agent").join("images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .filter(|e| !e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let shown = path.display();
        logfmt::info(&format!("Importing images from {shown}"));
        let started = Instant::now();
        match read_through(&path) {
            Ok(()) => logfmt::info(&format!(
                "Imported images from {shown} in {:?}",
                started.elapsed()
            )),
            Err(e) => logfmt::error(&format!("Error encountered while importing {shown}: {e}")),
        }
    }
}

fn read_through(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    while file.read(&mut buf)? > 0 {}
    Ok(())
}
