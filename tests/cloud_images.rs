//! Cloud images through the artifact cache (`ensure_cloud_image`), against the local mirror of
//! tests/support/mirror.rs (files under `<root>/<dir>/` are served at `/download/<dir>/`).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns: failing loudly is their job

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha512};
use support::mirror::{Fault, Mirror};
use support::{content, sha256_hex, RecordingReporter};
use tempfile::TempDir;
use timonel::artifact::cloud::{image_dir, ConvertedMeta, ImageMeta};
use timonel::artifact::{
    ensure_cloud_image, ArtifactCache, ArtifactError, NetworkSettings, Sources,
};
use timonel_driver::{Hint, SilentReporter};
use timonel_driver_vm::{HashAlgorithm, ImageFile};
use url::Url;

const UBUNTU: &str = "noble-server-cloudimg-amd64.img";
const DEBIAN: &str = "debian-12-generic-amd64.qcow2";

fn sha512_hex(data: &[u8]) -> String {
    hex::encode(Sha512::digest(data))
}

fn fast() -> NetworkSettings {
    NetworkSettings {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(400),
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

struct Fixture {
    tmp: TempDir,
    /// The mirror's root; `<root>/<dir>/<file>` is `/download/<dir>/<file>`.
    root: PathBuf,
    cache: ArtifactCache,
    mirror: Mirror,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mirror");
    std::fs::create_dir_all(&root).unwrap();
    let mirror = Mirror::start(&root).await;
    let cache = ArtifactCache::new(tmp.path().join("cache"));
    Fixture {
        tmp,
        root,
        cache,
        mirror,
    }
}

/// The mirror path of a published file, as the mirror logs it.
fn served(dir: &str, file: &str) -> String {
    format!("/download/{dir}/{file}")
}

impl Fixture {
    fn sources(&self) -> Sources {
        Sources {
            network: fast(),
            ..Sources::default()
        }
    }

    fn offline(&self) -> Sources {
        Sources {
            offline: true,
            ..self.sources()
        }
    }

    /// Writes `files` and the checksum file `sums_name` with `sums` as its text into `<root>/<dir>`.
    fn publish(&self, dir: &str, files: &[(&str, &[u8])], sums_name: &str, sums: &str) {
        let d = self.root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for (name, data) in files {
            std::fs::write(d.join(name), data).unwrap();
        }
        std::fs::write(d.join(sums_name), sums).unwrap();
    }

    /// An Ubuntu-style image (`SHA256SUMS`, `<hex> *<file>`) served over HTTP.
    fn ubuntu(&self, data: &[u8]) -> ImageFile {
        let sums = format!(
            "{} *noble-server-cloudimg-amd64.vmdk\n{} *{UBUNTU}\n",
            sha256_hex(b"other"),
            sha256_hex(data)
        );
        self.publish("noble", &[(UBUNTU, data)], "SHA256SUMS", &sums);
        self.image_file(
            "ubuntu-24.04",
            "noble",
            UBUNTU,
            "SHA256SUMS",
            HashAlgorithm::Sha256,
        )
    }

    /// A Debian-style image (`SHA512SUMS`, `<hex>  <file>`) served over HTTP.
    fn debian(&self, data: &[u8]) -> ImageFile {
        let sums = format!(
            "{}  debian-12-generic-amd64.raw\n{}  {DEBIAN}\n",
            sha512_hex(b"raw"),
            sha512_hex(data)
        );
        self.publish("bookworm", &[(DEBIAN, data)], "SHA512SUMS", &sums);
        self.image_file(
            "debian-12",
            "bookworm",
            DEBIAN,
            "SHA512SUMS",
            HashAlgorithm::Sha512,
        )
    }

    fn image_file(
        &self,
        id: &str,
        dir: &str,
        file: &str,
        sums: &str,
        algorithm: HashAlgorithm,
    ) -> ImageFile {
        let base = self.mirror.download_base();
        ImageFile {
            image_id: id.to_string(),
            file_name: file.to_string(),
            url: format!("{base}/{dir}/{file}"),
            checksum_url: format!("{base}/{dir}/{sums}"),
            algorithm,
            format: "qcow2".to_string(),
            convert_to: None,
            default_user: "ubuntu".to_string(),
        }
    }

    async fn ensure(&self, sources: &Sources, image: &ImageFile) -> Result<PathBuf, ArtifactError> {
        ensure_cloud_image(&self.cache, sources, image, None, &SilentReporter).await
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&std::fs::read(with_suffix(path, ".meta.json")).unwrap()).unwrap()
}

/// The files in a folder, lock files left out (they are harmless and kept on purpose).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[tokio::test]
async fn ubuntu_sha256sums_with_binary_marker() {
    let f = fixture().await;
    let data = content(1, 300 * 1024 + 11);
    let image = f.ubuntu(&data);
    let report = RecordingReporter::default();
    let path = ensure_cloud_image(&f.cache, &f.sources(), &image, None, &report)
        .await
        .unwrap();

    let dir = image_dir(&f.cache, &image);
    assert_eq!(path, dir.join(UBUNTU));
    assert!(dir.starts_with(f.cache.root().join("images")));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let meta: ImageMeta = read_json(&path);
    assert_eq!(meta.algorithm, HashAlgorithm::Sha256);
    assert_eq!(meta.digest, sha256_hex(&data));
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.url, image.url);
    assert_eq!(meta.checksum_url, image.checksum_url);
    assert_eq!(
        files_in(&dir),
        [
            "SHA256SUMS",
            "SHA256SUMS.meta.json",
            UBUNTU,
            &format!("{UBUNTU}.meta.json")
        ]
    );
    assert_eq!(f.mirror.requests(&served("noble", "SHA256SUMS")), 1);
    assert_eq!(f.mirror.requests(&served("noble", UBUNTU)), 1);
    assert!(
        report.steps().iter().any(|s| s.contains(UBUNTU)),
        "{:?}",
        report.steps()
    );
    assert_eq!(
        report.last_progress(),
        Some((data.len() as u64, Some(data.len() as u64)))
    );
}

#[tokio::test]
async fn debian_sha512sums_with_two_spaces() {
    let f = fixture().await;
    let data = content(2, 200 * 1024 + 3);
    let image = f.debian(&data);
    let path = f.ensure(&f.sources(), &image).await.unwrap();
    assert_eq!(path, image_dir(&f.cache, &image).join(DEBIAN));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let meta: ImageMeta = read_json(&path);
    assert_eq!(meta.algorithm, HashAlgorithm::Sha512);
    assert_eq!(meta.digest, sha512_hex(&data));
    assert_eq!(meta.digest.len(), 128);
    assert_eq!(f.mirror.total_requests(), 2);
}

#[tokio::test]
async fn a_wrong_digest_names_url_expected_and_got_and_caches_nothing() {
    let f = fixture().await;
    let data = content(3, 100 * 1024);
    let image = f.debian(&data);
    f.mirror
        .fault_always(&served("bookworm", DEBIAN), Fault::WrongDigest);
    let err = f.ensure(&f.sources(), &image).await.unwrap_err();
    let mut bad = data.clone();
    bad[0] ^= 0xff;
    match &err {
        ArtifactError::ImageDigestMismatch {
            url,
            checksums,
            algorithm,
            expected,
            got,
        } => {
            assert_eq!(url, &image.url);
            assert_eq!(checksums, &image.checksum_url);
            assert_eq!(*algorithm, "sha512");
            assert_eq!(expected, &sha512_hex(&data));
            assert_eq!(got, &sha512_hex(&bad));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&image.url)
            && text.contains(&sha512_hex(&data))
            && text.contains(&sha512_hex(&bad)),
        "{text}"
    );
    assert!(err.hint().is_some());
    // Neither the image, nor its partial download, nor the checksum file stays.
    assert_eq!(files_in(&image_dir(&f.cache, &image)), Vec::<String>::new());
    // A complete download that does not verify is not retried.
    assert_eq!(f.mirror.requests(&served("bookworm", DEBIAN)), 1);
}

#[tokio::test]
async fn a_missing_checksum_line_is_a_clear_error() {
    let f = fixture().await;
    let data = content(4, 1000);
    let mut image = f.ubuntu(&data);
    image.file_name = "noble-server-cloudimg-arm64.img".to_string();
    image.url = image.url.replace("amd64", "arm64");
    let err = f.ensure(&f.sources(), &image).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::ImageChecksumMissing { file, checksums }
            if file == "noble-server-cloudimg-arm64.img" && checksums == &image.checksum_url),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("SHA256SUMS") && text.contains("arm64.img"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("--vm-image"));
    // The image itself was never asked for.
    assert_eq!(f.mirror.total_requests(), 1);

    // A checksum URL that is not a checksum file at all.
    f.publish(
        "junk",
        &[(UBUNTU, &data)],
        "SHA256SUMS",
        "<html>Not here</html>\n",
    );
    let junk = f.image_file("x", "junk", UBUNTU, "SHA256SUMS", HashAlgorithm::Sha256);
    let err = f.ensure(&f.sources(), &junk).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::BadChecksumFile { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_cache_hit_makes_no_request_and_a_changed_file_is_fetched_again() {
    let f = fixture().await;
    let data = content(5, 64 * 1024);
    let image = f.ubuntu(&data);
    let first = f.ensure(&f.sources(), &image).await.unwrap();
    let before = f.mirror.total_requests();
    assert_eq!(before, 2);
    // Same handle, then a fresh handle on the same folder (as a new process would have).
    assert_eq!(f.ensure(&f.sources(), &image).await.unwrap(), first);
    let again = ArtifactCache::new(f.cache.root());
    let second = ensure_cloud_image(&again, &f.sources(), &image, None, &SilentReporter)
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(f.mirror.total_requests(), before);

    // A same-size edit with a new mtime is caught by the rehash and fetched again.
    let mut damaged = data.clone();
    damaged[100] ^= 1;
    std::fs::write(&first, &damaged).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    drop(file);
    f.ensure(&f.sources(), &image).await.unwrap();
    assert_eq!(std::fs::read(&first).unwrap(), data);
    // The cached checksum file was trusted: only the image was asked for again.
    assert_eq!(f.mirror.requests(&served("noble", UBUNTU)), 2);
    assert_eq!(f.mirror.requests(&served("noble", "SHA256SUMS")), 1);
}

#[tokio::test]
async fn offline_uses_the_cache_and_a_miss_says_what_is_missing() {
    let f = fixture().await;
    let data = content(6, 10 * 1024);
    let image = f.ubuntu(&data);

    let err = f.ensure(&f.offline(), &image).await.unwrap_err();
    match &err {
        ArtifactError::ImageNotCached { missing, cause, .. } => {
            let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["SHA256SUMS", UBUNTU]);
            let urls: Vec<&str> = missing.iter().map(|m| m.url.as_str()).collect();
            assert_eq!(urls, [image.checksum_url.as_str(), image.url.as_str()]);
            assert!(cause.is_none());
        }
        other => panic!("expected not cached, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(UBUNTU) && text.contains("`SHA256SUMS`"),
        "{text}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains(&image.url) && hint.contains(&image.checksum_url),
        "{hint}"
    );
    assert!(
        hint.contains("--offline") && hint.contains("--vm-image"),
        "{hint}"
    );
    assert_eq!(f.mirror.total_requests(), 0);

    let online = f.ensure(&f.sources(), &image).await.unwrap();
    let requests = f.mirror.total_requests();
    let offline = f.ensure(&f.offline(), &image).await.unwrap();
    assert_eq!(offline, online);
    assert_eq!(f.mirror.total_requests(), requests);

    // Another image: offline, only the checksum file would be reusable if it were the same one.
    let other = f.debian(&data);
    let err = f.ensure(&f.offline(), &other).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::ImageNotCached { missing, .. }
            if missing.iter().map(|m| m.name.as_str()).eq(["SHA512SUMS", DEBIAN])),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_connection_at_all_is_reported_like_offline_with_the_cause() {
    let f = fixture().await;
    let data = content(7, 1000);
    let mut image = f.ubuntu(&data);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let base = format!("http://127.0.0.1:{port}/download/noble");
    image.url = format!("{base}/{UBUNTU}");
    image.checksum_url = format!("{base}/SHA256SUMS");
    let sources = Sources {
        network: NetworkSettings {
            attempts: 1,
            ..fast()
        },
        ..f.sources()
    };
    let err = f.ensure(&sources, &image).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::ImageNotCached { cause: Some(c), .. }
            if matches!(**c, ArtifactError::Unreachable { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_cut_download_resumes_with_range_within_and_across_calls() {
    let f = fixture().await;
    let data = content(8, 300 * 1024);
    let image = f.ubuntu(&data);
    let path = served("noble", UBUNTU);

    // Within one call: the retry resumes.
    f.mirror.fault_once(&path, Fault::CutAfter(100_000));
    let got = f.ensure(&f.sources(), &image).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let ranges: Vec<_> = f
        .mirror
        .log_for(&path)
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=100000-".to_string())]);

    // Across calls: a failed call leaves the partial file, the next one resumes from it.
    let f = fixture().await;
    let image = f.debian(&data);
    let path = served("bookworm", DEBIAN);
    f.mirror.fault_once(&path, Fault::CutAfter(70_000));
    let once = Sources {
        network: NetworkSettings {
            attempts: 1,
            ..fast()
        },
        ..f.sources()
    };
    let err = f.ensure(&once, &image).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let dest = image_dir(&f.cache, &image).join(DEBIAN);
    let partial = with_suffix(&dest, ".partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 70_000);
    assert!(!dest.exists());
    let got = f.ensure(&once, &image).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), data);
    assert!(!partial.exists());
    let ranges: Vec<_> = f
        .mirror
        .log_for(&path)
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=70000-".to_string())]);
}

#[tokio::test]
async fn a_file_url_source_with_a_bsd_style_checksum_file() {
    let f = fixture().await;
    let data = content(9, 50 * 1024);
    let src = f.tmp.path().join("fedora");
    std::fs::create_dir_all(&src).unwrap();
    let file = "Fedora-Cloud-Base-Generic.qcow2";
    std::fs::write(src.join(file), &data).unwrap();
    std::fs::write(
        src.join("CHECKSUM"),
        format!(
            "# Fedora-Cloud\nSHA512 (other.raw) = {}\nSHA512 ({file}) = {}\n",
            sha512_hex(b"x"),
            sha512_hex(&data)
        ),
    )
    .unwrap();
    let image = ImageFile {
        image_id: "fedora".to_string(),
        file_name: file.to_string(),
        url: Url::from_file_path(src.join(file)).unwrap().to_string(),
        checksum_url: Url::from_file_path(src.join("CHECKSUM"))
            .unwrap()
            .to_string(),
        algorithm: HashAlgorithm::Sha512,
        format: "qcow2".to_string(),
        convert_to: None,
        default_user: "fedora".to_string(),
    };
    let got = f.ensure(&f.sources(), &image).await.unwrap();
    assert_eq!(got, image_dir(&f.cache, &image).join(file));
    assert_eq!(std::fs::read(&got).unwrap(), data);
    assert_eq!(f.mirror.total_requests(), 0);
    // The cached copy is used even when the source goes away.
    std::fs::remove_dir_all(&src).unwrap();
    assert_eq!(f.ensure(&f.offline(), &image).await.unwrap(), got);
    assert_eq!(f.ensure(&f.sources(), &image).await.unwrap(), got);
}

#[tokio::test]
async fn plain_http_is_refused_unless_loopback_or_allowed() {
    let f = fixture().await;
    let mut image = f.ubuntu(b"x");
    image.url = format!("http://images.example.com/noble/{UBUNTU}");
    let err = f.ensure(&f.sources(), &image).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::InsecureMirror { .. }),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("--insecure-mirror"));
    image.url = format!("ftp://images.example.com/{UBUNTU}");
    let err = f.ensure(&f.sources(), &image).await.unwrap_err();
    assert!(matches!(err, ArtifactError::InvalidUrl { .. }), "{err:?}");
    assert_eq!(f.mirror.total_requests(), 0);
}

fn qemu_img(args: &[&str]) -> String {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img is needed by this test ({e}); install qemu-utils"));
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn converts_once_with_qemu_img_and_reuses_the_conversion() {
    let f = fixture().await;
    let qcow2 = f.tmp.path().join("tiny.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", qcow2.to_str().unwrap(), "4M"]);
    let data = std::fs::read(&qcow2).unwrap();
    let mut image = f.debian(&data);
    image.convert_to = Some("vhdx".to_string());

    let report = RecordingReporter::default();
    let got = ensure_cloud_image(&f.cache, &f.sources(), &image, None, &report)
        .await
        .unwrap();
    let dir = image_dir(&f.cache, &image);
    assert_eq!(got, dir.join("debian-12-generic-amd64.vhdx"));
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", got.to_str().unwrap()])).unwrap();
    assert_eq!(info["format"], "vhdx", "{info}");
    assert_eq!(info["virtual-size"], 4 * 1024 * 1024, "{info}");
    // The verified download stays next to it, untouched.
    assert_eq!(std::fs::read(dir.join(DEBIAN)).unwrap(), data);
    let meta: ConvertedMeta = read_json(&got);
    assert_eq!(meta.format, "vhdx");
    assert_eq!(meta.source_file, DEBIAN);
    assert_eq!(meta.source_digest, sha512_hex(&data));
    assert_eq!(meta.sha256, sha256_hex(&std::fs::read(&got).unwrap()));
    assert!(
        report
            .steps()
            .iter()
            .any(|s| s.contains("converting") && s.contains("vhdx")),
        "{:?}",
        report.steps()
    );
    // No temporary file is left behind.
    assert!(
        files_in(&dir).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        files_in(&dir)
    );

    // Reused: no request, no new conversion (same file, same recorded conversion).
    let requests = f.mirror.total_requests();
    let mtime = std::fs::metadata(&got).unwrap().modified().unwrap();
    let report = RecordingReporter::default();
    let again = ensure_cloud_image(&f.cache, &f.offline(), &image, None, &report)
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(f.mirror.total_requests(), requests);
    assert_eq!(std::fs::metadata(&got).unwrap().modified().unwrap(), mtime);
    let meta_again: ConvertedMeta = read_json(&got);
    assert_eq!(meta_again.converted_at, meta.converted_at);
    assert!(
        !report.steps().iter().any(|s| s.contains("converting")),
        "{:?}",
        report.steps()
    );

    // A damaged conversion is made again, offline, from the cached download.
    std::fs::write(&got, b"garbage").unwrap();
    let fixed = f.ensure(&f.offline(), &image).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--output=json",
        fixed.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["format"], "vhdx", "{info}");

    // The same download for another driver: no second download, a second conversion.
    let mut vdi = image.clone();
    vdi.convert_to = Some("vdi".to_string());
    let got_vdi = f.ensure(&f.sources(), &vdi).await.unwrap();
    assert_eq!(got_vdi, dir.join("debian-12-generic-amd64.vdi"));
    assert_eq!(f.mirror.total_requests(), requests);
    // Asking for the format the download already has returns the download.
    let mut same = image.clone();
    same.convert_to = Some("qcow2".to_string());
    assert_eq!(
        f.ensure(&f.offline(), &same).await.unwrap(),
        dir.join(DEBIAN)
    );
}

#[tokio::test]
async fn a_republished_image_is_fetched_against_the_new_checksum_file() {
    let f = fixture().await;
    let old = content(10, 20 * 1024);
    let image = f.ubuntu(&old);
    let path = f.ensure(&f.sources(), &image).await.unwrap();
    // The cached image goes away; meanwhile the publisher's `current` folder moved on.
    std::fs::remove_file(&path).unwrap();
    let new = content(11, 30 * 1024);
    f.ubuntu(&new);
    let got = f.ensure(&f.sources(), &image).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), new);
    // The cached checksum file was tried first; its mismatch led to a fresh one, which is kept.
    assert_eq!(f.mirror.requests(&served("noble", UBUNTU)), 3);
    assert_eq!(f.mirror.requests(&served("noble", "SHA256SUMS")), 2);
    let requests = f.mirror.total_requests();
    assert_eq!(f.ensure(&f.offline(), &image).await.unwrap(), got);
    assert_eq!(f.mirror.total_requests(), requests);
}
