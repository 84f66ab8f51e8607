//! Step 8, kubeconfig: the context merged into the user's kubeconfig (current unless
//! `--keep-context`), the profile marked running, and the summary. A standalone cluster
//! (`timonel run`) has no kubeconfig of the user's: only the profile's own file.

use super::Run;
use crate::cluster::error::{Error, Result};
use crate::cluster::KUBECONFIG_FILE;
use crate::kubeconfig::{self, MergeOptions};
use crate::profile::Phase;

pub(super) fn run(run: &mut Run<'_>, keep_context: bool) -> Result<()> {
    let name = run.profile.name.clone();
    let creds = run
        .creds
        .as_ref()
        .ok_or_else(|| Error::internal("the credentials were not fetched"))?;
    let printer = &run.ctx.printer;
    let Some(path) = run.profile.kubeconfig.clone() else {
        let own = run.ctx.store.dir(&name).join(KUBECONFIG_FILE);
        printer.info(&format!(
            "\nCluster `{name}` is up: k3s {} on {} node(s), API at {}.\nIts kubeconfig: {} (yours is untouched; `timonel kubeconfig -p {name} --merge` merges it)",
            run.profile.version,
            run.profile.nodes.len(),
            creds.server,
            own.display()
        ));
        run.profile.phase = Phase::Running;
        return run.save();
    };
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
