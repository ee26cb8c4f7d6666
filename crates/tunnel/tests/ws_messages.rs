//! yamux's queued frames become WebSocket messages (`FrameIo` for
//! `WsIo`): a large buffer leaves without being copied (split at 64 KiB),
//! small buffers in a row leave joined in one message, all in order, and
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
async fn large_buffers_leave_as_they_are_and_small_ones_together() {
    let (client, mut server) = ws_pair().await;
    let mut io = wrap(client);
    let large: Bytes = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let head = Bytes::from_static(b"twelve bytes");
    let body = Bytes::from_static(b"GET /metrics HTTP/1.1\r\n\r\n");
    let fin = Bytes::from_static(b"twelve again");
    let mut queue = VecDeque::from([
        head.clone(),
        body.clone(),
        large.clone(),
        fin.clone(),
        head.clone(),
        fin.clone(),
    ]);
    poll_fn(|cx| io.poll_write_owned(cx, &mut queue))
        .await
        .unwrap();
    assert!(queue.is_empty(), "buffers left behind: {}", queue.len());
    io.flush().await.unwrap();

    let mut got = Vec::new();
    for _ in 0..4 {
        match server.next().await {
            Some(Ok(Message::Binary(payload))) => got.push(payload),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
    assert_eq!(sizes, vec![12 + body.len(), 64 * 1024, 36 * 1024, 12 * 3]);
    assert_eq!(got[0], [head.clone(), body].concat());
    assert_eq!(got[1], large.slice(..64 * 1024));
    assert_eq!(got[2], large.slice(64 * 1024..));
    assert_eq!(got[3], [fin.clone(), head, fin].concat());
}

/// Joined messages stay within the 64 KiB any message is cut to (far
/// under the relay's 1 MiB cap), however many small buffers wait.
#[tokio::test]
async fn joined_messages_stay_within_a_chunk() {
    let (client, mut server) = ws_pair().await;
    let mut io = wrap(client);
    let update = Bytes::from_static(&[7u8; 12]);
    let mut queue: VecDeque<Bytes> = std::iter::repeat_n(update, 20_000).collect();
    poll_fn(|cx| io.poll_write_owned(cx, &mut queue))
        .await
        .unwrap();
    io.flush().await.unwrap();
    let mut total = 0;
    while total < 20_000 * 12 {
        match server.next().await {
            Some(Ok(Message::Binary(payload))) => {
                assert!(payload.len() <= 64 * 1024, "{} bytes", payload.len());
                total += payload.len();
            }
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
    assert_eq!(total, 20_000 * 12);
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
