//! Host names and addresses as they appear in URLs and `host:port` strings.

use std::net::IpAddr;

/// `host` as it goes before `:port`: an IPv6 address in brackets, anything else as it is.
pub fn bracket_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `ip:port`, or `[ip]:port` for IPv6.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracket_host(host))
}

/// `https://ip:port` for an address the host reaches.
pub fn https_url(ip: IpAddr, port: u16) -> String {
    format!("https://{}", host_port(&ip.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_ipv6_only() {
        assert_eq!(host_port("10.0.0.1", 22), "10.0.0.1:22");
        assert_eq!(host_port("fd00::1", 22), "[fd00::1]:22");
        assert_eq!(host_port("[fd00::1]", 22), "[fd00::1]:22");
        assert_eq!(host_port("node.example", 2222), "node.example:2222");
        assert_eq!(
            https_url("::1".parse().unwrap(), 6443),
            "https://[::1]:6443"
        );
    }
}
