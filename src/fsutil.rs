//! File writes that never leave a half-written file: temp file in the same directory, fsync,
//! rename.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Free bytes on the file system holding `path` (or its nearest existing parent); `None` where
/// it cannot be measured (not unix).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // the field types differ between Linux and macOS
pub fn free_space(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(existing).ok()?;
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Free bytes on the volume holding `path` (or its nearest existing parent).
#[cfg(windows)]
pub fn free_space(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    fs4::available_space(existing).ok()
}

/// Free bytes on the file system holding `path`; not measured elsewhere.
#[cfg(not(any(unix, windows)))]
pub fn free_space(_path: &Path) -> Option<u64> {
    None
}

/// Writes `data` to `path` atomically. On unix the file gets `mode`.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    create_dir_all_private(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        #[cfg(unix)]
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `data` to `path` only if `path` does not exist, never leaving it half-written: the
/// data goes to a temp file first, which is then linked in place (a link fails when the name is
/// taken, so of two writers exactly one wins). `Ok(false)` when `path` already existed.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<bool> {
    let tmp = path.with_file_name(format!(
        ".{}.{}.{:08x}.new",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        rand::random::<u32>()
    ));
    atomic_write(&tmp, data, mode)?;
    let linked = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: a rename, unless the name is taken by now.
        Err(_) if !path.exists() => fs::rename(&tmp, path).map(|()| true),
        Err(_) => Ok(false),
    };
    let _ = fs::remove_file(&tmp);
    linked
}

/// Creates a directory and its missing parents; on unix, every folder it creates is 0700
/// (only the owner may enter it). Folders that already exist keep their mode.
pub fn create_dir_all_private(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Creates a directory (and parents, see [`create_dir_all_private`]) and makes it 0700 even if
/// it existed, on unix.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    create_dir_all_private(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Lets other users pass through (not list) the folders between `root` and each of `targets`
/// (`root` included, the targets themselves not), on unix: a hypervisor running as its own user
/// (libvirt's qemu) must reach VM disks kept under timonel's private home. Paths outside `root`
/// are left alone.
pub fn let_others_traverse(root: &Path, targets: &[&Path]) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for target in targets {
            for dir in target.ancestors().skip(1) {
                if !dir.starts_with(root) {
                    break;
                }
                let named = |e: io::Error| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot let other users pass through `{}`: {e}",
                            dir.display()
                        ),
                    )
                };
                let mode = fs::metadata(dir).map_err(named)?.permissions().mode();
                if mode & 0o011 != 0o011 {
                    fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o011))
                        .map_err(named)?;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (root, targets);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn new_folders_are_private_and_existing_ones_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let file = open.join("home/profiles/dev/state.json");
        atomic_write(&file, b"{}", 0o600).unwrap();
        assert_eq!(mode(&open), 0o755);
        assert_eq!(mode(&open.join("home")), 0o700);
        assert_eq!(mode(&open.join("home/profiles")), 0o700);
        assert_eq!(mode(&open.join("home/profiles/dev")), 0o700);
        assert_eq!(mode(&file), 0o600);
        create_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn others_may_pass_through_to_a_target_but_not_list() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home");
        let disk = root.join("machines/dev/disk.qcow2");
        create_dir_all_private(disk.parent().unwrap()).unwrap();
        fs::write(&disk, b"").unwrap();
        let outside = dir.path().join("elsewhere/base.qcow2");
        create_dir_all_private(outside.parent().unwrap()).unwrap();
        let_others_traverse(&root, &[&disk, &outside]).unwrap();
        for d in ["", "machines", "machines/dev"] {
            assert_eq!(mode(&root.join(d)), 0o711, "{d}");
        }
        assert_eq!(mode(outside.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"old", 0o600).unwrap();
        // A directory where the temp file would go makes the write fail.
        let blocker = dir
            .path()
            .join(format!(".state.json.{}.tmp", std::process::id()));
        fs::create_dir(&blocker).unwrap();
        assert!(atomic_write(&p, b"new", 0o600).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }
}
