//! Two-way piping that hands buffers on instead of copying bytes through
//! one: what a relay does between two yamux streams, and an agent between
//! a yamux stream and the box's TCP connection. A yamux stream gives the
//! body of each data frame it received as it is and sends a buffer it is
//! given as a frame's body ([`ChunkRead`], [`ChunkWrite`]); a plain byte
//! stream reads into a buffer that is then handed on whole ([`Plain`]).
//! `tokio::io::copy_bidirectional` instead copies every byte twice more
//! (into its buffer, then out of it into the next frame).

use bytes::{Buf, BufMut, BytesMut};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;
use tokio_yamux::StreamHandle;

/// The most one read hands on: a yamux frame's body is cut to it, and a
/// plain stream reads at most this much at once.
pub const MAX_CHUNK: usize = crate::PIPE_BUFFER;
/// A plain stream takes a fresh buffer of [`MAX_CHUNK`] when less than
/// this is left of its current one.
const MIN_READ: usize = 4 * 1024;
/// Chunks one direction moves before it lets other tasks run.
const CHUNKS_PER_TURN: usize = 32;

/// A byte stream that gives what it read as owned buffers.
pub trait ChunkRead {
    /// The next bytes, at most `max`; `None` at the end of the stream.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<BytesMut>>>;
}

/// A byte stream that takes what it writes as owned buffers.
pub trait ChunkWrite {
    /// Write the front of `data`, splitting off what was written; the
    /// number of bytes written (0 only when `data` is empty).
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;
    fn poll_flush_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// End the write side (a yamux FIN, a TCP half-close).
    fn poll_shutdown_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ChunkRead for StreamHandle {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<BytesMut>>> {
        StreamHandle::poll_read_chunk(self, cx, max)
    }
}

impl ChunkWrite for StreamHandle {
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        StreamHandle::poll_write_chunk(self, cx, data)
    }

    fn poll_flush_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_flush(cx)
    }

    fn poll_shutdown_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// A plain byte stream (a TCP connection) as chunks: it reads into a
/// buffer of its own and hands the filled part on, keeping the rest of the
/// buffer for the next read; it writes a chunk straight from the chunk.
#[derive(Debug)]
pub struct Plain<T> {
    io: T,
    buf: BytesMut,
}

impl<T> Plain<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> ChunkRead for Plain<T> {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<BytesMut>>> {
        let want = max.clamp(1, MAX_CHUNK);
        if self.buf.capacity() < MIN_READ.min(want) {
            // The filled parts of the old buffer live on in the chunks
            // handed out; reads go on in a new one.
            self.buf = BytesMut::with_capacity(MAX_CHUNK);
        }
        let mut room = (&mut self.buf).limit(want);
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut room))?;
        Poll::Ready(Ok((n > 0).then(|| self.buf.split_to(n))))
    }
}

impl<T: AsyncWrite + Unpin> ChunkWrite for Plain<T> {
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, data))?;
        data.advance(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One direction of a splice.
#[derive(Default)]
struct Half {
    /// Read and not yet written.
    pending: BytesMut,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader reached its end.
    eof: bool,
    /// The writer's side is shut down: this direction is done.
    done: bool,
    moved: u64,
}

impl Half {
    /// Move bytes from `from` to `to` until `from` ends (then shut `to`
    /// down) or one of them must wait.
    fn poll_move<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: ChunkRead + ?Sized,
        W: ChunkWrite + ?Sized,
    {
        let mut chunks = 0;
        while !self.done {
            if !self.pending.is_empty() {
                let n = ready!(to.poll_write_chunk(cx, &mut self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.moved += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.eof {
                ready!(to.poll_shutdown_chunks(cx))?;
                self.done = true;
                break;
            }
            if chunks == CHUNKS_PER_TURN {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match from.poll_read_chunk(cx, MAX_CHUNK) {
                Poll::Ready(Ok(Some(chunk))) => {
                    chunks += 1;
                    self.pending = chunk;
                }
                Poll::Ready(Ok(None)) => self.eof = true,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    if self.unflushed {
                        ready!(to.poll_flush_chunks(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Pipe `a` and `b` into each other until both directions reached their
/// end, as `tokio::io::copy_bidirectional` does: the end of one side's
/// reads shuts the other side's writes down. Returns the bytes moved
/// from `a` to `b` and from `b` to `a`; the first error ends both.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: ChunkRead + ChunkWrite + ?Sized,
    B: ChunkRead + ChunkWrite + ?Sized,
{
    let mut a_to_b = Half::default();
    let mut b_to_a = Half::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll_move(cx, a, b)?;
        let back = b_to_a.poll_move(cx, b, a)?;
        ready!(forward);
        ready!(back);
        Poll::Ready(Ok((a_to_b.moved, b_to_a.moved)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn plain_reads_hand_on_the_filled_part_and_keep_the_rest() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let mut plain = Plain::new(near);
        far.write_all(b"first").await.unwrap();
        let one = poll_fn(|cx| plain.poll_read_chunk(cx, MAX_CHUNK))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&one[..], b"first");
        far.write_all(b"second").await.unwrap();
        let two = poll_fn(|cx| plain.poll_read_chunk(cx, 3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&two[..], b"sec", "a read takes at most `max`");
        let three = poll_fn(|cx| plain.poll_read_chunk(cx, MAX_CHUNK))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&three[..], b"ond");
        drop(far);
        let end = poll_fn(|cx| plain.poll_read_chunk(cx, MAX_CHUNK))
            .await
            .unwrap();
        assert!(end.is_none(), "the end of the stream reads as None");
    }

    #[tokio::test]
    async fn splice_moves_every_byte_both_ways_and_passes_each_end_on() {
        let (mut left, left_near) = tokio::io::duplex(4096);
        let (right_near, mut right) = tokio::io::duplex(4096);
        let pipe = tokio::spawn(async move {
            splice(&mut Plain::new(left_near), &mut Plain::new(right_near)).await
        });
        let down: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let up: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
        let (down2, up2) = (down.clone(), up.clone());
        let left_side = tokio::spawn(async move {
            left.write_all(&down2).await.unwrap();
            left.shutdown().await.unwrap();
            let mut got = Vec::new();
            left.read_to_end(&mut got).await.unwrap();
            got
        });
        let right_side = tokio::spawn(async move {
            let mut got = Vec::new();
            right.read_to_end(&mut got).await.unwrap();
            right.write_all(&up2).await.unwrap();
            right.shutdown().await.unwrap();
            got
        });
        assert_eq!(right_side.await.unwrap(), down);
        assert_eq!(left_side.await.unwrap(), up);
        let (there, back) = pipe.await.unwrap().unwrap();
        assert_eq!((there, back), (down.len() as u64, up.len() as u64));
    }
}
