//! A yamux stream to a device as the relay hands it on: it holds one of
//! its session's stream permits and, when dropped, gives the permit back
//! and wakes whoever waits for the session's streams to end (a drain). It
//! passes reads and writes through, chunked ([`tunnel::splice`]) or not.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tunnel::StreamHandle;

/// A yamux stream to a device, holding one of its session's stream permits.
pub struct DeviceStream {
    inner: StreamHandle,
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<tokio::sync::Notify>,
}

impl DeviceStream {
    pub(crate) fn new(
        inner: StreamHandle,
        permit: OwnedSemaphorePermit,
        released: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            inner,
            permit: Some(permit),
            released,
        }
    }
}

impl Drop for DeviceStream {
    fn drop(&mut self) {
        // The permit goes back before the wake-up, so a drain that wakes
        // counts this stream as closed.
        drop(self.permit.take());
        self.released.notify_waiters();
    }
}

impl AsyncRead for DeviceStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeviceStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tunnel::splice::ChunkRead for DeviceStream {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<std::io::Result<Option<bytes::BytesMut>>> {
        self.inner.poll_read_chunk(cx, max)
    }
}

impl tunnel::splice::ChunkWrite for DeviceStream {
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut bytes::BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_write_chunk(cx, data)
    }

    fn poll_flush_chunks(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tunnel::splice::ChunkWrite::poll_flush_chunks(&mut self.inner, cx)
    }

    fn poll_shutdown_chunks(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tunnel::splice::ChunkWrite::poll_shutdown_chunks(&mut self.inner, cx)
    }
}
