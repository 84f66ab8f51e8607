//! Step 7, wait: the API server, then the nodes Ready (and with `--wait all`, system pods and
//! DNS), to a deadline; on a timeout, the last lines of the first server's k3s log.

use super::Run;
use crate::cluster::error::{Error, Result};
use crate::distro::ready::{self, ApiClient, WaitFor};

pub(super) async fn run(run: &mut Run<'_>, wait: WaitFor) -> Result<()> {
    if wait == WaitFor::None {
        return Ok(());
    }
    let creds = run
        .creds
        .as_ref()
        .ok_or_else(|| Error::internal("the credentials were not fetched"))?;
    let printer = &run.ctx.printer;
    let step = printer.step("waiting for the cluster");
    let api = ApiClient::new(creds, &creds.server)?;
    let nodes: Vec<String> = run
        .profile
        .nodes
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    let waited = run
        .cancel
        .or_cancel(ready::wait(
            &api,
            wait,
            &nodes,
            run.wait_timeout,
            &mut |s| timonel_driver::Reporter::step(printer, s),
        ))
        .await?;
    if let Err(e) = waited {
        drop(step);
        if let Some(server) = run.profile.server() {
            let logs = run
                .nodes
                .logs(&run.profile, server, 20)
                .await
                .unwrap_or_default();
            if !logs.is_empty() {
                printer.info(&format!(
                    "last lines of the k3s log on {}:\n{logs}",
                    server.name
                ));
            }
        }
        return Err(e.into());
    }
    step.finish(&format!("Cluster ready ({})", describe(wait)));
    run.cancel.check()?;
    Ok(())
}

fn describe(w: WaitFor) -> &'static str {
    match w {
        WaitFor::None => "not waited",
        WaitFor::Api => "API server ready",
        WaitFor::Ready => "nodes Ready",
        WaitFor::All => "nodes Ready, system pods running, DNS up",
    }
}
