//! The substream, the main interface is AsyncRead/AsyncWrite

use bytes::BytesMut;
use futures::{
    Stream,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
    stream::FusedStream,
    task::Waker,
};

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures::future;
use log::{debug, trace};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    StreamId,
    config::INITIAL_STREAM_WINDOW,
    error::Error,
    frame::{Flag, Flags, Frame, Type},
};

/// The substream
#[derive(Debug)]
pub struct StreamHandle {
    id: StreamId,
    state: StreamState,

    max_recv_window: u32,
    pub(crate) recv_window: u32,
    send_window: u32,
    read_buf: VecDeque<BytesMut>,

    // Send stream event to parent session
    unbound_event_sender: UnboundedSender<StreamEvent>,

    // Receive frame of current stream from parent session
    // (if the sender closed means session closed the stream should close too)
    frame_receiver: UnboundedReceiver<Frame>,
    // Data bytes the session queued for this stream and it has not taken
    // yet (PATCHED: the queue is unbounded; the session bounds these bytes
    // by the stream's largest receive window).
    queued: Arc<Queued>,
    // PATCHED (thirteenth change): the session's burst windows, whether
    // this stream holds one, and the bytes it has taken so far.
    burst: Option<Arc<Burst>>,
    holds_burst: bool,
    taken_bytes: u64,

    // when the cache is sent, a writable notification is issued
    writeable_wake: Option<Waker>,

    // when the cache is received by write, a readable notification is issued
    readable_wake: Option<Waker>,
}

impl StreamHandle {
    // Create a StreamHandle from session
    pub(crate) fn new(
        id: StreamId,
        unbound_event_sender: UnboundedSender<StreamEvent>,
        frame_receiver: UnboundedReceiver<Frame>,
        queued: Arc<Queued>,
        burst: Option<Arc<Burst>>,
        state: StreamState,
        max_window_size: u32,
    ) -> StreamHandle {
        assert!(state == StreamState::Init || state == StreamState::SynReceived);
        StreamHandle {
            id,
            state,
            max_recv_window: max_window_size,
            recv_window: INITIAL_STREAM_WINDOW,
            send_window: INITIAL_STREAM_WINDOW,
            read_buf: VecDeque::new(),
            unbound_event_sender,
            frame_receiver,
            queued,
            burst,
            holds_burst: false,
            taken_bytes: 0,
            writeable_wake: None,
            readable_wake: None,
        }
    }

    /// Get the stream id
    pub fn id(&self) -> StreamId {
        self.id
    }
    /// Get the stream state
    pub fn state(&self) -> StreamState {
        self.state
    }
    /// Get the receive window size
    pub fn recv_window(&self) -> u32 {
        self.recv_window
    }
    /// Get the send window size
    pub fn send_window(&self) -> u32 {
        self.send_window
    }

    fn close(&mut self) -> Result<(), Error> {
        match self.state {
            StreamState::SynSent
            | StreamState::SynReceived
            | StreamState::Established
            | StreamState::Init => {
                self.state = StreamState::LocalClosing;
                self.send_close()?;
            }
            StreamState::RemoteClosing => {
                self.state = StreamState::Closed;
                self.send_close()?;
                let event = StreamEvent::Closed(self.id);
                self.unbound_send_event(event)?;
            }
            StreamState::Reset | StreamState::Closed => {
                self.state = StreamState::Closed;
                let event = StreamEvent::Closed(self.id);
                self.unbound_send_event(event)?;
            }
            StreamState::LocalClosing => {
                self.state = StreamState::Closed;
                let event = StreamEvent::Closed(self.id);
                self.unbound_send_event(event)?;
            }
        }
        Ok(())
    }

    fn send_go_away(&mut self) {
        self.state = StreamState::LocalClosing;
        let _ignore = self
            .unbound_event_sender
            .unbounded_send(StreamEvent::GoAway);
    }

    fn unbound_send_event(&mut self, event: StreamEvent) -> Result<(), Error> {
        self.unbound_event_sender
            .unbounded_send(event)
            .map_err(|_| Error::SessionShutdown)
    }

    #[inline]
    fn unbound_send_frame(&mut self, frame: Frame) -> Result<(), Error> {
        trace!(
            "stream-handle({}) send_frame ty={:?}, size={}",
            self.id,
            frame.ty(),
            frame.size()
        );
        let event = StreamEvent::Frame(frame);
        self.unbound_send_event(event)
    }

    // Send a window update
    pub(crate) fn send_window_update(&mut self) -> Result<(), Error> {
        self.take_burst();
        let buf_len = self.read_buf.iter().map(|b| b.len()).sum::<usize>() as u32;
        let delta = self.max_recv_window - buf_len - self.recv_window;

        // Check if we can omit the update
        let flags = self.get_flags();
        if delta < (self.max_recv_window / 2) && flags.value() == 0 {
            return Ok(());
        }
        // Update our window
        self.recv_window += delta;
        let frame = Frame::new_window_update(flags, self.id, delta);
        self.unbound_event_sender
            .unbounded_send(StreamEvent::Frame(frame))
            .map_err(|_| Error::SessionShutdown)
    }

    fn send_close(&mut self) -> Result<(), Error> {
        let mut flags = self.get_flags();
        flags.add(Flag::Fin);
        let frame = Frame::new_window_update(flags, self.id, 0);
        self.unbound_send_frame(frame)
    }

    fn process_flags(&mut self, flags: Flags) -> Result<(), Error> {
        if flags.contains(Flag::Ack) && self.state == StreamState::SynSent {
            self.state = StreamState::Established;
        }
        if flags.contains(Flag::Fin) {
            match self.state {
                StreamState::Init
                | StreamState::SynSent
                | StreamState::SynReceived
                | StreamState::Established => {
                    self.state = StreamState::RemoteClosing;
                }
                StreamState::LocalClosing => {
                    return self.close();
                }
                _ => return Err(Error::UnexpectedFlag),
            }
        }
        if flags.contains(Flag::Rst) {
            self.state = StreamState::Reset;
        }
        Ok(())
    }

    fn get_flags(&mut self) -> Flags {
        match self.state {
            StreamState::Init => {
                self.state = StreamState::SynSent;
                Flags::from(Flag::Syn)
            }
            StreamState::SynReceived => {
                self.state = StreamState::Established;
                Flags::from(Flag::Ack)
            }
            _ => Flags::default(),
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), Error> {
        trace!(
            "stream-handle({}) handle_frame ty={:?}, size={}",
            self.id,
            frame.ty(),
            frame.size()
        );
        match frame.ty() {
            Type::WindowUpdate => {
                self.handle_window_update(&frame)?;
            }
            Type::Data => {
                self.handle_data(frame)?;
            }
            _ => {
                return Err(Error::InvalidMsgType);
            }
        }
        Ok(())
    }

    fn handle_window_update(&mut self, frame: &Frame) -> Result<(), Error> {
        self.process_flags(frame.flags())?;
        self.send_window = self
            .send_window
            .checked_add(frame.length())
            .ok_or(Error::InvalidMsgType)?;
        // wake writer continue
        if let Some(waker) = self.writeable_wake.take() {
            waker.wake()
        }
        Ok(())
    }

    /// A frame left the session's queue for this stream.
    fn taken(&mut self, frame: &Frame) {
        if frame.ty() == Type::Data {
            self.queued.bytes.fetch_sub(frame.length(), Ordering::AcqRel);
            self.taken_bytes += u64::from(frame.length());
        }
    }

    /// PATCHED (thirteenth change): a stream that has taken a whole window
    /// is a bulk transfer; it grows to the session's burst window if one
    /// is free. The session's bound on queued bytes rises before the larger
    /// window is advertised.
    fn take_burst(&mut self) {
        if self.holds_burst || self.taken_bytes < u64::from(self.max_recv_window) {
            return;
        }
        let Some(burst) = &self.burst else { return };
        if burst.try_take() {
            self.holds_burst = true;
            self.max_recv_window = burst.window;
            self.queued.limit.store(burst.window, Ordering::Release);
        }
    }

    fn handle_data(&mut self, frame: Frame) -> Result<(), Error> {
        self.process_flags(frame.flags())?;
        let length = frame.length();
        if length > self.recv_window {
            return Err(Error::RecvWindowExceeded);
        }

        let (_, body) = frame.into_parts();
        if let Some(data) = body {
            // yamux allows empty data frame
            // but here we just drop it
            if length > 0 {
                self.read_buf.push_back(data);
            }
        }
        self.recv_window -= length;
        Ok(())
    }

    fn recv_frames(&mut self, cx: &mut Context) -> Result<bool, Error> {
        trace!("stream-handle({}) recv_frames", self.id);
        let mut has_new_frame = false;
        loop {
            // PATCHED: after the remote's FIN the stream still takes frames
            // (window updates for our writes, a reset); upstream stopped
            // here, and a writer waiting for window waited forever.
            match self.state {
                StreamState::Reset | StreamState::Closed => {
                    return Err(Error::SessionShutdown);
                }
                _ => {}
            }

            if self.frame_receiver.is_terminated() {
                self.state = StreamState::RemoteClosing;
                return Err(Error::SubStreamRemoteClosing);
            }

            match Pin::new(&mut self.frame_receiver).as_mut().poll_next(cx) {
                Poll::Ready(Some(frame)) => {
                    self.taken(&frame);
                    self.handle_frame(frame)?;
                    has_new_frame = true;
                }
                Poll::Ready(None) => {
                    self.state = StreamState::RemoteClosing;
                    return Err(Error::SubStreamRemoteClosing);
                }
                Poll::Pending => break,
            }
        }
        Ok(has_new_frame)
    }

    fn try_recv_frames(&mut self) -> Result<bool, Error> {
        let mut has_new_frame = false;
        loop {
            // PATCHED: as in `recv_frames`, frames after the remote's FIN
            // are still taken.
            match self.state {
                StreamState::Reset | StreamState::Closed => {
                    return Err(Error::SessionShutdown);
                }
                _ => {}
            }

            if self.frame_receiver.is_terminated() {
                self.state = StreamState::RemoteClosing;
                return Err(Error::SubStreamRemoteClosing);
            }

            match self.frame_receiver.try_recv() {
                Ok(frame) => {
                    self.taken(&frame);
                    self.handle_frame(frame)?;
                    has_new_frame = true;
                }
                Err(futures::channel::mpsc::TryRecvError::Closed) => {
                    self.state = StreamState::RemoteClosing;
                    return Err(Error::SubStreamRemoteClosing);
                }
                Err(futures::channel::mpsc::TryRecvError::Empty) => break,
            }
        }
        Ok(has_new_frame)
    }

    fn recv_frames_wake(&mut self) -> Result<(), Error> {
        let buf_len = self.read_buf.len();
        let state = self.state;
        match self.try_recv_frames() {
            Ok(should_wake_read) => {
                // if state change to RemoteClosing, wake read
                // if read buf len change, wake read
                if (self.state == StreamState::RemoteClosing && state != StreamState::RemoteClosing)
                    || (should_wake_read && buf_len != self.read_buf.len())
                {
                    if let Some(waker) = self.readable_wake.take() {
                        waker.wake();
                    }
                }

                Ok(())
            }
            Err(e) => {
                // if state change to RemoteClosing, wake read
                if self.state == StreamState::RemoteClosing && state != StreamState::RemoteClosing {
                    if let Some(waker) = self.readable_wake.take() {
                        waker.wake();
                    }
                }

                Err(e)
            }
        }
    }

    // Returns Ok(true) only if eof is reached.
    fn check_self_state(&mut self) -> io::Result<bool> {
        // if read buf is empty and state is close, return close error
        if self.read_buf.is_empty() {
            match self.state {
                StreamState::RemoteClosing | StreamState::Closed => {
                    debug!("closed(EOF)");
                    // an empty read indicates that EOF is reached.
                    Ok(true)
                }
                StreamState::Reset => {
                    debug!("connection reset");
                    Err(io::ErrorKind::ConnectionReset.into())
                }
                _ => Ok(false),
            }
        } else {
            Ok(false)
        }
    }

    /// Attempts to receive data on the socket, without removing that data from the queue,
    /// registering the current task for wakeup if data is not yet available.
    pub fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.check_self_state()? {
            return Poll::Ready(Ok(0));
        }

        self.readable_wake = Some(cx.waker().clone());
        if let Err(Error::UnexpectedFlag | Error::RecvWindowExceeded | Error::InvalidMsgType) =
            self.recv_frames(cx)
        {
            // read flag error or read data error
            self.send_go_away();
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }

        if self.check_self_state()? {
            return Poll::Ready(Ok(0));
        }

        if self.read_buf.is_empty() {
            return Poll::Pending;
        }

        let mut total_read = 0;
        for read_buf in self.read_buf.iter() {
            let n = buf.remaining().min(read_buf.len());
            if n == 0 {
                break;
            }
            total_read += n;
            let b = &read_buf[..n];
            buf.put_slice(b);
        }

        trace!(
            "stream-handle({}) poll_peek self.read_buf.len={}, buf.len={}, n={}",
            self.id,
            self.read_buf.len(),
            buf.remaining(),
            total_read,
        );

        Poll::Ready(Ok(total_read))
    }

    /// Receives data on the socket from the remote address to which it is connected,
    /// without removing that data from the queue. On success, returns the number of bytes peeked.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read_buf = ReadBuf::new(buf);
        future::poll_fn(|cx| self.poll_peek(cx, &mut read_buf)).await
    }
}

impl StreamHandle {
    /// Wait until received data is buffered (`Ok(false)`) or the stream
    /// reached its end (`Ok(true)`). Shared by `poll_read` and
    /// `poll_read_chunk` (PATCHED: split out of `poll_read`).
    fn poll_readable(&mut self, cx: &mut Context) -> Poll<io::Result<bool>> {
        if self.check_self_state()? {
            return Poll::Ready(Ok(true));
        }

        self.readable_wake = Some(cx.waker().clone());
        if let Err(Error::UnexpectedFlag | Error::RecvWindowExceeded | Error::InvalidMsgType) =
            self.recv_frames(cx)
        {
            // read flag error or read data error
            self.send_go_away();
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }

        if self.check_self_state()? {
            return Poll::Ready(Ok(true));
        }

        if self.read_buf.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(false))
    }

    /// Give the remote the window that a read freed.
    fn after_read(&mut self) -> io::Result<()> {
        match self.state {
            StreamState::RemoteClosing | StreamState::Closed | StreamState::Reset => {
                debug!("this branch should be unreachable")
            }
            _ => {
                if self.send_window_update().is_err() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
        Ok(())
    }

    /// PATCHED (fifth change): the next received bytes as they arrived (at
    /// most `max` of them), without copying them; `None` at the end of the
    /// stream. A relay that forwards them with
    /// [`poll_write_chunk`](Self::poll_write_chunk) moves a frame's body
    /// from one session to another without touching its bytes.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context,
        max: usize,
    ) -> Poll<io::Result<Option<BytesMut>>> {
        if futures::ready!(self.poll_readable(cx))? {
            return Poll::Ready(Ok(None));
        }
        let max = max.max(1);
        let chunk = match self.read_buf.front_mut() {
            Some(front) if front.len() > max => front.split_to(max),
            _ => match self.read_buf.pop_front() {
                Some(front) => front,
                None => return Poll::Pending,
            },
        };
        self.after_read()?;
        Poll::Ready(Ok(Some(chunk)))
    }
}

impl AsyncRead for StreamHandle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if futures::ready!(self.poll_readable(cx))? {
            return Poll::Ready(Ok(()));
        }

        let mut offset = None;
        let mut total_read = 0;
        for (index, read_buf) in self.read_buf.iter_mut().enumerate() {
            let n = buf.remaining().min(read_buf.len());
            if n == 0 {
                break;
            }
            buf.put_slice(&read_buf.split_to(n));
            if read_buf.is_empty() {
                offset = Some(index);
            }
            total_read += n;
        }
        if let Some(offset) = offset {
            self.read_buf.drain(..=offset);
            // drain does not shrink the capacity, if the capacity is too large, shrink it
            if self.read_buf.capacity() > 24
                && self.read_buf.capacity() / (self.read_buf.len() + 1) > 4
            {
                self.read_buf.shrink_to_fit();
            }
        }

        trace!(
            "stream-handle({}) poll_read self.read_buf.len={}, buf.len={}, n={}",
            self.id,
            self.read_buf.len(),
            buf.remaining(),
            total_read,
        );

        Poll::Ready(self.after_read())
    }
}

impl StreamHandle {
    /// Wait until the remote's window lets us send, and return how many
    /// bytes it allows (PATCHED: split out of `poll_write`, shared with
    /// `poll_write_chunk`).
    fn poll_send_window(&mut self, cx: &mut Context) -> Poll<io::Result<usize>> {
        // https://github.com/driftluo/tentacle/issues/33
        // read frame from session is necessary.
        // The window update message of Yamux must be updated normally.
        // If the user only writes but does not read, the entire stream will be stuck.
        // To avoid this, read operations are required when there is a frame in the session.
        //
        // Another solution to avoid this problem is to let the session and stream share the state.
        // In the rust implementation, at least the following three states are required:
        // 1. writeable_wake
        // 2. send_window
        // 3. state
        //
        // When the session receives a window update frame, it can update the state of the stream.
        // In the implementation here, we try not to share state between the session and the stream.
        if let Err(Error::UnexpectedFlag | Error::RecvWindowExceeded | Error::InvalidMsgType) =
            self.recv_frames_wake()
        {
            // read flag error or read data error
            self.send_go_away();
        }

        match self.state {
            StreamState::Reset => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            StreamState::LocalClosing | StreamState::Closed => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "The local is closed and data cannot be written.",
                )));
            }
            _ => (),
        }

        if self.send_window == 0 {
            // register writer context waker
            // when write buf become empty, it can wake the upper layer to write the message again
            self.writeable_wake = Some(cx.waker().clone());
            // PATCHED: a writer waiting for window also waits on the
            // session's frames for this stream, so a window update or a
            // reset reaches it even when nothing reads the stream (after
            // the remote's FIN, say).
            let buffered = self.read_buf.len();
            let _ = self.recv_frames(cx);
            if self.read_buf.len() != buffered {
                if let Some(waker) = self.readable_wake.take() {
                    waker.wake();
                }
            }
            let session_gone = self.frame_receiver.is_terminated();
            if session_gone || matches!(self.state, StreamState::Reset | StreamState::Closed) {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.send_window == 0 {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(self.send_window as usize))
    }

    /// Send `body` as one data frame and take it from the send window.
    fn send_body(&mut self, body: BytesMut) -> Poll<io::Result<usize>> {
        let n = body.len();
        let flags = self.get_flags();
        match self.unbound_send_frame(Frame::new_data(flags, self.id, body)) {
            Ok(_) => {
                self.send_window -= n as u32;
                Poll::Ready(Ok(n))
            }
            Err(Error::WouldBlock) => Poll::Pending,
            _ => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    /// PATCHED (fifth change): send the front of `data` (as much as the
    /// remote's window allows) as a data frame without copying it; what is
    /// sent is split off `data`. The counterpart of
    /// [`poll_read_chunk`](Self::poll_read_chunk).
    pub fn poll_write_chunk(
        &mut self,
        cx: &mut Context,
        data: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let window = futures::ready!(self.poll_send_window(cx))?;
        let n = window.min(data.len());
        trace!(
            "stream-handle({}) poll_write_chunk self.send_window={}, data.len={}, n={}",
            self.id,
            self.send_window,
            data.len(),
            n,
        );
        let body = data.split_to(n);
        self.send_body(body)
    }
}

impl AsyncWrite for StreamHandle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let window = futures::ready!(self.poll_send_window(cx))?;
        // Allow n = 0, send an empty frame to remote
        let n = ::std::cmp::min(window, buf.len());
        trace!(
            "stream-hanlde({}) poll_write self.send_window={}, buf.len={}, n={}",
            self.id,
            self.send_window,
            buf.len(),
            n,
        );
        self.send_body(BytesMut::from(&buf[0..n]))
    }

    /// PATCHED (fifth change): the slices go out as one data frame (as much
    /// of them as the window allows), copied once, into its body. Without
    /// this a vectored writer (hyper) either copied them into its own
    /// buffer first or sent one frame per slice.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let window = futures::ready!(self.poll_send_window(cx))?;
        let n = bufs.iter().map(|b| b.len()).sum::<usize>().min(window);
        let mut body = BytesMut::with_capacity(n);
        for buf in bufs {
            let take = buf.len().min(n - body.len());
            body.extend_from_slice(&buf[..take]);
            if body.len() == n {
                break;
            }
        }
        self.send_body(body)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        debug!("[{}] StreamHandle.shutdown()", self.id);
        match self.close() {
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Ok(()) => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if self.holds_burst {
            if let Some(burst) = &self.burst {
                burst.give_back();
            }
        }
        if !self.unbound_event_sender.is_closed() && self.state != StreamState::Closed {
            match self.state {
                StreamState::Reset => (),
                // PATCHED: LocalClosing means we sent FIN and the remote has
                // not closed yet. Dropped now, this side will never read
                // again: reset, so a remote writer waiting for window lets
                // go (upstream sent nothing, and it waited forever).
                // if not, we should send Rst first
                StreamState::LocalClosing
                | StreamState::Established
                | StreamState::Init
                | StreamState::RemoteClosing
                | StreamState::SynReceived
                | StreamState::SynSent => {
                    let mut flags = self.get_flags();
                    flags.add(Flag::Rst);
                    let frame = Frame::new_window_update(flags, self.id, 0);
                    let rst_event = StreamEvent::Frame(frame);

                    // Always successful unless the session is dropped
                    let _ignore = self.unbound_event_sender.unbounded_send(rst_event);
                }
                StreamState::Closed => unreachable!(),
            }

            let event = StreamEvent::Closed(self.id);
            let _ignore = self.unbound_event_sender.unbounded_send(event);
        }
    }
}

// Stream event
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum StreamEvent {
    Frame(Frame),
    Closed(StreamId),
    // Only use on protocol error
    GoAway,
}

/// The stream state
#[derive(Debug, Copy, Clone, Eq, PartialEq)]
pub enum StreamState {
    /// Just created
    Init,
    /// We sent a Syn message
    SynSent,
    /// We received a Syn message
    SynReceived,
    /// Stream established
    Established,
    /// We closed the stream
    LocalClosing,
    /// Remote closed the stream
    RemoteClosing,
    /// Both side of the stream closed
    Closed,
    /// Stream rejected by remote
    Reset,
}

/// PATCHED: the data bytes the session queued for a stream and it has not
/// taken yet, and the most it may queue (the stream's largest receive
/// window); more breaks the flow-control contract.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) bytes: AtomicU32,
    pub(crate) limit: AtomicU32,
}

impl Queued {
    pub(crate) fn new(limit: u32) -> Self {
        Queued {
            bytes: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
        }
    }
}

/// PATCHED (thirteenth change): a session's burst windows, `free` of them
/// not held by a stream now.
#[derive(Debug)]
pub(crate) struct Burst {
    pub(crate) window: u32,
    free: AtomicUsize,
}

impl Burst {
    pub(crate) fn new(window: u32, count: usize) -> Self {
        Burst {
            window,
            free: AtomicUsize::new(count),
        }
    }

    fn try_take(&self) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    fn give_back(&self) {
        self.free.fetch_add(1, Ordering::AcqRel);
    }
}
