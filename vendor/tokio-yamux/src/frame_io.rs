//! Patched (seventh change): the byte stream a session runs over. A stream
//! whose writes take owned buffers (a WebSocket: each message owns its
//! payload) gets the queued frames as `Bytes` instead of borrowed slices
//! it would have to copy into a message first. Any other
//! `AsyncRead + AsyncWrite` runs wrapped in [`Plain`].

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
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
