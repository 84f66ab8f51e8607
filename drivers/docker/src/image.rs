//! The node image, built locally from a verified k3s binary: a rootfs laid out like the official
//! `rancher/k3s` image, streamed into Docker's image import. Never pulled.
//!
//! Why import (`POST /images/create?fromSrc=-`) rather than `docker load` of a generated image
//! tarball: import takes a plain rootfs tar that can be written in one pass while the 70 MB
//! binary streams from disk, and the daemon computes the layer digest and the config itself;
//! `load` would need the layer's digest in a config written before or after the layer, i.e. two
//! passes or a buffered layer. The image config (entrypoint, env, volumes, labels) comes from
//! the import's `changes`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use timonel_driver::{DriverError, NodeImageSource, Reporter};

use crate::archive::{append_dir, append_file, tar_stream, writer_failure, TarStream};
use crate::client::{error_text, is_not_found, DockerDriver};
use crate::{LABEL_AIRGAP_SHA256, LABEL_IMAGE, LABEL_K3S_SHA256, LABEL_K3S_VERSION};

/// The repository of node images.
pub const NODE_IMAGE_REPO: &str = "timonel/k3s";

/// The directories of the rootfs, with their modes (parents first).
pub const ROOTFS_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("bin/aux", 0o755),
    ("etc", 0o755),
    ("etc/rancher", 0o755),
    ("etc/rancher/k3s", 0o755),
    ("etc/rancher/node", 0o700),
    ("etc/ssl", 0o755),
    ("etc/ssl/certs", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("sbin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/log", 0o755),
    ("var/lib", 0o755),
    ("var/lib/cni", 0o755),
    ("var/lib/kubelet", 0o755),
    ("var/lib/rancher", 0o755),
    ("var/lib/rancher/k3s", 0o755),
];

/// The image's configuration, as `changes` of the import (the rancher/k3s Dockerfile's).
fn image_changes(version: &str, sha256: &str, airgap_sha256: &str) -> Vec<String> {
    vec![
        r#"ENTRYPOINT ["/bin/k3s"]"#.into(),
        r#"CMD ["agent"]"#.into(),
        "ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin:/bin/aux".into(),
        "ENV CRI_CONFIG_FILE=/var/lib/rancher/k3s/agent/etc/crictl.yaml".into(),
        r#"VOLUME ["/var/lib/kubelet", "/var/lib/rancher/k3s", "/var/lib/cni", "/var/log"]"#.into(),
        // One label per instruction: Podman reads `LABEL a="1" b="2"` as one label `a`.
        format!(r#"LABEL {LABEL_IMAGE}="node""#),
        format!(r#"LABEL {LABEL_K3S_VERSION}="{version}""#),
        format!(r#"LABEL {LABEL_K3S_SHA256}="{sha256}""#),
        format!(r#"LABEL {LABEL_AIRGAP_SHA256}="{airgap_sha256}""#),
    ]
}

/// The import request's query with `changes` as one parameter per instruction.
///
/// bollard sends the list as one `changes` parameter joined by newlines. Docker parses that
/// text as a Dockerfile and takes every line; Podman (4.3) takes each `changes` parameter as
/// one instruction, so the joined form becomes a shell-form ENTRYPOINT of the whole text.
/// Both engines take repeated parameters. A newline is `%0A` in the encoded query, and no other
/// parameter of the import carries one.
pub(crate) fn split_changes(query: &str) -> String {
    query
        .split('&')
        .map(|param| match param.strip_prefix("changes=") {
            Some(value) => value
                .split("%0A")
                .map(|change| format!("changes={change}"))
                .collect::<Vec<_>>()
                .join("&"),
            None => param.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A client whose image-import requests carry one `changes` parameter per instruction.
fn import_client(docker: bollard::Docker) -> bollard::Docker {
    docker.with_request_modifier(|mut request| {
        let uri = request.uri().to_string();
        if let Some((base, query)) = uri.split_once('?') {
            if base.ends_with("/images/create") {
                if let Ok(split) = format!("{base}?{}", split_changes(query)).parse() {
                    *request.uri_mut() = split;
                }
            }
        }
        request
    })
}

/// `timonel/k3s:<version>` with `+` (not allowed in tags) turned into `-`.
pub fn node_image_ref(version: &str) -> Result<String, DriverError> {
    let tag = version.replace('+', "-");
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !tag.starts_with(['.', '-']);
    if !valid {
        return Err(DriverError::Parse {
            what: format!("the k3s version `{version}`"),
            message: "is not usable as an image tag".into(),
        });
    }
    Ok(format!("{NODE_IMAGE_REPO}:{tag}"))
}

/// The Mozilla root CAs (webpki-root-certs) as a PEM bundle.
pub(crate) fn ca_bundle() -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = engine.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// The small files of the rootfs: (path, mode, content).
pub(crate) fn rootfs_files(version: &str) -> Vec<(&'static str, u32, Vec<u8>)> {
    let os_release = format!(
        "NAME=\"timonel node\"\nID=timonel\nPRETTY_NAME=\"timonel node (k3s {version})\"\nVERSION=\"{version}\"\nVERSION_ID=\"{version}\"\nHOME_URL=\"https://github.com/timonel\"\n"
    );
    vec![
        (
            "etc/ssl/certs/ca-certificates.crt",
            0o644,
            ca_bundle().into_bytes(),
        ),
        ("etc/os-release", 0o644, os_release.into_bytes()),
        (
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        ),
        ("etc/group", 0o644, b"root:x:0:\n".to_vec()),
    ]
}

/// Where the node image keeps the airgap images tarball: outside the node's volumes, so every
/// node reads the image's one copy.
pub const AIRGAP_STORE: &str = "var/lib/timonel/airgap";
/// k3s's images folder (`${data-dir}/agent/images`), inside the `/var/lib/rancher/k3s` volume:
/// the image holds a symlink there to the tarball in [`AIRGAP_STORE`], which the engine copies
/// into each node's new volume (a symlink, not the tarball). k3s opens what the folder lists,
/// following links.
pub const AIRGAP_LINK_DIR: &str = "var/lib/rancher/k3s/agent/images";

/// The airgap tarball in a rootfs: its file name, size and contents.
pub struct RootfsAirgap<R> {
    pub name: String,
    pub size: u64,
    pub data: R,
}

/// Writes the node rootfs into `b`: the directories, `/bin/k3s` (mode 0755, `size` bytes read
/// from `k3s`), the CA bundle, os-release, passwd and group; with `airgap`, the tarball in
/// [`AIRGAP_STORE`] and its link in [`AIRGAP_LINK_DIR`].
pub fn write_rootfs<W: Write, A: Read>(
    b: &mut tar::Builder<W>,
    k3s: impl Read,
    size: u64,
    version: &str,
    airgap: Option<RootfsAirgap<A>>,
) -> io::Result<()> {
    let mtime = crate::archive::now();
    for (dir, mode) in ROOTFS_DIRS {
        append_dir(b, dir, *mode, mtime)?;
    }
    append_file(b, "bin/k3s", 0o755, size, mtime, k3s)?;
    for (path, mode, data) in rootfs_files(version) {
        append_file(b, path, mode, data.len() as u64, mtime, data.as_slice())?;
    }
    if let Some(airgap) = airgap {
        if airgap.name.is_empty() || airgap.name.contains('/') || airgap.name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a file name", airgap.name),
            ));
        }
        append_dir(b, "var/lib/timonel", 0o755, mtime)?;
        append_dir(b, AIRGAP_STORE, 0o755, mtime)?;
        let stored = format!("{AIRGAP_STORE}/{}", airgap.name);
        append_file(b, &stored, 0o644, airgap.size, mtime, airgap.data)?;
        // k3s makes `agent` 0700 when it is missing; the same here.
        append_dir(b, "var/lib/rancher/k3s/agent", 0o700, mtime)?;
        append_dir(b, AIRGAP_LINK_DIR, 0o755, mtime)?;
        crate::archive::append_symlink(
            b,
            &format!("{AIRGAP_LINK_DIR}/{}", airgap.name),
            &format!("/{stored}"),
            mtime,
        )?;
    }
    Ok(())
}

/// The entries of a rootfs tar: (path, mode, size), for tests and diagnostics.
pub fn rootfs_entries(tar_bytes: &[u8]) -> io::Result<Vec<(String, u32, u64)>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let h = entry.header();
        out.push((
            entry.path()?.to_string_lossy().into_owned(),
            h.mode()?,
            h.size()?,
        ));
    }
    Ok(out)
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hasher.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub(crate) fn file_sha256(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// An image made from a rootfs tar: where it goes, and the config the import gives it.
pub(crate) struct Import<'a> {
    pub repo: &'a str,
    pub tag: &'a str,
    pub message: String,
    pub changes: Vec<String>,
    /// What the tar is written from, for a failure to read it.
    pub source: String,
}

/// Streams the rootfs `tar` (about `size` bytes) into the daemon's image import, reporting
/// progress. A file that could not be read explains a failure better than the daemon's answer.
pub(crate) async fn import_rootfs(
    docker: &bollard::Docker,
    import: Import<'_>,
    tar: TarStream,
    size: u64,
    report: &dyn Reporter,
) -> Result<(), DriverError> {
    let image = format!("{}:{}", import.repo, import.tag);
    // The tag inside `repo`: Podman (4.3) ignores the `tag` parameter of an import and tags
    // `latest`; Docker reads a tag in `repo` the same way.
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(&image)
        .message(&import.message)
        .changes(import.changes)
        .build();
    let mut responses = Box::pin(import_client(docker.clone()).create_image(
        Some(options),
        Some(bollard::body_try_stream(tar.stream)),
        None,
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut failure = None;
    loop {
        tokio::select! {
            item = responses.next() => match item {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => { failure = Some(error_text(&e)); break; }
            },
            _ = tick.tick() => report.progress(tar.written.load(std::sync::atomic::Ordering::Relaxed), Some(size)),
        }
    }
    drop(responses);
    if let Some(e) = writer_failure(tar.writer.await) {
        return Err(DriverError::io(format!("streaming `{}`", import.source), e));
    }
    if let Some(message) = failure {
        return Err(DriverError::backend(
            format!("importing image `{image}`"),
            message,
        ));
    }
    report.progress(size, Some(size));
    Ok(())
}

impl DockerDriver {
    /// The node image for k3s `source.version` (`timonel/k3s:<version>`), built from the
    /// source's binary and airgap tarball when missing or when either sha256 differs from the
    /// ones it was built from. Never pulls.
    pub async fn ensure_node_image(
        &self,
        source: &NodeImageSource<'_>,
        report: &dyn Reporter,
    ) -> Result<String, DriverError> {
        let version = source.version;
        let k3s_binary = source.binary;
        let image = node_image_ref(version)?;
        let docker = self.long_client().await?;
        let sha = known_or_hashed(source.binary_sha256, k3s_binary).await?;
        let airgap_sha = match source.airgap {
            Some(path) => known_or_hashed(source.airgap_sha256, path).await?,
            None => NO_AIRGAP.to_string(),
        };

        let previous = match docker.inspect_image(&image).await {
            Ok(found) => {
                let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
                let built_from = |label: &str| labels.and_then(|l| l.get(label)).cloned();
                if built_from(LABEL_K3S_SHA256).as_ref() == Some(&sha)
                    && built_from(LABEL_AIRGAP_SHA256).as_ref() == Some(&airgap_sha)
                {
                    tracing::debug!(%image, "node image is up to date");
                    return Ok(image);
                }
                let what = if built_from(LABEL_K3S_SHA256).as_ref() == Some(&sha) {
                    "the airgap images changed"
                } else {
                    "the k3s binary changed"
                };
                report.step(&format!("{what}: rebuilding {image}"));
                // Only a previous build of ours is removed after the rebuild.
                let ours =
                    labels.and_then(|l| l.get(LABEL_IMAGE)).map(String::as_str) == Some("node");
                found.id.filter(|_| ours)
            }
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                return Err(DriverError::backend(
                    format!("inspecting image `{image}`"),
                    error_text(&e),
                ))
            }
        };

        report.step(&format!("building node image {image}"));
        let read_err = |path: &Path, e| DriverError::io(format!("reading `{}`", path.display()), e);
        let file = std::fs::File::open(k3s_binary).map_err(|e| read_err(k3s_binary, e))?;
        let size = file.metadata().map_err(|e| read_err(k3s_binary, e))?.len();
        let airgap = match source.airgap {
            Some(path) => {
                let f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
                let len = f.metadata().map_err(|e| read_err(path, e))?.len();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("k3s-airgap-images.tar.zst")
                    .to_string();
                Some(RootfsAirgap {
                    name,
                    size: len,
                    data: f.take(len),
                })
            }
            None => None,
        };
        let total = size + airgap.as_ref().map_or(0, |a| a.size);
        let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
        let reader = HashingReader {
            inner: file.take(size),
            hasher: hasher.clone(),
        };
        let owned_version = version.to_string();
        let tar = tar_stream(move |b| write_rootfs(b, reader, size, &owned_version, airgap));
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        let import = Import {
            repo: NODE_IMAGE_REPO,
            tag,
            message: format!("timonel node image, k3s {version}"),
            changes: image_changes(version, &sha, &airgap_sha),
            source: k3s_binary.display().to_string(),
        };
        import_rootfs(&docker, import, tar, total, report).await?;
        // The binary is hashed as it streams (no second read): a file that changed after it was
        // verified must not pass for the verified one.
        let streamed = hasher
            .lock()
            .map(|h| hex(&h.clone().finalize()))
            .unwrap_or_default();
        if streamed != sha {
            let _ = docker
                .remove_image(
                    &image,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
            return Err(DriverError::Backend {
                op: format!("building image `{image}`"),
                message: format!(
                    "`{}` does not match its sha256 (it changed after it was verified); the image was not kept",
                    k3s_binary.display()
                ),
                hint: Some(format!(
                    "remove `{}` and start again: timonel downloads and verifies it anew",
                    k3s_binary.display()
                )),
            });
        }
        let built = docker.inspect_image(&image).await.map_err(|e| {
            DriverError::backend(format!("inspecting image `{image}`"), error_text(&e))
        })?;
        if let (Some(old), Some(new)) = (previous, built.id) {
            if old != new {
                // The old build is untagged now; remove it unless a container still uses it.
                let opts = RemoveImageOptionsBuilder::default().noprune(false).build();
                let _ = docker.remove_image(&old, Some(opts), None).await;
            }
        }
        Ok(image)
    }
}

/// The value of [`LABEL_AIRGAP_SHA256`] on an image built without airgap images.
pub const NO_AIRGAP: &str = "none";

/// `known` (lower-cased), else the file's sha256, read off the async threads.
async fn known_or_hashed(known: Option<&str>, path: &Path) -> Result<String, DriverError> {
    if let Some(sha) = known {
        return Ok(sha.to_ascii_lowercase());
    }
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || file_sha256(&owned))
        .await
        .map_err(|e| DriverError::backend("hashing a file", e))?
        .map_err(|e| DriverError::io(format!("reading `{}`", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        assert_eq!(
            node_image_ref("v1.31.2+k3s1").unwrap(),
            "timonel/k3s:v1.31.2-k3s1"
        );
        assert!(node_image_ref("v1 2").is_err());
        assert!(node_image_ref("").is_err());
        assert!(node_image_ref("-x").is_err());
    }

    #[test]
    fn rootfs_layout_and_modes() {
        let mut b = tar::Builder::new(Vec::new());
        write_rootfs::<_, &[u8]>(&mut b, &b"\x7fELF-k3s"[..], 8, "v1.31.2+k3s1", None).unwrap();
        let entries = rootfs_entries(&b.into_inner().unwrap()).unwrap();
        let find = |p: &str| entries.iter().find(|e| e.0 == p).cloned();
        assert_eq!(find("bin/k3s"), Some(("bin/k3s".into(), 0o755, 8)));
        assert_eq!(find("bin/aux/").map(|e| e.1), Some(0o755));
        assert_eq!(find("tmp/").map(|e| e.1), Some(0o1777));
        assert_eq!(find("var/tmp/").map(|e| e.1), Some(0o1777));
        for dir in [
            "run/",
            "var/lib/rancher/k3s/",
            "etc/rancher/k3s/",
            "etc/rancher/node/",
        ] {
            assert!(find(dir).is_some(), "{dir} missing");
        }
        for file in [
            "etc/passwd",
            "etc/group",
            "etc/os-release",
            "etc/ssl/certs/ca-certificates.crt",
        ] {
            assert_eq!(find(file).map(|e| e.1), Some(0o644), "{file}");
        }
        // Parents come before children.
        let pos = |p: &str| entries.iter().position(|e| e.0 == p).unwrap();
        assert!(pos("etc/ssl/certs/") < pos("etc/ssl/certs/ca-certificates.crt"));
        assert!(pos("bin/") < pos("bin/k3s"));
    }

    #[test]
    fn ca_bundle_and_os_release() {
        let pem = ca_bundle();
        let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(count > 100, "{count} certificates");
        assert_eq!(count, pem.matches("-----END CERTIFICATE-----").count());
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let files = rootfs_files("v1.31.2+k3s1");
        let os = String::from_utf8(files[1].2.clone()).unwrap();
        assert!(os.contains("NAME=\"timonel node\"") && os.contains("ID=timonel"));
        assert!(os.contains("v1.31.2+k3s1"));
        let changes = image_changes("v1.31.2+k3s1", "abc", NO_AIRGAP);
        assert!(changes.contains(&r#"ENTRYPOINT ["/bin/k3s"]"#.to_string()));
        assert!(changes
            .iter()
            .any(|c| c == "LABEL dev.timonel.k3s-sha256=\"abc\""));
    }

    #[test]
    fn import_changes_go_one_per_parameter() {
        // What bollard encodes: one `changes` joined by newlines (%0A).
        let query = "fromSrc=-&repo=timonel%2Fk3s%3Av1&changes=CMD+%5B%22agent%22%5D%0ALABEL+a%3D%22b%22&platform=";
        assert_eq!(
            split_changes(query),
            "fromSrc=-&repo=timonel%2Fk3s%3Av1&changes=CMD+%5B%22agent%22%5D&changes=LABEL+a%3D%22b%22&platform="
        );
        assert_eq!(split_changes("fromSrc=-"), "fromSrc=-");
    }
}
