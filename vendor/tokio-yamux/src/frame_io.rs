//! Patched (seventh change): the byte stream a session runs over. A stream
//! whose writes take owned buffers (a WebSocket: each message owns its
//! payload) gets the queued frames as `Bytes` instead of borrowed slices
//! it would have to copy into a message first. Twelfth change: a stream
//! whose reads arrive as owned buffers (a WebSocket's messages) hands them
//! to the session as they are, and a data frame's body that is exactly
//! one of them is passed on without being copied. Any other
//! `AsyncRead + AsyncWrite` runs wrapped in [`Plain`].

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The byte stream under a [`Session`](crate::Session).
pub trait FrameIo: AsyncRead + AsyncWrite + Unpin {
    /// Whether the session hands its queued frames to
    /// [`poll_write_owned`](Self::poll_write_owned) instead of writing
    /// them as slices.
    fn writes_owned(&self) -> bool {
        false
    }

    /// Take buffers from the front of `queue` and send them (a buffer may
    /// be taken in part, its front split off). `Ready(Ok(()))` once
    /// `queue` is empty; `Pending` when nothing more can be taken now.
    /// Called only when [`writes_owned`](Self::writes_owned) is true.
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<()>> {
        let _ = (cx, queue);
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Whether the session takes what arrives through
    /// [`poll_read_owned`](Self::poll_read_owned) instead of reading into
    /// a buffer of its own.
    fn reads_owned(&self) -> bool {
        false
    }

    /// The next bytes that arrived, as the buffer they arrived in (never
    /// empty); `None` at the end of the stream. A buffer no one else holds
    /// that is exactly the body a data frame waits for is taken as it is;
    /// any other is copied. Called only when
    /// [`reads_owned`](Self::reads_owned) is true.
    fn poll_read_owned(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let _ = cx;
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// Any `AsyncRead + AsyncWrite` as a [`FrameIo`] written with slices.
#[derive(Debug)]
pub struct Plain<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin> FrameIo for Plain<T> {}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Patched (twelfth change): reads frames off a [`FrameIo`], what
/// `tokio_util`'s `Framed` did for the session. A byte stream that
/// [`reads_owned`](FrameIo::reads_owned) fills the buffer with what it
/// hands over: a received buffer that no one else holds and that is
/// exactly the body a decoded data frame's header waits for becomes the
/// buffer as it is, so the body is split off it without a copy; any other
/// is copied in.
pub(crate) struct FrameReader<T> {
    io: T,
    codec: crate::frame::FrameCodec,
    buffer: BytesMut,
    /// The last read may have brought a frame the codec has not seen.
    readable: bool,
    /// The byte stream ended.
    eof: bool,
    /// A decoding error was returned; the next poll ends the frames.
    errored: bool,
}

impl<T: FrameIo> FrameReader<T> {
    pub(crate) fn new(io: T, codec: crate::frame::FrameCodec) -> Self {
        let owned = io.reads_owned();
        Self {
            io,
            codec: codec.owned_reads(owned),
            buffer: BytesMut::new(),
            readable: false,
            eof: false,
            errored: false,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    pub(crate) fn read_buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Read more into the buffer: the bytes read (0 at the end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.io.reads_owned() {
            return match futures::ready!(self.io.poll_read_owned(cx))? {
                Some(chunk) => {
                    let n = chunk.len();
                    // Taken as it is only when it is exactly the body a
                    // decoded header waits for: a body split off a larger
                    // buffer would keep all of it alive, beyond what the
                    // stream's window counts.
                    let whole_body =
                        self.buffer.is_empty() && self.codec.awaited_body() == Some(n);
                    if whole_body {
                        match chunk.try_into_mut() {
                            Ok(own) => self.buffer = own,
                            Err(shared) => self.buffer.extend_from_slice(&shared),
                        }
                    } else {
                        self.buffer.extend_from_slice(&chunk);
                    }
                    Poll::Ready(Ok(n))
                }
                None => Poll::Ready(Ok(0)),
            };
        }
        self.buffer.reserve(1);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buffer)
    }
}

impl<T: FrameIo> futures::Stream for FrameReader<T> {
    type Item = io::Result<crate::frame::Frame>;

    /// As `Framed::poll_next`: decode what is buffered, read when that
    /// yields nothing; at the end of the stream, bytes left over are an
    /// error.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use tokio_util::codec::Decoder;
        let this = &mut *self;
        loop {
            if this.errored {
                this.errored = false;
                this.readable = false;
                return Poll::Ready(None);
            }
            if this.readable {
                let decoded = if this.eof {
                    this.codec.decode_eof(&mut this.buffer)
                } else {
                    this.codec.decode(&mut this.buffer)
                };
                match decoded {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) if this.eof => {
                        this.readable = false;
                        return Poll::Ready(None);
                    }
                    Ok(None) => this.readable = false,
                    Err(err) => {
                        this.errored = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                }
            }
            let n = futures::ready!(this.poll_fill(cx))?;
            if n == 0 {
                if this.eof {
                    return Poll::Ready(None);
                }
                this.eof = true;
            } else {
                this.eof = false;
            }
            this.readable = true;
        }
    }
}
