//! Patched (fifth change): the frames a session has yet to write, kept as
//! a list of buffers and written with vectored writes. Headers and small
//! bodies are copied into one buffer; a large body stays the buffer it
//! arrived in (a stream's write, or a frame read from another session) and
//! goes out without being copied into a write buffer first, as
//! `tokio_util::codec::Framed` did. A stream that writes owned buffers
//! (seventh change) is handed the buffers themselves.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::{HEADER_SIZE, frame::Frame, frame_io::FrameIo};

/// Bodies shorter than this are copied next to their header: cheaper than
/// one more slice in the write.
const COPY_BELOW: usize = 2 * 1024;
/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Encoded frames waiting to be written, in order: `segments`, then `tail`.
#[derive(Default)]
pub(crate) struct WriteQueue {
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
    /// Seventh change: the last flush of the writer was pending. The
    /// writer may hold bytes it took (a WebSocket's own buffer) with
    /// nothing left here; the session keeps flushing until it is done.
    unflushed: bool,
    /// See `progress`.
    progress: u64,
}

impl WriteQueue {
    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nothing queued and the writer flushed.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_empty() && !self.unflushed
    }

    /// Queue `frame`'s bytes.
    pub(crate) fn push(&mut self, frame: Frame) {
        let size = frame.size();
        let (header, body) = frame.into_parts();
        match body {
            Some(body) if body.len() >= COPY_BELOW => {
                header.encode(&mut self.tail);
                self.segments.push_back(self.tail.split().freeze());
                self.segments.push_back(body.freeze());
            }
            small => {
                let body = small.unwrap_or_default();
                self.tail.reserve(HEADER_SIZE + body.len());
                header.encode(&mut self.tail);
                self.tail.extend_from_slice(&body);
            }
        }
        self.len += size;
    }

    /// Write everything queued, then flush `io`.
    pub(crate) fn poll_write_all<T: FrameIo>(
        &mut self,
        io: &mut T,
        cx: &mut Context,
    ) -> Poll<io::Result<()>> {
        if io.writes_owned() {
            return self.poll_hand_over(io, cx);
        }
        if !io.is_write_vectored() && !self.segments.is_empty() {
            self.flatten();
        }
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, segment) in slices.iter_mut().zip(&self.segments) {
                *slot = IoSlice::new(segment);
                count += 1;
            }
            if count < MAX_SLICES && !self.tail.is_empty() {
                slices[count] = IoSlice::new(&self.tail);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.poll_flush(io, cx)
    }

    /// Flush `io`, remembering whether that is still pending.
    fn poll_flush<T: FrameIo>(&mut self, io: &mut T, cx: &mut Context) -> Poll<io::Result<()>> {
        let res = Pin::new(io).poll_flush(cx);
        if self.unflushed && res.is_ready() {
            self.progress += 1;
        }
        self.unflushed = res.is_pending();
        res
    }

    /// Seventh change: hand the queued buffers themselves to `io` (the
    /// tail split off as one more), then flush it.
    fn poll_hand_over<T: FrameIo>(&mut self, io: &mut T, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.tail.is_empty() {
            self.segments.push_back(self.tail.split().freeze());
        }
        let res = io.poll_write_owned(cx, &mut self.segments);
        let len = self.segments.iter().map(Bytes::len).sum();
        self.progress += self.len.saturating_sub(len) as u64;
        self.len = len;
        ready!(res)?;
        if !self.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.poll_flush(io, cx)
    }

    /// Gather everything into `tail`, for a writer that takes one slice
    /// at a time (one write per frame part would cost more than the copy).
    fn flatten(&mut self) {
        let mut all = BytesMut::with_capacity(self.len);
        for segment in self.segments.drain(..) {
            all.extend_from_slice(&segment);
        }
        all.extend_from_slice(&self.tail);
        self.tail = all;
    }

    /// Patched (eighth change): a count that moves whenever the writer
    /// takes bytes or finishes a flush, for the session's write deadline.
    pub(crate) fn progress(&self) -> u64 {
        self.progress
    }

    /// Drop the first `n` bytes queued (they were written).
    fn advance(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        self.progress += n as u64;
        while n > 0 {
            match self.segments.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.segments.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
    }

    /// Give back the buffer when nothing waits in it.
    pub(crate) fn release_if_idle(&mut self) {
        if self.is_empty() {
            self.segments = VecDeque::new();
            self.tail = BytesMut::new();
        }
    }
}
