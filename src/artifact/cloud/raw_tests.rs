use super::*;

use crate::artifact::cloud::vhd::tests::{info, qemu_img, run, to_qcow2, to_raw};

/// A disk of `len` (> 3 MiB) bytes: data, a run of zeros longer than a chunk, data, a zero tail.
fn sample(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    for (i, b) in d.iter_mut().enumerate().take(700_000) {
        *b = (i % 251) as u8 + 1;
    }
    let mid = len - 200_000 - 123;
    for (i, b) in d[mid..mid + 70_000].iter_mut().enumerate() {
        *b = (i % 13) as u8 ^ 0x5a;
    }
    d
}

fn write(dir: &Path, src: &Path, format: &str, kind: DiskSource) -> (std::path::PathBuf, Written) {
    let dest = dir.join(format!("out-{format}-{kind:?}"));
    let reader = DiskReader::open(src, format).unwrap();
    let w = write_disk(reader, src, &dest, kind, &AtomicBool::new(false)).unwrap();
    (dest, w)
}

#[test]
fn a_qcow2_reads_back_as_the_disk_it_holds_compressed_or_not_v2_or_v3() {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = sample(6 * 1024 * 1024 + 3 * 512);
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &disk).unwrap();
    for (name, opts) in [
        ("plain.qcow2", ""),
        ("compressed.qcow2", "-c"),
        ("v2.qcow2", "-c -o compat=0.10"),
        ("small-clusters.qcow2", "-o cluster_size=4096"),
    ] {
        let q = dir.path().join(name);
        to_qcow2(qemu, &raw, &q, opts);
        let (out, w) = write(dir.path(), &q, "qcow2", DiskSource::Raw);
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), disk.len(), "{name}");
        assert!(got == disk, "{name}: the bytes differ");
        assert_eq!(w.size, disk.len() as u64);
        assert!(w.data < w.size, "{name}: zeros are skipped, not written");
        std::fs::remove_file(out).unwrap();
    }
}

#[test]
fn a_fixed_vhd_is_what_qemu_reads_and_converts_back_byte_for_byte() {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = sample(5 * 1024 * 1024 + 512);
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &disk).unwrap();
    let q = dir.path().join("disk.qcow2");
    to_qcow2(qemu, &raw, &q, "-c");
    let (vhd, w) = write(dir.path(), &q, "qcow2", DiskSource::FixedVhd);
    let (size, _) = vhd::fitted(disk.len() as u64);
    assert_eq!(w.size, size + 512);
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), size + 512);
    let info = info(qemu, "vpc", &vhd);
    assert_eq!(info["format"], "vpc");
    assert_eq!(info["virtual-size"].as_u64(), Some(size), "{info}");
    let back = dir.path().join("back.raw");
    to_raw(qemu, "vpc", &vhd, &back);
    let mut want = disk.clone();
    want.resize(usize::try_from(size).unwrap(), 0);
    assert!(
        std::fs::read(&back).unwrap() == want,
        "the disk differs after a round trip"
    );
}

#[test]
fn a_raw_image_passes_through_and_odd_sizes_round_up_to_whole_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sample(3 * 1024 * 1024 + 100);
    let raw = dir.path().join("odd.raw");
    std::fs::write(&raw, &disk).unwrap();
    let (out, w) = write(dir.path(), &raw, "raw", DiskSource::Raw);
    assert_eq!(w.size, (disk.len() as u64).div_ceil(512) * 512);
    let got = std::fs::read(out).unwrap();
    assert!(got[..disk.len()] == disk[..] && got[disk.len()..].iter().all(|b| *b == 0));
}

#[test]
fn a_stop_ends_the_write_and_unreadable_images_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, sample(3 * 1024 * 1024)).unwrap();
    let reader = DiskReader::open(&raw, "raw").unwrap();
    let err = write_disk(
        reader,
        &raw,
        &dir.path().join("o"),
        DiskSource::Raw,
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Io { source, .. } if source.kind() == io::ErrorKind::Interrupted),
        "{err:?}"
    );
    let err = DiskReader::open(&raw, "qcow2").err().unwrap();
    assert!(
        matches!(err, ArtifactError::UnreadableImage { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("as a qcow2 image"), "{err}");
    let err = DiskReader::open(&raw, "vmdk").err().unwrap();
    assert!(err.to_string().contains("only qcow2 and raw"), "{err}");
    let Some(qemu) = qemu_img() else { return };
    let child = dir.path().join("child.qcow2");
    let backing = format!("-F raw -b {}", raw.display());
    run(
        qemu,
        &format!("create -q -f qcow2 {backing} {}", child.display()),
    );
    let err = DiskReader::open(&child, "qcow2").err().unwrap();
    assert!(err.to_string().contains("backing file"), "{err}");
}
