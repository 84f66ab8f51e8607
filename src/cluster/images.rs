//! `timonel image load`: images from the host's Docker daemon (`docker save`) or from tar
//! archives, into the containerd of every running node (`k3s ctr -n k8s.io images import`).
//!
//! The tar is written once to a host file, copied into each node (streamed from disk, never
//! held in memory) under [`IMPORT_DIR`], imported from there and removed. Nodes are loaded in
//! parallel.
//!
//! Skipping: `images.json` in the profile folder records, per node, what was imported (the
//! Docker image ID or the archive's sha256, and the image names containerd reported). A load is
//! skipped when the record matches *and* `ctr images ls -q` in the node still lists every
//! recorded name, so a recreated node or a removed image is loaded again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use timonel_driver::{Cmd, FilePlacement, MachineName, NodeAccess};
use timonel_driver_docker::DockerDriver;
use tokio::io::AsyncWriteExt;

use super::ctx::Ctx;
use crate::distro::k3s;
use crate::error::UserError;
use crate::profile::now_unix;

/// Where tars are placed in a node for the import (not k3s's airgap folder, which k3s imports
/// by itself on start).
pub const IMPORT_DIR: &str = "/var/lib/rancher/k3s/agent/images-import";
/// The record of what was imported, in the profile folder.
pub const RECORD_FILE: &str = "images.json";
/// An import of hundreds of MB can take minutes.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the user named: an image in the host's Docker daemon, or a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Docker(String),
    Archive(PathBuf),
}

impl ImageSource {
    /// A path to an existing file is an archive; anything else an image reference.
    pub fn classify(arg: &str) -> Self {
        let path = Path::new(arg);
        if path.is_file() {
            Self::Archive(path.to_path_buf())
        } else {
            Self::Docker(arg.to_string())
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Docker(r) => r.clone(),
            Self::Archive(p) => p.display().to_string(),
        }
    }
}

/// One image imported into one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// The reference or archive path given.
    pub source: String,
    /// The Docker image ID, or `sha256:<hex>` of the archive.
    pub key: String,
    /// sha256 of the tar that was streamed into the node.
    pub tar_sha256: String,
    /// The names containerd reported.
    pub names: Vec<String>,
    pub imported_at: u64,
}

/// `images.json`: node → what was imported into it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecords {
    #[serde(default)]
    pub nodes: BTreeMap<String, Vec<ImportRecord>>,
}

impl ImportRecords {
    fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        crate::fsutil::atomic_write(path, &text, 0o600)
            .with_context(|| format!("cannot record the loaded images in `{}`", path.display()))
    }

    /// The record of `source` with `key` in `node`, if any.
    pub fn find(&self, node: &str, source: &ImageSource, key: &str) -> Option<&ImportRecord> {
        self.nodes.get(node)?.iter().find(|r| {
            r.key == key
                && match source {
                    // The same image ID under another tag is another set of names.
                    ImageSource::Docker(reference) => &r.source == reference,
                    ImageSource::Archive(_) => true,
                }
        })
    }

    fn put(&mut self, node: &str, record: ImportRecord) {
        let list = self.nodes.entry(node.to_string()).or_default();
        list.retain(|r| {
            !(r.source == record.source || r.key == record.key && r.names == record.names)
        });
        list.push(record);
    }
}

/// Whether a recorded import is still in the node (every name listed by `ctr images ls -q`).
pub fn still_present(record: &ImportRecord, listed: &str) -> bool {
    !record.names.is_empty()
        && record
            .names
            .iter()
            .all(|n| listed.lines().any(|l| l.trim() == n))
}

/// The image names in `ctr images import` output (`unpacking <name> (sha256:<hex>)...done`).
pub fn imported_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("unpacking "))
        .filter_map(|rest| rest.split(" (sha256:").next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// What happened to one image in one node.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    pub node: String,
    pub image: String,
    /// `imported`, `skipped` (already there) or `failed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar_sha256: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A source resolved to its key (and, once needed, to a tar file on the host).
struct Resolved {
    source: ImageSource,
    key: String,
    tar: Option<HostTar>,
}

struct HostTar {
    path: PathBuf,
    sha256: String,
    /// Removes the exported file when dropped (archives given by the user are not ours).
    _temp: Option<tempfile::TempPath>,
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    crate::artifact::checksum::hash_file(path).map(|(hex, _)| hex)
}

async fn hash_archive(path: &Path) -> anyhow::Result<String> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&p))
        .await?
        .with_context(|| format!("cannot read the archive `{}`", path.display()))
}

/// Writes `docker save <reference>` to a temp file in `dir`, hashing it on the way.
async fn export(docker: &DockerDriver, reference: &str, dir: &Path) -> anyhow::Result<HostTar> {
    let temp = tempfile::Builder::new()
        .prefix(".image-")
        .suffix(".tar")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&temp).await?;
    let mut hasher = sha2::Sha256::new();
    let mut stream = docker.export_image(reference).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(HostTar {
        path: temp.to_path_buf(),
        sha256: hex::encode(hasher.finalize()),
        _temp: Some(temp),
    })
}

async fn list_images(access: &dyn NodeAccess, k3s_bin: &str) -> String {
    let cmd = Cmd::new(k3s_bin).args(["ctr", "-n", "k8s.io", "images", "ls", "-q"]);
    access.run(&cmd).await.map(|o| o.stdout).unwrap_or_default()
}

/// Copies the tar into the node, imports it, removes it. Returns the imported names.
async fn import_into(
    access: &dyn NodeAccess,
    tar: &HostTar,
    k3s_bin: &str,
) -> anyhow::Result<Vec<String>> {
    let path = format!("{IMPORT_DIR}/{}.tar", tar.sha256);
    access
        .copy_in(&[FilePlacement::host_file(&path, 0o600, &tar.path)])
        .await?;
    let cmd = Cmd::new(k3s_bin)
        .args(["ctr", "-n", "k8s.io", "images", "import", &path])
        .timeout(IMPORT_TIMEOUT);
    let imported = access.run(&cmd).await;
    // Remove the copy; a node without `rm` gets it emptied instead.
    if access
        .run(&Cmd::new("rm").args(["-f", &path]))
        .await
        .is_err()
    {
        let _ = access
            .copy_in(&[FilePlacement::bytes(&path, 0o600, Vec::new())])
            .await;
    }
    let out = imported?;
    let names = imported_names(&out.stdout);
    if names.is_empty() {
        return Err(anyhow!(
            "`ctr images import` reported no image (output: {})",
            out.stdout.trim()
        ));
    }
    Ok(names)
}

/// Loads every source into every running node of the profile in `ctx`.
pub async fn load(ctx: &Ctx, args: &[String]) -> anyhow::Result<Vec<LoadRow>> {
    let _lock = ctx.lock_profile()?;
    let profile = ctx.store.load(&ctx.profile)?;
    let name = profile.name.clone();
    let ops = super::node::ops(ctx.driver_for(&profile)?, &ctx.home);
    let driver = ops.driver().clone();
    // VM and machine nodes have k3s where install.sh puts it, containers where the image does.
    let k3s_bin = k3s::binary_path(driver.capabilities().nodes);

    let running = running_nodes(ctx, &profile, driver.as_ref()).await?;
    // The host's Docker daemon, where images given by name come from.
    let mut docker: Option<Arc<DockerDriver>> = None;
    let mut sources = resolve_sources(args, &mut docker).await?;

    // What is already in each node.
    let (ops, profile_ref) = (ops.as_ref(), &profile);
    let listed = futures_util::future::join_all(running.iter().map(|node| async move {
        let Some(record) = profile_ref.node(node.as_str()) else {
            return (None, String::new());
        };
        match ops
            .access(profile_ref, record, Duration::from_secs(60))
            .await
        {
            Ok(a) => {
                let listed = list_images(a.as_ref(), k3s_bin).await;
                (Some(a), listed)
            }
            Err(_) => (None, String::new()),
        }
    }))
    .await;
    let record_path = ctx.store.dir(&name).join(RECORD_FILE);
    let mut records = ImportRecords::load(&record_path);
    // Per node: the indexes of the sources to import.
    let mut todo: Vec<Vec<usize>> = vec![Vec::new(); running.len()];
    let mut rows = Vec::new();
    for (n, node) in running.iter().enumerate() {
        for (i, s) in sources.iter().enumerate() {
            let present = records
                .find(node.as_str(), &s.source, &s.key)
                .filter(|r| still_present(r, &listed[n].1));
            match present {
                Some(r) => rows.push(LoadRow {
                    node: node.to_string(),
                    image: s.source.label(),
                    result: "skipped".into(),
                    tar_sha256: Some(r.tar_sha256.clone()),
                    names: r.names.clone(),
                    error: None,
                }),
                None => todo[n].push(i),
            }
        }
    }

    // Export from Docker what some node needs.
    for (i, source) in sources.iter_mut().enumerate() {
        if source.tar.is_some() || !todo.iter().any(|t| t.contains(&i)) {
            continue;
        }
        if let (ImageSource::Docker(reference), Some(d)) = (&source.source, docker.as_ref()) {
            let step = ctx
                .printer
                .step(&format!("exporting {reference} from Docker"));
            let tar = export(d, reference, &ctx.store.dir(&name))
                .await
                .with_context(|| format!("cannot export image `{reference}` from Docker"))?;
            step.finish(&format!(
                "Exported {reference} (sha256:{})",
                short(&tar.sha256)
            ));
            source.tar = Some(tar);
        }
    }

    // Import, nodes in parallel, images in order within a node.
    let step = ctx.printer.step(&format!(
        "loading {} image(s) into {} node(s)",
        sources.len(),
        running.len()
    ));
    let sources = &sources;
    let results = futures_util::future::join_all(running.iter().zip(listed).zip(&todo).map(
        |((node, (access, _)), todo)| async move {
            let mut out = Vec::new();
            for &i in todo {
                let s = &sources[i];
                let result = match (&access, &s.tar) {
                    (Some(a), Some(tar)) => import_into(a.as_ref(), tar, k3s_bin).await,
                    (None, _) => Err(anyhow!("cannot reach the node")),
                    (_, None) => Err(anyhow!("the image was not exported")),
                };
                out.push((node.clone(), i, result));
            }
            out
        },
    ))
    .await;
    drop(step);
    record_results(
        results.into_iter().flatten(),
        sources,
        &mut records,
        &mut rows,
    );
    records.save(&record_path)?;
    rows.sort_by(|a, b| (&a.node, &a.image).cmp(&(&b.node, &b.image)));
    Ok(rows)
}

/// The profile's running nodes; the others are named in a warning.
async fn running_nodes(
    ctx: &Ctx,
    profile: &crate::profile::Profile,
    driver: &dyn timonel_driver::Driver,
) -> anyhow::Result<Vec<MachineName>> {
    let name = &profile.name;
    let mut running: Vec<MachineName> = Vec::new();
    for node in &profile.nodes {
        match driver.state(&node.name).await {
            Ok(s) if s.is_running() => running.push(node.name.clone()),
            Ok(s) => ctx.printer.warn(&format!(
                "node {} is {s}: not loaded (images go into running nodes only)",
                node.name
            )),
            Err(e) => ctx
                .printer
                .warn(&format!("node {}: {e}; not loaded", node.name)),
        }
    }
    if running.is_empty() {
        return Err(UserError::new(
            format!("no node of profile `{name}` is running"),
            format!("start it with `timonel start -p {name}`, then load the images"),
        )
        .into());
    }
    Ok(running)
}

/// Each source with its key: the Docker image ID, or the archive's sha256. `docker` is
/// connected when an image is given by name.
async fn resolve_sources(
    args: &[String],
    docker: &mut Option<Arc<DockerDriver>>,
) -> anyhow::Result<Vec<Resolved>> {
    let mut sources = Vec::new();
    for arg in args {
        let source = ImageSource::classify(arg);
        let resolved = match &source {
            ImageSource::Archive(path) => {
                let sha = hash_archive(path).await?;
                Resolved {
                    key: format!("sha256:{sha}"),
                    tar: Some(HostTar {
                        path: path.clone(),
                        sha256: sha,
                        _temp: None,
                    }),
                    source,
                }
            }
            ImageSource::Docker(reference) => {
                let d = docker.get_or_insert_with(|| Arc::new(DockerDriver::connect()));
                let image = d
                    .host_image(reference)
                    .await
                    .map_err(|e| {
                        anyhow::Error::new(e).context(format!(
                            "cannot read image `{reference}` from the host's Docker daemon"
                        ))
                    })?
                    .ok_or_else(|| {
                        UserError::new(
                            format!("`{reference}` is neither a file nor an image in the host's Docker daemon"),
                            "build or pull it first (`docker images` lists what is there), or give the path of a `docker save` archive",
                        )
                    })?;
                Resolved {
                    key: image.id,
                    tar: None,
                    source,
                }
            }
        };
        sources.push(resolved);
    }
    Ok(sources)
}

/// One row per import, and the record of what each node now has.
fn record_results(
    results: impl Iterator<Item = (MachineName, usize, anyhow::Result<Vec<String>>)>,
    sources: &[Resolved],
    records: &mut ImportRecords,
    rows: &mut Vec<LoadRow>,
) {
    for (node, i, result) in results {
        let s = &sources[i];
        let sha = s.tar.as_ref().map(|t| t.sha256.clone());
        match result {
            Ok(names) => {
                records.put(
                    node.as_str(),
                    ImportRecord {
                        source: s.source.label(),
                        key: s.key.clone(),
                        tar_sha256: sha.clone().unwrap_or_default(),
                        names: names.clone(),
                        imported_at: now_unix(),
                    },
                );
                rows.push(LoadRow {
                    node: node.to_string(),
                    image: s.source.label(),
                    result: "imported".into(),
                    tar_sha256: sha,
                    names,
                    error: None,
                });
            }
            Err(e) => rows.push(LoadRow {
                node: node.to_string(),
                image: s.source.label(),
                result: "failed".into(),
                tar_sha256: sha,
                names: Vec::new(),
                error: Some(format!("{e:#}")),
            }),
        }
    }
}

/// The first 12 hex digits, as `docker images` shows IDs.
pub fn short(sha: &str) -> &str {
    let hex = sha.strip_prefix("sha256:").unwrap_or(sha);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, key: &str, names: &[&str]) -> ImportRecord {
        ImportRecord {
            source: source.into(),
            key: key.into(),
            tar_sha256: "abc".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            imported_at: 1,
        }
    }

    #[test]
    fn reads_the_names_ctr_reports() {
        let out = "unpacking docker.io/library/app:1 (sha256:0123abcd)...done\nunpacking ghcr.io/x/y:2 (sha256:ff)...done\n";
        assert_eq!(
            imported_names(out),
            ["docker.io/library/app:1", "ghcr.io/x/y:2"]
        );
        assert!(imported_names("").is_empty());
    }

    #[test]
    fn skips_only_what_the_node_still_has() {
        let mut records = ImportRecords::default();
        records.put(
            "dev",
            record("app:1", "sha256:id1", &["docker.io/library/app:1"]),
        );
        let docker = ImageSource::Docker("app:1".into());
        let r = records.find("dev", &docker, "sha256:id1").unwrap();
        assert!(still_present(r, "docker.io/library/app:1\nother\n"));
        // Removed from containerd (or a recreated node): load again.
        assert!(!still_present(r, "other\n"));
        // Another node, another image ID, another tag of the same ID: not recorded.
        assert!(records.find("dev-m02", &docker, "sha256:id1").is_none());
        assert!(records.find("dev", &docker, "sha256:id2").is_none());
        assert!(records
            .find("dev", &ImageSource::Docker("app:2".into()), "sha256:id1")
            .is_none());
        // A newer import of the same reference replaces the old record.
        records.put(
            "dev",
            record("app:1", "sha256:id2", &["docker.io/library/app:1"]),
        );
        assert_eq!(records.nodes["dev"].len(), 1);
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn files_are_archives_and_the_rest_references() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("app.tar");
        std::fs::write(&tar, b"x").unwrap();
        assert_eq!(
            ImageSource::classify(tar.to_str().unwrap()),
            ImageSource::Archive(tar.clone())
        );
        assert_eq!(
            ImageSource::classify("app:1"),
            ImageSource::Docker("app:1".into())
        );
        assert_eq!(
            sha256_file(&tar).unwrap(),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
