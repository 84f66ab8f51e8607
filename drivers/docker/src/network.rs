//! The per-cluster bridge network: a free /24 picked from `10.201.0.0/24` upward, avoiding every
//! other Docker network and every host route, so node addresses are static across restarts.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;

use timonel_driver::{ClusterName, DriverError, Reporter};

use crate::client::{error_text, DockerDriver};
use crate::{network_name, LABEL_CLUSTER, LABEL_HOME};

/// An IPv4 /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet(pub Ipv4Addr);

/// Where the search for a free subnet starts. `10.201.x.0/24` keeps clear of Docker's default
/// pools (172.17–31.x, 192.168.x) and of minikube's `192.168.49.0/24` ladder.
pub const FIRST_SUBNET: Subnet = Subnet(Ipv4Addr::new(10, 201, 0, 0));
/// How many /24s are tried (10.201.0.0 … 10.216.255.0).
const CANDIDATES: u32 = 16 * 256;
/// How many times creating the network is retried when the daemon finds an overlap we missed.
const CREATE_ATTEMPTS: usize = 5;

impl Subnet {
    /// `.1`, the bridge's address.
    pub fn gateway(self) -> Ipv4Addr {
        self.host(1)
    }
    /// The address `.n` in this subnet.
    pub fn host(self, n: u8) -> Ipv4Addr {
        let o = self.0.octets();
        Ipv4Addr::new(o[0], o[1], o[2], n)
    }
    /// The static address of node `index` (1-based): `.index+1`, so the first node is `.2`
    /// (`.254` is the API load balancer's).
    pub fn node(self, index: u32) -> Result<Ipv4Addr, DriverError> {
        match u8::try_from(index + 1) {
            Ok(n) if index >= 1 && n < 254 => Ok(self.host(n)),
            _ => Err(DriverError::Unsupported {
                driver: "docker".into(),
                what: format!("node index {index} (a cluster network holds nodes 1 to 252)"),
            }),
        }
    }
    fn overlaps(self, net: Ipv4Addr, prefix: u8) -> bool {
        let bits = u32::from(prefix.min(24));
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        (u32::from(self.0) & mask) == (u32::from(net) & mask)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

/// Whether a failed network create means the subnet was taken meanwhile (then the next one is
/// tried): Docker answers `Pool overlaps with other one on this address space`, Podman `subnet
/// 10.201.0.0/24 is already used on the host or by another config` (500).
fn subnet_taken(message: &str) -> bool {
    message.contains("overlap")
        || message.contains("is already used on the host or by another config")
}

/// The first /24 from `start` upward that overlaps none of `used` (address, prefix length).
pub fn pick_subnet(used: &[(Ipv4Addr, u8)], start: Subnet) -> Option<Subnet> {
    let base = u32::from(start.0) & 0xffff_ff00;
    (0..CANDIDATES)
        .filter_map(|i| base.checked_add(i << 8))
        .map(|n| Subnet(Ipv4Addr::from(n)))
        .find(|s| !used.iter().any(|(net, prefix)| s.overlaps(*net, *prefix)))
}

/// `a.b.c.d/p` → (address, prefix); IPv6 and junk → None.
pub(crate) fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    Some((
        addr.parse().ok()?,
        prefix.parse().ok().filter(|p| *p <= 32)?,
    ))
}

/// The routes of `/proc/net/route` (Linux), default route excluded.
pub(crate) fn parse_proc_routes(text: &str) -> Vec<(Ipv4Addr, u8)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The kernel prints the network-order address as a native-endian u32.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then_some((dest, prefix))
        })
        .collect()
}

fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    if cfg!(target_os = "linux") {
        std::fs::read_to_string("/proc/net/route")
            .map(|t| parse_proc_routes(&t))
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// Whether creating a network failed because one of that name exists: Docker's 409
/// `network with name x already exists`, Podman 4.3's 500 `network name x already used:
/// network already exists`, Podman 4.5+'s 409 with the same message.
pub(crate) fn is_duplicate(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409 | 500,
            message,
        } if message.ends_with("already exists")
    )
}

/// A network's IPv4 subnets.
fn subnets_of(net: &bollard::models::Network) -> Vec<(Ipv4Addr, u8)> {
    net.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref().and_then(parse_cidr))
        .collect()
}

/// The cluster's existing network: its subnet when it is ours, else why it cannot be used.
fn existing_network(
    net: &bollard::models::Network,
    name: &str,
    cluster: &ClusterName,
    owner: Option<&str>,
) -> Result<Subnet, DriverError> {
    let subnets = subnets_of(net);
    let ours = net
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER))
        .is_some_and(|c| c == cluster.as_str());
    if !ours {
        return Err(DriverError::AlreadyExists {
            what: format!("docker network `{name}` (not created by timonel)"),
            hint: Some(format!(
                "remove it (`docker network rm {name}`) or pick another profile name"
            )),
        });
    }
    if crate::objects::foreign(net.labels.as_ref(), owner) {
        return Err(crate::objects::foreign_error(
            format!("docker network `{name}`"),
            cluster,
        ));
    }
    match subnets.first() {
        Some((addr, 24)) => Ok(Subnet(*addr)),
        _ => Err(DriverError::backend(
            format!("using network `{name}`"),
            "it has no IPv4 /24 subnet; delete the cluster and create it again",
        )),
    }
}

impl DockerDriver {
    /// The cluster's network, created with a free /24 when missing. Returns its subnet.
    pub(crate) async fn ensure_network(
        &self,
        cluster: &ClusterName,
        owner: Option<&str>,
        report: &dyn Reporter,
    ) -> Result<Subnet, DriverError> {
        let _guard = self.network_lock.lock().await;
        let docker = self.client().await?;
        let name = network_name(cluster.as_str());
        let all = docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(|e| DriverError::backend("listing networks", error_text(&e)))?;
        let mut used = host_routes();
        for net in &all {
            let subnets = subnets_of(net);
            if net.name.as_deref() == Some(name.as_str()) {
                return existing_network(net, &name, cluster, owner);
            }
            used.extend(subnets);
        }

        let mut last_error = String::new();
        for _ in 0..CREATE_ATTEMPTS {
            let subnet = pick_subnet(&used, FIRST_SUBNET).ok_or_else(|| {
                DriverError::backend(
                    format!("creating network `{name}`"),
                    "no free /24 between 10.201.0.0 and 10.216.255.0",
                )
            })?;
            report.step(&format!("creating network {name} ({subnet})"));
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(subnet.gateway().to_string()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                options: Some(HashMap::from([
                    (
                        "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                        "true".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.enable_icc".to_string(),
                        "true".to_string(),
                    ),
                ])),
                labels: Some(
                    [(LABEL_CLUSTER, Some(cluster.as_str())), (LABEL_HOME, owner)]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                        .collect(),
                ),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => return Ok(subnet),
                // Created meanwhile (another timonel sharing the daemon): Docker answers 409
                // `network with name x already exists`, Podman 4.3 500 `network name x already
                // used: network already exists`, Podman 4.5+ 409. Use it, if it is ours.
                Err(e) if is_duplicate(&e) => {
                    let all = docker
                        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
                        .await
                        .map_err(|e| DriverError::backend("listing networks", error_text(&e)))?;
                    if let Some(net) = all
                        .iter()
                        .find(|n| n.name.as_deref() == Some(name.as_str()))
                    {
                        return existing_network(net, &name, cluster, owner);
                    }
                    last_error = error_text(&e);
                    break;
                }
                Err(e) => {
                    last_error = error_text(&e);
                    if !subnet_taken(&last_error) {
                        break;
                    }
                    // Someone took it between our look and our create: try the next one.
                    used.push((subnet.0, 24));
                }
            }
        }
        Err(DriverError::backend(
            format!("creating network `{name}`"),
            last_error,
        ))
    }

    /// Removes the cluster's network if it is ours; returns its name when removed.
    pub(crate) async fn remove_cluster_networks(
        &self,
        cluster: &ClusterName,
    ) -> Result<Vec<String>, DriverError> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_CLUSTER}={cluster}")],
        )]);
        let nets = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| DriverError::backend("listing networks", error_text(&e)))?;
        let mut removed = Vec::new();
        for net in nets {
            let Some(id) = net.id.as_deref() else {
                continue;
            };
            let name = net.name.clone().unwrap_or_else(|| id.to_string());
            match docker.remove_network(id).await {
                Ok(()) => removed.push(format!("network {name}")),
                Err(e) if crate::client::is_not_found(&e) => {}
                Err(e) => {
                    return Err(DriverError::backend(
                        format!("removing network `{name}`"),
                        error_text(&e),
                    ))
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_free_slash_24() {
        assert_eq!(pick_subnet(&[], FIRST_SUBNET), Some(FIRST_SUBNET));
        let used = [
            (Ipv4Addr::new(10, 201, 0, 0), 24),
            (Ipv4Addr::new(10, 201, 1, 128), 25),
            (Ipv4Addr::new(172, 17, 0, 0), 16),
        ];
        assert_eq!(
            pick_subnet(&used, FIRST_SUBNET),
            Some(Subnet(Ipv4Addr::new(10, 201, 2, 0)))
        );
        // A wider route (10.201.0.0/16) pushes the pick past it.
        let wide = [(Ipv4Addr::new(10, 201, 0, 0), 16)];
        assert_eq!(
            pick_subnet(&wide, FIRST_SUBNET),
            Some(Subnet(Ipv4Addr::new(10, 202, 0, 0)))
        );
        // 10.0.0.0/8 covers every candidate.
        assert_eq!(
            pick_subnet(&[(Ipv4Addr::new(10, 0, 0, 0), 8)], FIRST_SUBNET),
            None
        );
    }

    #[test]
    fn a_network_that_exists_is_a_duplicate_on_both_engines() {
        use bollard::errors::Error::DockerResponseServerError as Answer;
        let docker = Answer {
            status_code: 409,
            message: "network with name timonel-dev already exists".into(),
        };
        let podman_4_3 = Answer {
            status_code: 500,
            message: "network name timonel-dev already used: network already exists".into(),
        };
        let podman_4_5 = Answer {
            status_code: 409,
            message: "network name timonel-dev already used: network already exists".into(),
        };
        for e in [docker, podman_4_3, podman_4_5] {
            assert!(is_duplicate(&e), "{e}");
        }
        let overlap = Answer {
            status_code: 403,
            message: "Pool overlaps with other one on this address space".into(),
        };
        assert!(!is_duplicate(&overlap));
        // Both engines' answers for a subnet taken between our look and our create.
        assert!(subnet_taken(
            "Docker responded with status code 403: Pool overlaps with other one on this address space"
        ));
        assert!(subnet_taken(
            "Docker responded with status code 500: subnet 10.201.0.0/24 is already used on the host or by another config"
        ));
        assert!(!subnet_taken(
            "Docker responded with status code 500: network name timonel-dev already used: network already exists"
        ));
    }

    #[test]
    fn node_addresses_follow_the_index() {
        let s = FIRST_SUBNET;
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(s.node(1).unwrap(), Ipv4Addr::new(10, 201, 0, 2));
        assert_eq!(s.node(3).unwrap(), Ipv4Addr::new(10, 201, 0, 4));
        assert!(s.node(0).is_err());
        assert_eq!(s.node(252).unwrap(), Ipv4Addr::new(10, 201, 0, 253));
        assert!(s.node(253).is_err(), ".254 is the load balancer's");
        assert_eq!(s.to_string(), "10.201.0.0/24");
    }

    #[test]
    fn reads_host_routes() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br0\t0000C90A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_routes(text),
            vec![
                (Ipv4Addr::new(192, 0, 2, 0), 24),
                (Ipv4Addr::new(10, 201, 0, 0), 16)
            ]
        );
        assert_eq!(
            parse_cidr("172.18.0.0/16"),
            Some((Ipv4Addr::new(172, 18, 0, 0), 16))
        );
        assert_eq!(parse_cidr("fd00::/64"), None);
    }
}
