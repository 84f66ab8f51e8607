//! Extra k3s arguments (`start --k3s-arg ARG[@server|@agent|@all]`): parsed, checked against
//! the flags timonel sets itself, kept in the profile, and added to the `k3s server` or
//! `k3s agent` command line of the nodes they are for (docs/k3s-contract.md §3.3–§3.6).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use timonel_driver::NodeRole;

/// Which nodes an argument is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Server,
    Agent,
    All,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Agent => "agent",
            Self::All => "all",
        }
    }
}

/// One `--k3s-arg`: a k3s flag (`--name` or `--name=value`, one argument) and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sArg {
    pub arg: String,
    pub scope: Scope,
}

impl fmt::Display for K3sArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.arg, self.scope.name())
    }
}

/// Flags timonel sets itself (in config.yaml or by how it runs k3s): given again they would
/// change or break what timonel relies on. Each with why, and what to do instead.
const OWNED: &[(&[&str], &str, &str)] = &[
    (
        &["token", "t", "token-file"],
        "timonel makes the cluster's join secret and writes it to every node",
        "drop it: the secret is in the profile",
    ),
    (
        &["server", "s"],
        "timonel joins every node to the cluster's first server",
        "drop it: `timonel node add` adds nodes to the cluster",
    ),
    (
        &["cluster-init", "cluster-reset", "cluster-reset-restore-path"],
        "timonel starts the first server of a multi-server cluster with --cluster-init and keeps etcd's membership",
        "use `--control-planes N` for several servers",
    ),
    (
        &["node-name", "with-node-id"],
        "timonel names every node and finds it by that name",
        "drop it; `--node-label` marks nodes without renaming them",
    ),
    (
        &["node-ip", "i", "node-external-ip"],
        "timonel reaches every node at the address its driver gives it",
        "drop it",
    ),
    (
        &["data-dir", "d"],
        "timonel's logs, image load and delete find k3s's data in its default folder",
        "drop it",
    ),
    (
        &["config", "c"],
        "timonel writes each node's settings to /etc/rancher/k3s/config.yaml",
        "drop it: give the settings themselves as --k3s-arg",
    ),
    (
        &["write-kubeconfig", "o", "write-kubeconfig-mode", "write-kubeconfig-group"],
        "timonel reads the admin kubeconfig k3s writes to /etc/rancher/k3s/k3s.yaml (mode 0600)",
        "drop it: `timonel kubeconfig` gives the cluster's kubeconfig",
    ),
    (
        &["tls-san"],
        "timonel writes the API certificate's names itself (127.0.0.1, localhost, the listen address, the machines' addresses), and a list given both in config.yaml and on the command line combines in a way k3s does not document, which could drop the names the kubeconfig needs",
        "drop it: `--listen-address` adds that address to the certificate",
    ),
    (
        &["disable"],
        "timonel writes --disable to config.yaml, and a list given both there and on the command line combines in a way k3s does not document",
        "use timonel's own `--disable` (e.g. `--disable traefik,servicelb`)",
    ),
    (
        &[
            "https-listen-port",
            "supervisor-port",
            "apiserver-port",
            "bind-address",
            "advertise-port",
        ],
        "timonel publishes, joins and balances the API on port 6443 of each server",
        "drop it: `--apiserver-port` picks the port on this machine",
    ),
    (
        &["log", "l", "alsologtostderr"],
        "`timonel logs` and the diagnosis of a start that times out read k3s's own output",
        "drop it: `timonel logs` shows k3s's log",
    ),
];

/// What is wrong with a `--k3s-arg`, and what to do.
fn refuse(value: &str, why: &str, what_to_do: &str) -> String {
    format!("`{value}`: {why}; {what_to_do}")
}

impl FromStr for K3sArg {
    type Err = String;

    /// `ARG`, `ARG@server`, `ARG@agent` or `ARG@all`; ARG is `--name` or `--name=value`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (arg, scope) = match s.rsplit_once('@') {
            Some((a, "server")) => (a, Scope::Server),
            Some((a, "agent")) => (a, Scope::Agent),
            Some((a, "all")) => (a, Scope::All),
            Some((_, suffix))
                if suffix.starts_with("server") || suffix.starts_with("agent") =>
            {
                return Err(refuse(
                    s,
                    &format!("`@{suffix}` names no nodes timonel knows"),
                    "end it with @server, @agent or @all (nothing: all nodes); k3d's `@server:0` form is not used",
                ))
            }
            _ => (s, Scope::All),
        };
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(refuse(
                s,
                "a k3s argument must be a flag starting with `--`",
                "write it as `--name` or `--name=value`, e.g. `--k3s-arg --node-label=tier=db@agent`",
            ));
        };
        let name = flag.split_once('=').map_or(flag, |(n, _)| n);
        if name.is_empty()
            || name.starts_with('-')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(refuse(
                s,
                "it is not one k3s flag (a flag and its value are one argument here)",
                "write the value after `=`, e.g. `--k3s-arg --node-taint=key=value:NoSchedule`",
            ));
        }
        if let Some((_, why, what_to_do)) = OWNED.iter().find(|(names, _, _)| names.contains(&name))
        {
            return Err(refuse(
                s,
                &format!("timonel sets --{name} itself: {why}"),
                what_to_do,
            ));
        }
        Ok(Self {
            arg: arg.to_string(),
            scope,
        })
    }
}

/// The extra k3s arguments of a cluster, by the nodes they are for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sArgs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<String>,
}

impl K3sArgs {
    /// Sorted by scope, each scope in the order given.
    pub fn from_list(args: &[K3sArg]) -> Self {
        let pick = |scope: Scope| {
            args.iter()
                .filter(|a| a.scope == scope)
                .map(|a| a.arg.clone())
                .collect()
        };
        Self {
            server: pick(Scope::Server),
            agent: pick(Scope::Agent),
            all: pick(Scope::All),
        }
    }

    /// Back to `--k3s-arg` values (the profile's arguments as flags).
    pub fn to_list(&self) -> Vec<K3sArg> {
        let of = |items: &[String], scope| {
            items
                .iter()
                .map(move |a| K3sArg {
                    arg: a.clone(),
                    scope,
                })
                .collect::<Vec<_>>()
        };
        let mut out = of(&self.server, Scope::Server);
        out.extend(of(&self.agent, Scope::Agent));
        out.extend(of(&self.all, Scope::All));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.server.is_empty() && self.agent.is_empty() && self.all.is_empty()
    }

    /// The arguments a node of `role` runs with: every node's, then its role's.
    pub fn for_role(&self, role: NodeRole) -> impl Iterator<Item = &String> {
        let own = match role {
            NodeRole::Server => &self.server,
            NodeRole::Agent => &self.agent,
        };
        self.all.iter().chain(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<K3sArg, String> {
        s.parse()
    }

    #[test]
    fn scope_comes_from_the_suffix_and_defaults_to_all() {
        let a = parse("--node-label=tier=db@agent").unwrap();
        assert_eq!(
            (a.arg.as_str(), a.scope),
            ("--node-label=tier=db", Scope::Agent)
        );
        let a = parse("--disable-network-policy@server").unwrap();
        assert_eq!(a.scope, Scope::Server);
        let a = parse("--kubelet-arg=max-pods=50").unwrap();
        assert_eq!(a.scope, Scope::All);
        assert_eq!(a.to_string(), "--kubelet-arg=max-pods=50@all");
        // An @ that names no scope is part of the value.
        let a = parse("--node-label=owner=me@example").unwrap();
        assert_eq!(
            (a.arg.as_str(), a.scope),
            ("--node-label=owner=me@example", Scope::All)
        );
    }

    #[test]
    fn malformed_and_owned_flags_are_refused_with_what_to_do() {
        let e = parse("node-label=x").unwrap_err();
        assert!(e.contains("starting with `--`"), "{e}");
        let e = parse("-t=abc").unwrap_err();
        assert!(e.contains("starting with `--`"), "{e}");
        let e = parse("--node-label x=y").unwrap_err();
        assert!(e.contains("after `=`"), "{e}");
        let e = parse("--node-label=x@server:0").unwrap_err();
        assert!(e.contains("@server, @agent or @all"), "{e}");
        for owned in [
            "--token=abc",
            "--t=abc",
            "--server=https://x:6443",
            "--cluster-init",
            "--node-name=a",
            "--node-ip=10.0.0.1",
            "--data-dir=/x",
            "--tls-san=x@server",
            "--disable=traefik",
            "--https-listen-port=7443",
            "--write-kubeconfig-mode=644",
        ] {
            let e = parse(owned).unwrap_err();
            assert!(e.contains("timonel sets --"), "{owned}: {e}");
        }
        assert!(parse("--tls-san=x")
            .unwrap_err()
            .contains("--listen-address"));
    }

    #[test]
    fn roles_get_every_nodes_then_their_own() {
        let list: Vec<K3sArg> = ["--aa@server", "--bb", "--cc@agent", "--dd@server"]
            .iter()
            .map(|s| parse(s).unwrap())
            .collect();
        let args = K3sArgs::from_list(&list);
        let server: Vec<_> = args.for_role(NodeRole::Server).cloned().collect();
        assert_eq!(server, ["--bb", "--aa", "--dd"]);
        let agent: Vec<_> = args.for_role(NodeRole::Agent).cloned().collect();
        assert_eq!(agent, ["--bb", "--cc"]);
        assert_eq!(K3sArgs::from_list(&args.to_list()), args);
    }
}
