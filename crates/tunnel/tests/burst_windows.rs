//! Burst windows (ADR 044): a stream that has taken a whole receive window
//! grows to the larger burst window while its session has one free; at
//! most `BURST_STREAMS` streams of a session hold one, the rest keep the
//! ordinary window, and a stream that ends gives its burst window back.
//! Observed on the wire: the window updates our session writes, and the
//! bytes a real yamux peer manages to send while nothing is read.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio_util::sync::CancellationToken;
use tunnel::contract::{BURST_RECEIVE_WINDOW, BURST_STREAMS, MAX_RECEIVE_WINDOW};
use tunnel::session::{client_hearing, device_config, serve, Plain};
use tunnel::StreamHandle;

const INITIAL: u64 = 256 * 1024;
const MIB: u64 = 1 << 20;
/// What a bulk stream reads before it stops: more than a whole window.
const READ: u64 = 2 * MIB;

/// Per stream id, a sum that only grows.
type Sums = Arc<Mutex<HashMap<u32, u64>>>;

fn sum(sums: &Sums, id: u32) -> u64 {
    sums.lock().unwrap().get(&id).copied().unwrap_or(0)
}

/// One end of the pipe; sums the window-update deltas written through it
/// per stream. Our side only reads data, so all it writes is frame heads
/// (window updates, pings).
struct Sniff {
    inner: DuplexStream,
    pending: Vec<u8>,
    granted: Sums,
}

impl AsyncRead for Sniff {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sniff {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.pending.extend_from_slice(&buf[..n]);
        while self.pending.len() >= 12 {
            let head: Vec<u8> = self.pending.drain(..12).collect();
            assert_ne!(head[1], 0, "this side sends no data frames");
            if head[1] == 1 {
                let id = u32::from_be_bytes(head[4..8].try_into().unwrap());
                let delta = u32::from_be_bytes(head[8..12].try_into().unwrap());
                *self.granted.lock().unwrap().entry(id).or_default() += u64::from(delta);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wait (at most 10 s) until `what` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

async fn read_exactly(stream: &mut StreamHandle, n: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = stream.read(&mut buf[..want]).await.unwrap();
        assert!(got > 0, "the stream ended early");
        left -= got as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_streams_share_a_few_larger_windows_and_give_them_back() {
    const { assert!(BURST_RECEIVE_WINDOW > MAX_RECEIVE_WINDOW) };
    let (burst, ordinary) = (
        u64::from(BURST_RECEIVE_WINDOW),
        u64::from(MAX_RECEIVE_WINDOW),
    );
    let cancel = CancellationToken::new();
    let (near, far) = tokio::io::duplex(1 << 16);
    let granted: Sums = Arc::default();
    // The far end writes into every stream it is given, as fast as the
    // windows let it, counting what it wrote.
    let written: Arc<Mutex<HashMap<u32, Arc<AtomicU64>>>> = Arc::default();
    let counts = written.clone();
    tokio::spawn(serve(
        Plain(far),
        device_config(),
        cancel.clone(),
        tunnel::pump::Activity::new(),
        move |mut stream: StreamHandle| {
            let count = Arc::new(AtomicU64::new(0));
            counts.lock().unwrap().insert(stream.id(), count.clone());
            tokio::spawn(async move {
                let chunk = vec![7u8; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        },
    ));
    let sniff = Sniff {
        inner: near,
        pending: Vec::new(),
        granted: granted.clone(),
    };
    let (mut control, driver) = client_hearing(
        Plain(sniff),
        device_config(),
        cancel.clone(),
        tunnel::pump::Activity::new(),
        drop,
    );
    tokio::spawn(driver);
    let sent = |id: u32| {
        written
            .lock()
            .unwrap()
            .get(&id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    };
    // What the stream may still be sent beyond what it has read.
    let window = |id: u32, read: u64| INITIAL + sum(&granted, id) - read;

    // One more bulk stream than there are burst windows.
    let mut streams = Vec::new();
    for _ in 0..=BURST_STREAMS {
        let mut s = control.open_stream().await.unwrap();
        read_exactly(&mut s, READ).await;
        streams.push(s);
    }
    let ids: Vec<u32> = streams.iter().map(|s| s.id()).collect();
    for &id in &ids[..BURST_STREAMS] {
        // Granted once it had taken a whole window: that many bytes
        // beyond what was read then (a 64 KiB read), and no new update
        // until half of it is read again.
        until("a bulk stream is granted the burst window", || {
            window(id, READ) + READ >= burst
        })
        .await;
        // The peer really sends that much while nothing is read: the
        // session's bound on queued bytes rose with the window.
        until("the peer sends well beyond the ordinary window", || {
            sent(id) >= READ + ordinary + ordinary / 2
        })
        .await;
    }
    // A barrier: an update of the first stream, written after every update
    // of the last one (one queue carries them all to the session).
    let before = sum(&granted, ids[0]);
    read_exactly(&mut streams[0], burst / 2 + 64 * 1024).await;
    until("the first stream's next update is written", || {
        sum(&granted, ids[0]) > before
    })
    .await;
    let last = ids[BURST_STREAMS];
    assert!(
        window(last, READ) <= ordinary,
        "a stream beyond the session's burst windows keeps the ordinary one: {} KiB",
        window(last, READ) / 1024
    );
    // Every stream read and queued what it was sent without a protocol
    // error: the first still reads.
    read_exactly(&mut streams[0], 64 * 1024).await;

    // The first stream ends: its burst window goes to the next bulk stream
    // that asks.
    drop(streams.remove(0));
    read_exactly(&mut streams[BURST_STREAMS - 1], READ).await;
    until("the freed burst window is taken", || {
        window(last, 2 * READ) > ordinary
    })
    .await;
    cancel.cancel();
}
