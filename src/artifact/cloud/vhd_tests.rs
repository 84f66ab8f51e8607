use super::*;

use std::process::Command;

/// `qemu-img`, which these tests use as an independent reader of VHD files; missing, the test is
/// skipped (under CI=true it fails). The Windows lane runs these tests under Wine, where no
/// Windows `qemu-img.exe` exists (a Linux one can't be started from a Windows program): there
/// they are skipped, and the Linux suite runs them against the same code.
pub(crate) fn qemu_img() -> Option<&'static str> {
    if cfg!(windows) {
        eprintln!("skipping: no Windows qemu-img here; the Linux suite checks this");
        return None;
    }
    if Command::new("qemu-img").arg("--version").output().is_ok() {
        return Some("qemu-img");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and `qemu-img` is missing (apt-get install qemu-utils)"
    );
    eprintln!("skipping: `qemu-img` is missing (apt-get install qemu-utils)");
    None
}

/// Runs `program` with `args` split at spaces (the tests' paths are temporary folders, which
/// have none) and returns its stdout; it must succeed.
pub(crate) fn run(program: &str, args: &str) -> String {
    let out = Command::new(program)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{program} {args}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img convert` of the raw disk `raw` to a qcow2 at `dest`, with `opts` (`-c`: compressed).
pub(crate) fn to_qcow2(qemu: &str, raw: &std::path::Path, dest: &std::path::Path, opts: &str) {
    let (raw, dest) = (raw.display(), dest.display());
    run(
        qemu,
        &format!("convert -q {opts} -f raw -O qcow2 {raw} {dest}"),
    );
}

/// `qemu-img convert` of `src` (read as `format`) to the raw disk `dest`.
pub(crate) fn to_raw(qemu: &str, format: &str, src: &std::path::Path, dest: &std::path::Path) {
    let (src, dest) = (src.display(), dest.display());
    run(qemu, &format!("convert -q -f {format} -O raw {src} {dest}"));
}

/// `qemu-img info` of `path` read as `format` (`vpc`: a fixed VHD is not probed).
pub(crate) fn info(qemu: &str, format: &str, path: &std::path::Path) -> serde_json::Value {
    let out = run(
        qemu,
        &format!("info -f {format} --output=json {}", path.display()),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn geometry_follows_the_format_and_the_size_is_grown_until_it_covers_the_disk() {
    // 3.5 GiB: 63 sectors per track, 16 heads; 7281 cylinders leave sectors out, so 7282.
    let (size, g) = fitted(3584 * 1024 * 1024);
    assert_eq!(
        g,
        Geometry {
            cylinders: 7282,
            heads: 16,
            sectors: 63
        }
    );
    assert_eq!(size, 7282 * 16 * 63 * 512);
    // Small disks use 17 sectors per track and at least 4 heads.
    assert_eq!(Geometry::for_sectors(4 * 17 * 10).heads, 4);
    assert_eq!(Geometry::for_sectors(4 * 17 * 10).sectors, 17);
    // Every fitted size is whole sectors, addressed by its geometry, and never smaller.
    for bytes in [1u64, 511, 512, 1 << 20, 10_000_000, 2 << 30, 40 << 30] {
        let (size, g) = fitted(bytes);
        assert!(size >= bytes && size % 512 == 0, "{bytes}");
        assert_eq!(g.total() * 512, size, "{bytes}");
    }
    // Beyond the largest geometry the size is kept (readers use the recorded size there).
    let huge = 200u64 << 30;
    assert_eq!(fitted(huge).0, huge);
    assert_eq!(fitted(huge).1.total(), 65535 * 16 * 255);
}

#[test]
fn the_footer_holds_its_fields_and_a_valid_checksum() {
    let at = UNIX_EPOCH + Duration::from_secs(VHD_EPOCH + 1000);
    let (size, g) = fitted(64 << 20);
    let f = footer(size, g, [7; 16], at);
    assert_eq!(&f[0..8], b"conectix");
    assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 1000);
    assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), size);
    assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
    let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
    assert_eq!(stored, checksum(&f));
    // The checksum covers the other bytes: any change breaks it.
    let mut changed = f;
    changed[100] = 1;
    assert_ne!(checksum(&changed), stored);
}

#[test]
fn qemu_makes_fixed_vhds_of_the_same_sizes() {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    for mib in [1u64, 3, 100, 2048, 3584] {
        let path = dir.path().join(format!("{mib}.vhd"));
        let opts = "-q -f vpc -o subformat=fixed";
        run(qemu, &format!("create {opts} {} {mib}M", path.display()));
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(fitted(mib << 20).0 + 512, len, "{mib} MiB");
        std::fs::remove_file(&path).unwrap();
    }
}
