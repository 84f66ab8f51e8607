//! The cluster file: every field, bad files with the exact place of the mistake, and precedence
//! of flags over the file over `config set`. Export round trips are in export_tests.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use timonel_driver::{DriverKind, PortMapping};

use super::*;
use crate::cli::{Cli, Command};
use crate::cluster::{Ctx, StartOptions};
use crate::home::Home;
use crate::output::{ColorChoice, Printer, Verbosity};

pub(super) const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

const FULL: &str = r#"apiVersion: timonel.dev/v1alpha1
kind: Cluster
name: dev
driver: docker
kubernetesVersion: v1.31.2+k3s1
servers: 3
agents: 2
cpus: 1.5
memory: 2g
disable: [traefik, servicelb]
env:
  - HTTP_PROXY=http://proxy:3128
ports:
  - 8080:80
  - 5353:53/udp
apiServer:
  port: 40100
  listenAddress: 0.0.0.0
registries:
  mirrors: [https://mirror.example.com:5000]
  caCerts:
    - file: ca.pem
nodeImage: example/k3s:dev
preload: false
"#;

pub(super) fn parse_at(dir: &Path, text: &str) -> anyhow::Result<Loaded> {
    parse(&dir.join("cluster.yaml"), text)
}

/// The error's message (with its place) and hint, for a file in a folder named `d`.
fn error(text: &str) -> (String, String) {
    let e = parse(Path::new("d/cluster.yaml"), text).unwrap_err();
    let u = e.downcast::<UserError>().unwrap();
    (u.message, u.hint.unwrap_or_default())
}

const HEAD: &str = "apiVersion: timonel.dev/v1alpha1\nkind: Cluster\n";

/// [`error`], which must begin with `starts` (the place, then what is wrong).
fn refused(text: &str, starts: &str) -> (String, String) {
    let (m, h) = error(text);
    assert!(m.starts_with(starts), "{m}");
    (m, h)
}

/// `start`'s options for `argv` (after `timonel`), with the cluster file `text` and a home
/// holding `settings` (config.json).
pub(super) fn options(argv: &[&str], text: &str, settings: &str) -> StartOptions {
    try_options(argv, text, settings).unwrap()
}

fn try_options(argv: &[&str], text: &str, settings: &str) -> anyhow::Result<StartOptions> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), PEM).unwrap();
    std::fs::create_dir_all(dir.path().join("data").join("sub")).unwrap();
    let home = Home::at(dir.path().join("home"));
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::write(home.root().join(crate::config::FILE), settings).unwrap();
    let cli = Cli::parse_from(std::iter::once("timonel").chain(argv.iter().copied())).unwrap();
    let Command::Start(mut args) = cli.command else {
        panic!("not start")
    };
    let file = parse_at(dir.path(), text).unwrap();
    let profile = file.name.clone().unwrap_or(cli.global.profile);
    args.cluster_file = Some(file);
    let ctx = Ctx::new(
        Printer::new(Verbosity::Quiet, ColorChoice::Never, true),
        home,
        profile,
    );
    crate::cli::start::prepare(&ctx, *args)
}

#[test]
fn every_field_becomes_its_flag() {
    let o = options(&["start"], FULL, "{}");
    assert_eq!(o.driver, Some(DriverKind::Docker));
    assert_eq!(o.version.as_deref(), Some("v1.31.2+k3s1"));
    assert_eq!((o.nodes, o.control_planes), (5, 3));
    assert_eq!(o.cpus, Some(1.5));
    assert_eq!(o.memory_mib, Some(2048));
    assert_eq!(o.disable, ["traefik", "servicelb"]);
    assert_eq!(o.env, ["HTTP_PROXY=http://proxy:3128"]);
    let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    assert_eq!(o.listen_address, any);
    assert_eq!(
        o.ports,
        [
            PortMapping {
                host_ip: any,
                host_port: 8080,
                node_port: 80,
                protocol: "tcp".into()
            },
            PortMapping {
                host_ip: any,
                host_port: 5353,
                node_port: 53,
                protocol: "udp".into()
            }
        ]
    );
    assert_eq!(o.apiserver_port, Some(40100));
    assert_eq!(o.registry_mirrors, ["https://mirror.example.com:5000"]);
    assert_eq!(o.ca_certs, [PEM]);
    assert_eq!(o.node_image.as_deref(), Some("example/k3s:dev"));
    assert!(!o.preload);
    assert!(o.ssh.is_none());
}

#[test]
fn ssh_and_vm_fields_become_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEAD}driver: ssh\nservers: 1\nagents: 1\nssh:\n  machines: [root@10.0.0.2, admin@10.0.0.3:2222]\n  knownHosts: hosts\n  acceptNewHostKeys: true\n  adopt: true\n"
    );
    let file = parse_at(dir.path(), &text).unwrap();
    let mut args = start_args(&["start"]);
    file.apply(&mut args).unwrap();
    assert_eq!(args.driver, Some(DriverKind::Ssh));
    assert_eq!(
        args.machines
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["root@10.0.0.2", "admin@10.0.0.3:2222"]
    );
    // Paths are relative to the file's folder.
    assert_eq!(
        args.ssh_known_hosts,
        Some(std::path::absolute(dir.path()).unwrap().join("hosts"))
    );
    assert!(args.ssh_accept_new_host_keys && args.adopt);

    let text = format!("{HEAD}driver: kvm\nvm:\n  image: images/base.qcow2\n  diskSize: 20g\n");
    let file = parse_at(dir.path(), &text).unwrap();
    let mut args = start_args(&["start"]);
    file.apply(&mut args).unwrap();
    assert_eq!(
        args.vm_image,
        Some(
            std::path::absolute(dir.path())
                .unwrap()
                .join("images/base.qcow2")
        )
    );
    assert_eq!(args.disk_size, Some(20 * 1024));

    let text = format!("{HEAD}driver: hyperv\nvm:\n  hypervSwitch: LAN Switch\n");
    let file = parse_at(dir.path(), &text).unwrap();
    let mut args = start_args(&["start"]);
    file.apply(&mut args).unwrap();
    assert_eq!(args.hyperv_virtual_switch.as_deref(), Some("LAN Switch"));
    // The flag wins over the file.
    let mut args = start_args(&["start", "--hyperv-virtual-switch", "Other"]);
    file.apply(&mut args).unwrap();
    assert_eq!(args.hyperv_virtual_switch.as_deref(), Some("Other"));
}

pub(super) fn start_args(argv: &[&str]) -> crate::cli::start::StartArgs {
    let cli = Cli::parse_from(std::iter::once("timonel").chain(argv.iter().copied())).unwrap();
    match cli.command {
        Command::Start(a) => *a,
        _ => panic!("not start"),
    }
}

#[test]
fn the_flags_given_are_told_from_defaults_for_start_and_run() {
    assert_eq!(
        start_args(&["start", "--cpus", "2", "-n", "3"]).explicit,
        ["cpus", "nodes"]
    );
    assert!(start_args(&["start"]).explicit.is_empty());
    let cli = Cli::parse_from([
        "timonel", "run", "--memory", "1g", "--config", "f", "--", "true",
    ])
    .unwrap();
    let Command::Run(run) = cli.command else {
        panic!("not run")
    };
    assert!(run.start.explicit.contains(&"memory".to_string()));
    assert!(!run.start.explicit.contains(&"cpus".to_string()));
}

#[test]
fn flags_win_over_the_file_which_wins_over_config_set() {
    let settings = r#"{"memory": "3g", "cpus": "4", "wait-timeout": "2m"}"#;
    let text = format!("{HEAD}cpus: 2\nports: [8080:80]\nservers: 1\nagents: 1\n");
    // Nothing on the command line: the file, then `config set` for what the file leaves out.
    let o = options(&["start"], &text, settings);
    assert_eq!(o.cpus, Some(2.0));
    assert_eq!(o.memory_mib, Some(3072));
    assert_eq!(o.wait_timeout, std::time::Duration::from_secs(120));
    assert_eq!(o.nodes, 2);
    // Flags win, each over its own field only; a repeatable flag replaces the file's list.
    let o = options(
        &[
            "start", "--cpus", "3", "--ports", "9090:90", "--nodes", "4", "--memory", "1g",
        ],
        &text,
        settings,
    );
    assert_eq!(o.cpus, Some(3.0));
    assert_eq!(o.memory_mib, Some(1024));
    assert_eq!(o.nodes, 4);
    assert_eq!(o.ports.len(), 1);
    assert_eq!(o.ports[0].host_port, 9090);
    // A flag given with its default value still wins (`--control-planes 1` over `servers: 3`).
    let o = options(
        &["start", "--control-planes", "1"],
        &format!("{HEAD}servers: 3\n"),
        "{}",
    );
    assert_eq!((o.nodes, o.control_planes), (3, 1));
    // `--ca-cert` replaces the file's certificates, PEM text included.
    let o = options(
        &["start", "--preload", "true"],
        &format!("{HEAD}preload: false\nregistries:\n  caCerts:\n    - pem: |\n        -----BEGIN CERTIFICATE-----\n        MIIB\n        -----END CERTIFICATE-----\n"),
        "{}",
    );
    assert!(o.preload);
    assert_eq!(o.ca_certs.len(), 1);
}

#[test]
fn values_that_do_not_go_together_name_the_file_and_the_flags() {
    let text = format!("{HEAD}driver: docker\nssh:\n  machines: [root@10.0.0.2]\n");
    let e = try_options(&["start"], &text, "{}").unwrap_err();
    let shown = crate::cli::report::render(&e);
    assert!(
        shown.starts_with("error: with the cluster file `"),
        "{shown}"
    );
    assert!(shown.contains("cluster.yaml`"), "{shown}");
    assert!(shown.contains("caused by: --node"), "{shown}");
    assert!(shown.contains("hint: drop them"), "{shown}");
    // The same with the flag that resolves it: the command line wins.
    let o = try_options(&["start", "--driver", "ssh"], &text, "{}").unwrap();
    assert_eq!(o.ssh.unwrap().machines.len(), 1);
}

#[test]
fn a_machine_given_twice_is_refused_in_the_file_as_on_the_command_line() {
    let text = format!(
        "{HEAD}driver: ssh\nssh:\n  machines: [root@10.0.0.2, root@10.0.0.3, root@10.0.0.2]\n"
    );
    let shown = crate::cli::report::render(&try_options(&["start"], &text, "{}").unwrap_err());
    assert!(shown.contains("cluster.yaml`"), "{shown}");
    assert!(
        shown.contains("--node root@10.0.0.2 is given twice"),
        "{shown}"
    );
    let flags = ["start", "--node", "pi@10.0.0.9", "--node", "pi@10.0.0.9:22"];
    let e = try_options(&flags, HEAD, "{}").unwrap_err();
    assert!(format!("{e:#}").contains("given twice"), "{e:#}");
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    let (m, h) = refused(
        &format!("{HEAD}servers: 1\nnodez: 3\n"),
        "d/cluster.yaml:4:1: unknown field `nodez`, expected one of",
    );
    assert!(m.contains("agents"), "{m}");
    assert!(h.contains("docs/cluster-file.md"), "{h}");
    refused(
        &format!("{HEAD}apiServer:\n  port: 1\n  adress: 0.0.0.0\n"),
        "d/cluster.yaml:5:3: unknown field `adress`, expected one of port, listenAddress",
    );
}

#[test]
fn mounts_are_flags_with_host_folders_relative_to_the_file() {
    let o = options(
        &["start"],
        &format!("{HEAD}mounts:\n  - data:/data:ro\n  - ./data/sub:/src\n"),
        "{}",
    );
    assert_eq!(o.mounts.len(), 2, "{:?}", o.mounts);
    let (ro, rw) = (&o.mounts[0], &o.mounts[1]);
    assert!(ro.host.is_absolute() && ro.host.ends_with("data"), "{ro:?}");
    assert_eq!((ro.node.as_str(), ro.read_only), ("/data", true));
    assert!(
        rw.host.ends_with("data/sub") || rw.host.ends_with("sub"),
        "{rw:?}"
    );
    assert_eq!((rw.node.as_str(), rw.read_only), ("/src", false));
    // A flag replaces the file's list.
    let tmp = std::path::absolute(std::env::temp_dir()).unwrap();
    let o = options(
        &["start", "--mount", &format!("{}:/other", tmp.display())],
        &format!("{HEAD}mounts: [data:/data]\n"),
        "{}",
    );
    assert_eq!(o.mounts.len(), 1);
    assert_eq!(o.mounts[0].node, "/other");
    // A bad node folder is refused where it is written, by the flag's own parser; so is a host
    // folder that does not exist.
    let (m, _) = refused(
        &format!(
            "{HEAD}mounts:\n  - {t}:/data\n  - {t}:relative\n",
            t = tmp.display()
        ),
        "d/cluster.yaml:5:5: `mounts`: ",
    );
    assert!(m.contains("relative"), "{m}");
    let (m, _) = refused(
        &format!("{HEAD}mounts: [missing:/m]\n"),
        "d/cluster.yaml:3:10: `mounts`: ",
    );
    assert!(m.contains("does not exist"), "{m}");
}

#[test]
fn wrong_types_are_refused_where_they_are() {
    let (m, _) = error(&format!("{HEAD}servers: three\n"));
    assert_eq!(
        m,
        "d/cluster.yaml:3:10: invalid u32: expected a whole number"
    );
    let (m, _) = refused(
        &format!("{HEAD}ssh:\n  adopt: maybe\n"),
        "d/cluster.yaml:4:10: ",
    );
    assert!(m.contains("true or false"), "{m}");
    let (m, _) = error(&format!("{HEAD}cpus: two\n"));
    assert_eq!(
        m,
        "d/cluster.yaml:3:7: invalid floating point: expected a number, e.g. 2 or 0.5"
    );
    refused(
        &format!("{HEAD}apiServer:\n  port: 99999\n"),
        "d/cluster.yaml:4:9: invalid u16: expected a port number",
    );
    refused(&format!("{HEAD}apiServer: 6443\n"), "d/cluster.yaml:3:12: ");
    refused(
        &format!("{HEAD}ports: 8080:80\n"),
        "d/cluster.yaml:3:8: expected sequence start",
    );
    refused(
        &format!("{HEAD}memory: [2g]\n"),
        "d/cluster.yaml:3:9: expected string scalar",
    );
    refused(
        &format!("{HEAD}cpus: 2\ncpus: 3\n"),
        "d/cluster.yaml:4:1: duplicate mapping key: cpus",
    );
}

#[test]
fn k3s_args_are_flags_of_their_nodes_and_checked_with_their_place() {
    let o = options(
        &["start"],
        &format!(
            "{HEAD}k3sArgs:\n  server: [\"--node-taint=cp=true:NoSchedule\"]\n  \
             agent:\n    - --node-label=tier=db\n  all: [\"--kubelet-arg=max-pods=50\"]\n"
        ),
        "{}",
    );
    assert_eq!(o.k3s_args.server, ["--node-taint=cp=true:NoSchedule"]);
    assert_eq!(o.k3s_args.agent, ["--node-label=tier=db"]);
    assert_eq!(o.k3s_args.all, ["--kubelet-arg=max-pods=50"]);
    // The flag's own check, at the item's place.
    let (m, h) = refused(
        &format!("{HEAD}k3sArgs:\n  agent:\n    - --node-label=a=b\n    - --token=x\n"),
        "d/cluster.yaml:6:7: `k3sArgs.agent`: invalid value '--token=x@agent' for '--k3s-arg",
    );
    assert!(m.contains("timonel sets --token itself"), "{m}");
    assert!(!h.is_empty());
    refused(
        &format!("{HEAD}k3sArgs:\n  all: [node-label=a]\n"),
        "d/cluster.yaml:4:9: `k3sArgs.all`: invalid value",
    );
    let (_, h) = refused(
        &format!("{HEAD}k3sArgs:\n  all: [\"--node-label=a@server\"]\n"),
        "d/cluster.yaml:4:9: `k3sArgs.all`: `--node-label=a@server` names its nodes",
    );
    assert!(h.contains("k3sArgs.server"), "{h}");
    refused(
        &format!("{HEAD}k3sArgs:\n  servers: []\n"),
        "d/cluster.yaml:4:3: unknown field `servers`",
    );
    // The command line wins over the file.
    let o = options(
        &["start", "--k3s-arg", "--node-label=x=1@server"],
        &format!("{HEAD}k3sArgs:\n  all: [\"--node-label=y=2\"]\n"),
        "{}",
    );
    assert_eq!(o.k3s_args.server, ["--node-label=x=1"]);
    assert!(o.k3s_args.all.is_empty());
}

#[test]
fn bad_values_are_checked_like_their_flags() {
    let (m, h) = refused(
        &format!("{HEAD}memory: 100m\n"),
        "d/cluster.yaml:3:9: `memory`: invalid value '100m' for '--memory <MEMORY>'",
    );
    assert!(m.contains("too little memory"), "{m}");
    assert!(!h.is_empty());
    refused(
        &format!("{HEAD}servers: 1\nagents: 40\n"),
        "d/cluster.yaml:4:9: `servers + agents`: invalid value '41' for '--nodes <NODES>'",
    );
    let (_, h) = refused(
        &format!("{HEAD}ports:\n  - 8080:80\n  - 99999:80\n"),
        "d/cluster.yaml:5:5: `ports`: --ports: `99999` is not a port number",
    );
    assert!(h.contains("HOST_PORT:NODE_PORT"), "{h}");
    let (_, h) = refused(
        &format!("{HEAD}disable: [traefik, trafik]\n"),
        "d/cluster.yaml:3:20: `disable`:",
    );
    assert!(h.contains("--disable"), "{h}");
    refused(&format!("{HEAD}registries:\n  mirrors: [ftp://x]\n"), "d/cluster.yaml:4:13: `registries.mirrors`: --registry-mirror `ftp://x` is not an http(s) URL");
    let (m, _) = refused(
        &format!("{HEAD}registries:\n  caCerts:\n    - file: nowhere.pem\n"),
        "d/cluster.yaml:5:13: `registries.caCerts[].file`: --ca-cert",
    );
    assert!(m.contains("nowhere.pem"), "{m}");
    refused(
        &format!("{HEAD}registries:\n  caCerts:\n    - pem: not a cert\n"),
        "d/cluster.yaml:5:12: `registries.caCerts[].pem` is not usable",
    );
    let (m, _) = error(&format!(
        "{HEAD}registries:\n  caCerts:\n    - file: a.pem\n      pem: x\n"
    ));
    assert!(m.contains("has both `file` and `pem`"), "{m}");
    refused(
        &format!("{HEAD}driver: floppy\n"),
        "d/cluster.yaml:3:9: `driver`: invalid value 'floppy'",
    );
    refused(
        &format!("{HEAD}kubernetesVersion: Banana!\n"),
        "d/cluster.yaml:3:20: `kubernetesVersion`:",
    );
    refused(
        &format!("{HEAD}env: [1NOPE]\n"),
        "d/cluster.yaml:3:7: `env`: invalid value '1NOPE'",
    );
    refused(
        &format!("{HEAD}cpus: 0\n"),
        "d/cluster.yaml:3:7: `cpus`: invalid value '0'",
    );
    let (_, h) = refused(
        &format!("{HEAD}name: Not_A_Name\n"),
        "d/cluster.yaml:3:7: `name`:",
    );
    assert!(!h.is_empty());
}

#[test]
fn versions_and_kinds_this_timonel_does_not_read_are_refused() {
    let (m, h) = error("apiVersion: timonel.dev/v2\nkind: Cluster\n");
    assert_eq!(
        m,
        "d/cluster.yaml:1:13: apiVersion `timonel.dev/v2` is not one this timonel reads"
    );
    assert!(h.contains("timonel.dev/v1alpha1"), "{h}");
    let (m, _) = error("apiVersion: timonel.dev/v1alpha1\nkind: Pod\n");
    assert_eq!(m, "d/cluster.yaml:2:7: kind `Pod` is not a cluster file");
    refused(
        "kind: Cluster\n",
        "d/cluster.yaml:1:1: missing field `apiVersion`",
    );
    refused("", "d/cluster.yaml:");
}

#[test]
fn a_missing_file_says_so() {
    let e = load(Path::new("/nonexistent/cluster.yaml")).unwrap_err();
    let u = e.downcast::<UserError>().unwrap();
    assert!(
        u.message.contains("/nonexistent/cluster.yaml"),
        "{}",
        u.message
    );
    assert!(u.hint.unwrap().contains("config export"));
}
