//! Large socket reads under a reader that asks for small ones. The relay
//! gives tungstenite a 4 KiB read size so an idle tunnel costs little, and
//! tungstenite never reads more than that at once: a bulk download then
//! took one system call per 4 KiB. [`ReadAhead`] passes small reads
//! straight through while traffic is light; once a read fills the
//! caller's whole request (more is waiting), it reads up to
//! [`CHUNK`] into a buffer of its own and serves the caller from it, and
//! gives that buffer back as soon as a read comes up short or finds
//! nothing waiting (the burst is over). Writes pass through untouched.

use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once during a burst.
pub const CHUNK: usize = 64 * 1024;

/// An I/O object whose reads grow to [`CHUNK`] during bursts.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read ahead and not yet handed to the caller; empty (no
    /// allocation) outside a burst.
    buf: BytesMut,
    /// The last socket read filled what it was given: more is waiting.
    burst: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            burst: false,
        }
    }

    /// Bytes read ahead and not yet read by the caller.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() && (!this.burst || out.remaining() >= CHUNK) {
            let wanted = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            this.burst = wanted > 0 && out.filled().len() - before == wanted;
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_empty() {
            this.buf.reserve(CHUNK);
            let room = this.buf.capacity();
            let polled =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf);
            let Poll::Ready(n) = polled else {
                // Nothing waiting: the burst is over, and a quiet tunnel
                // holds no buffer.
                this.buf = BytesMut::new();
                this.burst = false;
                return Poll::Pending;
            };
            let n = n?;
            this.burst = n == room;
            if n == 0 {
                this.buf = BytesMut::new();
                return Poll::Ready(Ok(()));
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        if this.buf.is_empty() && !this.burst {
            this.buf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

edge_core::write_through_inner!(impl[S: AsyncWrite + Unpin] for ReadAhead<S>);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader of small reads over a burst: every byte arrives in order,
    /// the burst is read in chunks, and the buffer is given back after.
    #[tokio::test]
    async fn small_reads_over_a_burst_lose_nothing_and_release_the_buffer() {
        let (mut tx, rx) = tokio::io::duplex(4 * CHUNK);
        let mut reader = ReadAhead::new(rx);
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        let mut saw_read_ahead = false;
        while got.len() < data.len() {
            let n = reader.read(&mut small).await.unwrap();
            assert!(n > 0, "early end of stream");
            got.extend_from_slice(&small[..n]);
            saw_read_ahead |= reader.buffered() > 0;
        }
        assert_eq!(got, data);
        assert!(saw_read_ahead, "a burst of full reads never read ahead");
        assert_eq!(reader.buffered(), 0);
        assert_eq!(reader.buf.capacity(), 0, "the buffer outlived the burst");

        // After the burst, a short message passes straight through.
        tx.write_all(b"ping").await.unwrap();
        let n = reader.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"ping");
        assert_eq!(reader.buf.capacity(), 0);

        drop(tx);
        assert_eq!(reader.read(&mut small).await.unwrap(), 0, "end of stream");
    }

    /// A burst that ends on a chunk boundary leaves the reader in burst
    /// mode; the read that then finds nothing waiting gives the buffer
    /// back, so a tunnel gone quiet holds none.
    #[tokio::test]
    async fn a_burst_that_ends_on_a_chunk_boundary_releases_the_buffer_when_quiet() {
        let (mut tx, rx) = tokio::io::duplex(4 * CHUNK);
        let mut reader = ReadAhead::new(rx);
        let mut small = [0u8; 4096];
        tx.write_all(&vec![7u8; small.len() + CHUNK]).await.unwrap();
        let mut got = 0;
        while got < small.len() + CHUNK {
            got += reader.read(&mut small).await.unwrap();
        }
        assert!(reader.burst, "a full chunk read keeps the burst going");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = ReadBuf::new(&mut small);
        assert!(Pin::new(&mut reader)
            .poll_read(&mut cx, &mut out)
            .is_pending());
        assert_eq!(reader.buf.capacity(), 0, "a quiet reader kept its buffer");
        assert!(!reader.burst);
    }
}
