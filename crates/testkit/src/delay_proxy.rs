//! A TCP proxy on a free loopback port that holds each chunk the client
//! sends for a fixed delay before passing it on (answers pass at once): a
//! server one round trip of that delay away, for tests of how a client
//! copes with latency (Redis at 1 ms, say).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Start one in front of `upstream`; it serves until the test ends.
pub async fn start(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client, upstream, delay));
        }
    });
    addr
}

async fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                return server_tx.shutdown().await;
            }
            tokio::time::sleep(delay).await;
            server_tx.write_all(&buf[..n]).await?;
        }
    };
    let down = tokio::io::copy(&mut server_rx, &mut client_tx);
    let _ = tokio::join!(up, down);
}
