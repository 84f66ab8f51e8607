//! The cluster file: `start --config FILE` reads one, `config export` writes one
//! (docs/cluster-file.md).
//!
//! Each field of the file is a flag of `start` under another name, and is checked by parsing it
//! *as that flag* — the flag's own parser and `start`'s own checks — so a value means the same
//! in the file and on the command line, and an error points at the file's line and column.
//! Merging: a flag given on the command line (or its environment variable) wins over the file;
//! what neither gives comes from `timonel config set`, then the built-in defaults.

mod export;
#[cfg(test)]
mod export_tests;
pub mod schema;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use serde_saphyr::Location;
use timonel_driver::ClusterName;

use super::start::{check_values, StartArgs};
use crate::distro::k3s;
use crate::error::UserError;
pub use export::{export, to_yaml};
use schema::{At, ClusterFile, API_VERSIONS, KIND};

/// What to do about any mistake in a file.
const SCHEMA_HINT: &str =
    "fix the file: docs/cluster-file.md lists every field and the flag it stands for";

/// A cluster file, read and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    /// `name`: the profile, unless `-p` is given.
    pub name: Option<ClusterName>,
    settings: Vec<Setting>,
    /// `registries.caCerts[].pem`: certificates given in the file itself.
    ca_pems: Vec<String>,
}

/// One flag of `start` as the file sets it: its clap id and, per value, the command-line tokens
/// and where the value was written.
#[derive(Debug, Clone)]
struct Setting {
    id: &'static str,
    /// The file's name for it, for messages.
    field: &'static str,
    values: Vec<(Vec<String>, Location)>,
}

/// Reads and checks the cluster file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::new(
            format!("cannot read the cluster file `{}`: {e}", path.display()),
            "give the path of a cluster file (`timonel config export -p NAME` writes one)",
        )
    })?;
    parse(path, &text)
}

/// Parses and checks a cluster file's text; `path` names it in errors and anchors its relative
/// paths.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Loaded> {
    let options = serde_saphyr::options! { with_snippet: false };
    let file: ClusterFile =
        serde_saphyr::from_str_with_options(text.trim_start_matches('\u{feff}'), options).map_err(
            |e| {
                let e = e.without_snippet();
                let message = e.to_string();
                // The location goes in front, where editors and terminals look for it.
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                located(path, e.location(), &plain(message), SCHEMA_HINT)
            },
        )?;
    if !API_VERSIONS.contains(&file.api_version.value.as_str()) {
        return Err(located(
            path,
            Some(file.api_version.referenced),
            &format!(
                "apiVersion `{}` is not one this timonel reads",
                file.api_version.value
            ),
            &format!(
                "use apiVersion: {} (the versions this timonel reads: {}); a newer timonel may read this file",
                API_VERSIONS[0],
                API_VERSIONS.join(", ")
            ),
        )
        .into());
    }
    if file.kind.value != KIND {
        return Err(located(
            path,
            Some(file.kind.referenced),
            &format!("kind `{}` is not a cluster file", file.kind.value),
            &format!("use kind: {KIND}"),
        )
        .into());
    }
    let name =
        match &file.name {
            Some(n) => Some(n.value.parse::<ClusterName>().map_err(|e| {
                located(path, Some(n.referenced), &format!("`name`: {e}"), e.hint())
            })?),
            None => None,
        };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let mut ca_pems = Vec::new();
    for cert in file
        .registries
        .iter()
        .flat_map(|r| r.ca_certs.iter().flatten())
    {
        if let (None, Some(pem)) = (&cert.file, &cert.pem) {
            k3s::validate_ca_pem(&pem.value).map_err(|e| {
                located(
                    path,
                    Some(pem.referenced),
                    &format!("`registries.caCerts[].pem` is not usable: {e}"),
                    "paste the CA certificate as PEM (-----BEGIN CERTIFICATE----- …)",
                )
            })?;
            ca_pems.push(pem.value.clone());
        }
    }
    let settings = settings(path, &file, &dir)?;
    for s in &settings {
        for (tokens, at) in &s.values {
            check_as_flag(tokens).map_err(|(message, hint)| {
                located(path, Some(*at), &format!("`{}`: {message}", s.field), &hint)
            })?;
        }
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        name,
        settings,
        ca_pems,
    })
}

/// The YAML reader's word for a wrong type, followed by what the field wants in plain words.
fn plain(message: String) -> String {
    let wants = match message.as_str() {
        "invalid u16" => "expected a port number (a whole number up to 65535)",
        "invalid u32" => "expected a whole number",
        "invalid floating point" => "expected a number, e.g. 2 or 0.5",
        "invalid boolean" => "expected true or false",
        "expected sequence start" => "expected a list (`[a, b]` or one `- item` per line)",
        "expected mapping start" => "expected fields (`key: value` lines, indented)",
        "expected string scalar" => "expected a single value, not a list or fields",
        _ => return message,
    };
    format!("{message}: {wants}")
}

impl Loaded {
    /// Sets `args` from the file, except what was given on the command line (`args.explicit`).
    pub fn apply(&self, args: &mut StartArgs) -> anyhow::Result<()> {
        let given = |id: &str| args.explicit.iter().any(|e| e == id);
        let mut take = Vec::new();
        for s in &self.settings {
            if !given(s.id) {
                take.push(s.id);
            }
        }
        if !given("ca_certs") {
            args.ca_pems = self.ca_pems.clone();
        }
        // Every value the file sets, parsed together as flags (each was checked alone).
        let tokens: Vec<String> = self
            .settings
            .iter()
            .filter(|s| take.contains(&s.id))
            .flat_map(|s| s.values.iter().flat_map(|(t, _)| t.clone()))
            .collect();
        let from_file = parse_flags(&tokens).map_err(|e| {
            UserError::new(
                format!("the cluster file `{}`: {e}", self.path.display()),
                SCHEMA_HINT,
            )
        })?;
        for id in take {
            copy(args, &from_file, id);
        }
        Ok(())
    }
}

/// `start`'s flags alone, parsed from `tokens` with `start`'s own definitions.
fn parse_flags(tokens: &[String]) -> Result<StartArgs, String> {
    let cmd = StartArgs::augment_args(clap::Command::new("start").no_binary_name(true));
    let matches = cmd.try_get_matches_from(tokens).map_err(first_line)?;
    StartArgs::from_arg_matches(&matches).map_err(first_line)
}

fn first_line(e: clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// One value checked as its flag: clap's parser, then `start`'s checks. The error's message and
/// what to do.
fn check_as_flag(tokens: &[String]) -> Result<(), (String, String)> {
    let one = parse_flags(tokens).map_err(|e| (e, SCHEMA_HINT.to_string()))?;
    check_values(&one).map(drop).map_err(|e| {
        let hint = e
            .downcast_ref::<UserError>()
            .and_then(|u| u.hint.clone())
            .unwrap_or_else(|| SCHEMA_HINT.to_string());
        (e.to_string(), hint)
    })
}

/// `FILE:LINE:COLUMN: what` and what to do.
fn located(path: &Path, at: Option<Location>, what: &str, hint: &str) -> UserError {
    let place = match at.filter(|l| l.line() > 0) {
        Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
        None => path.display().to_string(),
    };
    UserError::new(format!("{place}: {what}"), hint)
}

/// A path written in the file: `~/` is the home folder, a relative path is relative to the
/// file's folder.
fn resolve(dir: &Path, written: &str) -> String {
    let path = match written.strip_prefix("~/") {
        Some(rest) => dirs::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| PathBuf::from(written)),
        None if Path::new(written).has_root() => PathBuf::from(written),
        None => dir.join(written),
    };
    path.to_string_lossy().into_owned()
}

/// Makes [`Setting`]s: each field's text and place as the tokens of its flag (`start`'s
/// definition of the flag gives its name and whether it takes a value).
struct Flags {
    cmd: clap::Command,
    dir: PathBuf,
    out: Vec<Setting>,
}

impl Flags {
    /// The flag `--name` of the clap id, and whether it takes a value (not a switch).
    fn flag(&self, id: &str) -> (String, bool) {
        let arg = self.cmd.get_arguments().find(|a| a.get_id() == id);
        let long = arg.and_then(|a| a.get_long()).unwrap_or(id);
        let takes = arg.is_none_or(|a| a.get_action().takes_values());
        (format!("--{long}"), takes)
    }

    /// A field that sets a flag once; a switch is given for `true` and left out for `false`.
    fn one(&mut self, id: &'static str, field: &'static str, v: Option<(String, Location)>) {
        let (flag, takes_value) = self.flag(id);
        if let Some((v, at)) = v {
            let tokens = match (takes_value, v.as_str()) {
                (true, _) => vec![flag, v],
                (false, "true") => vec![flag],
                (false, _) => vec![],
            };
            self.out.push(Setting {
                id,
                field,
                values: vec![(tokens, at)],
            });
        }
    }

    /// A field that is a list: the repeatable flag once per item.
    fn list(&mut self, id: &'static str, field: &'static str, items: Option<&Vec<At<String>>>) {
        let (flag, _) = self.flag(id);
        if let Some(items) = items {
            let values = items
                .iter()
                .map(|v| (vec![format!("{flag}={}", v.value)], v.referenced))
                .collect();
            self.out.push(Setting { id, field, values });
        }
    }

    /// A path: relative to the file's folder.
    fn path(&self, v: Option<&At<String>>) -> Option<(String, Location)> {
        v.map(|v| (resolve(&self.dir, &v.value), v.referenced))
    }
}

/// A scalar field's text and place.
fn text<T: ToString>(v: Option<&At<T>>) -> Option<(String, Location)> {
    v.map(|v| (v.value.to_string(), v.referenced))
}

/// The flags the file sets.
fn settings(path: &Path, f: &ClusterFile, dir: &Path) -> Result<Vec<Setting>, UserError> {
    let mut s = Flags {
        cmd: StartArgs::augment_args(clap::Command::new("start")),
        dir: dir.to_path_buf(),
        out: Vec::new(),
    };
    let nodes = (f.servers.is_some() || f.agents.is_some()).then(|| {
        let servers = f.servers.as_ref().map_or(1, |v| v.value);
        let agents = f.agents.as_ref().map_or(0, |v| v.value);
        let at =
            (f.agents.as_ref().or(f.servers.as_ref())).map_or(Location::UNKNOWN, |v| v.referenced);
        (servers.saturating_add(agents).to_string(), at)
    });
    let api = f.api_server.as_ref();
    let vm = f.vm.as_ref();
    let ssh = f.ssh.as_ref();
    let reg = f.registries.as_ref();
    s.one("driver", "driver", text(f.driver.as_ref()));
    s.one(
        "kubernetes_version",
        "kubernetesVersion",
        text(f.kubernetes_version.as_ref()),
    );
    s.one("control_planes", "servers", text(f.servers.as_ref()));
    s.one("nodes", "servers + agents", nodes);
    s.one("cpus", "cpus", text(f.cpus.as_ref()));
    s.one("memory", "memory", text(f.memory.as_ref()));
    s.one("node_image", "nodeImage", text(f.node_image.as_ref()));
    s.one("preload", "preload", text(f.preload.as_ref()));
    s.one(
        "apiserver_port",
        "apiServer.port",
        text(api.and_then(|a| a.port.as_ref())),
    );
    let listen = text(api.and_then(|a| a.listen_address.as_ref()));
    s.one("listen_address", "apiServer.listenAddress", listen);
    let image = s.path(vm.and_then(|v| v.image.as_ref()));
    s.one("vm_image", "vm.image", image);
    s.one(
        "disk_size",
        "vm.diskSize",
        text(vm.and_then(|v| v.disk_size.as_ref())),
    );
    s.one(
        "hyperv_virtual_switch",
        "vm.hypervSwitch",
        text(vm.and_then(|v| v.hyperv_switch.as_ref())),
    );
    let key = s.path(ssh.and_then(|v| v.key.as_ref()));
    s.one("ssh_key", "ssh.key", key);
    let known_hosts = s.path(ssh.and_then(|v| v.known_hosts.as_ref()));
    s.one("ssh_known_hosts", "ssh.knownHosts", known_hosts);
    let accept = text(ssh.and_then(|v| v.accept_new_host_keys.as_ref()));
    s.one("ssh_accept_new_host_keys", "ssh.acceptNewHostKeys", accept);
    s.one(
        "adopt",
        "ssh.adopt",
        text(ssh.and_then(|v| v.adopt.as_ref())),
    );
    s.list("disable", "disable", f.disable.as_ref());
    s.list("env", "env", f.env.as_ref());
    s.list("ports", "ports", f.ports.as_ref());
    // A mount's host folder, like every path of the file, is relative to the file's folder.
    let mounts = f.mounts.as_ref().map(|items| {
        items
            .iter()
            .map(|m| match timonel_driver::Mount::split(&m.value) {
                Ok((host, node, ro)) => {
                    let host = resolve(dir, &host);
                    let value = format!("{host}:{node}{}", if ro { ":ro" } else { "" });
                    At::new(value, m.referenced, m.defined)
                }
                // The flag's parser says what is wrong with it.
                Err(_) => m.clone(),
            })
            .collect::<Vec<_>>()
    });
    s.list("mounts", "mounts", mounts.as_ref());
    s.list(
        "registry_mirrors",
        "registries.mirrors",
        reg.and_then(|r| r.mirrors.as_ref()),
    );
    s.list(
        "machines",
        "ssh.machines",
        ssh.and_then(|v| v.machines.as_ref()),
    );
    k3s_args(path, &mut s, f.k3s_args.as_ref())?;
    let mut files = Vec::new();
    for cert in reg.iter().flat_map(|r| r.ca_certs.iter().flatten()) {
        let (at, problem) = match (&cert.file, &cert.pem) {
            (Some(file), None) => {
                let value = resolve(dir, &file.value);
                files.push(At::new(value, file.referenced, file.defined));
                continue;
            }
            (None, Some(_)) => continue,
            (Some(file), Some(_)) => (Some(file.referenced), "has both `file` and `pem`"),
            (None, None) => (None, "has an entry with neither `file` nor `pem`"),
        };
        return Err(located(
            path,
            at,
            &format!("`registries.caCerts[]` {problem}"),
            "give each certificate as `file: PATH` (a PEM file) or as `pem: |` (the PEM text), not both",
        ));
    }
    if !files.is_empty() {
        s.list("ca_certs", "registries.caCerts[].file", Some(&files));
    }
    Ok(s.out)
}

/// `k3sArgs.server|agent|all`: `--k3s-arg ARG@<list>`. The list names the nodes, so an item
/// with its own `@server`/`@agent`/`@all` is refused rather than read two ways.
fn k3s_args(path: &Path, s: &mut Flags, f: Option<&schema::K3sArgs>) -> Result<(), UserError> {
    let Some(f) = f else { return Ok(()) };
    for (field, scope, items) in [
        ("k3sArgs.server", "server", &f.server),
        ("k3sArgs.agent", "agent", &f.agent),
        ("k3sArgs.all", "all", &f.all),
    ] {
        let Some(items) = items else { continue };
        let mut scoped = Vec::new();
        for item in items {
            if let Some(suffix) = ["@server", "@agent", "@all"]
                .iter()
                .find(|x| item.value.ends_with(*x))
            {
                return Err(located(
                    path,
                    Some(item.referenced),
                    &format!(
                        "`{field}`: `{}` names its nodes with `{suffix}`, but the list it is in names them",
                        item.value
                    ),
                    &format!("drop `{suffix}` and put the argument in k3sArgs.server, k3sArgs.agent or k3sArgs.all"),
                ));
            }
            let value = format!("{}@{scope}", item.value);
            scoped.push(At::new(value, item.referenced, item.defined));
        }
        s.list("k3s_args", field, Some(&scoped));
    }
    Ok(())
}

/// Copies one flag's value (by clap id) from the file's parsed flags into `args`.
fn copy(args: &mut StartArgs, from: &StartArgs, id: &str) {
    let f = from;
    match id {
        "driver" => args.driver = f.driver,
        "kubernetes_version" => args.kubernetes_version = f.kubernetes_version.clone(),
        "control_planes" => args.control_planes = f.control_planes,
        "nodes" => args.nodes = f.nodes,
        "cpus" => args.cpus = f.cpus,
        "memory" => args.memory = f.memory,
        "node_image" => args.node_image = f.node_image.clone(),
        "preload" => args.preload = f.preload,
        "apiserver_port" => args.apiserver_port = f.apiserver_port,
        "listen_address" => args.listen_address = f.listen_address,
        "vm_image" => args.vm_image = f.vm_image.clone(),
        "disk_size" => args.disk_size = f.disk_size,
        "hyperv_virtual_switch" => args.hyperv_virtual_switch = f.hyperv_virtual_switch.clone(),
        "ssh_key" => args.ssh_key = f.ssh_key.clone(),
        "ssh_known_hosts" => args.ssh_known_hosts = f.ssh_known_hosts.clone(),
        "disable" => args.disable = f.disable.clone(),
        "env" => args.env = f.env.clone(),
        "ports" => args.ports = f.ports.clone(),
        "mounts" => args.mounts = f.mounts.clone(),
        "registry_mirrors" => args.registry_mirrors = f.registry_mirrors.clone(),
        "k3s_args" => args.k3s_args = f.k3s_args.clone(),
        "machines" => args.machines = f.machines.clone(),
        "ca_certs" => args.ca_certs = f.ca_certs.clone(),
        "ssh_accept_new_host_keys" => args.ssh_accept_new_host_keys = f.ssh_accept_new_host_keys,
        "adopt" => args.adopt = f.adopt,
        other => unreachable!("the cluster file sets no flag `{other}`"),
    }
}
