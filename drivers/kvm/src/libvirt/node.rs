//! Creating, stopping and deleting nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use timonel_driver::{Cmd, DriverError, MachineSpec, Reporter, StopMode};
use timonel_driver_vm::options::{SSH_KEY_DIR, SSH_USER};
use timonel_driver_vm::{host_key_path, CloudConfig, NicMatch, NoCloudSeed, SshKey};
use virt::domain::Domain;
use virt::sys;

use super::conn::{domain, find_domain, lv};
use super::{network, KvmDriver};
use crate::net::{domain_name, network_name, node_mac};
use crate::options::resolve_accel;
use crate::xml::{parse_node_metadata, DomainConfig, DomainType, NodeMetadata};
use crate::{CONSOLE_LOG_FILE, OVERLAY_FILE};

fn io(what: String) -> impl FnOnce(std::io::Error) -> DriverError {
    move |e| DriverError::io(what, e)
}

pub(super) async fn create(
    driver: &KvmDriver,
    spec: &MachineSpec,
    report: &dyn Reporter,
) -> Result<(), DriverError> {
    let node = spec.name.as_str().to_string();
    let cluster = spec.cluster.as_str().to_string();
    let dom_name = domain_name(&node);
    if driver.raw_state(&dom_name).await? != timonel_driver::MachineState::NotCreated {
        // Created before (same name): creating again is Ok.
        return Ok(());
    }
    let disk = spec
        .vm_disk
        .as_ref()
        .ok_or_else(|| DriverError::Unsupported {
            driver: "kvm".to_string(),
            what: "a machine without `vm_disk`".to_string(),
        })?;

    // Accelerator: the spec's option, the driver's, the environment, else what libvirt offers.
    let domain_type = if driver.conn.is_test() {
        DomainType::Test
    } else {
        let accel = driver.accel_for(Some(spec))?;
        // TCG asked for: whether libvirt offers KVM does not matter (and is not asked).
        let kvm = match accel {
            crate::options::Accel::Tcg => false,
            _ => driver.caps_facts().await?.kvm,
        };
        let (t, note) = resolve_accel(accel, kvm).map_err(|reason| DriverError::NotAvailable {
            driver: "kvm".to_string(),
            reason,
            fix: format!(
                "set `{}=tcg` (or {}=tcg)",
                crate::options::OPT_ACCEL,
                crate::options::ENV_ACCEL
            ),
        })?;
        if let Some(note) = note {
            report.warn(note);
        }
        t
    };

    // Files: the node's directory, its overlay disk, its seed.
    let state_dir = disk.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .map_err(io(format!("could not create `{}`", state_dir.display())))?;
    let base = std::fs::canonicalize(&disk.base_image).map_err(|_| DriverError::NotFound {
        what: format!("base image `{}`", disk.base_image.display()),
    })?;
    let overlay = state_dir.join(OVERLAY_FILE);
    if !overlay.exists() {
        report.step(&format!(
            "creating the disk of `{node}` ({} MiB)",
            disk.size_mib
        ));
        let cmd = Cmd::new("qemu-img").args([
            "create".to_string(),
            "-q".to_string(),
            "-f".to_string(),
            "qcow2".to_string(),
            "-F".to_string(),
            "qcow2".to_string(),
            "-b".to_string(),
            base.to_string_lossy().into_owned(),
            overlay.to_string_lossy().into_owned(),
            format!("{}M", disk.size_mib),
        ]);
        driver.runner.run(&cmd).await?;
    }
    let mac = node_mac(&cluster, &node);
    let key_dir = spec.options.get(SSH_KEY_DIR).map(PathBuf::from);
    if let Some(dir) = &key_dir {
        let key = SshKey::ensure(dir, &format!("timonel@{cluster}"))?;
        let config = CloudConfig::new(spec.hostname.clone()).authorized_key(key.public_openssh());
        let seed = NoCloudSeed::new(&cluster, &node, &config, Some(NicMatch::Mac(mac.clone())));
        seed.write_iso(&disk.seed_iso)?;
        // A new node has a new host key.
        let _ = std::fs::remove_file(host_key_path(dir, &node));
    } else if !disk.seed_iso.exists() {
        return Err(DriverError::NotFound {
            what: format!(
                "cloud-init seed `{}` (or set `{SSH_KEY_DIR}` to let the driver write it)",
                disk.seed_iso.display()
            ),
        });
    }

    // Network and address, then the domain.
    let cpus = spec.cpus.map_or(2, |c| c.ceil().max(1.0) as u32);
    let config = DomainConfig {
        name: dom_name.clone(),
        domain_type,
        vcpus: cpus,
        memory_mib: spec.memory_mib.unwrap_or(2048),
        overlay,
        seed_iso: disk.seed_iso.clone(),
        network: network_name(&cluster),
        mac: mac.clone(),
        console_log: state_dir.join(CONSOLE_LOG_FILE),
        metadata: NodeMetadata {
            cluster: cluster.clone(),
            node: node.clone(),
            state_dir,
            seed_iso: disk.seed_iso.clone(),
            ssh_user: spec.options.get(SSH_USER).cloned(),
            ssh_key_dir: key_dir,
        },
        folders: shared_folders(spec, report),
    };
    let _guard = driver.net_lock.lock().await;
    report.step(&format!("defining VM `{dom_name}`"));
    let (hostname, index) = (spec.hostname.clone(), spec.index);
    driver
        .conn
        .run(move |c| {
            let net = network::ensure_network(c, &cluster)?;
            let ip = network::ensure_dhcp_host(&net, &mac, &hostname, index)?;
            tracing::debug!(domain = %config.name, %ip, %mac, "reserved address");
            c.define_domain_xml(&config.to_xml())
                .map_err(|e| lv(&format!("defining domain `{}`", config.name), e))?;
            Ok(())
        })
        .await
}

pub(super) async fn stop(
    driver: &KvmDriver,
    dom_name: &str,
    how: StopMode,
) -> Result<(), DriverError> {
    let name = dom_name.to_string();
    let active = driver
        .conn
        .run(move |c| {
            domain(c, &name)?
                .is_active()
                .map_err(|e| lv("reading the domain", e))
        })
        .await?;
    if !active {
        return Ok(());
    }
    if let StopMode::Graceful { timeout } = how {
        // A paused guest cannot hear the power button: it runs on first.
        driver.set_paused(dom_name, false).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tries = 0u32;
        loop {
            let name = dom_name.to_string();
            // ACPI events sent while the guest boots are lost: ask again every 10 s.
            let ask = tries.is_multiple_of(10);
            tries += 1;
            let still = driver
                .conn
                .run(move |c| {
                    let Some(dom) = find_domain(c, &name)? else {
                        return Ok(false);
                    };
                    let active = dom.is_active().map_err(|e| lv("reading the domain", e))?;
                    if active && ask {
                        let _ = dom.shutdown();
                    }
                    Ok(active)
                })
                .await?;
            if !still {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(domain = dom_name, "graceful shutdown timed out; forcing");
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let name = dom_name.to_string();
    driver
        .conn
        .run(move |c| {
            let dom = domain(c, &name)?;
            if dom.is_active().unwrap_or(false) {
                dom.destroy()
                    .map_err(|e| lv(&format!("powering off `{name}`"), e))?;
            }
            Ok(())
        })
        .await
}

/// Removes the domain and its files. Returns what was removed; nothing when it did not exist.
pub(super) async fn delete(driver: &KvmDriver, dom_name: &str) -> Result<Vec<String>, DriverError> {
    let name = dom_name.to_string();
    let _guard = driver.net_lock.lock().await;
    let found = driver
        .conn
        .run(move |c| {
            let Some(dom) = find_domain(c, &name)? else {
                return Ok(None);
            };
            let xml = dom
                .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                .map_err(|e| lv("reading the domain", e))?;
            let meta = parse_node_metadata(&xml)
                .map_err(|e| DriverError::backend("reading the domain", e))?;
            let Some(meta) = meta else {
                return Err(DriverError::Backend {
                    op: format!("deleting `{name}`"),
                    message: "the domain was not created by timonel; leaving it alone".to_string(),
                    hint: None,
                });
            };
            let ifaces = crate::xml::parse_interfaces(&xml).unwrap_or_default();
            undefine(&dom, &name)?;
            for (mac, net_name) in ifaces {
                if let Some(net) = super::conn::find_network(c, &net_name)? {
                    network::remove_dhcp_host(&net, &mac)?;
                }
            }
            Ok(Some(meta))
        })
        .await?;
    let Some(meta) = found else {
        return Ok(Vec::new());
    };
    let mut removed = vec![format!("domain {dom_name}")];
    removed.extend(remove_files(&meta));
    Ok(removed)
}

fn undefine(dom: &Domain, name: &str) -> Result<(), DriverError> {
    if dom.is_active().unwrap_or(false) {
        dom.destroy()
            .map_err(|e| lv(&format!("powering off `{name}`"), e))?;
    }
    let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
    if dom.undefine_flags(flags).is_err() {
        dom.undefine()
            .map_err(|e| lv(&format!("removing domain `{name}`"), e))?;
    }
    Ok(())
}

/// The node's files: overlay, console log, seed, recorded host key, and its directory if empty.
fn remove_files(meta: &NodeMetadata) -> Vec<String> {
    let mut removed = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    if !meta.state_dir.as_os_str().is_empty() {
        files.push(meta.state_dir.join(OVERLAY_FILE));
        files.push(meta.state_dir.join(CONSOLE_LOG_FILE));
    }
    if !meta.seed_iso.as_os_str().is_empty() {
        files.push(meta.seed_iso.clone());
    }
    if let Some(dir) = &meta.ssh_key_dir {
        files.push(host_key_path(dir, &meta.node));
    }
    for file in files {
        if std::fs::remove_file(&file).is_ok() {
            removed.push(format!("file {}", file.display()));
        }
    }
    if !meta.state_dir.as_os_str().is_empty() && remove_if_empty(&meta.state_dir) {
        removed.push(format!("directory {}", meta.state_dir.display()));
    }
    removed
}

fn remove_if_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) && std::fs::remove_dir(dir).is_ok()
}

pub(super) async fn delete_cluster(
    driver: &KvmDriver,
    cluster: &str,
) -> Result<Vec<String>, DriverError> {
    let wanted = cluster.to_string();
    let names = driver
        .conn
        .run(move |c| {
            let doms = c
                .list_all_domains(0)
                .map_err(|e| lv("listing domains", e))?;
            let mut names = Vec::new();
            for dom in doms {
                let Ok(xml) = dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) else {
                    continue;
                };
                if let Ok(Some(meta)) = parse_node_metadata(&xml) {
                    if meta.cluster == wanted {
                        names.push(dom.name().map_err(|e| lv("reading a domain name", e))?);
                    }
                }
            }
            Ok(names)
        })
        .await?;
    let mut removed = Vec::new();
    for name in names {
        removed.extend(delete(driver, &name).await?);
    }
    let cluster = cluster.to_string();
    let net = network_name(&cluster);
    if driver
        .conn
        .run(move |c| network::remove_network(c, &cluster))
        .await?
    {
        removed.push(format!("network {net}"));
    }
    Ok(removed)
}

/// The spec's host folders as virtio-9p shares, tagged as the guest mounts them. QEMU runs as
/// libvirt's own user (`libvirt-qemu` on Debian and Ubuntu, unless qemu.conf says otherwise):
/// a folder closed to other users is named in a warning rather than opened by timonel.
fn shared_folders(spec: &MachineSpec, report: &dyn Reporter) -> Vec<crate::xml::SharedFolder> {
    spec.mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if let Some(closed) = closed_to_others(&m.host) {
                report.warn(&format!(
                    "`{}` is not open to other users, and QEMU runs as libvirt's own user: the node may not be able to read {} (chmod o+rx it, or run QEMU as root in /etc/libvirt/qemu.conf)",
                    closed.display(),
                    m.host.display()
                ));
            }
            crate::xml::SharedFolder {
                tag: timonel_driver::Mount::tag(i),
                source: m.host.clone(),
                read_only: m.read_only,
            }
        })
        .collect()
}

/// The first of `dir` and its parents that other users cannot enter (or, for `dir`, list).
#[cfg(unix)]
fn closed_to_others(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
    if mode(dir).is_some_and(|m| m & 0o005 != 0o005) {
        return Some(dir.to_path_buf());
    }
    dir.ancestors()
        .skip(1)
        .find(|p| mode(p).is_some_and(|m| m & 0o001 == 0))
        .map(Path::to_path_buf)
}

#[cfg(not(unix))]
fn closed_to_others(_: &Path) -> Option<PathBuf> {
    None
}
