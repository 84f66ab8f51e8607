//! `--node user@host[:port]`: where a node of an SSH cluster lives.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One machine the user owns, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SshHost {
    pub user: String,
    /// An IP address (IPv6 without brackets) or a host name.
    pub host: String,
    pub port: u16,
}

impl SshHost {
    /// `host` or `[host]:port` (IPv6 in brackets), the way known_hosts and users write it.
    pub fn address(&self) -> String {
        let host = timonel_driver::net::bracket_host(&self.host);
        if self.port == 22 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The address when `host` is a literal IP.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.address())
    }
}

/// The user name `ssh` would use when none is given: the local login name.
pub fn default_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

impl FromStr for SshHost {
    type Err = String;

    /// `[user@]host[:port]`, `[user@][v6addr]:port` or `[user@]v6addr`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("`{s}` is not user@host[:port]: {why}");
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (u.to_string(), r),
            None => (default_user(), s),
        };
        if user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(bad(
                "the user name may hold letters, digits, `.`, `_` and `-`",
            ));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("a `[` without its `]`"))?;
            let port = match after {
                "" => 22,
                p => p
                    .strip_prefix(':')
                    .ok_or_else(|| bad("only `:port` may follow `]`"))?
                    .parse()
                    .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
            };
            (h.to_string(), port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: no port.
            (rest.to_string(), 22)
        } else if let Some((h, p)) = rest.split_once(':') {
            let port = p
                .parse()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
            (h.to_string(), port)
        } else {
            (rest.to_string(), 22)
        };
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.contains(':') {
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
        } else if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            || host.starts_with('-')
        {
            return Err(bad("the host is not an IP address or a DNS name"));
        }
        Ok(Self { user, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SshHost {
        s.parse().unwrap()
    }

    #[test]
    fn forms_users_write() {
        let h = parse("pi@192.168.1.20");
        assert_eq!(
            (h.user.as_str(), h.host.as_str(), h.port),
            ("pi", "192.168.1.20", 22)
        );
        assert_eq!(h.to_string(), "pi@192.168.1.20");
        let h = parse("admin@node-2.lan:2222");
        assert_eq!((h.host.as_str(), h.port), ("node-2.lan", 2222));
        assert_eq!(h.address(), "node-2.lan:2222");
        let h = parse("root@[fd00::5]:2200");
        assert_eq!((h.host.as_str(), h.port), ("fd00::5", 2200));
        assert_eq!(h.address(), "[fd00::5]:2200");
        let h = parse("root@fd00::6");
        assert_eq!((h.host.as_str(), h.port), ("fd00::6", 22));
        assert_eq!(h.address(), "[fd00::6]");
        assert_eq!(parse("10.0.0.1").user, default_user());
        assert_eq!(
            parse("root@10.0.0.1").ip_literal(),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse("root@box").ip_literal(), None);
    }

    #[test]
    fn bad_forms_say_why() {
        for (s, why) in [
            ("root@", "empty"),
            ("root@host:0", "port"),
            ("root@host:http", "port"),
            ("root@[fd00::1", "`]`"),
            ("ro ot@host", "user name"),
            ("root@host;rm -rf", "DNS name"),
            ("root@-oProxyCommand=x", "DNS name"),
            ("root@fd00::zz", "IPv6"),
        ] {
            let e = s.parse::<SshHost>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
