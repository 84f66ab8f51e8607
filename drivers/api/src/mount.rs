//! Host folders in nodes (`--mount HOST_DIR:NODE_DIR[:ro]`): what is asked for, checked once,
//! and how each driver can share a folder ([`HostFolders`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A host folder seen at an absolute path in every node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// The folder on the host: absolute, as given (a Windows path keeps its drive letter).
    pub host: PathBuf,
    /// Where the node sees it: an absolute POSIX path, normalised (no `.`, `..`, `//` or
    /// trailing `/`).
    pub node: String,
    /// The node cannot write to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Why a `--mount` was refused. The text says what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("`{0}` is not HOST_DIR:NODE_DIR[:ro] (the node folder is an absolute path after the last `:`)")]
    Syntax(String),
    #[error("the host folder `{0}` is a relative path; give it in full, e.g. `$PWD/{0}`")]
    RelativeHost(String),
    #[error("the host folder `{path}` does not exist")]
    MissingHost { path: String },
    #[error("the host folder `{path}` cannot be read: {reason}")]
    UnreadableHost { path: String, reason: String },
    #[error("the host path `{path}` is not a folder")]
    NotAFolder { path: String },
    #[error("the node folder `{0}` is not an absolute path (it must start with `/`)")]
    RelativeNode(String),
    #[error("the node folder `{path}` {why}")]
    BadNodePath { path: String, why: String },
    #[error("the node folder `{path}` {relation} `{owned}`, which {owner} owns in the node")]
    Reserved {
        path: String,
        relation: &'static str,
        owned: &'static str,
        owner: &'static str,
    },
    #[error("two mounts share the node folder `{0}`")]
    Duplicate(String),
}

/// Node folders that belong to k3s or to the node's own system: a mount may be neither at, in,
/// nor above one (it would hide what k3s or the kernel keeps there).
const OWNED: [(&str, &str); 9] = [
    ("/proc", "the kernel"),
    ("/sys", "the kernel"),
    ("/dev", "the kernel"),
    ("/run", "the node's services"),
    ("/var/run", "the node's services"),
    ("/var/lib/rancher", "k3s"),
    ("/etc/rancher", "k3s"),
    ("/var/lib/kubelet", "the kubelet (in k3s)"),
    ("/boot", "the node's system"),
];

/// System folders a mount may be inside of but neither at nor above.
const SYSTEM: [&str; 9] = [
    "/bin", "/sbin", "/lib", "/lib64", "/usr", "/etc", "/var", "/var/lib", "/tmp",
];

impl Mount {
    /// A mount whose node folder is checked and normalised. The host folder is only checked
    /// for being absolute on this platform; [`Mount::check_host`] looks at the file system.
    pub fn new(host: PathBuf, node: &str, read_only: bool) -> Result<Self, MountError> {
        if host.as_os_str().is_empty() {
            return Err(MountError::Syntax(format!("{}:{node}", host.display())));
        }
        if !host.is_absolute() {
            return Err(MountError::RelativeHost(host.display().to_string()));
        }
        Ok(Self {
            host,
            node: normalise_node(node)?,
            read_only,
        })
    }

    /// Splits `HOST:NODE[:ro|:rw]` without judging the host path, on every platform: the node
    /// folder is what follows the last `:` (a Windows drive letter's colon stays in the host
    /// part: `C:\src:/src:ro`).
    pub fn split(s: &str) -> Result<(String, String, bool), MountError> {
        let syntax = || MountError::Syntax(s.to_string());
        let (rest, read_only) = match s.rsplit_once(':') {
            Some((rest, "ro")) => (rest, true),
            Some((rest, "rw")) => (rest, false),
            _ => (s, false),
        };
        let (host, node) = rest.rsplit_once(':').ok_or_else(syntax)?;
        if host.is_empty() || node.is_empty() {
            return Err(syntax());
        }
        Ok((host.to_string(), node.to_string(), read_only))
    }

    /// Checks that the host folder exists and is a folder (following links).
    pub fn check_host(&self) -> Result<(), MountError> {
        let path = self.host.display().to_string();
        match std::fs::metadata(&self.host) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(MountError::NotAFolder { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(MountError::MissingHost { path })
            }
            Err(e) => Err(MountError::UnreadableHost {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// The name a VM driver gives the `index`th (0-based) shared folder; the guest mounts it
    /// by this name.
    pub fn tag(index: usize) -> String {
        format!("timonel{index}")
    }
}

/// Refuses two mounts on one node folder.
pub fn check_distinct(mounts: &[Mount]) -> Result<(), MountError> {
    for (i, m) in mounts.iter().enumerate() {
        if mounts[..i].iter().any(|o| o.node == m.node) {
            return Err(MountError::Duplicate(m.node.clone()));
        }
    }
    Ok(())
}

impl FromStr for Mount {
    type Err = MountError;
    fn from_str(s: &str) -> Result<Self, MountError> {
        let (host, node, read_only) = Self::split(s)?;
        Self::new(PathBuf::from(host), &node, read_only)
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.node)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// `/a//b/./c/` → `/a/b/c`; refuses `..`, `/` itself, and characters a mount table cannot
/// carry plainly (whitespace, `,`, `:`, `\`, control characters).
fn normalise_node(node: &str) -> Result<String, MountError> {
    let bad = |why: &str| MountError::BadNodePath {
        path: node.to_string(),
        why: why.to_string(),
    };
    if !node.starts_with('/') {
        return Err(MountError::RelativeNode(node.to_string()));
    }
    if node
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ':' | '\\'))
    {
        return Err(bad(
            "has a space, `,`, `:`, `\\` or a control character; use a plain path such as /data",
        ));
    }
    let mut parts = Vec::new();
    for part in node.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("has `..`; give the folder's own path")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("is the node's root; pick a folder such as /data"));
    }
    let path = format!("/{}", parts.join("/"));
    let inside = |p: &str, dir: &str| p == dir || Path::new(p).starts_with(dir);
    for (owned, owner) in OWNED {
        let relation = if path == owned {
            "is"
        } else if inside(&path, owned) {
            "is inside"
        } else if inside(owned, &path) {
            "would cover"
        } else {
            continue;
        };
        return Err(MountError::Reserved {
            path,
            relation,
            owned,
            owner,
        });
    }
    for system in SYSTEM {
        if inside(system, &path) {
            let relation = if path == system { "is" } else { "would cover" };
            return Err(MountError::Reserved {
                path,
                relation,
                owned: system,
                owner: "the node's system",
            });
        }
    }
    Ok(path)
}

/// How a driver shows host folders in its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFolders {
    /// The driver places them at create (a container's bind mounts): nothing else to do.
    AtCreate,
    /// The driver attaches each folder to the VM under [`Mount::tag`]; the guest mounts it.
    Guest(GuestMount),
    /// The driver cannot share host folders.
    Unsupported {
        /// Why, in a sentence.
        why: String,
        /// What to do instead.
        instead: String,
    },
}

/// How a VM guest mounts a folder its hypervisor shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    /// `9p`, `vboxsf`.
    pub fs_type: String,
    /// Mount options besides `ro`/`rw` (comma-separated, may be empty).
    pub options: String,
    /// Kernel modules the guest needs, loaded at every boot.
    pub modules: Vec<String>,
    /// What to tell the user when the guest's kernel lacks them.
    pub missing_modules: String,
}

impl GuestMount {
    /// virtio-9p, as QEMU shares a folder (`<filesystem>` in libvirt).
    pub fn virtio_9p() -> Self {
        Self {
            fs_type: "9p".into(),
            options: "trans=virtio,version=9p2000.L,msize=262144".into(),
            modules: vec!["9p".into(), "9pnet_virtio".into()],
            missing_modules: "the VM's kernel has no 9p support (modules 9p and 9pnet_virtio); boot an image whose kernel has them (the Ubuntu and Debian cloud images do)".into(),
        }
    }

    /// VirtualBox shared folders, mounted with the Guest Additions' (or mainline Linux's)
    /// `vboxsf` file system.
    pub fn vboxsf() -> Self {
        Self {
            fs_type: "vboxsf".into(),
            options: String::new(),
            modules: vec!["vboxsf".into()],
            missing_modules: "the VM's kernel has no `vboxsf` module (VirtualBox's shared-folder file system, from the Guest Additions or the kernel's own driver); install the Guest Additions (or a kernel package that ships vboxsf) in the image and pass it with --vm-image".into(),
        }
    }

    /// The options of one mount, `ro`/`rw` first.
    pub fn options_for(&self, mount: &Mount) -> String {
        let mut o = if mount.read_only { "ro" } else { "rw" }.to_string();
        if !self.options.is_empty() {
            o.push(',');
            o.push_str(&self.options);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_posix_and_windows_forms_on_every_platform() {
        assert_eq!(
            Mount::split("/src:/data").unwrap(),
            ("/src".into(), "/data".into(), false)
        );
        assert_eq!(
            Mount::split("/src:/data:ro").unwrap(),
            ("/src".into(), "/data".into(), true)
        );
        assert_eq!(
            Mount::split("/src:/data:rw").unwrap(),
            ("/src".into(), "/data".into(), false)
        );
        assert_eq!(
            Mount::split(r"C:\Users\me\src:/src").unwrap(),
            (r"C:\Users\me\src".into(), "/src".into(), false)
        );
        assert_eq!(
            Mount::split(r"C:\Users\me\src:/src:ro").unwrap(),
            (r"C:\Users\me\src".into(), "/src".into(), true)
        );
        for bad in ["/src", "/src:", ":/data", "/src:ro", ""] {
            assert!(
                matches!(Mount::split(bad), Err(MountError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_host_folders_are_refused() {
        let err = "src:/data".parse::<Mount>().unwrap_err();
        assert_eq!(err, MountError::RelativeHost("src".into()));
        assert!(err.to_string().contains("relative path"), "{err}");
        // On Windows a drive path is absolute; elsewhere it is a relative name.
        let win = r"C:\src:/src".parse::<Mount>();
        assert_eq!(win.is_ok(), cfg!(windows), "{win:?}");
    }

    #[cfg(unix)]
    #[test]
    fn node_folders_are_normalised() {
        let m: Mount = "/src://data/./x/:ro".parse().unwrap();
        assert_eq!(m.node, "/data/x");
        assert!(m.read_only);
        assert_eq!(m.to_string(), "/src:/data/x:ro");
        assert_eq!(m.to_string().parse::<Mount>().unwrap(), m);
        let m: Mount = "/src:/usr/local/src".parse().unwrap();
        assert_eq!(m.node, "/usr/local/src");
    }

    #[cfg(unix)]
    #[test]
    fn node_folders_k3s_or_the_system_own_are_refused() {
        let refused = |s: &str| s.parse::<Mount>().unwrap_err().to_string();
        let e = refused("/src:/var/lib/rancher/k3s");
        assert!(
            e.contains("is inside `/var/lib/rancher`, which k3s owns"),
            "{e}"
        );
        let e = refused("/src:/etc/rancher");
        assert!(e.contains("is `/etc/rancher`, which k3s owns"), "{e}");
        let e = refused("/src:/var");
        assert!(e.contains("would cover `/var/run`"), "{e}");
        let e = refused("/src:/proc/x");
        assert!(e.contains("the kernel"), "{e}");
        for p in [
            "/run", "/sys", "/dev/shm", "/usr", "/etc", "/", "//", "/tmp",
        ] {
            assert!(
                matches!(
                    format!("/src:{p}").parse::<Mount>(),
                    Err(MountError::Reserved { .. } | MountError::BadNodePath { .. })
                ),
                "{p}"
            );
        }
        assert!(matches!(
            "/src:data".parse::<Mount>(),
            Err(MountError::RelativeNode(_))
        ));
        for p in ["/a b", "/a,b", r"/a\b", "/a/../etc"] {
            assert!(
                matches!(
                    format!("/src:{p}").parse::<Mount>(),
                    Err(MountError::BadNodePath { .. })
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn host_folders_must_exist_and_be_folders() {
        let dir = std::env::temp_dir().join(format!("timonel-mount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let ok = Mount::new(dir.clone(), "/data", false).unwrap();
        assert_eq!(ok.check_host(), Ok(()));
        let missing = Mount::new(dir.join("nope"), "/data", false).unwrap();
        assert!(matches!(
            missing.check_host(),
            Err(MountError::MissingHost { .. })
        ));
        let not_dir = Mount::new(file, "/data", false).unwrap();
        assert!(matches!(
            not_dir.check_host(),
            Err(MountError::NotAFolder { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn duplicates_are_refused_and_serde_is_plain() {
        let a: Mount = "/a:/data".parse().unwrap();
        let b: Mount = "/b:/data/".parse().unwrap();
        assert_eq!(
            check_distinct(&[a.clone(), b]),
            Err(MountError::Duplicate("/data".into()))
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"host":"/a","node":"/data"}"#);
        let ro: Mount =
            serde_json::from_str(r#"{"host":"/a","node":"/data","read_only":true}"#).unwrap();
        assert!(ro.read_only);
        let g = GuestMount::virtio_9p();
        assert_eq!(
            g.options_for(&ro),
            "ro,trans=virtio,version=9p2000.L,msize=262144"
        );
        assert_eq!(GuestMount::vboxsf().options_for(&a), "rw");
    }
}
