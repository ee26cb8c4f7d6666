//! A yamux stream to a device as the relay hands it on: it holds one of
//! its session's stream permits and, when dropped, gives the permit back
//! and wakes whoever waits for the session's streams to end (a drain). It
//! passes reads and writes through, chunked ([`tunnel::splice`]) or not.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;
use tunnel::StreamHandle;

/// A yamux stream to a device, holding one of its session's stream permits.
pub struct DeviceStream {
    inner: StreamHandle,
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<tokio::sync::Notify>,
    /// The shard whose thread drives the device's session (0: none).
    shard: usize,
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
            shard: 0,
        }
    }

    /// The same stream, its session driven by `shard`'s thread.
    pub(crate) fn on_shard(mut self, shard: usize) -> Self {
        self.shard = shard;
        self
    }

    /// The shard whose thread drives the device's session (ADR 042), 0
    /// when the relay serves on no shards.
    pub fn shard(&self) -> usize {
        self.shard
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

edge_core::read_through_inner!(impl for DeviceStream);

edge_core::write_through_inner!(impl for DeviceStream);

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
