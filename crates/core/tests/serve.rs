//! The accept loop's two limits against real sockets: a client over its
//! connection cap is refused without taking a place in the overall limit,
//! and an upgraded connection keeps both its places for as long as the
//! upgraded stream lives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use edge_core::serve::{serve, ServeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

/// A router with `/health` and `/up` (101, then holds the upgraded stream
/// until `release` is notified).
fn app(release: Arc<Notify>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/up",
            get(move |mut req: Request| {
                let release = release.clone();
                async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let upgraded = on.await.unwrap();
                        release.notified().await;
                        drop(upgraded);
                    });
                    http::Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "test")
                        .body(axum::body::Body::empty())
                        .unwrap()
                }
            }),
        )
}

async fn start(opts: ServeOptions, release: Arc<Notify>) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app(release), opts, stop.clone()));
    (addr, stop)
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Send `req` and read the answer's head (and what came with it).
async fn ask(c: &mut TcpStream, req: &[u8]) -> String {
    c.write_all(req).await.unwrap();
    read_head(c).await
}

async fn read_head(c: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_cap_hold_no_place_in_the_overall_limit() {
    let (addr, _stop) = start(
        ServeOptions {
            max_connections: 4,
            max_connections_per_client: 2,
            header_read_timeout: Duration::from_secs(10),
            ..ServeOptions::default()
        },
        Arc::default(),
    )
    .await;
    // 127.0.0.1 holds its two places with connections that send nothing...
    let _idle = [
        connect_from([127, 0, 0, 1], addr).await,
        connect_from([127, 0, 0, 1], addr).await,
    ];
    // ...then opens 50 more that send nothing either: each is refused at
    // once, before it sends a head.
    let mut over = Vec::new();
    for _ in 0..50 {
        over.push(connect_from([127, 0, 0, 1], addr).await);
    }
    for c in &mut over {
        let head = tokio::time::timeout(Duration::from_secs(2), read_head(c))
            .await
            .expect("an over-cap connection is answered at once");
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(head.contains("too_many_connections"), "{head}");
    }
    // Another address is served while all that goes on.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    let head = tokio::time::timeout(Duration::from_secs(2), ask(&mut other, HEALTH))
        .await
        .expect("another client is served at once");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_keeps_its_places_until_the_upgraded_stream_ends() {
    let release = Arc::new(Notify::new());
    let (addr, _stop) = start(
        ServeOptions {
            max_connections: 2,
            max_connections_per_client: 1,
            ..ServeOptions::default()
        },
        release.clone(),
    )
    .await;
    let mut up = connect_from([127, 0, 0, 1], addr).await;
    let head = ask(
        &mut up,
        b"GET /up HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // Its client's slot is still taken...
    let mut same = connect_from([127, 0, 0, 1], addr).await;
    let head = ask(&mut same, HEALTH).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // ...and so is its place overall: with one other connection open, a
    // third waits to be accepted.
    let mut second = connect_from([127, 0, 0, 2], addr).await;
    assert!(ask(&mut second, HEALTH).await.starts_with("HTTP/1.1 200"));
    let mut third = connect_from([127, 0, 0, 3], addr).await;
    third.write_all(HEALTH).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.peek(&mut byte))
            .await
            .is_err(),
        "a third connection was served beside the upgraded one and another"
    );
    // The upgraded stream ends: its places are free again.
    release.notify_one();
    drop(up);
    let head = tokio::time::timeout(Duration::from_secs(2), read_head(&mut third))
        .await
        .expect("served once the upgraded stream ended");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop((second, third));
    let mut again = connect_from([127, 0, 0, 1], addr).await;
    assert!(ask(&mut again, HEALTH).await.starts_with("HTTP/1.1 200"));
}
