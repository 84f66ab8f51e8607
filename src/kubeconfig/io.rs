//! Reading, parsing and atomically replacing a kubeconfig file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::KubeconfigError;

/// How many symlinks we follow before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// The file's bytes, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KubeconfigError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Text from bytes: UTF-8 with or without a BOM, or UTF-16 with a BOM (what Windows PowerShell
/// 5.1's `>` writes).
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<String, KubeconfigError> {
    let invalid = |reason: &str| KubeconfigError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err(invalid("odd number of bytes in UTF-16 text"));
        }
        let units: Vec<u16> = rest.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| invalid("invalid UTF-16 text"))
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid("not UTF-8 text"))
}

/// Parse YAML into a JSON value. Errors carry no snippet of the input: it holds private keys.
pub(crate) fn parse_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text.trim_start_matches('\u{feff}'), options)
}

/// The top-level mapping of a kubeconfig. An empty (or comment-only) file is an empty mapping.
pub(crate) fn parse_document(
    path: &Path,
    text: &str,
) -> Result<Map<String, Value>, KubeconfigError> {
    match parse_yaml(text) {
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(KubeconfigError::Invalid {
            path: path.to_path_buf(),
            reason: "the top level is not a mapping".to_string(),
        }),
        Err(source) => Err(KubeconfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        }),
    }
}

/// Serialize in kubectl's layout: block style, list items at the key's indentation, long base64
/// strings on one line.
pub(crate) fn to_yaml(value: &Value) -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(value, options)
}

/// Follow symlinks from `path` to the file that really holds the data, even if that file does
/// not exist yet (a dangling symlink is followed too). Relative links resolve against the
/// link's directory.
pub(crate) fn resolve_symlinks(path: &Path) -> Result<PathBuf, KubeconfigError> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(|source| KubeconfigError::Read {
                    path: current.clone(),
                    source,
                })?;
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(KubeconfigError::Read {
        path: path.to_path_buf(),
        source: io::Error::other("too many levels of symbolic links"),
    })
}

/// Create the directory that will hold `path` (0700 on unix, like `~/.kube` should be).
pub(crate) fn ensure_parent_dir(path: &Path) -> Result<(), KubeconfigError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|source| KubeconfigError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Refuse to replace a file the user made read-only: renaming over it would succeed (it only
/// needs a writable directory) and silently defeat their protection. Root passes the open test,
/// so the permission bits are checked as well.
pub(crate) fn check_writable(path: &Path) -> Result<(), KubeconfigError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(KubeconfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if meta.permissions().readonly() {
        return Err(KubeconfigError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            Err(KubeconfigError::ReadOnly {
                path: path.to_path_buf(),
            })
        }
        Err(source) => Err(KubeconfigError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The suffix of our temp files beside a kubeconfig (`.<name>.<random>.timonel-tmp`).
const TEMP_SUFFIX: &str = ".timonel-tmp";
/// A temp file this old was left by a writer that died (a write takes milliseconds).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes our temp files beside `target` that a killed writer left (older than a minute, so a
/// writer through another name of the same file is never disturbed). Best effort.
pub(crate) fn remove_stale_temps(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with(&prefix) || !file.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a >= STALE_TEMP) {
            tracing::debug!(file = %entry.path().display(), "removing a temp file a killed write left");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Replace `target` (a real file path, symlinks already resolved) with `contents`: a temp file
/// in the same directory, written, mode 0600, fsynced, renamed over the target. On any error the
/// temp file is removed and the target is untouched.
pub(crate) fn write_atomic(target: &Path, contents: &[u8]) -> Result<(), KubeconfigError> {
    let err = |source: io::Error| KubeconfigError::Write {
        path: target.to_path_buf(),
        source,
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kubeconfig".to_string());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(&dir)
        .map_err(err)?;
    temp.write_all(contents).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Keep the owner: when root rewrites a user's file, rename would hand it to root.
        if let Ok(meta) = fs::metadata(target) {
            if let Err(e) =
                std::os::unix::fs::fchown(temp.as_file(), Some(meta.uid()), Some(meta.gid()))
            {
                tracing::debug!(error = %e, "could not keep the kubeconfig's owner");
            }
        }
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    temp.as_file().sync_all().map_err(err)?;
    // On error the returned temp file is dropped, which deletes it.
    temp.persist(target).map_err(|e| err(e.error))?;
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(&dir) {
        // Make the rename durable; best effort.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_utf8_bom_and_utf16() {
        let p = Path::new("f");
        assert_eq!(decode(p, b"\xEF\xBB\xBFa: 1").unwrap(), "a: 1");
        let mut le = vec![0xFF, 0xFE];
        le.extend("a: é".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decode(p, &le).unwrap(), "a: é");
        let mut be = vec![0xFE, 0xFF];
        be.extend("a: é".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(decode(p, &be).unwrap(), "a: é");
        assert!(matches!(
            decode(p, b"\xC3\x28"),
            Err(KubeconfigError::Invalid { .. })
        ));
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_documents() {
        let p = Path::new("f");
        assert!(parse_document(p, "").unwrap().is_empty());
        assert!(parse_document(p, "# nothing\n").unwrap().is_empty());
        assert!(matches!(
            parse_document(p, "- a\n"),
            Err(KubeconfigError::Invalid { .. })
        ));
    }

    #[test]
    fn parse_errors_do_not_echo_the_file() {
        let secret = "client-key-data: SECRETSECRET\nusers: [\n";
        let err = parse_document(Path::new("f"), secret).unwrap_err();
        let KubeconfigError::Parse { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(!source.to_string().contains("SECRETSECRET"), "{source}");
    }

    #[test]
    fn long_strings_stay_on_one_line_and_tricky_strings_are_quoted() {
        let long = "A".repeat(300);
        let value =
            serde_json::json!({"data": long, "b": "true", "c": "1.0", "d": "", "e": "x: y"});
        let yaml = to_yaml(&value).unwrap();
        assert!(yaml.contains(&format!("data: {long}\n")), "{yaml}");
        let back: Value = parse_yaml(&yaml).unwrap();
        assert_eq!(back, value);
    }

    #[cfg(unix)]
    #[test]
    fn resolves_relative_and_dangling_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real/config", dir.path().join("link1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("link1"), dir.path().join("link2")).unwrap();
        let resolved = resolve_symlinks(&dir.path().join("link2")).unwrap();
        assert_eq!(resolved, dir.path().join("real/config"));
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        assert!(resolve_symlinks(&dir.path().join("loop")).is_err());
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        std::fs::write(&target, "old").unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn stale_temp_files_of_a_killed_write_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        let stale = dir.path().join(".config.abc123.timonel-tmp");
        let fresh = dir.path().join(".config.def456.timonel-tmp");
        let other = dir.path().join(".other.abc123.timonel-tmp");
        for f in [&stale, &fresh, &other] {
            std::fs::write(f, "half").unwrap();
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for f in [&stale, &other] {
            let file = std::fs::File::options().write(true).open(f).unwrap();
            file.set_modified(old).unwrap();
        }
        remove_stale_temps(&target);
        assert!(!stale.exists());
        assert!(fresh.exists(), "a write in progress keeps its temp file");
        assert!(
            other.exists(),
            "another file's temp files are not ours to judge"
        );
    }

    #[test]
    fn write_atomic_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing").join("config");
        assert!(matches!(
            write_atomic(&target, b"x"),
            Err(KubeconfigError::Write { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
