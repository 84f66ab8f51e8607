//! A strict command-line parser in the style of urfave/cli (which k3s uses):
//! `--flag value`, `--flag=value`, `-flag`, repeatable list flags, env var
//! fallbacks, and `flag provided but not defined: -foo` for anything unknown.

use std::collections::BTreeMap;
use std::fmt;

/// What a flag holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    List,
}

/// One accepted flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub short: Option<&'static str>,
    pub kind: Kind,
    pub env: Option<&'static str>,
}

const fn f(name: &'static str, kind: Kind) -> FlagSpec {
    FlagSpec {
        name,
        short: None,
        kind,
        env: None,
    }
}

const fn fs(name: &'static str, short: &'static str, kind: Kind) -> FlagSpec {
    FlagSpec {
        name,
        short: Some(short),
        kind,
        env: None,
    }
}

const fn fe(name: &'static str, kind: Kind, env: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: None,
        kind,
        env: Some(env),
    }
}

const fn fse(name: &'static str, short: &'static str, kind: Kind, env: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: Some(short),
        kind,
        env: Some(env),
    }
}

use Kind::{Bool, List, Str};

/// Flags shared by `server` and `agent` (the node-level flags of docs/k3s-contract.md §3.5).
const NODE_FLAGS: &[FlagSpec] = &[
    fse("config", "c", Str, "K3S_CONFIG_FILE"),
    fe("debug", Bool, "K3S_DEBUG"),
    fse("data-dir", "d", Str, "K3S_DATA_DIR"),
    fse("token", "t", Str, "K3S_TOKEN"),
    fe("token-file", Str, "K3S_TOKEN_FILE"),
    fse("server", "s", Str, "K3S_URL"),
    fe("node-name", Str, "K3S_NODE_NAME"),
    f("with-node-id", Bool),
    fs("node-ip", "i", List),
    f("node-external-ip", List),
    f("node-label", List),
    f("node-taint", List),
    f("kubelet-arg", List),
    f("kube-proxy-arg", List),
    f("snapshotter", Str),
    f("flannel-iface", Str),
    f("flannel-conf", Str),
    f("prefer-bundled-bin", Bool),
    f("private-registry", Str),
    f("pause-image", Str),
    fe("lb-server-port", Str, "K3S_LB_SERVER_PORT"),
    fe("selinux", Bool, "K3S_SELINUX"),
    fe("resolv-conf", Str, "K3S_RESOLV_CONF"),
    f("protect-kernel-defaults", Bool),
    f("container-runtime-endpoint", Str),
    f("image-service-endpoint", Str),
    f("image-credential-provider-bin-dir", Str),
    f("image-credential-provider-config", Str),
    f("docker", Bool),
    f("rootless", Bool),
    f("vpn-auth", Str),
    f("vpn-auth-file", Str),
    fs("log", "l", Str),
    f("alsologtostderr", Bool),
    fs("v", "", Str),
    f("airgap-extra-registry", List),
];

/// Flags only `server` accepts (docs/k3s-contract.md §3.4).
const SERVER_ONLY_FLAGS: &[FlagSpec] = &[
    fe("agent-token", Str, "K3S_AGENT_TOKEN"),
    fe("agent-token-file", Str, "K3S_AGENT_TOKEN_FILE"),
    fe("cluster-init", Bool, "K3S_CLUSTER_INIT"),
    fe("cluster-reset", Bool, "K3S_CLUSTER_RESET"),
    fe(
        "cluster-reset-restore-path",
        Str,
        "K3S_CLUSTER_RESET_RESTORE_PATH",
    ),
    fse("write-kubeconfig", "o", Str, "K3S_KUBECONFIG_OUTPUT"),
    fe("write-kubeconfig-mode", Str, "K3S_KUBECONFIG_MODE"),
    fe("write-kubeconfig-group", Str, "K3S_KUBECONFIG_GROUP"),
    f("tls-san", List),
    f("tls-san-security", Bool),
    f("bind-address", Str),
    f("https-listen-port", Str),
    f("supervisor-port", Str),
    f("apiserver-port", Str),
    f("apiserver-bind-address", Str),
    f("advertise-address", Str),
    f("advertise-port", Str),
    f("disable", List),
    f("disable-scheduler", Bool),
    f("disable-cloud-controller", Bool),
    f("disable-kube-proxy", Bool),
    f("disable-network-policy", Bool),
    f("disable-helm-controller", Bool),
    f("disable-agent", Bool),
    f("disable-apiserver", Bool),
    f("disable-controller-manager", Bool),
    f("disable-etcd", Bool),
    f("kube-apiserver-arg", List),
    f("kube-controller-manager-arg", List),
    f("kube-scheduler-arg", List),
    f("kube-cloud-controller-manager-arg", List),
    f("etcd-arg", List),
    f("flannel-backend", Str),
    f("flannel-ipv6-masq", Bool),
    f("flannel-external-ip", Bool),
    f("cluster-cidr", List),
    f("service-cidr", List),
    f("cluster-dns", List),
    f("cluster-domain", Str),
    f("service-node-port-range", Str),
    f("egress-selector-mode", Str),
    f("default-local-storage-path", Str),
    fe(
        "system-default-registry",
        Str,
        "K3S_SYSTEM_DEFAULT_REGISTRY",
    ),
    f("embedded-registry", Bool),
    f("secrets-encryption", Bool),
    f("secrets-encryption-provider", Str),
    f("servicelb-namespace", Str),
    f("etcd-disable-snapshots", Bool),
    f("etcd-expose-metrics", Bool),
    f("etcd-snapshot-dir", Str),
    f("etcd-snapshot-retention", Str),
    f("etcd-snapshot-schedule-cron", Str),
    f("node-name-from-cloud-provider-metadata", Bool),
    f("kine-tls", Bool),
    fe("datastore-endpoint", Str, "K3S_DATASTORE_ENDPOINT"),
    f("enable-pprof", Bool),
    f("helm-job-image", Str),
];

/// Flags only `agent` accepts.
const AGENT_ONLY_FLAGS: &[FlagSpec] = &[f("disable-apiserver-lb", Bool)];

/// Which subcommand a flag set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
}

pub fn specs(role: Role) -> Vec<FlagSpec> {
    let extra = match role {
        Role::Server => SERVER_ONLY_FLAGS,
        Role::Agent => AGENT_ONLY_FLAGS,
    };
    NODE_FLAGS.iter().chain(extra).copied().collect()
}

/// Looks a flag up by its long or short name.
pub fn lookup(specs: &[FlagSpec], name: &str) -> Option<FlagSpec> {
    specs
        .iter()
        .find(|s| s.name == name || (s.short == Some(name) && !name.is_empty()))
        .copied()
}

/// A flag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

/// A usage error, displayed the way urfave/cli prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Incorrect Usage: {}", self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn not_defined(name: &str) -> UsageError {
    UsageError(format!("flag provided but not defined: -{name}"))
}

pub fn parse_bool(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(UsageError(format!(
            "invalid boolean value {v:?} for -{name}: parse error"
        ))),
    }
}

/// The flags given on the command line, by long name, plus the positional arguments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub flags: BTreeMap<String, Value>,
    pub args: Vec<String>,
}

/// Parses `args` (without the program and subcommand names) against `specs`.
/// Like Go's flag package, parsing stops at the first non-flag argument or `--`.
pub fn parse(specs: &[FlagSpec], args: &[String]) -> Result<Parsed, UsageError> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.args.extend(args[i..].iter().cloned());
            break;
        }
        let Some(stripped) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|s| !s.is_empty() && arg != "-")
        else {
            out.args.push(arg.clone());
            out.args.extend(args[i..].iter().cloned());
            break;
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        let spec = lookup(specs, name).ok_or_else(|| not_defined(name))?;
        match spec.kind {
            Kind::Bool => {
                let v = match inline {
                    Some(v) => parse_bool(name, &v)?,
                    None => true,
                };
                out.flags.insert(spec.name.to_string(), Value::Bool(v));
            }
            Kind::Str | Kind::List => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let v = args.get(i).cloned().ok_or_else(|| {
                            UsageError(format!("flag needs an argument: -{name}"))
                        })?;
                        i += 1;
                        v
                    }
                };
                if spec.kind == Kind::Str {
                    out.flags.insert(spec.name.to_string(), Value::Str(v));
                } else {
                    match out
                        .flags
                        .entry(spec.name.to_string())
                        .or_insert_with(|| Value::List(Vec::new()))
                    {
                        Value::List(l) => l.push(v),
                        other => *other = Value::List(vec![v]),
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The values of env vars that back flags, as flag values.
pub fn from_env(
    specs: &[FlagSpec],
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Value>, UsageError> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some(var) = spec.env else { continue };
        let Some(v) = get(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = match spec.kind {
            Kind::Bool => Value::Bool(parse_bool(spec.name, &v)?),
            Kind::Str => Value::Str(v),
            Kind::List => Value::List(v.split(',').map(str::to_string).collect()),
        };
        out.insert(spec.name.to_string(), value);
    }
    Ok(out)
}

/// Resolved settings: CLI over config file over env.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    pub values: BTreeMap<String, Value>,
}

impl Settings {
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(Value::Str(s)) => Some(s.as_str()),
            Some(Value::List(l)) => l.last().map(String::as_str),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    /// A list flag, with comma-separated items split apart.
    pub fn list(&self, name: &str) -> Vec<String> {
        let raw: Vec<String> = match self.values.get(name) {
            Some(Value::List(l)) => l.clone(),
            Some(Value::Str(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        raw.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_both_value_forms_and_repeats() {
        let p = parse(
            &specs(Role::Server),
            &args(&[
                "--tls-san",
                "a.example",
                "--tls-san=b.example",
                "-o",
                "/tmp/k.yaml",
                "--cluster-init",
                "--https-listen-port=7443",
                "-disable=traefik,servicelb",
            ]),
        )
        .unwrap();
        assert_eq!(
            p.flags["tls-san"],
            Value::List(vec!["a.example".into(), "b.example".into()])
        );
        assert_eq!(
            p.flags["write-kubeconfig"],
            Value::Str("/tmp/k.yaml".into())
        );
        assert_eq!(p.flags["cluster-init"], Value::Bool(true));
        assert_eq!(p.flags["https-listen-port"], Value::Str("7443".into()));
        let s = Settings { values: p.flags };
        assert_eq!(s.list("disable"), vec!["traefik", "servicelb"]);
    }

    #[test]
    fn unknown_flag_is_rejected_like_urfave() {
        let err = parse(&specs(Role::Server), &args(&["--foo"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Incorrect Usage: flag provided but not defined: -foo"
        );
        let err = parse(&specs(Role::Server), &args(&["--foo=bar"])).unwrap_err();
        assert_eq!(err.0, "flag provided but not defined: -foo");
    }

    #[test]
    fn server_only_flags_are_unknown_to_agent() {
        let err = parse(&specs(Role::Agent), &args(&["--tls-san", "x"])).unwrap_err();
        assert_eq!(err.0, "flag provided but not defined: -tls-san");
    }

    #[test]
    fn missing_value_and_bad_bool() {
        assert!(parse(&specs(Role::Server), &args(&["--token"])).is_err());
        assert!(parse(&specs(Role::Server), &args(&["--cluster-init=maybe"])).is_err());
        let p = parse(&specs(Role::Server), &args(&["--cluster-init=false"])).unwrap();
        assert_eq!(p.flags["cluster-init"], Value::Bool(false));
    }

    #[test]
    fn env_fallbacks() {
        let get = |k: &str| match k {
            "K3S_TOKEN" => Some("secret".to_string()),
            "K3S_CLUSTER_INIT" => Some("true".to_string()),
            _ => None,
        };
        let env = from_env(&specs(Role::Server), &get).unwrap();
        assert_eq!(env["token"], Value::Str("secret".into()));
        assert_eq!(env["cluster-init"], Value::Bool(true));
    }
}
