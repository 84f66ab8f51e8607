//! Step 8, kubeconfig: the context merged into the user's kubeconfig (current unless
//! `--keep-context`), the profile marked running, and the summary.

use super::Run;
use crate::cluster::error::{Error, Result};
use crate::kubeconfig::{self, MergeOptions};
use crate::profile::Phase;

pub(super) fn run(run: &mut Run<'_>, keep_context: bool) -> Result<()> {
    let name = run.profile.name.clone();
    let creds = run
        .creds
        .as_ref()
        .ok_or_else(|| Error::internal("the credentials were not fetched"))?;
    let path = run
        .profile
        .kubeconfig
        .clone()
        .ok_or_else(|| Error::internal(format!("profile `{name}` has no kubeconfig path")))?;
    kubeconfig::merge(
        &path,
        name.as_str(),
        creds,
        &MergeOptions {
            set_current: !keep_context,
            ..Default::default()
        },
    )?;
    run.merged = Some(path.clone());
    let printer = &run.ctx.printer;
    printer.done(
        &format!(
            "Context `{name}` in {}{}",
            path.display(),
            if keep_context { "" } else { " (current)" }
        ),
        None,
    );
    run.profile.phase = Phase::Running;
    run.save()?;
    printer.info(&format!(
        "\nCluster `{name}` is up: k3s {} on {} node(s), API at {}.\nTry: kubectl{} get nodes",
        run.profile.version,
        run.profile.nodes.len(),
        creds.server,
        if keep_context {
            format!(" --context {name}")
        } else {
            String::new()
        }
    ));
    Ok(())
}
