//! A large body crosses a WebSocket into its yamux stream in the buffer it
//! was read into (vendor/tungstenite and vendor/tokio-yamux, twelfth
//! change; ADR 040): tungstenite reads a large payload into a buffer of
//! its own and hands it on unshared, `WsIo` hands each payload to the
//! session as it is, and the session takes an unshared one that is
//! exactly a body a frame waits for as its read buffer, so that body is
//! not copied. Shared buffers, bodies in pieces and frames packed with
//! others are copied in (a small body must not keep a large buffer alive)
//! and still arrive whole.

#![allow(clippy::unwrap_used)]

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tunnel::pump::Activity;
use tunnel::session::{device_config, serve, FrameIo};
use tunnel::upgrade::relay_ws_config;
use tunnel::StreamHandle;

const BODY: usize = 64 * 1024;

/// A yamux data frame's header opening stream `id` with `len` bytes.
fn syn_header(id: u32, len: usize) -> Bytes {
    let mut h = BytesMut::with_capacity(12);
    h.put_u8(0); // version
    h.put_u8(0); // data
    h.put_u16(1); // SYN
    h.put_u32(id);
    h.put_u32(u32::try_from(len).unwrap());
    h.freeze()
}

/// A payload of `len` bytes that tells messages apart.
fn body(seed: u8, len: usize) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_add(seed)).collect()
}

/// Two WebSocket ends over an in-memory pipe, with the relay's read size
/// on the server: (client, server).
async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(4 << 20);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(b, Role::Server, Some(relay_ws_config())).await;
    (client, server)
}

#[tokio::test]
async fn a_large_message_arrives_in_a_buffer_no_one_else_holds() {
    let (mut client, mut server) = ws_pair().await;
    // Sent together, so the server's reads run across message bounds.
    let large = body(3, BODY);
    client.feed(Message::binary(&b"before"[..])).await.unwrap();
    client.feed(Message::binary(large.clone())).await.unwrap();
    client.feed(Message::binary(&b"after"[..])).await.unwrap();
    client.flush().await.unwrap();

    let first = server.next().await.unwrap().unwrap().into_data();
    assert_eq!(&first[..], b"before");
    let payload = server.next().await.unwrap().unwrap().into_data();
    assert_eq!(payload, large);
    assert!(
        payload.try_into_mut().is_ok(),
        "the large payload shares its buffer"
    );
    let last = server.next().await.unwrap().unwrap().into_data();
    assert_eq!(&last[..], b"after");
}

/// A byte stream whose reads arrive as owned buffers: it hands the
/// session `chunks` in order, then has nothing more; what the session
/// writes is dropped.
struct Chunks {
    chunks: VecDeque<Bytes>,
    inner: tokio::io::Sink,
}

impl FrameIo for Chunks {
    fn reads_owned(&self) -> bool {
        true
    }

    fn poll_read_owned(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Ok(Some(chunk))),
            // Nothing more will come; the test ends the session.
            None => Poll::Pending,
        }
    }
}

impl AsyncRead for Chunks {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::other("read as owned buffers only")))
    }
}

edge_core::write_through_inner!(impl for Chunks);

/// A session served over `chunks`: the streams the peer opened, in order.
fn session_over(
    chunks: Vec<Bytes>,
    cancel: &CancellationToken,
) -> tokio::sync::mpsc::UnboundedReceiver<StreamHandle> {
    let (streams_tx, streams) = tokio::sync::mpsc::unbounded_channel();
    let io = Chunks {
        chunks: chunks.into(),
        inner: tokio::io::sink(),
    };
    tokio::spawn(serve(
        io,
        device_config(),
        cancel.clone(),
        Activity::new(),
        move |stream| {
            let _ = streams_tx.send(stream);
        },
    ));
    streams
}

/// The next piece `stream` hands out.
async fn next_chunk(stream: &mut StreamHandle) -> BytesMut {
    poll_fn(|cx| stream.poll_read_chunk(cx, 1 << 20))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_body_that_came_as_one_unshared_buffer_reaches_its_stream_in_it() {
    let cancel = CancellationToken::new();
    // Stream 1: header and body each a buffer of their own, as a peer's
    // yamux writes them and the WebSocket hands them over.
    let own = body(1, BODY);
    let own_at = own.as_ptr();
    // Stream 3: a body whose buffer someone else still holds.
    let shared = body(2, BODY);
    let kept = shared.clone();
    // Stream 5: a body in two buffers, and a small frame behind it in
    // the second one.
    let split = body(3, BODY);
    let mut tail = BytesMut::from(&split[BODY / 2..]);
    tail.extend_from_slice(&syn_header(7, 5));
    tail.extend_from_slice(b"small");
    // Stream 9: a whole frame in a buffer with more behind it. Taking
    // that buffer would keep all of it alive for the small body.
    let mut packed = BytesMut::new();
    packed.extend_from_slice(&syn_header(9, 100));
    packed.extend_from_slice(&body(4, 100));
    packed.extend_from_slice(&syn_header(11, 2 * BODY));
    packed.extend_from_slice(&body(5, 2 * BODY));
    let packed = packed.freeze();
    let packed_at = packed.as_ptr() as usize..packed.as_ptr() as usize + packed.len();
    let chunks = vec![
        syn_header(1, BODY),
        own,
        syn_header(3, BODY),
        shared,
        syn_header(5, BODY),
        split.slice(..BODY / 2),
        tail.freeze(),
        packed,
    ];
    let mut streams = session_over(chunks, &cancel);

    let mut first = streams.recv().await.unwrap();
    let got = next_chunk(&mut first).await;
    assert_eq!(got.len(), BODY);
    assert_eq!(&got[..], &body(1, BODY)[..]);
    assert_eq!(got.as_ptr(), own_at, "the unshared body was copied");

    let mut second = streams.recv().await.unwrap();
    let got = next_chunk(&mut second).await;
    assert_eq!(&got[..], &kept[..], "a shared body came through changed");
    assert_ne!(
        got.as_ptr(),
        kept.as_ptr(),
        "a buffer someone holds was taken"
    );

    let mut third = streams.recv().await.unwrap();
    let mut got = BytesMut::new();
    while got.len() < BODY {
        got.extend_from_slice(&next_chunk(&mut third).await);
    }
    assert_eq!(
        &got[..],
        &split[..],
        "a body in two buffers came through changed"
    );
    let mut fourth = streams.recv().await.unwrap();
    assert_eq!(&next_chunk(&mut fourth).await[..], b"small");

    let mut fifth = streams.recv().await.unwrap();
    let got = next_chunk(&mut fifth).await;
    assert_eq!(&got[..], &body(4, 100)[..]);
    assert!(
        !packed_at.contains(&(got.as_ptr() as usize)),
        "a 100-byte body was split off a 128 KiB buffer it would keep alive"
    );
    cancel.cancel();
}
