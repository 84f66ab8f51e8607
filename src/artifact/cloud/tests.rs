use super::*;
use timonel_driver::{Hint, SilentReporter};

const H256: &str = "6f0c8fd4dc2bb5ab2f2d86a5ec7cd30fcef3bc1d1d2f0a1d14c09f1d9d2a7b01";

fn image(algorithm: HashAlgorithm) -> ImageFile {
    ImageFile {
        image_id: "ubuntu-24.04".into(),
        file_name: "noble.img".into(),
        url: "https://example.com/noble/noble.img".into(),
        checksum_url: "https://example.com/noble/SHA256SUMS".into(),
        algorithm,
        format: "qcow2".into(),
        convert_to: None,
        default_user: "ubuntu".into(),
    }
}

#[test]
fn finds_the_line_in_any_format_and_skips_odd_lines() {
    let img = image(HashAlgorithm::Sha256);
    for text in [
        format!("{H256} *noble.img\n"),
        format!("garbage line\n{H256}  ./noble.img\n"),
        format!("SHA256 (noble.img) = {H256}\n"),
    ] {
        let e = entry_for(&text, &img, "u").unwrap();
        assert_eq!(e.hex, H256, "{text}");
    }
    let err = entry_for(&format!("{H256} *other.img\n"), &img, "u").unwrap_err();
    assert!(
        matches!(err, ArtifactError::ImageChecksumMissing { .. }),
        "{err}"
    );
    let err = entry_for("<html>not found</html>\n", &img, "u").unwrap_err();
    assert!(
        matches!(err, ArtifactError::BadChecksumFile { .. }),
        "{err}"
    );
    let err = entry_for(
        &format!("{H256} *noble.img\n"),
        &image(HashAlgorithm::Sha512),
        "u",
    )
    .unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn layout_is_keyed_by_url_and_names_conversions_by_stem() {
    let cache = ArtifactCache::new("/c");
    let img = image(HashAlgorithm::Sha256);
    let sums = Url::parse(&img.checksum_url).unwrap();
    let l = Layout::new(&cache, &img, &sums).unwrap();
    assert!(l.dir.starts_with("/c/images"));
    let dir_name = l.dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(dir_name.starts_with("ubuntu-24.04-"), "{dir_name}");
    assert_eq!(dir_name.len(), "ubuntu-24.04-".len() + 16);
    assert_eq!(l.image, l.dir.join("noble.img"));
    assert_eq!(l.sums, l.dir.join("SHA256SUMS"));
    assert_eq!(l.converted("noble.img", "vhdx"), l.dir.join("noble.vhdx"));
    assert_eq!(l.converted("disk", "vdi"), l.dir.join("disk.vdi"));
    let other = ImageFile {
        url: "https://example.com/other/noble.img".into(),
        ..img.clone()
    };
    assert_ne!(image_dir(&cache, &other), l.dir);
    for bad in ["../x", "a/b", "", "..", "c:x"] {
        let f = ImageFile {
            file_name: bad.into(),
            ..img.clone()
        };
        assert!(Layout::new(&cache, &f, &sums).is_err(), "{bad}");
    }
}

#[test]
fn only_known_disk_formats() {
    assert_eq!(disk_format("VHDX").unwrap(), "vhdx");
    let err = disk_format("-o=evil").unwrap_err();
    assert!(err.hint().is_some());
}

#[tokio::test]
async fn a_missing_converter_is_a_clear_error_with_the_install_hint() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("noble.img"), b"not really qcow2").unwrap();
    let digest = sha256_hex(b"not really qcow2");
    std::fs::write(src.join("SHA256SUMS"), format!("{digest} *noble.img\n")).unwrap();
    let img = ImageFile {
        url: Url::from_file_path(src.join("noble.img"))
            .unwrap()
            .to_string(),
        checksum_url: Url::from_file_path(src.join("SHA256SUMS"))
            .unwrap()
            .to_string(),
        convert_to: Some("vhdx".into()),
        ..image(HashAlgorithm::Sha256)
    };
    let cache = ArtifactCache::new(dir.path().join("cache"));
    let err = ensure_with(
        &cache,
        &Sources::default(),
        &img,
        ("timonel-no-such-qemu-img", None),
        &SilentReporter,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::ConverterMissing { tool, format, .. }
            if tool == "timonel-no-such-qemu-img" && format == "vhdx"),
        "{err:?}"
    );
    assert!(err.to_string().contains("noble.img"), "{err}");
    assert!(err.hint().unwrap().contains("QEMU"), "{:?}", err.hint());
    // The verified download stays; no converted file or temporary is left.
    let dir = image_dir(&cache, &img);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.meta.json",
            "noble.img",
            "noble.img.meta.json"
        ]
    );
}
