//! Step 2, artifacts: the k3s version, its verified binary and airgap images, and the VM base
//! image for VM drivers — all through the artifact cache.

use std::path::{Path, PathBuf};

use timonel_driver::{Driver, NodeKind};

use super::{Install, StartOptions};
use crate::artifact::{self, Arch, ArtifactCache, K3sVersion, Sources, VersionSpec};
use crate::cluster::cancel::Cancel;
use crate::cluster::error::{Error, Result};
use crate::cluster::Ctx;
use crate::error::UserError;

/// What the artifacts step found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetched {
    pub version: String,
    pub install: Install,
    /// VM drivers: the verified base disk.
    pub vm_image: Option<PathBuf>,
    /// The sha256s the checksum file gave the binary and the airgap tarball.
    pub binary_sha256: Option<String>,
    pub airgap_sha256: Option<String>,
}

/// Resolves the version and fetches what the nodes need. With `--node-image`, the image brings
/// its own k3s: nothing is fetched.
pub(super) async fn fetch(
    ctx: &Ctx,
    opts: &StartOptions,
    driver: &dyn Driver,
    nodes: NodeKind,
    arch: Arch,
    cancel: &Cancel,
) -> Result<Fetched> {
    let mut fetched = Fetched {
        version: opts
            .version
            .clone()
            .unwrap_or_else(|| "unknown".to_string()),
        ..Default::default()
    };
    let cache = ArtifactCache::new(ctx.home.cache());
    if opts.node_image.is_none() {
        let spec: VersionSpec = opts.version.as_deref().unwrap_or("stable").parse()?;
        let step = ctx.printer.step("resolving the k3s version");
        // A channel server that never answers must not hold an interrupt until its timeout.
        let resolved = cancel
            .or_cancel(artifact::resolve_version(&cache, &opts.sources, &spec))
            .await??;
        step.finish(&format!("Resolved k3s {}", resolved.version));
        if let Some(note) = &resolved.note {
            ctx.printer.warn(note);
        }
        cancel.check()?;
        let step = ctx
            .printer
            .step(&format!("fetching k3s {}", resolved.version));
        let arts = cancel
            .or_cancel(artifact::ensure_k3s(
                &cache,
                &opts.sources,
                &resolved.version,
                arch,
                opts.preload,
                &ctx.printer,
            ))
            .await??;
        step.finish(&format!("k3s {} ready (sha256 verified)", resolved.version));
        cancel.check()?;
        fetched.version = resolved.version.to_string();
        fetched.binary_sha256 = Some(arts.binary_sha256);
        fetched.airgap_sha256 = arts.airgap_sha256;
        fetched.install = Install {
            binary: Some(arts.binary),
            airgap: arts.airgap,
        };
    }
    if nodes == NodeKind::Vm {
        let image = cancel
            .or_cancel(base_image(
                &cache,
                &opts.sources,
                opts.vm_image.as_deref(),
                driver,
                &ctx.printer,
            ))
            .await??;
        fetched.vm_image = Some(image);
        cancel.check()?;
    }
    Ok(fetched)
}

/// The profile's k3s binary (and airgap images) for `arch`, from the cache: what a node added
/// later installs.
pub(crate) async fn ensure_binary(
    ctx: &Ctx,
    sources: &Sources,
    version: &str,
    arch: Arch,
) -> Result<Install> {
    let cache = ArtifactCache::new(ctx.home.cache());
    let version: K3sVersion = version.parse()?;
    let arts = artifact::ensure_k3s(&cache, sources, &version, arch, true, &ctx.printer).await?;
    Ok(Install {
        binary: Some(arts.binary),
        airgap: arts.airgap,
    })
}

/// The verified base image for `driver`'s VMs: `--vm-image PATH` as given, else the default
/// cloud image of the catalog, fetched and verified through the artifact cache, and converted
/// to the driver's disk format (by its own tool when it has one).
async fn base_image(
    cache: &ArtifactCache,
    sources: &Sources,
    given: Option<&Path>,
    driver: &dyn Driver,
    report: &dyn timonel_driver::Reporter,
) -> Result<PathBuf> {
    if let Some(path) = given {
        return std::fs::canonicalize(path).map_err(|e| {
            UserError::new(
                format!("--vm-image `{}` cannot be read: {e}", path.display()),
                "give the path of a qcow2 (kvm), VHDX (hyperv) or VMDK/VDI (virtualbox) disk image",
            )
            .into()
        });
    }
    let catalog = timonel_driver_vm::VmImageCatalog::builtin()?;
    let image = catalog.get(timonel_driver_vm::catalog::DEFAULT_IMAGE)?;
    let kind = driver.kind();
    let file = image.for_driver(kind.as_str()).ok_or_else(|| {
        Error::internal(format!(
            "the default cloud image has no disk for the {kind} driver"
        ))
    })?;
    Ok(
        artifact::ensure_cloud_image(cache, sources, &file, driver.as_disk_images(), report)
            .await?,
    )
}
