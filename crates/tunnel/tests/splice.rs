//! Piping between yamux streams hands buffers on (ADR 022): every byte
//! arrives, each end passes through, and a large body reaches the socket
//! in the buffer it was written from, not copied into a write buffer (nor
//! before a writer of owned buffers is handed it, ADR 023).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tunnel::session::{client_hearing, device_config, serve, FrameIo, Plain};
use tunnel::splice::splice;
use tunnel::{Control, StreamHandle};

/// A client session over one end of an in-memory pipe whose other end a
/// server session serves with `on_stream`.
fn pair<F>(cancel: &CancellationToken, on_stream: F) -> Control
where
    F: FnMut(StreamHandle) + Send + 'static,
{
    let (near, far) = tokio::io::duplex(1 << 16);
    pair_over(Plain(near), far, cancel, on_stream)
}

fn pair_over<A, B, F>(near: A, far: B, cancel: &CancellationToken, on_stream: F) -> Control
where
    A: FrameIo + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut(StreamHandle) + Send + 'static,
{
    let activity = tunnel::pump::Activity::new;
    tokio::spawn(serve(
        Plain(far),
        device_config(),
        cancel.clone(),
        activity(),
        on_stream,
    ));
    let (control, driver) = client_hearing(near, device_config(), cancel.clone(), activity(), drop);
    tokio::spawn(driver);
    control
}

#[tokio::test]
async fn two_sessions_spliced_carry_every_byte_both_ways() {
    let cancel = CancellationToken::new();
    // The far box: reads the whole request, then answers it reversed.
    let far = pair(&cancel, |stream| {
        tokio::spawn(common::answer_reversed(stream));
    });
    // The relay: each stream it is given goes on to the far side.
    let mut ours = pair(&cancel, move |mut incoming| {
        let mut far = far.clone();
        tokio::spawn(async move {
            let mut outgoing = far.open_stream().await.unwrap();
            splice(&mut incoming, &mut outgoing).await.unwrap();
        });
    });

    // More than the 256 KiB window each way, so flow control has to work.
    let sent: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    let mut stream = ours.open_stream().await.unwrap();
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let writer = async {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let reader = async {
        let mut back = Vec::new();
        read.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), mut back) = tokio::join!(writer, reader);
    back.reverse();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the bytes came back changed");
    cancel.cancel();
}

/// A byte stream that takes vectored writes (or, when `owned`, the
/// session's buffers themselves) and remembers where each slice or buffer
/// it was handed lives.
struct Recording {
    inner: tokio::io::DuplexStream,
    slices: Arc<Mutex<Vec<(usize, usize)>>>,
    owned: bool,
    /// The rest of the buffer being written, when `owned`.
    unwritten: Bytes,
}

impl FrameIo for Recording {
    fn writes_owned(&self) -> bool {
        self.owned
    }

    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut VecDeque<Bytes>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            while !self.unwritten.is_empty() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.unwritten))?;
                self.unwritten.advance(n);
            }
            let Some(next) = queue.pop_front() else {
                return Poll::Ready(Ok(()));
            };
            if let Ok(mut slices) = self.slices.lock() {
                slices.push((next.as_ptr() as usize, next.len()));
            }
            self.unwritten = next;
        }
    }
}

edge_core::read_through_inner!(impl for Recording);

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (true, Ok(mut slices)) = (res.is_ready(), self.slices.lock()) {
            slices.extend(bufs.iter().map(|b| (b.as_ptr() as usize, b.len())));
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_large_body_reaches_the_socket_in_the_buffer_it_was_written_from() {
    let (at, len, slices) = write_large_body(false).await;
    assert!(
        slices.iter().any(|&(ptr, n)| ptr == at && n == len),
        "the 64 KiB body was copied before it was written; slices written: {slices:?}"
    );
}

#[tokio::test]
async fn a_writer_of_owned_buffers_is_handed_the_buffer_a_large_body_was_written_from() {
    let (at, len, buffers) = write_large_body(true).await;
    assert!(
        buffers.iter().any(|&(ptr, n)| ptr == at && n == len),
        "the 64 KiB body was copied before it was handed over; buffers: {buffers:?}"
    );
}

/// Write one 64 KiB body on a stream whose session runs over a
/// [`Recording`]; returns where the body lived, its length, and what the
/// recording saw written.
async fn write_large_body(owned: bool) -> (usize, usize, Vec<(usize, usize)>) {
    let cancel = CancellationToken::new();
    let (near, far) = tokio::io::duplex(1 << 20);
    let slices = Arc::new(Mutex::new(Vec::new()));
    let near = Recording {
        inner: near,
        slices: slices.clone(),
        owned,
        unwritten: Bytes::new(),
    };
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let mut got_tx = Some(got_tx);
    let mut control = pair_over(near, far, &cancel, move |mut stream| {
        let Some(tx) = got_tx.take() else { return };
        tokio::spawn(async move {
            let mut body = vec![0u8; 64 * 1024];
            stream.read_exact(&mut body).await.unwrap();
            let _ = tx.send(body);
        });
    });

    let mut stream = control.open_stream().await.unwrap();
    let mut body = BytesMut::from(&vec![7u8; 64 * 1024][..]);
    let (at, len) = (body.as_ptr() as usize, body.len());
    let mut sent = 0;
    while !body.is_empty() {
        sent += poll_fn(|cx| stream.poll_write_chunk(cx, &mut body))
            .await
            .unwrap();
    }
    assert_eq!(sent, len);
    assert_eq!(got_rx.await.unwrap(), vec![7u8; len]);
    cancel.cancel();
    let slices = slices.lock().unwrap().clone();
    (at, len, slices)
}
