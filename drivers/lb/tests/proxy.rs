//! The balancer on real sockets: backends taken in turn, a dead one skipped, the file read
//! again, and connections to a removed backend closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timonel_lb::{serve, Pool, Watched};

/// A backend that says its name on each connection, then echoes lines.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &'static str) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let _ = writeln!(s, "{name}");
                            let mut r = BufReader::new(s.try_clone().unwrap());
                            let mut line = String::new();
                            while r.read_line(&mut line).unwrap_or(0) > 0 {
                                let _ = s.write_all(line.as_bytes());
                                line.clear();
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, stop }
    }
    fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn balancer(file: &std::path::Path) -> (SocketAddr, Pool) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let pool = Pool::new();
    pool.watch(Watched::new(file.to_path_buf()));
    let p = pool.clone();
    std::thread::spawn(move || serve(l, p));
    (addr, pool)
}

/// Connects through the balancer and reads the backend's name (empty: closed at once).
fn who(lb: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(lb).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let mut name = String::new();
    let _ = r.read_line(&mut name);
    (name.trim().to_string(), r)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn turns_skips_the_dead_and_follows_the_file() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends");
    std::fs::write(&file, format!("{}\n{}\n", a.addr, b.addr)).unwrap();
    let (lb, pool) = balancer(&file);

    // Both backends serve, in turn; bytes pass both ways.
    let mut seen: Vec<String> = (0..4).map(|_| who(lb).0).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);
    let (_, mut r) = who(lb);
    r.get_mut().write_all(b"ping\n").unwrap();
    let mut echo = String::new();
    r.read_line(&mut echo).unwrap();
    assert_eq!(echo, "ping\n");

    // A dead backend is noticed and skipped: every connection reaches the live one.
    a.kill();
    eventually("a to be marked down", || {
        pool.backends().contains(&(a.addr, false))
    });
    for _ in 0..4 {
        assert_eq!(who(lb).0, "b");
    }

    // A new file is read without a restart; connections to a removed backend are closed.
    let (name, mut held) = who(lb);
    assert_eq!(name, "b");
    std::fs::write(&file, format!("{}\n", c.addr)).unwrap();
    eventually("the new list", || pool.backends() == vec![(c.addr, true)]);
    let mut rest = String::new();
    assert_eq!(held.read_line(&mut rest).unwrap_or(0), 0, "closed: {rest}");
    for _ in 0..3 {
        assert_eq!(who(lb).0, "c");
    }
    eventually("no connection left", || pool.connections() == 0);

    // With no backend answering, connections are closed, not left hanging.
    c.kill();
    eventually("c to be marked down", || {
        pool.backends().contains(&(c.addr, false))
    });
    assert_eq!(who(lb).0, "");
}
