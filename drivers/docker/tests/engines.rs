//! The Docker driver against engines that are not a healthy rootful Docker, modelled by a
//! loopback HTTP server that answers with what the engines answer: status, headers and body as
//! recorded from Podman 4.3.1 (`podman system service`) and Docker 20.10, and, where an older
//! version answered otherwise, as Podman's and moby's own issues quote it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use timonel_driver::{Availability, Driver, DriverError, MachineState};
use timonel_driver_docker::DockerDriver;

/// One recorded answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    podman: bool,
}

impl Answer {
    fn podman(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.into(),
            podman: true,
        }
    }
}

const PODMAN_VERSION: &str = r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1","Arch":"amd64","BuildTime":"1970-01-01T00:00:00Z","Experimental":"false","GitCommit":"","GoVersion":"go1.19.8","KernelVersion":"6.1.0-13-amd64","MinAPIVersion":"4.0.0","Os":"linux"}},{"Name":"Conmon","Version":"conmon version 2.1.6, commit: unknown","Details":{"Package":"conmon_2.1.6+ds1-1_amd64"}}],"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24","GitCommit":"","GoVersion":"go1.19.8","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0-13-amd64","BuildTime":"1970-01-01T00:00:00Z"}"#;

/// Podman 4.3.1's compat `/info` (the fields the driver reads): rootless, it lists no
/// `name=rootless` but sends `"Rootless": true` and keeps its store under the user's home.
fn podman_info(rootless: bool, cgroup: &str) -> String {
    let (driver, root) = if rootless {
        ("vfs", "/home/u/.local/share/containers/storage")
    } else {
        ("overlay", "/var/lib/containers/storage")
    };
    format!(
        r#"{{"ID":"fb15062f-4324-4fcd-ae59-759b84825717","Containers":0,"Driver":"{driver}","NCPU":2,"MemTotal":25275973632,"CgroupDriver":"cgroupfs","CgroupVersion":"{cgroup}","DockerRootDir":"{root}","OSType":"linux","OperatingSystem":"debian","ServerVersion":"4.3.1","SecurityOptions":["name=seccomp,profile=default"],"Name":"vm","Rootless":{rootless}}}"#
    )
}

/// A server answering by `METHOD path-without-version-prefix` (query ignored); anything else
/// is Podman's 404 for an unknown route. Counts the requests it saw.
struct Engine {
    host: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn serve(routes: HashMap<String, Answer>) -> Engine {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("tcp://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request per connection: headers, then a body we do not need.
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or_default().to_string();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default();
                let target = parts.next().unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default();
                // `/v1.41/containers/x/json` → `/containers/x/json`
                let path = match path.strip_prefix("/v") {
                    Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                        &rest[rest.find('/').unwrap_or(rest.len())..]
                    }
                    _ => path,
                };
                let key = format!("{method} {path}");
                log.lock().unwrap().push(key.clone());
                let answer = routes.get(&key).cloned().unwrap_or_else(|| {
                    Answer::podman(
                        404,
                        r#"{"cause":"not found","message":"not found","response":404}"#,
                    )
                });
                let reason = match answer.status {
                    200 => "OK",
                    404 => "Not Found",
                    409 => "Conflict",
                    _ => "Internal Server Error",
                };
                let mut response = format!(
                    "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    answer.status,
                    answer.body.len()
                );
                if answer.podman {
                    response.push_str("Api-Version: 1.41\r\nLibpod-Api-Version: 4.3.1\r\nServer: Libpod/4.3.1 (linux)\r\n");
                }
                response.push_str("\r\n");
                response.push_str(&answer.body);
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Engine { host, seen }
}

fn podman_routes(rootless: bool, cgroup: &str) -> HashMap<String, Answer> {
    HashMap::from([
        ("GET /version".into(), Answer::podman(200, PODMAN_VERSION)),
        (
            "GET /info".into(),
            Answer::podman(200, &podman_info(rootless, cgroup)),
        ),
        ("GET /_ping".into(), Answer::podman(200, "OK")),
    ])
}

async fn ready(driver: &DockerDriver) -> (String, Vec<String>) {
    match driver.probe().await {
        Availability::Ready { version, notes } => (version, notes),
        Availability::Unusable { reason, fix } => panic!("unusable: {reason} ({fix})"),
    }
}

#[tokio::test]
async fn podman_is_named_in_the_driver_line_with_rootful_or_rootless() {
    let engine = serve(podman_routes(false, "1")).await;
    let (version, _) = ready(&DockerDriver::connect_with_host(&engine.host)).await;
    assert_eq!(version, "Podman 4.3.1 (API 1.41, rootful)");

    let engine = serve(podman_routes(true, "2")).await;
    let (version, notes) = ready(&DockerDriver::connect_with_host(&engine.host)).await;
    assert_eq!(version, "Podman 4.3.1 (API 1.41, rootless)");
    assert!(
        notes.iter().any(|n| n.contains("KubeletInUserNamespace")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn rootless_on_cgroup_v1_is_unusable_before_anything_is_created() {
    let engine = serve(podman_routes(true, "1")).await;
    match DockerDriver::connect_with_host(&engine.host).probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(
                reason.contains("Podman 4.3.1 runs rootless on cgroup v1"),
                "{reason}"
            );
            assert!(fix.contains("cgroup v2"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
    // The probe only read: nothing was created.
    let seen = engine.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|r| r.starts_with("GET ")), "{seen:?}");
}

#[tokio::test]
async fn podmans_not_found_answers_mean_nothing_is_there() {
    let mut routes = podman_routes(false, "1");
    // Podman 4.x: 404 with its error body.
    routes.insert(
        "GET /containers/timonel-n1/json".into(),
        Answer::podman(404, r#"{"cause":"no such container","message":"no container with name or ID \"timonel-n1\" found: no such container","response":404}"#),
    );
    // Podman 3.0: a forced removal of a missing container answered 500, same cause.
    routes.insert(
        "GET /containers/timonel-n2/json".into(),
        Answer::podman(500, r#"{"cause":"no such container","message":"no container with name or ID \"timonel-n2\" found: no such container","response":500}"#),
    );
    routes.insert(
        "DELETE /volumes/timonel-n2-k3s".into(),
        Answer::podman(404, r#"{"cause":"no such volume","message":"no volume with name \"timonel-n2-k3s\" found: no such volume","response":404}"#),
    );
    routes.insert(
        "GET /volumes".into(),
        Answer::podman(200, r#"{"Volumes":[],"Warnings":[]}"#),
    );
    let engine = serve(routes).await;
    let driver = DockerDriver::connect_with_host(&engine.host);
    ready(&driver).await;
    for node in ["n1", "n2"] {
        let name = node.parse().unwrap();
        assert_eq!(driver.state(&name).await.unwrap(), MachineState::NotCreated);
        driver.delete(&name).await.unwrap();
    }
    // A 500 about something else stays an error.
    let mut routes = podman_routes(false, "1");
    routes.insert(
        "GET /containers/timonel-n3/json".into(),
        Answer::podman(
            500,
            r#"{"cause":"database is locked","message":"database is locked","response":500}"#,
        ),
    );
    let engine = serve(routes).await;
    let driver = DockerDriver::connect_with_host(&engine.host);
    let err = driver.state(&"n3".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, DriverError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("database is locked"), "{err}");
}

#[tokio::test]
async fn an_api_version_that_is_not_dockers_is_named_not_taken_for_silence() {
    let mut routes = podman_routes(false, "2");
    // Podman's own (libpod) version answer, as if DOCKER_HOST pointed at a libpod-only API.
    routes.insert(
        "GET /version".into(),
        Answer::podman(200, r#"{"Components":[{"Name":"Podman Engine","Version":"4.3.1"}],"Version":"4.3.1","ApiVersion":"4.3.1.x"}"#),
    );
    let engine = serve(routes).await;
    match DockerDriver::connect_with_host(&engine.host).probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(!reason.contains("nothing is listening"), "{reason}");
            assert!(reason.contains("answers"), "{reason}");
            assert!(fix.contains("podman system service"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
}

/// A daemon still starting: its socket exists, connections are refused, then it answers.
#[cfg(unix)]
#[tokio::test]
async fn a_daemon_that_is_still_starting_is_waited_for() {
    use std::time::{Duration, Instant};
    use tokio::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.sock");
    // Bound and dropped: the file stays, nothing listens (ECONNREFUSED), as while booting.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let host = format!("unix://{}", path.display());
    let driver = DockerDriver::connect_with_host(&host).with_start_wait(Duration::from_secs(30));
    let started = Instant::now();
    let serve_later = {
        let path = path.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            std::fs::remove_file(&path).unwrap();
            let listener = UnixListener::bind(&path).unwrap();
            let routes = podman_routes(false, "2");
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let key = if target.contains("/info") {
                    "GET /info"
                } else {
                    "GET /version"
                };
                let body = routes[key].body.clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        }
    };
    tokio::spawn(serve_later);
    let (version, _) = ready(&driver).await;
    assert!(version.starts_with("Podman 4.3.1"), "{version}");
    assert!(started.elapsed() >= Duration::from_millis(800));

    // Never answering: the wait ends at its deadline with a reason that says so.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let driver = DockerDriver::connect_with_host(&format!("unix://{}", path.display()))
        .with_start_wait(Duration::from_millis(600));
    match driver.probe().await {
        Availability::Unusable { reason, fix } => {
            assert!(
                reason.contains("did not answer") && reason.contains("600ms"),
                "{reason}"
            );
            assert!(fix.contains("finish starting"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
}

/// Docker 20.10's `GET /containers/timonel-n1/json` of a running node (the fields the driver
/// reads; the daemon sends many more).
const DOCKER_RUNNING_NODE: &str = r#"{"Id":"0183427948a88a959d4aa781ab05f95796a23071ab25baaf7aaff9adf1c9a7a3","Created":"2026-12-03T06:11:11.013576896Z","Name":"/timonel-n1","State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,"Pid":24239,"ExitCode":0,"Error":"","StartedAt":"2026-12-03T06:11:11.483831846Z","FinishedAt":"0001-01-01T00:00:00Z"},"Config":{"Hostname":"n1","Labels":{"dev.timonel.cluster":"n1","dev.timonel.node":"n1","dev.timonel.role":"server"}},"NetworkSettings":{"Ports":{"6443/tcp":[{"HostIp":"127.0.0.1","HostPort":"42303"}]},"Networks":{"timonel-n1":{"IPAMConfig":{"IPv4Address":"10.201.0.2"},"NetworkID":"83eb37a0b6a67534909a82bc123f562501e62d434d792a2964369fb2f9ac6712","Gateway":"10.201.0.1","IPAddress":"10.201.0.2","IPPrefixLen":24,"MacAddress":"02:42:0a:c9:00:02"}}}}"#;

#[tokio::test]
async fn a_look_at_a_node_is_one_request_without_version_negotiation() {
    let mut routes = podman_routes(false, "2");
    routes.insert(
        "GET /containers/timonel-n1/json".into(),
        Answer {
            status: 200,
            body: DOCKER_RUNNING_NODE.into(),
            podman: false,
        },
    );
    let engine = serve(routes).await;
    let driver = DockerDriver::connect_with_host(&engine.host);
    let n1 = "n1".parse().unwrap();
    assert_eq!(
        driver.ip(&n1).await.unwrap().to_string(),
        "10.201.0.2",
        "ip"
    );
    assert_eq!(driver.state(&n1).await.unwrap(), MachineState::Running);
    assert_eq!(
        *engine.seen.lock().unwrap(),
        vec!["GET /containers/timonel-n1/json"; 2],
        "no /version before the look"
    );
    // Anything but a description (here Podman's 404) is asked again, negotiated, for its
    // typed meaning.
    let gone = "n2".parse().unwrap();
    assert_eq!(driver.state(&gone).await.unwrap(), MachineState::NotCreated);
    let seen = engine.seen.lock().unwrap().clone();
    assert_eq!(
        seen[2..],
        [
            "GET /containers/timonel-n2/json",
            "GET /version",
            "GET /containers/timonel-n2/json"
        ],
        "{seen:?}"
    );
}
