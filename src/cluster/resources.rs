//! What a cluster asks for (CPUs and memory per node, VM disks) against what the nodes' host
//! has, checked by `start` and `node add` before anything is created or built: a request the
//! host cannot meet is refused with both numbers, instead of failing half-way (or, for memory,
//! making a node whose limit means nothing).

use std::path::Path;

use timonel_driver::{Driver, HostCapacity, NodeKind};

use super::error::Result;
use super::Ctx;
use crate::error::UserError;

const MIB: u64 = 1024 * 1024;

/// What the cluster's nodes ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// How many nodes share the host (the new cluster's, or the cluster's after `node add`).
    pub nodes: u32,
    /// CPUs per node (`--cpus`).
    pub cpus: Option<f64>,
    /// Memory per node (`--memory`).
    pub memory_mib: Option<u64>,
    /// VM drivers: each node's disk (`--disk-size`, else the default).
    pub disk_mib: Option<u64>,
    /// `node add`: the nodes' CPUs and memory are the profile's, so the way out is fewer nodes.
    pub adding: bool,
}

/// Why the host cannot take the request (an error) and what it can take but should be told
/// (warnings).
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub refusals: Vec<String>,
    pub hints: Vec<String>,
    pub warnings: Vec<String>,
}

/// Compares `req` with what `have` says; what `have` does not know is not checked.
pub fn judge(req: &Request, have: &HostCapacity, disk_dir: &Path) -> Verdict {
    let mut v = Verdict::default();
    let nodes = req.nodes.max(1);
    if let (Some(cpus), Some(host)) = (req.cpus, have.cpus) {
        if cpus > f64::from(host) {
            v.refusals.push(format!(
                "--cpus {cpus} asks for {cpus} CPUs per node, and {} has {host}",
                have.source
            ));
            v.hints.push(format!("lower --cpus to {host} or less"));
        }
    }
    if let (Some(mib), Some(host)) = (req.memory_mib, have.memory_bytes) {
        let total = mib.saturating_mul(u64::from(nodes)).saturating_mul(MIB);
        if total > host {
            v.refusals.push(format!(
                "{nodes} node(s) x {} of memory = {} requested, and {} has {} in total",
                size(mib.saturating_mul(MIB)),
                size(total),
                have.source,
                size(host)
            ));
            let per_node = host / u64::from(nodes) / MIB;
            v.hints.push(format!(
                "lower --memory (at most {per_node}m per node for {nodes} node(s)) or --nodes"
            ));
        }
    }
    if let (Some(mib), Some(free)) = (req.disk_mib, have.free_disk_bytes) {
        let one = mib.saturating_mul(MIB);
        let total = one.saturating_mul(u64::from(nodes));
        let place = format!("`{}`", disk_dir.display());
        if one > free {
            v.refusals.push(format!(
                "each node's disk is {}, and {place} has {} free",
                size(one),
                size(free)
            ));
            v.hints
                .push(format!("lower --disk-size, or free space under {place}"));
        } else if total > free {
            // VM disks grow as they are written: this fills up only if every node fills its disk.
            v.warnings.push(format!(
                "{nodes} node(s) x {} of disk = {}, more than the {} free under {place}: the disks fill up as they are used",
                size(one),
                size(total),
                size(free)
            ));
        }
    }
    v
}

/// Asks the driver what its nodes' host has (and, for VMs, the free disk where their disks
/// go) and refuses a request it cannot meet. Drivers that cannot tell are not checked.
pub async fn check(ctx: &Ctx, driver: &dyn Driver, req: &Request) -> Result<()> {
    let Some(host) = driver.as_host_resources() else {
        return Ok(());
    };
    if req.cpus.is_none() && req.memory_mib.is_none() && req.disk_mib.is_none() {
        return Ok(());
    }
    let mut have = host.host_resources().await?;
    let dir = ctx.home.root().join("machines");
    if driver.capabilities().nodes == NodeKind::Vm && have.free_disk_bytes.is_none() {
        have.free_disk_bytes = crate::fsutil::free_space(&dir);
    }
    let mut verdict = judge(req, &have, &dir);
    if req.adding && !verdict.refusals.is_empty() {
        verdict.hints = vec![format!(
            "every node of profile `{}` gets the same CPUs, memory and disk: remove a node first (`timonel node delete`), or make the cluster again with less",
            ctx.profile
        )];
    }
    for w in &verdict.warnings {
        ctx.printer.warn(w);
    }
    if verdict.refusals.is_empty() {
        return Ok(());
    }
    Err(UserError::new(
        format!(
            "the nodes' host cannot take this cluster: {}",
            verdict.refusals.join("; ")
        ),
        format!("{}; nothing was created", verdict.hints.join("; ")),
    )
    .into())
}

/// `1.5 GiB`, `512 MiB`.
fn size(bytes: u64) -> String {
    const GIB: u64 = 1024 * MIB;
    if bytes >= GIB {
        let tenths = bytes / (GIB / 10);
        format!("{}.{} GiB", tenths / 10, tenths % 10)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostCapacity {
        HostCapacity {
            source: "the test host".into(),
            cpus: Some(4),
            memory_bytes: Some(8 * 1024 * MIB),
            free_disk_bytes: Some(50 * 1024 * MIB),
        }
    }

    fn req(nodes: u32) -> Request {
        Request {
            nodes,
            cpus: None,
            memory_mib: None,
            disk_mib: None,
            adding: false,
        }
    }

    #[test]
    fn what_fits_passes_and_what_is_unknown_is_not_checked() {
        let dir = Path::new("/m");
        let fits = Request {
            cpus: Some(4.0),
            memory_mib: Some(4096),
            disk_mib: Some(20 * 1024),
            ..req(2)
        };
        assert_eq!(judge(&fits, &host(), dir), Verdict::default());
        let huge = Request {
            cpus: Some(512.0),
            memory_mib: Some(1 << 40),
            ..req(1)
        };
        assert_eq!(
            judge(&huge, &HostCapacity::default(), dir),
            Verdict::default()
        );
    }

    #[test]
    fn too_many_cpus_per_node_is_refused_with_both_numbers() {
        let v = judge(
            &Request {
                cpus: Some(512.0),
                ..req(1)
            },
            &host(),
            Path::new("/m"),
        );
        assert_eq!(v.refusals.len(), 1, "{v:?}");
        assert!(v.refusals[0].contains("512") && v.refusals[0].contains("has 4"));
        assert!(v.hints[0].contains("--cpus to 4"));
    }

    #[test]
    fn memory_counts_every_node() {
        let v = judge(
            &Request {
                memory_mib: Some(3072),
                ..req(3)
            },
            &host(),
            Path::new("/m"),
        );
        assert_eq!(v.refusals.len(), 1, "{v:?}");
        assert!(
            v.refusals[0].contains("3 node(s) x 3.0 GiB of memory = 9.0 GiB"),
            "{v:?}"
        );
        assert!(v.refusals[0].contains("8.0 GiB in total"), "{v:?}");
        assert!(v.hints[0].contains("at most 2730m per node"), "{v:?}");
    }

    #[test]
    fn a_disk_larger_than_the_free_space_is_refused_and_several_only_warned() {
        let dir = Path::new("/m");
        let one = judge(
            &Request {
                disk_mib: Some(60 * 1024),
                ..req(1)
            },
            &host(),
            dir,
        );
        assert!(one.refusals[0].contains("60.0 GiB"), "{one:?}");
        let three = judge(
            &Request {
                disk_mib: Some(20 * 1024),
                ..req(3)
            },
            &host(),
            dir,
        );
        assert!(three.refusals.is_empty());
        assert!(three.warnings[0].contains("60.0 GiB"), "{three:?}");
    }
}
