//! Step 6, credentials: the admin kubeconfig k3s writes in the first server, with the server
//! rewritten to where the host reaches it, saved as the profile's standalone kubeconfig.

use std::time::Duration;

use timonel_driver::{DriverError, NodeAccess, NodeRole};

use super::Run;
use crate::cluster::error::{Error, Result};
use crate::cluster::{server_url, KUBECONFIG_FILE};
use crate::distro::k3s;
use crate::kubeconfig;

pub(super) async fn run(run: &mut Run<'_>) -> Result<()> {
    let step = run.ctx.printer.step("waiting for the cluster's kubeconfig");
    let name = run.profile.name.clone();
    let server = run
        .profile
        .server()
        .cloned()
        .ok_or_else(|| Error::internal(format!("profile `{name}` has no server node")))?;
    let access = run
        .nodes
        .access(&run.profile, &server, run.wait_timeout)
        .await?;
    let text = run
        .cancel
        .or_cancel(wait_for_file(
            access.as_ref(),
            k3s::KUBECONFIG_PATH,
            run.wait_timeout,
        ))
        .await??;
    let mut creds = kubeconfig::parse_k3s_yaml(&text)?;
    // VMs and machines: each server's API where the host reaches it (its address, or a NAT
    // forward), so failover (`kubeconfig --merge`) can find the live ones.
    let servers: Vec<_> = run
        .profile
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Server)
        .cloned()
        .collect();
    for s in servers {
        if let Some(url) = run.nodes.api_url(&s).await? {
            if let Some(n) = run.profile.nodes.iter_mut().find(|n| n.name == s.name) {
                n.api_url = Some(url);
            }
        }
    }
    let first = run.profile.node(server.name.as_str()).unwrap_or(&server);
    creds.server = match run
        .profile
        .balancer_url()
        .or_else(|| run.profile.api_url(first))
    {
        Some(url) => url,
        None => {
            let port = server
                .api_port
                .ok_or_else(|| Error::internal(format!("profile `{name}` has no API port")))?;
            server_url(run.profile.listen_address, port)
        }
    };
    let path = run.ctx.store.dir(&name).join(KUBECONFIG_FILE);
    crate::fsutil::atomic_write(
        &path,
        kubeconfig::standalone(name.as_str(), &creds).as_bytes(),
        0o600,
    )
    .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    step.finish("Fetched the admin credentials");
    run.creds = Some(creds);
    run.cancel.check()?;
    Ok(())
}

/// Reads a file from the node once it exists, polling (soon at first, then less often) with a
/// deadline. A timeout stays a
/// typed driver timeout (`NODE_TIMEOUT`).
async fn wait_for_file(access: &dyn NodeAccess, path: &str, timeout: Duration) -> Result<String> {
    // A container node writes it within milliseconds of starting, a VM within seconds.
    let got = timonel_driver::poll_backoff::<_, DriverError, _, _>(
        &format!("`{path}` in the node"),
        timeout,
        Duration::from_millis(10)..=Duration::from_millis(200),
        || async {
            Ok(match access.copy_out(path).await {
                Ok(bytes) if !bytes.is_empty() => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Ok(_) => Err("empty".to_string()),
                Err(e) => Err(e.to_string()),
            })
        },
    )
    .await?;
    Ok(got)
}
