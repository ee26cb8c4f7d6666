//! A quiet WebSocket holds no read buffer (vendor/tungstenite, ADR 038):
//! once a read finds nothing waiting and nothing is half-read, tungstenite
//! gives its read buffer back, so an idle tunnel does not keep the read
//! size (4 KiB on the relay) for good, and a large message's buffers are
//! not kept once it has gone through; a frame that arrives in pieces
//! still arrives whole. Heap bytes are counted by this test binary's own
//! allocator (`stats_alloc`), so this file holds one test.

#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::future::poll_fn;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes held out since `region` began (`stats_alloc` counts a
/// reallocation's growth in `bytes_allocated`, its shrinking in
/// `bytes_deallocated`).
fn held(region: &Region<'_, System>) -> isize {
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

const PAIRS: usize = 64;

/// Two ends of a loopback TCP connection: (connecting, accepted).
async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// Whether `ws` has nothing to hand out now (its read is pending).
async fn quiet<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> bool {
    poll_fn(|cx| Poll::Ready(ws.poll_next_unpin(cx).is_pending())).await
}

#[tokio::test]
async fn a_quiet_websocket_gives_its_read_buffer_back_and_a_split_frame_still_arrives_whole() {
    let config = tunnel::upgrade::relay_ws_config();
    let read_size = config.read_buffer_size;
    assert!(read_size >= 1024, "the relay's read size is {read_size}");

    // Pairs that each carried a small message one way and a large one
    // (the most a tunnel's message holds) the other, then went quiet.
    // Over loopback TCP: the kernel holds what is in flight, so the heap
    // counted is the WebSockets' own.
    let large = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let region = Region::new(GLOBAL);
    let mut pairs = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let (a, b) = tcp_pair(&listener).await;
        let mut client = WebSocketStream::from_raw_socket(a, Role::Client, Some(config)).await;
        let mut server = WebSocketStream::from_raw_socket(b, Role::Server, Some(config)).await;
        client.send(Message::binary(&b"ping"[..])).await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap().into_data(), "ping");
        // Sent while it is read: the large message need not fit the
        // sockets' buffers.
        let (sent, got) = tokio::join!(server.send(Message::binary(large.clone())), client.next());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().into_data(), large);
        assert!(quiet(&mut server).await && quiet(&mut client).await);
        pairs.push((client, server));
    }
    let per_pair = held(&region) / PAIRS as isize;
    println!("a quiet pair holds {per_pair} heap bytes");
    // Each pair's two ends and their sockets, without the two read buffers
    // (2 × the read size) that upstream keeps, nor the buffers the large
    // message grew (its size on each side).
    assert!(
        per_pair < read_size as isize,
        "a quiet pair holds {per_pair} bytes, more than one read buffer ({read_size})"
    );

    // A frame that comes in pieces: its first byte alone, then the rest
    // of its header and part of its payload, then the rest, with a quiet
    // read between each. What was read stays read.
    let (mut raw, ws) = tokio::io::duplex(64 * 1024);
    let mut client = WebSocketStream::from_raw_socket(ws, Role::Client, Some(config)).await;
    let payload: Vec<u8> = (0..100u8).collect();
    let mut frame = vec![0x82, payload.len() as u8];
    frame.extend_from_slice(&payload);
    for piece in [&frame[..1], &frame[1..12], &frame[12..]] {
        assert!(quiet(&mut client).await, "a message before it was whole");
        raw.write_all(piece).await.unwrap();
    }
    let got = client.next().await.unwrap().unwrap();
    assert_eq!(got.into_data(), payload);
    assert!(quiet(&mut client).await);

    // And the quiet pairs still carry messages.
    for (client, server) in &mut pairs {
        client.send(Message::binary(&b"again"[..])).await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap().into_data(), "again");
    }
}
