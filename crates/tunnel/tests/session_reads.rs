//! How a yamux session reads: frames already waiting on the socket are
//! taken in a few large reads, not one read per header and one per body
//! (ADR 021; each read is a system call on a real socket).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

/// A byte stream that counts the reads that returned data.
struct CountingReads {
    inner: tokio::io::DuplexStream,
    reads: Arc<AtomicUsize>,
}

impl AsyncRead for CountingReads {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

edge_core::write_through_inner!(impl for CountingReads);

/// A yamux header (version 0): type, flags, stream id, length.
fn header(ty: u8, flags: u16, stream: u32, len: u32) -> Vec<u8> {
    let mut h = vec![0, ty];
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&stream.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[tokio::test]
async fn frames_waiting_on_the_socket_are_read_in_a_few_reads() {
    const FRAMES: usize = 64;
    const BODY: usize = 100;
    let (mut peer, ours) = tokio::io::duplex(1 << 20);
    let reads = Arc::new(AtomicUsize::new(0));
    let io = CountingReads {
        inner: ours,
        reads: reads.clone(),
    };
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let mut got_tx = Some(got_tx);
    let cancel = CancellationToken::new();
    let session = tokio::spawn(tunnel::session::serve(
        tunnel::session::Plain(io),
        tunnel::session::device_config(),
        cancel.clone(),
        tunnel::pump::Activity::new(),
        move |mut stream: tunnel::StreamHandle| {
            let Some(tx) = got_tx.take() else { return };
            tokio::spawn(async move {
                let mut body = vec![0u8; FRAMES * BODY];
                let read = stream.read_exact(&mut body).await.map(|_| body);
                let _ = tx.send(read);
            });
        },
    ));

    // Stream 1 opened (window update with SYN), then 64 data frames, all
    // in one write.
    let mut wire = header(1, 1, 1, 0);
    let mut sent = Vec::new();
    for i in 0..FRAMES {
        wire.extend(header(0, 0, 1, BODY as u32));
        let body = vec![i as u8; BODY];
        wire.extend_from_slice(&body);
        sent.extend(body);
    }
    peer.write_all(&wire).await.unwrap();

    let body = got_rx.await.expect("stream accepted").expect("stream read");
    assert_eq!(body, sent);
    let n = reads.load(Ordering::Relaxed);
    assert!(
        n <= 4,
        "{n} reads for {FRAMES} frames that were all waiting (one read per header and body would be {})",
        2 * FRAMES
    );
    cancel.cancel();
    let _ = session.await;
}
