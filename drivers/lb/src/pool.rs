//! The backends with their health, taken in turn, and the connections each carries (closed
//! when it goes down or leaves the list).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{backends::Watched, log, CHECK_EVERY, CONNECT_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backend {
    addr: SocketAddr,
    healthy: bool,
}

/// A proxied connection: both ends, to close them from outside.
struct Conn {
    id: u64,
    backend: SocketAddr,
    ends: [TcpStream; 2],
}

#[derive(Default)]
struct State {
    backends: Vec<Backend>,
    conns: Vec<Conn>,
    next_id: u64,
}

/// Shared by the accept loop, every connection and the checker.
#[derive(Clone, Default)]
pub struct Pool {
    state: Arc<Mutex<State>>,
    next: Arc<AtomicUsize>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not stop the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the backends. Known ones keep their health; new ones are tried until a check
    /// says otherwise; connections to removed ones are closed.
    pub fn set(&self, list: Vec<SocketAddr>) {
        let mut s = self.lock();
        let old = std::mem::take(&mut s.backends);
        s.backends = list
            .iter()
            .map(|a| Backend {
                addr: *a,
                healthy: old.iter().find(|b| b.addr == *a).is_none_or(|b| b.healthy),
            })
            .collect();
        let names: Vec<String> = list.iter().map(ToString::to_string).collect();
        log(&format!("backends: {}", names.join(", ")));
        let gone: Vec<SocketAddr> = old
            .iter()
            .map(|b| b.addr)
            .filter(|a| !list.contains(a))
            .collect();
        for addr in gone {
            close_conns(&mut s, addr);
        }
    }

    /// The backends and whether each is healthy.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        self.lock()
            .backends
            .iter()
            .map(|b| (b.addr, b.healthy))
            .collect()
    }

    /// The backends to try for a new connection: the healthy ones in turn (each connection
    /// starts one further), then the others, in case every check is wrong.
    pub fn order(&self) -> Vec<SocketAddr> {
        let s = self.lock();
        let n = s.backends.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let turn = s.backends[start..].iter().chain(&s.backends[..start]);
        let (up, down): (Vec<&Backend>, Vec<&Backend>) = turn.partition(|b| b.healthy);
        up.into_iter().chain(down).map(|b| b.addr).collect()
    }

    /// Records a check's or a connection's outcome; a backend going down loses its connections.
    pub fn mark(&self, addr: SocketAddr, healthy: bool, why: &str) {
        let mut s = self.lock();
        let Some(b) = s.backends.iter_mut().find(|b| b.addr == addr) else {
            return;
        };
        if b.healthy == healthy {
            return;
        }
        b.healthy = healthy;
        if healthy {
            log(&format!("backend {addr} is up"));
        } else {
            log(&format!("backend {addr} is down ({why})"));
            close_conns(&mut s, addr);
        }
    }

    /// Remembers a proxied connection to `backend`; returns its id for [`Pool::forget`].
    pub fn track(&self, backend: SocketAddr, ends: [TcpStream; 2]) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.conns.push(Conn { id, backend, ends });
        id
    }

    pub fn forget(&self, id: u64) {
        self.lock().conns.retain(|c| c.id != id);
    }

    /// How many connections are proxied now.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Checks every backend at once (a TCP connect within [`CONNECT_TIMEOUT`]).
    pub fn check_all(&self) {
        let addrs: Vec<SocketAddr> = self.lock().backends.iter().map(|b| b.addr).collect();
        let checks: Vec<_> = addrs
            .into_iter()
            .map(|addr| {
                let pool = self.clone();
                std::thread::spawn(move || {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(_) => pool.mark(addr, true, ""),
                        Err(e) => pool.mark(addr, false, &e.to_string()),
                    }
                })
            })
            .collect();
        for c in checks {
            let _ = c.join();
        }
    }

    /// Reads the backends file and checks the backends, now and every [`CHECK_EVERY`], on a
    /// thread of its own.
    pub fn watch(&self, mut file: Watched) {
        if let Some(list) = file.poll() {
            self.set(list);
        }
        let pool = self.clone();
        std::thread::spawn(move || loop {
            if let Some(list) = file.poll() {
                pool.set(list);
            }
            pool.check_all();
            std::thread::sleep(CHECK_EVERY);
        });
    }
}

fn close_conns(s: &mut State, addr: SocketAddr) {
    for c in s.conns.iter().filter(|c| c.backend == addr) {
        for end in &c.ends {
            let _ = end.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn healthy_backends_in_turn_then_the_others() {
        let pool = Pool::new();
        assert!(pool.order().is_empty());
        pool.set(vec![addr(1), addr(2), addr(3)]);
        let firsts: Vec<SocketAddr> = (0..3).map(|_| pool.order()[0]).collect();
        assert_eq!(firsts, vec![addr(1), addr(2), addr(3)], "round robin");
        pool.mark(addr(2), false, "test");
        for _ in 0..3 {
            let order = pool.order();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], addr(2), "the down one last: {order:?}");
        }
        // A new list keeps what is known of the backends that stay.
        pool.set(vec![addr(2), addr(4)]);
        assert_eq!(pool.backends(), vec![(addr(2), false), (addr(4), true)]);
    }
}
