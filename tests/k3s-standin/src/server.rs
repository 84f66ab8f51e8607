//! `server`: certificates, token, kubeconfig, then the supervisor + API port.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use serde_json::json;

use crate::api::{self, ApiContext};
use crate::cli::{self, Role, Settings};
use crate::fsutil;
use crate::http::{self, Request, Response};
use crate::join;
use crate::kubeconfig;
use crate::logfmt::{self, now_unix};
use crate::net;
use crate::nodes::{self, NodeError, NodeStore, Nodes, RegisterRequest, UpstreamClient};
use crate::objects::ClusterView;
use crate::pki;
use crate::runtime;
use crate::token;

/// Shared state of a running server.
struct Ctx {
    version: String,
    commit: String,
    started: Instant,
    started_unix: u64,
    ready_delay: Duration,
    /// The node the system pods run on (the first server's).
    pods_node: String,
    api_ip: String,
    port: u16,
    disabled: Vec<String>,
    nodes: Nodes,
    ca_pem: Vec<u8>,
    server_password: String,
    agent_password: String,
    tls_dir: PathBuf,
    etcd: bool,
}

impl Ctx {
    fn ready(&self) -> bool {
        self.started.elapsed() >= self.ready_delay
    }

    fn node_auth(&self, req: &Request) -> bool {
        match req.basic_auth() {
            Some((user, pw)) => {
                (user == "server" || user == "node") && pw == self.server_password
                    || user == "node" && pw == self.agent_password
            }
            None => false,
        }
    }

    fn server_auth(&self, req: &Request) -> bool {
        matches!(req.basic_auth(), Some((u, p)) if u == "server" && p == self.server_password)
    }
}

/// Runs `k3s server`; returns the exit code on failure (success never returns).
pub fn run(args: &[String]) -> i32 {
    let specs = cli::specs(Role::Server);
    let parsed = match cli::parse(&specs, args) {
        Ok(p) => p,
        Err(e) => return crate::usage_error(&e, "server"),
    };
    let settings = match crate::config::resolve(&specs, &parsed, &|k| runtime::env(k)) {
        Ok(s) => s,
        Err(crate::config::ConfigError::Usage(e)) => return crate::usage_error(&e, "server"),
        Err(e) => {
            logfmt::fatal(&e.to_string());
            return 1;
        }
    };
    if let Err(e) = runtime::exit_on_signals("k3s") {
        logfmt::fatal(&e);
        return 1;
    }
    match start(&settings) {
        Ok(()) => runtime::park_forever(),
        Err(e) => {
            logfmt::fatal(&e);
            1
        }
    }
}

fn read_token(settings: &Settings, flag: &str, file_flag: &str) -> Result<Option<String>, String> {
    if let Some(t) = settings.str(flag) {
        return Ok(Some(t.to_string()));
    }
    match settings.str(file_flag) {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("failed to read token file `{path}`: {e}")),
        None => Ok(None),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Bootstrap {
    etcd: bool,
    #[serde(rename = "serverNode")]
    server_node: String,
    files: BTreeMap<String, String>,
}

const BOOTSTRAP_FILES: &[&str] = &[
    "server-ca.crt",
    "server-ca.key",
    "client-ca.crt",
    "client-ca.key",
    "request-header-ca.crt",
    "request-header-ca.key",
    "etcd/server-ca.crt",
    "etcd/server-ca.key",
    "etcd/peer-ca.crt",
    "etcd/peer-ca.key",
    "service.key",
];

/// A joining server copies the cluster CAs from the server it joins.
fn fetch_bootstrap(
    joined: &join::Joined,
    password: &str,
    tls_dir: &Path,
) -> Result<Bootstrap, String> {
    let resp = http::request(
        joined.config.clone(),
        &joined.url,
        "GET",
        nodes::BOOTSTRAP_PATH,
        &[("Authorization", http::basic_auth_header("server", password))],
        b"",
    )
    .map_err(|e| format!("failed to get bootstrap data: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "failed to get bootstrap data: server answered {} (is the token a server token?)",
            resp.status
        ));
    }
    let boot: Bootstrap =
        serde_json::from_slice(&resp.body).map_err(|e| format!("bad bootstrap data: {e}"))?;
    for (name, content) in &boot.files {
        if !BOOTSTRAP_FILES.contains(&name.as_str()) {
            continue;
        }
        let path = tls_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == *content => {}
            Ok(_) if name.ends_with(".crt") => {
                return Err(format!(
                    "`{}` differs from the cluster's CA; remove the data dir to rejoin",
                    path.display()
                ))
            }
            _ => {
                let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
                fsutil::write_atomic(&path, content.as_bytes(), mode).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(boot)
}

fn start(settings: &Settings) -> Result<(), String> {
    let version = runtime::version();
    let commit = runtime::commit();
    let started = Instant::now();
    let ready_delay = runtime::ready_delay()?;
    logfmt::info(&format!("Starting k3s {version} ({commit})"));
    logfmt::info("This is timonel's k3s stand-in, a test double; no Kubernetes components run");

    let data_dir = runtime::data_dir(settings.str("data-dir"));
    let server_dir = data_dir.join("server");
    let tls_dir = server_dir.join("tls");
    std::fs::create_dir_all(&tls_dir)
        .map_err(|e| format!("cannot create `{}`: {e}", tls_dir.display()))?;

    let token_text = read_token(settings, "token", "token-file")?;
    let agent_token_text = read_token(settings, "agent-token", "agent-token-file")?;
    let given = token_text
        .as_deref()
        .map(|t| token::parse(t, "server"))
        .transpose()
        .map_err(|e| e.to_string())?;

    // Joining server: validate the cluster CA and copy it.
    let upstream = match settings.str("server") {
        Some(url) => {
            let tok = given
                .as_ref()
                .ok_or("--token is required when joining a server (--server)")?;
            let joined = join::join(url, tok)?;
            let boot = fetch_bootstrap(&joined, &tok.password, &tls_dir)?;
            Some((joined, boot, tok.password.clone()))
        }
        None => None,
    };

    let mut generated = false;
    let mut cas = BTreeMap::new();
    for (stem, cn) in pki::CAS {
        let (ca, created) = pki::ensure_ca(&tls_dir, stem, cn).map_err(|e| e.0)?;
        generated |= created;
        cas.insert(*stem, ca);
    }
    pki::ensure_service_key(&tls_dir).map_err(|e| e.0)?;
    if generated {
        logfmt::info(&format!(
            "Generated certificate authorities in {}",
            tls_dir.display()
        ));
    }
    let server_ca = cas.get("server-ca").ok_or("server CA missing")?;
    let client_ca = cas.get("client-ca").ok_or("client CA missing")?;
    let ca_hash = fsutil::sha256_hex(&server_ca.bundle_pem);

    // Token: the given one, else the one from a previous start, else a new one.
    let token_path = server_dir.join("token");
    let password = match &given {
        Some(t) => {
            if let Some(h) = &t.ca_hash {
                if !join::hash_matches(h, &server_ca.bundle_pem) {
                    return Err(format!(
                        "token CA hash does not match the Cluster CA certificate hash: {h} != {ca_hash}"
                    ));
                }
            }
            t.password.clone()
        }
        None => match std::fs::read_to_string(&token_path)
            .ok()
            .and_then(|t| token::parse(&t, "server").ok())
        {
            Some(t) => t.password,
            None => fsutil::random_hex(16).map_err(|e| e.to_string())?,
        },
    };
    let full = format!("{}\n", token::format_full(&ca_hash, "server", &password));
    fsutil::write_atomic(&token_path, full.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    fsutil::replace_symlink(Path::new("token"), &server_dir.join("node-token"))
        .map_err(|e| e.to_string())?;
    let agent_password = match &agent_token_text {
        Some(t) => {
            let parsed = token::parse(t, "node").map_err(|e| e.to_string())?;
            let text = format!(
                "{}\n",
                token::format_full(&ca_hash, "node", &parsed.password)
            );
            fsutil::write_atomic(&server_dir.join("agent-token"), text.as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            parsed.password
        }
        None => {
            fsutil::replace_symlink(Path::new("token"), &server_dir.join("agent-token"))
                .map_err(|e| e.to_string())?;
            password.clone()
        }
    };

    // Addresses and the serving certificate.
    let hostname = net::hostname();
    let node_name = runtime::node_name(
        settings.str("node-name"),
        settings.bool("with-node-id"),
        &data_dir,
    )?;
    let (detected_ip, all_ips) = net::detect_addresses();
    let node_ips: Vec<IpAddr> = settings
        .list("node-ip")
        .iter()
        .map(|s| s.parse().map_err(|_| format!("invalid --node-ip `{s}`")))
        .collect::<Result<_, _>>()?;
    let node_ip = node_ips.first().copied().unwrap_or(detected_ip);
    let bind = settings
        .str("bind-address")
        .unwrap_or("0.0.0.0")
        .to_string();
    let port: u16 = settings
        .str("https-listen-port")
        .unwrap_or("6443")
        .parse()
        .map_err(|_| "invalid --https-listen-port".to_string())?;
    let domain = settings.str("cluster-domain").unwrap_or("cluster.local");
    let mut dns = vec![
        "localhost".to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
    ];
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(10, 43, 0, 1)),
        node_ip,
    ];
    ips.extend(node_ips.iter().copied());
    ips.extend(all_ips);
    for extra in settings
        .list("node-external-ip")
        .iter()
        .chain(settings.list("advertise-address").iter())
        .chain(std::iter::once(&bind))
        .chain(settings.list("tls-san").iter())
    {
        match extra.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ips.push(ip),
            Ok(_) => {}
            Err(_) => dns.push(extra.to_lowercase()),
        }
    }
    for name in [hostname.to_lowercase(), node_name.clone()] {
        if is_dns_name(&name) {
            dns.push(name);
        }
    }
    dns.retain(|n| is_dns_name(n));
    dedup(&mut dns);
    dedup(&mut ips);
    let serving = pki::issue_serving(server_ca, &dns, &ips).map_err(|e| e.0)?;
    let mut chain = vec![serving.cert_der.clone()];
    chain.extend(server_ca.chain().into_iter().skip(1));
    let client_cas: Vec<CertificateDer<'static>> = vec![client_ca.cert_der.clone()];
    let tls_config = crate::tls::server_config(chain, serving.key_pkcs8.clone(), &client_cas)?;

    // Admin client certificate (kept across restarts) and the kubeconfig.
    let admin_crt = tls_dir.join("client-admin.crt");
    let admin_key = tls_dir.join("client-admin.key");
    let admin = match pki::load_leaf(&admin_crt, &admin_key) {
        Ok(leaf) => leaf,
        Err(_) => {
            let leaf = pki::issue_client(client_ca, "system:admin", Some("system:masters"))
                .map_err(|e| e.0)?;
            fsutil::write_atomic(&admin_crt, leaf.cert_pem.as_bytes(), 0o644)
                .map_err(|e| e.to_string())?;
            fsutil::write_atomic(&admin_key, leaf.key_pem.as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            leaf
        }
    };
    let listener = TcpListener::bind((bind.as_str(), port))
        .map_err(|e| format!("failed to listen on {bind}:{port}: {e}"))?;
    let kc = kubeconfig::build(
        &kubeconfig::server_url(&bind, port),
        &server_ca.bundle_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    let written = write_kubeconfig(settings, &server_dir, &kubeconfig::to_yaml(&kc)?)?;
    logfmt::info(&format!("Wrote kubeconfig {}", written.display()));
    logfmt::info(&format!(
        "Server node token is available at {}",
        token_path.display()
    ));
    logfmt::info(&format!(
        "To join server node to cluster: k3s server -s https://{}:{port} -t ${{SERVER_NODE_TOKEN}}",
        node_ip
    ));
    logfmt::info(&format!(
        "Agent node token is available at {}",
        server_dir.join("agent-token").display()
    ));
    logfmt::info(&format!(
        "To join agent node to cluster: k3s agent -s https://{}:{port} -t ${{AGENT_NODE_TOKEN}}",
        node_ip
    ));

    // The node registry.
    let mut etcd = settings.bool("cluster-init");
    let (nodes, pods_node) = match &upstream {
        Some((joined, boot, pw)) => {
            etcd |= boot.etcd;
            (
                Nodes::Upstream(
                    UpstreamClient {
                        url: joined.url.clone(),
                        config: joined.config.clone(),
                        user: "server".into(),
                        password: pw.clone(),
                    },
                    Default::default(),
                ),
                boot.server_node.clone(),
            )
        }
        None => {
            let store = NodeStore::load(Some(server_dir.join("standin-nodes.json")), etcd)?;
            (Nodes::Local(Mutex::new(store)), node_name.clone())
        }
    };
    let mut disabled = settings.list("disable");
    dedup(&mut disabled);
    let ctx = Arc::new(Ctx {
        version: version.clone(),
        commit,
        started,
        started_unix: now_unix(),
        ready_delay,
        pods_node,
        api_ip: node_ip.to_string(),
        port,
        disabled,
        nodes,
        ca_pem: server_ca.bundle_pem.clone(),
        server_password: password,
        agent_password,
        tls_dir,
        etcd,
    });
    spawn_accept_loop(listener, tls_config, ctx.clone())?;

    // The server's own node: registered once the "apiserver" is up, then heartbeats.
    let mut roles = vec!["control-plane".to_string()];
    if etcd {
        roles.push("etcd".into());
    }
    if runtime::minor_version(&version).is_some_and(|m| m <= 33) {
        roles.push("master".into());
    }
    let node_password = runtime::ensure_node_password(&runtime::node_dir())?;
    let request = RegisterRequest {
        name: node_name,
        node_password,
        roles,
        internal_ip: node_ip.to_string(),
        labels: parse_labels(&settings.list("node-label")),
        taints: settings.list("node-taint"),
        ready: true,
        kubelet_version: version,
        kernel_version: kernel_version(),
    };
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || ready_and_heartbeat(ctx, request))
        .map_err(|e| e.to_string())?;
    // The server's own agent imports the airgap images while the rest starts.
    if !settings.bool("disable-agent") {
        let images_of = data_dir.clone();
        std::thread::Builder::new()
            .name("images".into())
            .spawn(move || crate::images::preload(&images_of))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn ready_and_heartbeat(ctx: Arc<Ctx>, request: RegisterRequest) {
    std::thread::sleep(ctx.ready_delay.saturating_sub(ctx.started.elapsed()));
    logfmt::info("Kube API server is now running");
    logfmt::info("k3s is up and running");
    runtime::notify_ready();
    let mut registered = false;
    loop {
        match ctx.nodes.register(&request, now_unix()) {
            Ok(_) if !registered => {
                registered = true;
                logfmt::info(&format!("Successfully registered node {}", request.name));
            }
            Ok(_) => {}
            Err(NodeError::Rejected(msg)) => {
                logfmt::fatal(&msg);
                std::process::exit(1);
            }
            Err(NodeError::Unavailable(msg)) => {
                logfmt::error(&format!("Failed to register node {}: {msg}", request.name))
            }
        }
        std::thread::sleep(Duration::from_secs(nodes::HEARTBEAT_SECS));
    }
}

pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn parse_labels(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::new();
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(x.clone());
            true
        }
    });
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        })
}

/// Writes the kubeconfig per docs/k3s-contract.md §4.4 and returns the path written.
fn write_kubeconfig(settings: &Settings, server_dir: &Path, yaml: &str) -> Result<PathBuf, String> {
    let mode = match settings.str("write-kubeconfig-mode") {
        Some(m) => u32::from_str_radix(m.trim(), 8)
            .map_err(|_| format!("invalid --write-kubeconfig-mode `{m}`: not octal"))?,
        None => 0o600,
    };
    let default = runtime::default_kubeconfig_path();
    match settings.str("write-kubeconfig") {
        Some(out) => {
            let out = PathBuf::from(out);
            fsutil::write_atomic(&out, yaml.as_bytes(), mode)
                .map_err(|e| format!("failed to write kubeconfig `{}`: {e}", out.display()))?;
            if out != default {
                let target = std::fs::canonicalize(&out).unwrap_or(out.clone());
                if let Err(e) = fsutil::replace_symlink(&target, &default) {
                    logfmt::warn(&format!(
                        "Unable to link kubeconfig {} to {}: {e}",
                        default.display(),
                        out.display()
                    ));
                }
            }
            Ok(out)
        }
        None => match fsutil::write_atomic(&default, yaml.as_bytes(), mode) {
            Ok(()) => Ok(default),
            Err(e) => {
                let fallback = server_dir.join("kubeconfig-k3s.yaml");
                logfmt::warn(&format!(
                    "Unable to write kubeconfig {}: {e}; writing {}",
                    default.display(),
                    fallback.display()
                ));
                fsutil::write_atomic(&fallback, yaml.as_bytes(), mode)
                    .map_err(|e| e.to_string())?;
                Ok(fallback)
            }
        },
    }
}

fn spawn_accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    ctx: Arc<Ctx>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, ctx) = (config.clone(), ctx.clone());
                let _ = std::thread::Builder::new()
                    .name("conn".into())
                    .spawn(move || serve(stream, config, ctx));
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, ctx: Arc<Ctx>) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = tcp.set_nodelay(true);
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    let authenticated = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let stream = rustls::StreamOwned::new(conn, tcp);
    let _ = http::serve_connection(stream, |req| route(&ctx, req, authenticated));
}

fn route(ctx: &Ctx, req: &Request, authenticated: bool) -> Response {
    match req.path.as_str() {
        "/ping" => return Response::text(200, "pong"),
        "/cacerts" => return Response::new(200, "text/plain; charset=utf-8", ctx.ca_pem.clone()),
        _ => {}
    }
    if let Some(rest) = req.path.strip_prefix("/v1-k3s/") {
        return supervisor(ctx, req, rest);
    }
    if !ctx.ready() {
        return Response::text(503, "apiserver not ready");
    }
    if !authenticated {
        return api::unauthorized();
    }
    let view = ClusterView {
        server_node: &ctx.pods_node,
        disabled: &ctx.disabled,
        ready: ctx.ready(),
        started_at: ctx.started_unix,
        now: now_unix(),
        seed: &ctx.server_password,
    };
    let api_ctx = ApiContext {
        version: &ctx.version,
        commit: &ctx.commit,
        nodes: &ctx.nodes,
        view,
        api_ip: &ctx.api_ip,
        api_port: ctx.port,
    };
    api::handle(&api_ctx, req)
}

fn supervisor(ctx: &Ctx, req: &Request, rest: &str) -> Response {
    let unauthorized = || Response::text(401, "Unauthorized");
    match (req.method.as_str(), rest) {
        ("GET", "readyz") => {
            if !ctx.node_auth(req) {
                unauthorized()
            } else if ctx.ready() {
                Response::text(200, "ok")
            } else {
                Response::text(503, "k3s not ready")
            }
        }
        ("POST", "standin/register") => {
            if !ctx.node_auth(req) {
                return unauthorized();
            }
            let reg: RegisterRequest = match serde_json::from_slice(&req.body) {
                Ok(r) => r,
                Err(e) => return Response::text(400, &format!("invalid registration: {e}")),
            };
            match ctx.nodes.register(&reg, now_unix()) {
                Ok((resp, is_new)) => {
                    if is_new {
                        logfmt::info(&format!(
                            "Registered node {} ({})",
                            reg.name, reg.internal_ip
                        ));
                    }
                    Response::json(200, &json!(resp))
                }
                Err(NodeError::Rejected(msg)) => {
                    logfmt::error(&format!("Node {}: {msg}", reg.name));
                    Response::text(403, &msg)
                }
                Err(NodeError::Unavailable(msg)) => Response::text(502, &msg),
            }
        }
        ("GET", "standin/nodes") => {
            if !ctx.node_auth(req) {
                return unauthorized();
            }
            match ctx.nodes.list() {
                Ok(list) => Response::json(200, &json!(list)),
                Err(e) => Response::text(502, &e.to_string()),
            }
        }
        ("DELETE", path) if path.starts_with("standin/nodes/") => {
            if !ctx.server_auth(req) {
                return unauthorized();
            }
            let name = &path["standin/nodes/".len()..];
            match ctx.nodes.delete(name) {
                Ok(true) => Response::text(200, "deleted"),
                Ok(false) => Response::text(404, "not found"),
                Err(e) => Response::text(502, &e.to_string()),
            }
        }
        ("GET", "standin/bootstrap") => {
            if !ctx.server_auth(req) {
                return unauthorized();
            }
            let mut files = BTreeMap::new();
            for name in BOOTSTRAP_FILES {
                if let Ok(content) = std::fs::read_to_string(ctx.tls_dir.join(name)) {
                    files.insert(name.to_string(), content);
                }
            }
            let boot = Bootstrap {
                etcd: ctx.etcd,
                server_node: ctx.pods_node.clone(),
                files,
            };
            Response::json(200, &json!(boot))
        }
        _ => Response::text(404, "404 page not found"),
    }
}
