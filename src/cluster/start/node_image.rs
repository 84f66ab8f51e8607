//! Step 3, node image: drivers whose nodes run an image built from the distribution's binary
//! (Docker) get it built once per version; `--node-image` brings one instead.

use timonel_driver::Driver;

use super::artifacts::Fetched;
use super::StartOptions;
use crate::cluster::error::Result;
use crate::cluster::Ctx;

/// The image the nodes run, when the driver runs images.
pub(super) async fn ensure(
    ctx: &Ctx,
    opts: &StartOptions,
    driver: &dyn Driver,
    arts: &Fetched,
) -> Result<Option<String>> {
    if let Some(image) = &opts.node_image {
        return Ok(Some(image.clone()));
    }
    let (Some(images), Some(binary)) = (driver.as_node_images(), &arts.install.binary) else {
        return Ok(None);
    };
    let step = ctx.printer.step("preparing the node image");
    let source = timonel_driver::NodeImageSource {
        version: &arts.version,
        binary,
        binary_sha256: arts.binary_sha256.as_deref(),
        airgap: arts.install.airgap.as_deref(),
        airgap_sha256: arts.airgap_sha256.as_deref(),
    };
    let image = images.ensure_node_image(&source, &ctx.printer).await?;
    step.finish(&format!("Node image {image}"));
    Ok(Some(image))
}
