//! Host facts without libc or external commands: the hostname, the node IPs (from
//! `/proc/net`), `https://` URL parsing, and name resolution through `/etc/hosts`
//! (a static glibc binary cannot use NSS, so `getaddrinfo` is never called).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel hostname.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Local IPv4 addresses from the text of `/proc/net/fib_trie` (`/32 host LOCAL` entries).
pub fn parse_fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// `(interface, destination, mask)` routes and the default-route interface from `/proc/net/route`.
pub fn parse_route(text: &str) -> (Vec<(String, Ipv4Addr, Ipv4Addr)>, Option<String>) {
    let hex_ip = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    let mut routes = Vec::new();
    let mut default = None;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        let (Some(dest), Some(mask)) = (hex_ip(cols[1]), hex_ip(cols[7])) else {
            continue;
        };
        if dest.is_unspecified() && mask.is_unspecified() {
            default.get_or_insert_with(|| cols[0].to_string());
        } else {
            routes.push((cols[0].to_string(), dest, mask));
        }
    }
    (routes, default)
}

/// Picks the node IP: a local address on the default-route interface's subnet,
/// else the first non-loopback local address, else 127.0.0.1.
pub fn choose_node_ip(fib_trie: &str, route: &str) -> Ipv4Addr {
    let locals: Vec<Ipv4Addr> = parse_fib_trie_locals(fib_trie)
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let (routes, default) = parse_route(route);
    if let Some(iface) = default {
        for (_, dest, mask) in routes.iter().filter(|(i, _, _)| *i == iface) {
            let (d, m) = (u32::from(*dest), u32::from(*mask));
            if let Some(ip) = locals.iter().find(|ip| u32::from(**ip) & m == d & m) {
                return *ip;
            }
        }
    }
    locals.first().copied().unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Global IPv6 addresses from the text of `/proc/net/if_inet6`.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 6 || cols[3] != "00" || cols[5] == "lo" || cols[0].len() != 32 {
                return None;
            }
            u128::from_str_radix(cols[0], 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

/// The detected node IP and every other address worth putting in the serving cert.
pub fn detect_addresses() -> (IpAddr, Vec<IpAddr>) {
    let fib = fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let route = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let node_ip = IpAddr::V4(choose_node_ip(&fib, &route));
    let mut all: Vec<IpAddr> = parse_fib_trie_locals(&fib)
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .map(IpAddr::V4)
        .collect();
    all.extend(
        parse_if_inet6(&fs::read_to_string("/proc/net/if_inet6").unwrap_or_default())
            .into_iter()
            .map(IpAddr::V6),
    );
    (node_ip, all)
}

/// An `https://host:port` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
}

impl HttpsUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("server URL `{url}` must start with https://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("invalid IPv6 host in `{url}`"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("server URL `{url}` has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("invalid port in `{url}`"))?,
            None => 443,
        };
        Ok(Self { host, port })
    }

    /// Resolves the host: an IP literal, `localhost`, or an `/etc/hosts` entry.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let ip = resolve_host(
            &self.host,
            &fs::read_to_string("/etc/hosts").unwrap_or_default(),
        )?;
        Ok(SocketAddr::new(ip, self.port))
    }
}

/// Resolves `host` without NSS.
pub fn resolve_host(host: &str, etc_hosts: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    for line in etc_hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut cols = line.split_whitespace();
        let Some(Ok(ip)) = cols.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if cols.any(|name| name.eq_ignore_ascii_case(host)) {
            return Ok(ip);
        }
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Err(format!(
        "cannot resolve `{host}`: the k3s stand-in only resolves IP literals and /etc/hosts entries"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.1
           /32 host LOCAL
     +-- 192.168.5.0/24 2 0 2
        |-- 192.168.5.15
           /32 host LOCAL
        |-- 192.168.5.255
           /32 link BROADCAST
Local:
     |-- 192.168.5.15
        /32 host LOCAL
";
    const ROUTE: &str =
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT
eth0\t00000000\t0105A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t0005A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn picks_default_route_address() {
        assert_eq!(
            parse_fib_trie_locals(FIB),
            vec![
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(172, 17, 0, 1),
                Ipv4Addr::new(192, 168, 5, 15)
            ]
        );
        assert_eq!(choose_node_ip(FIB, ROUTE), Ipv4Addr::new(192, 168, 5, 15));
        assert_eq!(choose_node_ip(FIB, ""), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(choose_node_ip("", ""), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn parses_if_inet6() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000005 02 40 00 00     eth0
fe800000000000000000000000000005 02 40 20 80     eth0
";
        assert_eq!(
            parse_if_inet6(text),
            vec!["fd00::5".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn urls_and_hosts() {
        assert_eq!(
            HttpsUrl::parse("https://10.0.0.1:6443").unwrap(),
            HttpsUrl {
                host: "10.0.0.1".into(),
                port: 6443
            }
        );
        assert_eq!(HttpsUrl::parse("https://[::1]:7443/").unwrap().host, "::1");
        assert_eq!(HttpsUrl::parse("https://srv").unwrap().port, 443);
        assert!(HttpsUrl::parse("http://srv:6443").is_err());
        let hosts = "127.0.0.1 localhost\n172.18.0.2\ttimonel-server other # comment\n";
        assert_eq!(
            resolve_host("timonel-server", hosts).unwrap(),
            "172.18.0.2".parse::<IpAddr>().unwrap()
        );
        assert!(resolve_host("nowhere", hosts)
            .unwrap_err()
            .contains("/etc/hosts"));
    }
}
