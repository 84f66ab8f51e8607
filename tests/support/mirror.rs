//! A local k3s release mirror and channel server on 127.0.0.1, with fault injection.
//!
//! - `GET /download/<version>/<asset>` serves `<root>/<version>/<asset>` (the release layout;
//!   `%2B` and a literal `+` both work), honours `Range: bytes=N-` with `206`.
//! - `GET /v1-release/channels` answers the channel collection JSON; `GET
//!   /v1-release/channels/<name>` answers `302` to `https://github.com/k3s-io/k3s/releases/tag/
//!   <latest>` (literal `+`) or `404` for an unknown channel.
//! - Every request is logged (decoded path and `Range` header); faults are injected per path,
//!   once (a queue, one per request) or always; a fault may be a `302` to anywhere.
//!
//! The same `<root>` works as a `file://` binary mirror.
//!
//! The HTTP/1.1 side is written by hand on tokio (one request per connection, `connection:
//! close`) so that faults land on exact bytes: a cut is a FIN right after N body bytes, a stall
//! keeps the socket open and silent until the client gives up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use url::Url;

/// What to do to one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Serve the file with its first byte changed.
    WrongDigest,
    /// Serve only the first `n` bytes, with a matching `Content-Length`.
    Truncate(usize),
    /// Announce the full length, send `n` bytes, then drop the connection.
    CutAfter(usize),
    /// Answer this status with an empty body (404, 503, …).
    Status(u16),
    /// Send the headers and `n` bytes, then nothing, forever.
    Stall { after: usize },
    /// Accept the request and never answer.
    StallHeaders,
    /// Answer `200` with the whole file even to a `Range` request.
    IgnoreRange,
    /// Send the body in chunks of `chunk` bytes with `delay` between them.
    Slow { chunk: usize, delay: Duration },
    /// Answer `302` with this `Location`.
    Redirect(String),
}

/// One request as the mirror saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    root: PathBuf,
    channels: Mutex<BTreeMap<String, String>>,
    once: Mutex<HashMap<String, VecDeque<Fault>>>,
    always: Mutex<HashMap<String, Fault>>,
    log: Mutex<Vec<Logged>>,
}

pub struct Mirror {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The mirror path of an asset, as logged: `/download/v1.31.2+k3s1/k3s`.
pub fn asset_path(version: &str, asset: &str) -> String {
    format!("/download/{version}/{asset}")
}

/// The mirror path of a channel: `/v1-release/channels/stable`.
pub fn channel_path(name: &str) -> String {
    format!("/v1-release/channels/{name}")
}

pub const CHANNELS_PATH: &str = "/v1-release/channels";

impl Mirror {
    /// Serves `root` (laid out as `<root>/<version>/<asset>`) on a free loopback port.
    pub async fn start(root: impl Into<PathBuf>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            root: root.into(),
            ..State::default()
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(connection(shared.clone(), stream));
            }
        });
        Mirror { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/download`: a `binary_mirror`.
    pub fn download_base(&self) -> Url {
        Url::parse(&format!("http://{}/download", self.addr)).unwrap()
    }

    /// `http://127.0.0.1:<port>/v1-release/channels`: a `channel_url`.
    pub fn channel_base(&self) -> Url {
        Url::parse(&format!("http://{}{CHANNELS_PATH}", self.addr)).unwrap()
    }

    pub fn set_channel(&self, name: &str, latest: &str) {
        self.state
            .channels
            .lock()
            .unwrap()
            .insert(name.to_string(), latest.to_string());
    }

    /// Applies `fault` to the next request for `path` only (queued: one per request).
    pub fn fault_once(&self, path: &str, fault: Fault) {
        self.state
            .once
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .push_back(fault);
    }

    /// Applies `fault` to every request for `path` (after any queued one-off faults).
    pub fn fault_always(&self, path: &str, fault: Fault) {
        self.state
            .always
            .lock()
            .unwrap()
            .insert(path.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.state.once.lock().unwrap().clear();
        self.state.always.lock().unwrap().clear();
    }

    /// How many requests `path` got.
    pub fn requests(&self, path: &str) -> usize {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.path == path)
            .count()
    }

    pub fn total_requests(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    /// The requests for `path`, in order.
    pub fn log_for(&self, path: &str) -> Vec<Logged> {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.path == path)
            .cloned()
            .collect()
    }
}

/// What to send back, and how.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The `Content-Length` announced (may differ from the body for faults).
    declared: usize,
    delivery: Delivery,
}

enum Delivery {
    Whole,
    /// Send this many body bytes, then close the connection.
    CutAfter(usize),
    /// Send this many body bytes, then nothing until the client gives up.
    StallAfter(usize),
    Slow {
        chunk: usize,
        delay: Duration,
    },
    Never,
}

impl Answer {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        Answer {
            status,
            headers: Vec::new(),
            declared: body.len(),
            body,
            delivery: Delivery::Whole,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

struct Head {
    path: String,
    range: Option<String>,
}

/// Reads the request line and headers (GET requests have no body).
async fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split_whitespace().nth(1)?.to_string();
    let range = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("range")
            .then(|| value.trim().to_string())
    });
    let raw_path = target.split('?').next().unwrap_or(&target);
    Some(Head {
        path: raw_path.replace("%2B", "+").replace("%2b", "+"),
        range,
    })
}

async fn connection(state: Arc<State>, mut stream: TcpStream) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    state.log.lock().unwrap().push(Logged {
        path: head.path.clone(),
        range: head.range.clone(),
    });
    let fault = {
        let once = state
            .once
            .lock()
            .unwrap()
            .get_mut(&head.path)
            .and_then(VecDeque::pop_front);
        once.or_else(|| state.always.lock().unwrap().get(&head.path).cloned())
    };
    let answer = route(&state, &head, fault);
    let _ = send(&mut stream, answer).await;
}

async fn send(stream: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    if matches!(answer.delivery, Delivery::Never) {
        return wait_for_close(stream).await;
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.declared
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let body = &answer.body;
    match answer.delivery {
        Delivery::Whole | Delivery::Never => stream.write_all(body).await?,
        Delivery::CutAfter(n) => stream.write_all(&body[..n.min(body.len())]).await?,
        Delivery::StallAfter(n) => {
            stream.write_all(&body[..n.min(body.len())]).await?;
            stream.flush().await?;
            return wait_for_close(stream).await;
        }
        Delivery::Slow { chunk, delay } => {
            for piece in body.chunks(chunk.max(1)) {
                tokio::time::sleep(delay).await;
                stream.write_all(piece).await?;
                stream.flush().await?;
            }
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// Holds the connection open, silent, until the client closes it.
async fn wait_for_close(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

fn route(state: &State, head: &Head, fault: Option<Fault>) -> Answer {
    match fault {
        Some(Fault::Status(code)) => return Answer::new(code, Vec::new()),
        Some(Fault::StallHeaders) => {
            return Answer {
                delivery: Delivery::Never,
                ..Answer::new(200, Vec::new())
            }
        }
        Some(Fault::Redirect(location)) => {
            return Answer::new(302, Vec::new()).header("location", location)
        }
        _ => {}
    }
    let path = head.path.as_str();
    if path == CHANNELS_PATH {
        return channel_list(state);
    }
    if let Some(name) = path
        .strip_prefix(CHANNELS_PATH)
        .and_then(|p| p.strip_prefix('/'))
    {
        return channel_redirect(state, name);
    }
    let Some(rel) = path.strip_prefix("/download/") else {
        return Answer::new(404, "not found");
    };
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Answer::new(400, "bad path");
    }
    let Ok(mut data) = std::fs::read(state.root.join(rel)) else {
        return Answer::new(404, "not found");
    };
    if fault == Some(Fault::WrongDigest) && !data.is_empty() {
        data[0] ^= 0xff;
    }
    serve_file(data, head.range.as_deref(), fault)
}

fn serve_file(data: Vec<u8>, range: Option<&str>, fault: Option<Fault>) -> Answer {
    let len = data.len();
    let start = match (&fault, range.and_then(|r| r.strip_prefix("bytes="))) {
        (Some(Fault::IgnoreRange), _) | (_, None) => None,
        (_, Some(spec)) => spec.strip_suffix('-').and_then(|n| n.parse::<usize>().ok()),
    };
    let mut answer = match start {
        Some(start) if start >= len => {
            return Answer::new(416, Vec::new()).header("content-range", format!("bytes */{len}"));
        }
        Some(start) => Answer::new(206, data[start..].to_vec())
            .header("content-range", format!("bytes {start}-{}/{len}", len - 1)),
        None => Answer::new(200, data),
    }
    .header("accept-ranges", "bytes");
    match fault {
        Some(Fault::Truncate(n)) => {
            answer.body.truncate(n);
            answer.declared = answer.body.len();
        }
        Some(Fault::CutAfter(n)) => answer.delivery = Delivery::CutAfter(n),
        Some(Fault::Stall { after }) => answer.delivery = Delivery::StallAfter(after),
        Some(Fault::Slow { chunk, delay }) => answer.delivery = Delivery::Slow { chunk, delay },
        _ => {}
    }
    answer
}

fn channel_list(state: &State) -> Answer {
    let data: Vec<serde_json::Value> = state
        .channels
        .lock()
        .unwrap()
        .iter()
        .map(|(name, latest)| {
            serde_json::json!({
                "id": name,
                "type": "channel",
                "links": {"self": format!("https://update.k3s.io/v1-release/channels/{name}")},
                "name": name,
                "latest": latest,
            })
        })
        .collect();
    let body = serde_json::json!({
        "type": "collection",
        "links": {"self": "https://update.k3s.io/v1-release/channels"},
        "actions": {},
        "resourceType": "channel",
        "data": data,
    });
    Answer::new(200, body.to_string()).header("content-type", "application/json")
}

fn channel_redirect(state: &State, name: &str) -> Answer {
    let latest = state.channels.lock().unwrap().get(name).cloned();
    match latest {
        Some(latest) => {
            let location = format!("https://github.com/k3s-io/k3s/releases/tag/{latest}");
            Answer::new(302, format!("<a href=\"{location}\">Found</a>.\n\n"))
                .header("location", location)
        }
        None => Answer::new(
            404,
            r#"{"type":"error","status":"404","message":"Not Found"}"#,
        ),
    }
}
