//! Names, MAC addresses and IPv4 allocation for a profile's libvirt network. Pure functions.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// Every libvirt object timonel creates starts with this.
pub const PREFIX: &str = "timonel-";

/// The libvirt domain of a node: the node name, prefixed with `timonel-` unless it already
/// starts with `timonel` (the default profile is called `timonel`).
pub fn domain_name(node: &str) -> String {
    if node.starts_with("timonel") {
        node.to_string()
    } else {
        format!("{PREFIX}{node}")
    }
}

/// The libvirt network of a cluster (profile).
pub fn network_name(cluster: &str) -> String {
    format!("{PREFIX}{cluster}")
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The Linux bridge of a cluster's network: at most 15 characters, stable per cluster.
pub fn bridge_name(cluster: &str) -> String {
    let d = digest(&["bridge", cluster]);
    format!("tmnl-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// A MAC in QEMU's locally administered range `52:54:00`, derived from cluster and node, so a
/// recreated node gets the same MAC (and with the static DHCP entry, the same IP).
pub fn node_mac(cluster: &str, node: &str) -> String {
    let d = digest(&["mac", cluster, node]);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

/// An IPv4 network in use on the host (a route or another libvirt network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedNet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn overlaps(a: Ipv4Addr, a_prefix: u8, b: Ipv4Addr, b_prefix: u8) -> bool {
    let m = mask(a_prefix.min(b_prefix));
    u32::from(a) & m == u32::from(b) & m
}

/// The /24s timonel tries, in order: `192.168.100.0/24` … `192.168.254.0/24`, then
/// `192.168.50.0/24` … `192.168.99.0/24` (libvirt's `default` is `192.168.122.0/24`).
fn candidates() -> impl Iterator<Item = [u8; 3]> {
    (100..=254u8).chain(50..=99u8).map(|c| [192, 168, c])
}

/// The first candidate /24 that overlaps none of `used`. Default routes (prefix 0) are ignored.
pub fn pick_subnet(used: &[UsedNet]) -> Option<[u8; 3]> {
    candidates().find(|[a, b, c]| {
        let net = Ipv4Addr::new(*a, *b, *c, 0);
        !used
            .iter()
            .filter(|u| u.prefix > 0)
            .any(|u| overlaps(net, 24, u.addr, u.prefix))
    })
}

/// Parses `/proc/net/route` (little-endian hex destination and mask) into used networks.
pub fn parse_proc_routes(text: &str) -> Vec<UsedNet> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(cols.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(cols.get(7)?, 16).ok()?;
            Some(UsedNet {
                // The kernel prints the address in host byte order (little-endian here).
                addr: Ipv4Addr::from(dest.to_le_bytes()),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// The static address for a node: `.10 + index` when free, else the first free of `.2`–`.99`.
/// `taken` are the addresses other nodes' entries already hold.
pub fn pick_host_ip(subnet: [u8; 3], index: u32, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let [a, b, c] = subnet;
    let at = |d: u8| Ipv4Addr::new(a, b, c, d);
    let preferred = u8::try_from(10 + index).ok().filter(|d| *d <= 99).map(at);
    preferred
        .into_iter()
        .chain((2..=99).map(at))
        .find(|ip| !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_once() {
        assert_eq!(domain_name("dev"), "timonel-dev");
        assert_eq!(domain_name("dev-m02"), "timonel-dev-m02");
        assert_eq!(domain_name("timonel"), "timonel");
        assert_eq!(domain_name("timonel-m02"), "timonel-m02");
        assert_eq!(network_name("dev"), "timonel-dev");
        let bridge = bridge_name("a-very-long-cluster-name-indeed");
        assert!(bridge.len() <= 15, "{bridge}");
        assert_eq!(bridge, bridge_name("a-very-long-cluster-name-indeed"));
        assert_ne!(bridge_name("a"), bridge_name("b"));
    }

    #[test]
    fn macs_are_stable_local_and_distinct() {
        let m = node_mac("dev", "dev");
        assert_eq!(m, node_mac("dev", "dev"));
        assert!(m.starts_with("52:54:00:"), "{m}");
        assert_eq!(m.len(), 17);
        assert_ne!(m, node_mac("dev", "dev-m02"));
        assert_ne!(m, node_mac("other", "dev"));
        // No ambiguity between ("ab","c") and ("a","bc").
        assert_ne!(node_mac("ab", "c"), node_mac("a", "bc"));
    }

    #[test]
    fn subnet_avoids_routes_and_other_networks() {
        assert_eq!(pick_subnet(&[]), Some([192, 168, 100]));
        let used = [
            // default route: ignored
            UsedNet {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            },
            UsedNet {
                addr: Ipv4Addr::new(192, 168, 100, 1),
                prefix: 24,
            },
            UsedNet {
                addr: Ipv4Addr::new(192, 168, 101, 0),
                prefix: 24,
            },
            // a /23 covering .102 and .103
            UsedNet {
                addr: Ipv4Addr::new(192, 168, 102, 0),
                prefix: 23,
            },
        ];
        assert_eq!(pick_subnet(&used), Some([192, 168, 104]));
        // A host on a 192.168.0.0/16 LAN leaves nothing.
        let lan = [UsedNet {
            addr: Ipv4Addr::new(192, 168, 0, 0),
            prefix: 16,
        }];
        assert_eq!(pick_subnet(&lan), None);
    }

    #[test]
    fn parses_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    virbr0\t0000110A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_proc_routes(text);
        assert_eq!(
            routes,
            vec![
                UsedNet {
                    addr: Ipv4Addr::UNSPECIFIED,
                    prefix: 0
                },
                UsedNet {
                    addr: Ipv4Addr::new(192, 168, 100, 0),
                    prefix: 24
                },
                UsedNet {
                    addr: Ipv4Addr::new(10, 17, 0, 0),
                    prefix: 16
                },
            ]
        );
        assert_eq!(pick_subnet(&routes), Some([192, 168, 101]));
    }

    #[test]
    fn host_ips_follow_the_index_and_skip_taken_ones() {
        let s = [192, 168, 130];
        assert_eq!(
            pick_host_ip(s, 1, &[]),
            Some(Ipv4Addr::new(192, 168, 130, 11))
        );
        assert_eq!(
            pick_host_ip(s, 1, &[Ipv4Addr::new(192, 168, 130, 11)]),
            Some(Ipv4Addr::new(192, 168, 130, 2))
        );
        assert_eq!(
            pick_host_ip(s, 500, &[]),
            Some(Ipv4Addr::new(192, 168, 130, 2))
        );
        let all: Vec<_> = (2..=99).map(|d| Ipv4Addr::new(192, 168, 130, d)).collect();
        assert_eq!(pick_host_ip(s, 1, &all), None);
    }
}
