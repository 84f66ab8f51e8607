//! The artifact cache against a local release mirror and channel server (tests/support/mirror.rs).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns: failing loudly is their job

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::mirror::{asset_path, channel_path, Fault, Mirror, CHANNELS_PATH};
use support::{content, publish, sha256_hex, RecordingReporter};
use tempfile::TempDir;
use timonel::artifact::{
    commands, ensure_k3s, resolve_version, Arch, ArtifactCache, ArtifactError, K3sVersion,
    NetworkSettings, Sources, VersionSpec,
};
use timonel_driver::{Hint, SilentReporter};

const V: &str = "v1.31.2+k3s1";
const BIN: &str = "k3s";
const AIRGAP: &str = "k3s-airgap-images-amd64.tar.zst";
const SUMS: &str = "sha256sum-amd64.txt";

struct Fixture {
    tmp: TempDir,
    release: PathBuf,
    cache: ArtifactCache,
    mirror: Mirror,
    binary: Vec<u8>,
    airgap: Vec<u8>,
}

fn fast() -> NetworkSettings {
    NetworkSettings {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(400),
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

fn version(s: &str) -> K3sVersion {
    s.parse().unwrap()
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let binary = content(1, 300 * 1024 + 7);
    let airgap = content(2, 200 * 1024);
    let arm = content(3, 10 * 1024);
    publish(
        &release,
        V,
        &[
            (BIN, &binary),
            (AIRGAP, &airgap),
            ("k3s-armhf", &arm),
            ("k3s-airgap-images-amd64.tar.gz", b"gz"),
        ],
    );
    let mirror = Mirror::start(&release).await;
    let cache = ArtifactCache::new(tmp.path().join("cache"));
    Fixture {
        tmp,
        release,
        cache,
        mirror,
        binary,
        airgap,
    }
}

impl Fixture {
    fn sources(&self) -> Sources {
        Sources {
            binary_mirror: Some(self.mirror.download_base()),
            channel_url: Some(self.mirror.channel_base()),
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

    async fn ensure(
        &self,
        sources: &Sources,
        preload: bool,
    ) -> Result<timonel::artifact::K3sArtifacts, ArtifactError> {
        ensure_k3s(
            &self.cache,
            sources,
            &version(V),
            Arch::Amd64,
            preload,
            &SilentReporter,
        )
        .await
    }

    fn cached(&self, asset: &str) -> PathBuf {
        self.cache.asset_path(&version(V), Arch::Amd64, asset)
    }

    fn partial(&self, asset: &str) -> PathBuf {
        let mut p = self.cached(asset).into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    }
}

#[tokio::test]
async fn happy_path_fetches_verifies_and_reports() {
    let f = fixture().await;
    let report = RecordingReporter::default();
    let got = ensure_k3s(
        &f.cache,
        &f.sources(),
        &version(V),
        Arch::Amd64,
        true,
        &report,
    )
    .await
    .unwrap();
    assert_eq!(got.binary, f.cached(BIN));
    assert_eq!(std::fs::read(&got.binary).unwrap(), f.binary);
    assert_eq!(got.binary_sha256, sha256_hex(&f.binary));
    assert_eq!(std::fs::read(got.airgap.unwrap()).unwrap(), f.airgap);
    assert!(!f.partial(BIN).exists());
    for path in [
        asset_path(V, SUMS),
        asset_path(V, BIN),
        asset_path(V, AIRGAP),
    ] {
        assert_eq!(f.mirror.requests(&path), 1, "{path}");
    }
    // The version travels as %2B and arrives as `+`; the metadata records the URL used.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.cached("k3s.meta.json")).unwrap()).unwrap();
    assert_eq!(meta["sha256"], sha256_hex(&f.binary));
    assert_eq!(meta["size"], f.binary.len());
    assert!(meta["url"]
        .as_str()
        .unwrap()
        .ends_with("/download/v1.31.2%2Bk3s1/k3s"));
    let steps = report.steps();
    assert!(steps.iter().any(|s| s.contains("`k3s`")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains(AIRGAP)), "{steps:?}");
    let n = f.airgap.len() as u64;
    assert_eq!(report.last_progress(), Some((n, Some(n))));
    // Throttled: far fewer reports than chunks would give.
    assert!(report.progress.lock().unwrap().len() < 20);
}

#[tokio::test]
async fn a_cache_hit_makes_no_request_even_offline() {
    let f = fixture().await;
    f.ensure(&f.sources(), true).await.unwrap();
    let before = f.mirror.total_requests();
    let again = f.ensure(&f.sources(), true).await.unwrap();
    assert_eq!(f.mirror.total_requests(), before);
    assert_eq!(std::fs::read(again.binary).unwrap(), f.binary);
    f.ensure(&f.offline(), true).await.unwrap();
    assert_eq!(f.mirror.total_requests(), before);
}

#[tokio::test]
async fn arm_uses_armhf_and_the_arm_checksum_file() {
    let f = fixture().await;
    let got = ensure_k3s(
        &f.cache,
        &f.sources(),
        &version(V),
        Arch::Arm,
        false,
        &SilentReporter,
    )
    .await
    .unwrap();
    assert!(got.binary.ends_with("arm/k3s-armhf"));
    assert_eq!(f.mirror.requests(&asset_path(V, "sha256sum-arm.txt")), 1);
    assert_eq!(f.mirror.requests(&asset_path(V, "k3s-armhf")), 1);
}

#[tokio::test]
async fn a_wrong_digest_removes_the_partial_and_names_url_expected_and_got() {
    let f = fixture().await;
    f.mirror
        .fault_always(&asset_path(V, BIN), Fault::WrongDigest);
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    let mut bad = f.binary.clone();
    bad[0] ^= 0xff;
    match &err {
        ArtifactError::DigestMismatch { url, expected, got } => {
            assert!(url.ends_with("/download/v1.31.2%2Bk3s1/k3s"), "{url}");
            assert_eq!(expected, &sha256_hex(&f.binary));
            assert_eq!(got, &sha256_hex(&bad));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&sha256_hex(&f.binary)) && text.contains(&sha256_hex(&bad)),
        "{text}"
    );
    assert!(err.hint().is_some());
    assert!(!f.partial(BIN).exists());
    assert!(!f.cached(BIN).exists());
    // A complete download that does not verify is not retried.
    assert_eq!(f.mirror.requests(&asset_path(V, BIN)), 1);
}

#[tokio::test]
async fn a_truncated_body_does_not_verify() {
    let f = fixture().await;
    f.mirror
        .fault_always(&asset_path(V, BIN), Fault::Truncate(1000));
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!f.partial(BIN).exists());
    assert!(!f.cached(BIN).exists());
}

#[tokio::test]
async fn a_cut_download_resumes_with_range() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_once(&path, Fault::CutAfter(100_000));
    let got = f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(got.binary).unwrap(), f.binary);
    let log = f.mirror.log_for(&path);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, None);
    assert_eq!(log[1].range.as_deref(), Some("bytes=100000-"));
}

#[tokio::test]
async fn a_download_cut_every_time_keeps_its_partial_for_next_time() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_always(&path, Fault::CutAfter(10_000));
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(f.mirror.requests(&path), 3);
    assert_eq!(std::fs::metadata(f.partial(BIN)).unwrap().len(), 30_000);
    // Next run: the server is fine again and the download continues where it stopped.
    f.mirror.clear_faults();
    f.ensure(&f.sources(), false).await.unwrap();
    let log = f.mirror.log_for(&path);
    assert_eq!(log.last().unwrap().range.as_deref(), Some("bytes=30000-"));
    assert_eq!(std::fs::read(f.cached(BIN)).unwrap(), f.binary);
}

#[tokio::test]
async fn a_200_answer_to_a_range_request_restarts_from_zero() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    // A partial file whose content is wrong: appending to it would never verify.
    std::fs::create_dir_all(f.partial(BIN).parent().unwrap()).unwrap();
    std::fs::write(f.partial(BIN), vec![0xAA; 5000]).unwrap();
    f.mirror.fault_once(&path, Fault::IgnoreRange);
    let got = f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(got.binary).unwrap(), f.binary);
    let log = f.mirror.log_for(&path);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range.as_deref(), Some("bytes=5000-"));
}

#[tokio::test]
async fn a_resumed_download_that_does_not_verify_starts_over_once() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    std::fs::create_dir_all(f.partial(BIN).parent().unwrap()).unwrap();
    std::fs::write(f.partial(BIN), vec![0xAA; 5000]).unwrap();
    let got = f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(got.binary).unwrap(), f.binary);
    let ranges: Vec<_> = f
        .mirror
        .log_for(&path)
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=5000-".to_string()), None]);
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_always(&path, Fault::Status(404));
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("/download/v1.31.2%2Bk3s1/k3s"));
    assert!(err.hint().unwrap().contains("version exists"));
    assert_eq!(f.mirror.requests(&path), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_once(&path, Fault::Status(503));
    f.mirror.fault_once(&path, Fault::Status(502));
    f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(f.mirror.requests(&path), 3);
    // Past the tries, the last error is reported.
    let f = fixture().await;
    f.mirror
        .fault_always(&asset_path(V, BIN), Fault::Status(503));
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(f.mirror.requests(&asset_path(V, BIN)), 3);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_always(&path, Fault::Stall { after: 1000 });
    let started = Instant::now();
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(f.mirror.requests(&path), 3);
    // Each try got 1000 more bytes and kept them.
    assert_eq!(std::fs::metadata(f.partial(BIN)).unwrap().len(), 3000);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let f = fixture().await;
    f.mirror
        .fault_always(&asset_path(V, SUMS), Fault::StallHeaders);
    let started = Instant::now();
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    // A server that answers nothing is a timeout, not a missing connection.
    assert!(matches!(err, ArtifactError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("sha256sum-amd64.txt"), "{err}");
    assert_eq!(f.mirror.requests(&asset_path(V, SUMS)), 3);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn offline_without_a_cache_lists_what_is_missing() {
    let f = fixture().await;
    let err = f.ensure(&f.offline(), true).await.unwrap_err();
    match &err {
        ArtifactError::NotCached {
            version,
            arch,
            missing,
            cause,
            ..
        } => {
            assert_eq!(version, V);
            assert_eq!(arch, "amd64");
            assert_eq!(
                missing,
                &vec![SUMS.to_string(), BIN.to_string(), AIRGAP.to_string()]
            );
            assert!(cause.is_none());
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("`v1.31.2+k3s1`") && text.contains("`k3s-airgap-images-amd64.tar.zst`"),
        "{text}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("timonel cache download --kubernetes-version v1.31.2+k3s1"),
        "{hint}"
    );
    assert!(hint.contains("~/.timonel/cache"), "{hint}");
    assert_eq!(f.mirror.total_requests(), 0);

    // With the binary cached but not the airgap tarball, only the tarball is missing.
    f.ensure(&f.sources(), false).await.unwrap();
    let err = f.ensure(&f.offline(), true).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::NotCached { missing, .. } if missing == &vec![AIRGAP.to_string()]),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_falls_back_to_the_cache() {
    let f = fixture().await;
    f.ensure(&f.sources(), false).await.unwrap();
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let unreachable = Sources {
        binary_mirror: Some(format!("http://127.0.0.1:{port}/download").parse().unwrap()),
        ..f.sources()
    };
    f.ensure(&unreachable, false).await.unwrap();
    let err = f.ensure(&unreachable, true).await.unwrap_err();
    match &err {
        ArtifactError::NotCached {
            cause: Some(cause),
            missing,
            ..
        } => {
            assert!(
                matches!(**cause, ArtifactError::Unreachable { .. }),
                "{cause:?}"
            );
            assert_eq!(missing, &vec![AIRGAP.to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_tampered_cache_file_is_fetched_again() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.ensure(&f.sources(), false).await.unwrap();
    // Different size.
    std::fs::write(f.cached(BIN), b"not k3s").unwrap();
    let got = f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(&got.binary).unwrap(), f.binary);
    assert_eq!(f.mirror.requests(&path), 2);
    // Same size, different content: the changed mtime triggers a rehash.
    let mut evil = f.binary.clone();
    evil[1234] ^= 1;
    std::fs::write(f.cached(BIN), &evil).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.cached(BIN))
        .unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    drop(file);
    f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(&got.binary).unwrap(), f.binary);
    assert_eq!(f.mirror.requests(&path), 3);
    // A verified file that is merely touched is rehashed, found good, and kept.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.cached(BIN))
        .unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    drop(file);
    f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(f.mirror.requests(&path), 3);
}

#[tokio::test]
async fn a_file_mirror_works_without_http() {
    let f = fixture().await;
    let sources = Sources {
        binary_mirror: Some(url::Url::from_directory_path(&f.release).unwrap()),
        network: fast(),
        ..Sources::default()
    };
    let got = f.ensure(&sources, true).await.unwrap();
    assert_eq!(std::fs::read(got.binary).unwrap(), f.binary);
    assert_eq!(f.mirror.total_requests(), 0);
    // A file mirror with a corrupt file fails the same way.
    let f2 = fixture().await;
    std::fs::write(f2.release.join(V).join(BIN), b"corrupt").unwrap();
    let sources = Sources {
        binary_mirror: Some(url::Url::from_directory_path(&f2.release).unwrap()),
        ..Sources::default()
    };
    let err = f2.ensure(&sources, false).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!f2.partial(BIN).exists());
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_before_any_request() {
    let f = fixture().await;
    let sources = Sources {
        binary_mirror: Some("http://mirror.example.invalid/k3s".parse().unwrap()),
        ..f.sources()
    };
    let err = f.ensure(&sources, false).await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::InsecureMirror { .. }),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("--insecure-mirror"));
    let err = resolve_version(&f.cache, &sources, &VersionSpec::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::InsecureMirror { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn channels_resolve_through_the_redirect() {
    let f = fixture().await;
    f.mirror.set_channel("stable", "v1.31.2+k3s1");
    f.mirror.set_channel("latest", "v1.32.4+k3s2");
    f.mirror.set_channel("v1.31", "v1.31.5+k3s1");
    f.mirror.set_channel("v1.32", "v1.32.4+k3s2");
    let s = f.sources();
    let resolve = |spec: &str| {
        let spec: VersionSpec = spec.parse().unwrap();
        let (cache, s) = (f.cache.clone(), s.clone());
        async move { resolve_version(&cache, &s, &spec).await }
    };
    let r = resolve("stable").await.unwrap();
    assert_eq!(r.version, version("v1.31.2+k3s1"));
    assert_eq!(r.note, None);
    assert_eq!(f.mirror.requests(&channel_path("stable")), 1);
    assert_eq!(
        resolve("latest").await.unwrap().version,
        version("v1.32.4+k3s2")
    );
    assert_eq!(
        resolve("v1.31").await.unwrap().version,
        version("v1.31.5+k3s1")
    );
    // A Kubernetes version that is its channel's latest.
    let r = resolve("v1.32.4").await.unwrap();
    assert_eq!((r.version, r.note), (version("v1.32.4+k3s2"), None));
    // One that is not: its first k3s build, with a note saying so.
    let r = resolve("v1.31.2").await.unwrap();
    assert_eq!(r.version, version("v1.31.2+k3s1"));
    let note = r.note.unwrap();
    assert!(
        note.contains("v1.31.5+k3s1") && note.contains("first k3s build"),
        "{note}"
    );
    // The redirect is not followed: no request leaves for github.com.
    assert_eq!(f.mirror.requests(CHANNELS_PATH), 0);
}

#[tokio::test]
async fn an_unknown_channel_lists_the_known_ones() {
    let f = fixture().await;
    f.mirror.set_channel("stable", "v1.31.2+k3s1");
    f.mirror.set_channel("latest", "v1.32.4+k3s2");
    let err = resolve_version(&f.cache, &f.sources(), &"stabel".parse().unwrap())
        .await
        .unwrap_err();
    match &err {
        ArtifactError::UnknownChannel { channel, known, .. } => {
            assert_eq!(channel, "stabel");
            assert_eq!(known, &vec!["latest".to_string(), "stable".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("`stabel`"));
    assert!(err.hint().unwrap().contains("latest, stable"));
    assert_eq!(f.mirror.requests(&channel_path("stabel")), 1);
    assert_eq!(f.mirror.requests(CHANNELS_PATH), 1);
    // Fetching the list remembered every channel in it: `latest` now resolves offline.
    let r = resolve_version(&f.cache, &f.offline(), &"latest".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.version, version("v1.32.4+k3s2"));
}

#[tokio::test]
async fn channels_resolve_from_the_cache_when_the_server_fails() {
    let f = fixture().await;
    f.mirror.set_channel("stable", "v1.31.2+k3s1");
    let stable: VersionSpec = "stable".parse().unwrap();
    // Nothing cached yet and the server answers 503: a clear error.
    f.mirror
        .fault_always(&channel_path("stable"), Fault::Status(503));
    let err = resolve_version(&f.cache, &f.sources(), &stable)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChannelUnavailable { .. }),
        "{err:?}"
    );
    assert_eq!(f.mirror.requests(&channel_path("stable")), 3);
    assert!(err.hint().unwrap().contains("--kubernetes-version"));
    // Once resolved, a later 503 uses the remembered answer and says it may be stale.
    f.mirror.clear_faults();
    resolve_version(&f.cache, &f.sources(), &stable)
        .await
        .unwrap();
    f.mirror.set_channel("stable", "v1.99.0+k3s1");
    f.mirror
        .fault_always(&channel_path("stable"), Fault::Status(503));
    let r = resolve_version(&f.cache, &f.sources(), &stable)
        .await
        .unwrap();
    assert_eq!(r.version, version("v1.31.2+k3s1"));
    assert!(r.note.unwrap().contains("may be stale"));
    // Offline: no request at all.
    let before = f.mirror.total_requests();
    let r = resolve_version(&f.cache, &f.offline(), &stable)
        .await
        .unwrap();
    assert_eq!(r.version, version("v1.31.2+k3s1"));
    assert_eq!(f.mirror.total_requests(), before);
    let err = resolve_version(&f.cache, &f.offline(), &"latest".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChannelNotCached { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_versions_are_refused_before_any_request() {
    let f = fixture().await;
    for bad in ["1.31", "v1.31.2+k3s", "v1.32.4-rc1", "Stable"] {
        let err = bad.parse::<VersionSpec>().unwrap_err();
        assert!(
            err.to_string().starts_with("invalid Kubernetes version"),
            "{err}"
        );
        assert!(err.hint().is_some());
    }
    assert_eq!(f.mirror.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_fetching_the_same_file_end_with_one_good_file() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_always(
        &path,
        Fault::Slow {
            chunk: 16 * 1024,
            delay: Duration::from_millis(20),
        },
    );
    let a = ArtifactCache::new(f.cache.root());
    let b = ArtifactCache::new(f.cache.root());
    let s = f.sources();
    let v = version(V);
    let (ra, rb) = tokio::join!(
        ensure_k3s(&a, &s, &v, Arch::Amd64, false, &SilentReporter),
        ensure_k3s(&b, &s, &v, Arch::Amd64, false, &SilentReporter),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.binary, rb.binary);
    assert_eq!(std::fs::read(&ra.binary).unwrap(), f.binary);
    assert_eq!(f.mirror.requests(&path), 1);
    assert_eq!(f.mirror.requests(&asset_path(V, SUMS)), 1);
    assert!(!f.partial(BIN).exists());
}

const CHILD_ROOT: &str = "TIMONEL_TEST_CHILD_CACHE";
const CHILD_MIRROR: &str = "TIMONEL_TEST_CHILD_MIRROR";

/// Run by `two_processes_fetching_the_same_file_end_with_one_good_file` in child processes.
#[tokio::test]
#[ignore = "helper: runs only as a child process of another test"]
async fn child_process_fetch() {
    let (Ok(root), Ok(mirror)) = (std::env::var(CHILD_ROOT), std::env::var(CHILD_MIRROR)) else {
        return;
    };
    let sources = Sources {
        binary_mirror: Some(mirror.parse().unwrap()),
        network: fast(),
        ..Sources::default()
    };
    let report = RecordingReporter::default();
    let got = ensure_k3s(
        &ArtifactCache::new(root),
        &sources,
        &version(V),
        Arch::Amd64,
        false,
        &report,
    )
    .await
    .unwrap();
    println!("CHILD-STEPS {:?}", report.steps());
    println!("CHILD-OK {}", got.binary_sha256);
}

#[tokio::test]
async fn two_processes_fetching_the_same_file_end_with_one_good_file() {
    let f = fixture().await;
    let path = asset_path(V, BIN);
    f.mirror.fault_always(
        &path,
        Fault::Slow {
            chunk: 16 * 1024,
            delay: Duration::from_millis(25),
        },
    );
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        tokio::process::Command::new(&exe)
            .args([
                "--exact",
                "child_process_fetch",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROOT, f.cache.root())
            .env(CHILD_MIRROR, f.mirror.download_base().as_str())
            .kill_on_drop(true)
            .output()
    };
    let (a, b) = tokio::join!(spawn(), spawn());
    let mut waited = 0;
    for out in [a.unwrap(), b.unwrap()] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        waited += usize::from(stdout.contains("waiting for another timonel process"));
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("CHILD-OK {}", sha256_hex(&f.binary))),
            "{stdout}"
        );
    }
    // Whether the two actually overlapped depends on scheduling; the outcome must not.
    eprintln!("children that waited for the other's lock: {waited}");
    assert_eq!(std::fs::read(f.cached(BIN)).unwrap(), f.binary);
    assert_eq!(f.mirror.requests(&path), 1);
    assert_eq!(f.mirror.requests(&asset_path(V, SUMS)), 1);
}

#[tokio::test]
async fn cache_list_download_and_clean() {
    let f = fixture().await;
    let v2 = "v1.30.6+k3s1";
    publish(&f.release, v2, &[(BIN, &content(9, 4096))]);
    f.mirror.set_channel("v1.30", v2);
    let s = f.sources();
    let d = commands::download(
        &f.cache,
        &s,
        &V.parse().unwrap(),
        Arch::Amd64,
        true,
        &SilentReporter,
    )
    .await
    .unwrap();
    assert!(d.artifacts.airgap.is_some());
    let d2 = commands::download(
        &f.cache,
        &s,
        &"v1.30".parse().unwrap(),
        Arch::Amd64,
        false,
        &SilentReporter,
    )
    .await
    .unwrap();
    assert_eq!(d2.version, version(v2));

    let list = commands::list(&f.cache).await.unwrap();
    let names: Vec<String> = list.iter().map(|c| c.version.to_string()).collect();
    assert_eq!(names, vec![V.to_string(), v2.to_string()]);
    let first = &list[0];
    assert!(first.last_used.is_some());
    assert!(first.size >= (f.binary.len() + f.airgap.len()) as u64);
    let assets: Vec<&str> = first.arches[0]
        .assets
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(assets, vec![BIN, AIRGAP, SUMS]);
    assert_eq!(
        first.arches[0].assets[0].sha256.as_deref(),
        Some(sha256_hex(&f.binary).as_str())
    );
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json[0]["version"], V);

    let in_use = BTreeSet::from([version(V)]);
    let report = commands::clean(&f.cache, &in_use).await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].version, version(v2));
    assert!(report.freed >= 4096);
    assert_eq!(report.kept.len(), 1);
    assert!(!f.cache.version_dir(&version(v2)).exists());
    assert!(f.cached(BIN).exists());
    let _ = &f.tmp;
}

/// Where the redirect tests send downloads: a host that cannot resolve (`.invalid`), so a
/// client that followed the redirect would fail with a lookup error instead of the refusal.
const FOREIGN: &str = "http://timonel-redirect-test.invalid/download";

fn refused_redirect_to(err: &ArtifactError) -> String {
    match err {
        ArtifactError::RedirectRefused { refusal, .. } => refusal.to.to_string(),
        other => panic!("expected a refused redirect, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_of_the_binary_to_plain_http_elsewhere_is_refused() {
    let f = fixture().await;
    let target = format!("{FOREIGN}/{V}/{BIN}");
    f.mirror
        .fault_always(&asset_path(V, BIN), Fault::Redirect(target.clone()));
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    let to = refused_redirect_to(&err);
    assert!(
        to.starts_with("http://timonel-redirect-test.invalid/"),
        "{to}"
    );
    // The message names the URL asked for and, in its cause, the refused one and why.
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        err.to_string().contains("/download/v1.31.2%2Bk3s1/k3s") && cause.contains(&to),
        "{err} / {cause}"
    );
    assert!(
        cause.contains("plain http to a host other than this machine"),
        "{cause}"
    );
    assert!(err.hint().unwrap().contains("--insecure-mirror"));
    // Refused for good: not retried, nothing kept.
    assert_eq!(f.mirror.requests(&asset_path(V, BIN)), 1);
    assert!(!f.cached(BIN).exists() && !f.partial(BIN).exists());
}

#[tokio::test]
async fn a_redirect_of_the_checksum_file_to_plain_http_elsewhere_is_refused() {
    let f = fixture().await;
    f.mirror.fault_always(
        &asset_path(V, SUMS),
        Fault::Redirect(format!("{FOREIGN}/{V}/{SUMS}")),
    );
    let err = f.ensure(&f.sources(), false).await.unwrap_err();
    let to = refused_redirect_to(&err);
    assert!(to.ends_with(&format!("/{SUMS}")), "{to}");
    assert_eq!(f.mirror.requests(&asset_path(V, BIN)), 0);
    assert!(!f.cached(BIN).exists());
}

#[tokio::test]
async fn a_redirect_from_loopback_to_loopback_is_followed() {
    let f = fixture().await;
    let other = Mirror::start(&f.release).await;
    let target = format!("{}/v1.31.2%2Bk3s1/{BIN}", other.download_base());
    f.mirror
        .fault_always(&asset_path(V, BIN), Fault::Redirect(target));
    let got = f.ensure(&f.sources(), false).await.unwrap();
    assert_eq!(std::fs::read(got.binary).unwrap(), f.binary);
    assert_eq!(f.mirror.requests(&asset_path(V, BIN)), 1);
    assert_eq!(other.requests(&asset_path(V, BIN)), 1);
}
