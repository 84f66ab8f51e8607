//! Accepting connections and passing their bytes to a backend and back.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use crate::{log, Pool, CONNECT_TIMEOUT};

/// Accepts connections forever, each on its own thread.
pub fn serve(listener: TcpListener, pool: Pool) {
    for conn in listener.incoming() {
        match conn {
            Ok(client) => {
                let pool = pool.clone();
                std::thread::spawn(move || handle(client, &pool));
            }
            Err(e) => log(&format!("accepting a connection: {e}")),
        }
    }
}

/// Connects the client to the first backend that answers, in the pool's order.
fn handle(client: TcpStream, pool: &Pool) {
    for addr in pool.order() {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(backend) => {
                pool.mark(addr, true, "");
                if let Err(e) = pipe(client, backend, addr, pool) {
                    log(&format!("a connection to {addr}: {e}"));
                }
                return;
            }
            Err(e) => pool.mark(addr, false, &e.to_string()),
        }
    }
    log("no backend answers: a connection was closed");
}

/// Copies both ways until both sides are done (or the pool closes them).
fn pipe(
    mut client: TcpStream,
    mut backend: TcpStream,
    addr: SocketAddr,
    pool: &Pool,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    backend.set_nodelay(true)?;
    let id = pool.track(addr, [client.try_clone()?, backend.try_clone()?]);
    let (mut client_in, mut backend_out) = (client.try_clone()?, backend.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut backend_out);
        let _ = backend_out.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut backend, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
    pool.forget(id);
    Ok(())
}
