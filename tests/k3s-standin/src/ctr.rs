//! `ctr -n k8s.io images import|ls`: records the images of a docker-save / OCI tar in
//! `${data-dir}/agent/standin-images.json` instead of unpacking them into containerd.

use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, Sha256};
use crate::logfmt::now_unix;
use crate::runtime;

pub const IMAGES_FILE: &str = "agent/standin-images.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
    #[serde(rename = "importedAt")]
    pub imported_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ImageStore {
    images: Vec<ImageRecord>,
}

pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("ctr: {e}");
            1
        }
    }
}

fn run_inner(args: &[String]) -> Result<String, String> {
    let mut rest = Vec::new();
    let mut i = 0;
    // Global options: --namespace/-n, --address/-a, --timeout, --debug.
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-n" | "--namespace" | "-a" | "--address" | "--timeout" | "--connect-timeout" => i += 2,
            _ if a.starts_with("--namespace=")
                || a.starts_with("--address=")
                || a.starts_with("-n=") =>
            {
                i += 1
            }
            "--debug" => i += 1,
            _ => {
                rest.extend_from_slice(&args[i..]);
                break;
            }
        }
    }
    let data_dir = runtime::data_dir(runtime::env("K3S_DATA_DIR").as_deref());
    let store_path = data_dir.join(IMAGES_FILE);
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["images" | "image" | "i", "import", opts @ ..] => {
            let mut source = None;
            let mut j = 0;
            while j < opts.len() {
                match opts[j] {
                    "--platform" | "--base-name" | "--index-name" | "--snapshotter" => j += 1,
                    o if o.starts_with('-') && o != "-" => {}
                    o => source = Some(o),
                }
                j += 1;
            }
            let source =
                source.ok_or("ctr images import: a file name (or - for stdin) is required")?;
            let (names, digest, size) = if source == "-" {
                scan_tar(io::stdin().lock())?
            } else {
                let f = std::fs::File::open(source).map_err(|e| format!("open {source}: {e}"))?;
                scan_tar(io::BufReader::new(f))?
            };
            record(&store_path, &names, &digest, size)?;
            Ok(names
                .iter()
                .map(|n| format!("unpacking {n} (sha256:{digest})...done\n"))
                .collect())
        }
        ["images" | "image" | "i", "ls" | "list", opts @ ..] => {
            let store = load(&store_path)?;
            if opts.contains(&"-q") || opts.contains(&"--quiet") {
                Ok(store
                    .images
                    .iter()
                    .map(|i| format!("{}\n", i.name))
                    .collect())
            } else {
                let mut out = String::from("REF TYPE DIGEST SIZE PLATFORMS LABELS\n");
                for i in &store.images {
                    out.push_str(&format!(
                        "{} application/vnd.oci.image.index.v1+json sha256:{} {} linux/amd64 -\n",
                        i.name, i.digest, i.size
                    ));
                }
                Ok(out)
            }
        }
        _ => Err(format!(
            "the k3s stand-in's ctr only implements `images import` and `images ls` (got `{}`)",
            rest.join(" ")
        )),
    }
}

fn load(path: &Path) -> Result<ImageStore, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| format!("corrupt `{}`: {e}", path.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageStore::default()),
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
    }
}

fn record(path: &Path, names: &[String], digest: &str, size: u64) -> Result<(), String> {
    let mut store = load(path)?;
    for name in names {
        store.images.retain(|i| &i.name != name);
        store.images.push(ImageRecord {
            name: name.clone(),
            digest: digest.to_string(),
            size,
            imported_at: now_unix(),
        });
    }
    let bytes = serde_json::to_vec_pretty(&store).map_err(|e| e.to_string())?;
    fsutil::write_atomic(path, &bytes, 0o644)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// containerd's normalisation: `busybox:latest` → `docker.io/library/busybox:latest`.
pub fn normalize(reference: &str) -> String {
    let (first, _) = reference.split_once('/').unwrap_or(("", reference));
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut name = if has_registry {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        name.push_str(":latest");
    }
    name
}

/// Reads a tar stream: returns the image names, the sha256 of the whole stream and its size.
pub fn scan_tar<R: Read>(mut reader: R) -> Result<(Vec<String>, String, u64), String> {
    let mut hasher = Sha256::default();
    let mut total = 0u64;
    let mut read_exact = |buf: &mut [u8], r: &mut R| -> Result<bool, String> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r
                .read(&mut buf[filled..])
                .map_err(|e| format!("reading tar: {e}"))?;
            if n == 0 {
                return if filled == 0 {
                    Ok(false)
                } else {
                    Err("truncated tar".into())
                };
            }
            filled += n;
        }
        hasher.update(buf);
        total += buf.len() as u64;
        Ok(true)
    };
    let mut manifest: Option<Vec<u8>> = None;
    let mut index: Option<Vec<u8>> = None;
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_exact(&mut header, &mut reader)? || header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            let raw = &header[range];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let size = u64::from_str_radix(field(124..136).trim(), 8)
            .map_err(|_| "bad tar header size".to_string())?;
        let kind = header[156];
        let mut name = field(0..100);
        let prefix = field(345..500);
        if !prefix.is_empty() && &header[257..262] == b"ustar" {
            name = format!("{prefix}/{name}");
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        let padded = size.div_ceil(512) * 512;
        let wanted = matches!(
            name.trim_start_matches("./"),
            "manifest.json" | "index.json"
        ) || kind == b'L';
        if wanted && size <= 16 * 1024 * 1024 {
            let mut data = vec![0u8; padded as usize];
            read_exact(&mut data, &mut reader)?;
            data.truncate(size as usize);
            match (kind, name.trim_start_matches("./")) {
                (b'L', _) => {
                    long_name = Some(
                        String::from_utf8_lossy(&data)
                            .trim_end_matches('\0')
                            .to_string(),
                    )
                }
                (_, "manifest.json") => manifest = Some(data),
                _ => index = Some(data),
            }
        } else {
            let mut remaining = padded;
            let mut buf = vec![0u8; 64 * 1024];
            while remaining > 0 {
                let n = remaining.min(buf.len() as u64) as usize;
                read_exact(&mut buf[..n], &mut reader)?;
                remaining -= n as u64;
            }
        }
    }
    // Drain trailing bytes so the digest covers the whole stream.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("reading tar: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let mut names = Vec::new();
    if let Some(m) = manifest {
        let v: serde_json::Value =
            serde_json::from_slice(&m).map_err(|e| format!("bad manifest.json: {e}"))?;
        for entry in v.as_array().into_iter().flatten() {
            for tag in entry["RepoTags"].as_array().into_iter().flatten() {
                if let Some(t) = tag.as_str() {
                    names.push(normalize(t));
                }
            }
        }
    }
    if let Some(ix) = index {
        let v: serde_json::Value =
            serde_json::from_slice(&ix).map_err(|e| format!("bad index.json: {e}"))?;
        for m in v["manifests"].as_array().into_iter().flatten() {
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    ann["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|r| r.contains('/') || r.contains(':'))
                        .map(normalize)
                });
            if let Some(n) = name {
                names.push(n);
            }
        }
    }
    let mut unique = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    if unique.is_empty() {
        return Err("no image names found in the archive (no manifest.json RepoTags or index.json annotations)".into());
    }
    Ok((unique, hasher.finish_hex(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        let size = format!("{:011o}\0", data.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(512 + data.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn reads_docker_save_and_oci_names() {
        let mut tar = tar_entry("blobs/sha256/abc", &[7u8; 1000]);
        tar.extend(tar_entry(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["busybox:latest","ghcr.io/x/y:1"],"Layers":[]}]"#,
        ));
        tar.extend(tar_entry(
            "index.json",
            br#"{"manifests":[{"annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest"}},{"annotations":{"org.opencontainers.image.ref.name":"example.com/app:2"}}]}"#,
        ));
        tar.extend([0u8; 1024]);
        let (names, digest, size) = scan_tar(&tar[..]).unwrap();
        assert_eq!(
            names,
            [
                "docker.io/library/busybox:latest",
                "ghcr.io/x/y:1",
                "example.com/app:2"
            ]
        );
        assert_eq!(digest, fsutil::sha256_hex(&tar));
        assert_eq!(size, tar.len() as u64);
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("rancher/k3s:v1"), "docker.io/rancher/k3s:v1");
        assert_eq!(normalize("localhost:5000/a"), "localhost:5000/a:latest");
    }
}
