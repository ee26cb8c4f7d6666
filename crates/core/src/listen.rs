//! Binding the servers' TCP listeners with an accept queue long enough for
//! a reconnect storm. `tokio::net::TcpListener::bind` (like the standard
//! library's) asks the kernel for 128 pending connections. A relay that
//! thousands of devices dial again at once overflows that: the kernel
//! drops each SYN past it (`ListenOverflows`), and the device retries only
//! after its one-second SYN timeout, then three, then seven.

use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// The accept queue a server asks for; the kernel caps it at
/// `net.core.somaxconn` (4,096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind `addr` (with `SO_REUSEADDR`, as tokio's `bind` sets it) and listen
/// with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    /// The kernel's cap on any listener's accept queue here.
    fn somaxconn() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(128)
    }

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_queue_instead_of_being_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // More than tokio's 128, never more than this machine allows.
        let burst = somaxconn().min(LISTEN_BACKLOG as usize).min(400);
        let mut held = Vec::with_capacity(burst);
        for n in 0..burst {
            // Nothing accepts: a connection completes only if the queue
            // has room for it. A dropped SYN is retried after 1 s.
            let connected = tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            assert!(
                matches!(connected, Ok(Ok(_))),
                "connection {n} of {burst} did not complete: the accept queue is shorter"
            );
            held.push(connected.unwrap().unwrap());
        }
        drop(listener);
    }
}
