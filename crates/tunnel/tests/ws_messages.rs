//! yamux's queued frames become WebSocket messages without being copied
//! into one first (`FrameIo` for `WsIo`): each buffer the session hands
//! over leaves as its own binary message (split at 64 KiB), in order, and
//! two sessions over a WebSocket still carry every byte both ways.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tunnel::pump::{Activity, PumpConfig, WsIo};
use tunnel::session::{client_hearing, device_config, serve, FrameIo};

/// Two WebSocket ends over an in-memory pipe: (client, server).
async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    (client, server)
}

fn wrap(ws: WebSocketStream<DuplexStream>) -> WsIo<DuplexStream> {
    let cfg = PumpConfig {
        idle_timeout: Duration::from_secs(60),
    };
    tunnel::pump::spawn(ws, cfg, Activity::new()).0
}

#[tokio::test]
async fn each_buffer_handed_over_leaves_as_its_own_messages() {
    let (client, mut server) = ws_pair().await;
    let mut io = wrap(client);
    let large: Bytes = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let small = Bytes::from_static(b"twelve bytes");
    let mut queue = VecDeque::from([large.clone(), small.clone()]);
    poll_fn(|cx| io.poll_write_owned(cx, &mut queue))
        .await
        .unwrap();
    assert!(queue.is_empty(), "buffers left behind: {}", queue.len());
    io.flush().await.unwrap();

    let mut got = Vec::new();
    for _ in 0..3 {
        match server.next().await {
            Some(Ok(Message::Binary(payload))) => got.push(payload),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
    assert_eq!(sizes, vec![64 * 1024, 36 * 1024, 12]);
    assert_eq!(got[0], large.slice(..64 * 1024));
    assert_eq!(got[1], large.slice(64 * 1024..));
    assert_eq!(got[2], small);
}

#[tokio::test]
async fn sessions_over_a_websocket_carry_every_byte_both_ways() {
    let (client, server) = ws_pair().await;
    let cancel = CancellationToken::new();
    // The device side echoes each stream back reversed.
    tokio::spawn(serve(
        wrap(server),
        device_config(),
        cancel.clone(),
        Activity::new(),
        |stream| {
            tokio::spawn(common::answer_reversed(stream));
        },
    ));
    let (mut control, driver) = client_hearing(
        wrap(client),
        device_config(),
        cancel.clone(),
        Activity::new(),
        drop,
    );
    tokio::spawn(driver);

    let sent: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 253) as u8).collect();
    let mut stream = control.open_stream().await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let write = async {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = rd.read_to_end(&mut back);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    back.reverse();
    assert!(back == sent, "the bytes came back changed");
    cancel.cancel();
}
