//! The session, can open and manage substreams

#[cfg(not(target_family = "wasm"))]
use std::time::Instant;
use std::{
    collections::{BTreeMap, HashMap, VecDeque, hash_map::Entry},
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

#[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
use timer::Instant;
/// wasm-unknown-unkown brower doesn't support time get, must use browser timer instead
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
use web_time::Instant;

use futures::{
    Stream,
    channel::mpsc::{Receiver, Sender, UnboundedReceiver, UnboundedSender, channel, unbounded},
};
use log::{debug, log_enabled, trace};

use crate::{
    StreamId,
    config::Config,
    control::{Command, Control},
    error::Error,
    frame::{Flag, Flags, Frame, FrameCodec, GoAwayCode, Type},
    frame_io::{FrameIo, FrameReader},
    stream::{Burst, Queued, StreamEvent, StreamHandle, StreamState},
    write_queue::WriteQueue,
};

use timer::{Interval, interval};

const BUF_SHRINK_THRESHOLD: usize = u8::MAX as usize;
/// Patched: bytes buffered for writing before `poll_ready` flushes
/// (upstream's value, the size of its initial buffer).
const WRITE_BACKPRESSURE_BOUNDARY: usize = 8 * 1024;
/// Patched (eighth change): the most control frames (ping answers,
/// resets, window updates: 12 bytes each on the wire) that may wait for
/// the connection to take them. Past it the session stops reading, so a
/// peer that sends pings or SYNs without reading our answers cannot make
/// us queue without end; if the connection then takes nothing for
/// `connection_write_timeout`, the session ends.
pub(crate) const MAX_PENDING_CONTROL_FRAMES: usize = 1024;

/// The session
pub struct Session<T> {
    // Framed low level raw stream
    // (Patched: read through the codec only; frames are written from
    // `write_queue`. Twelfth change: read by `FrameReader`, which takes
    // owned reads as they are.)
    framed_stream: FrameReader<T>,
    // Patched: encoded frames waiting to be written (vectored, large
    // bodies not copied).
    write_queue: WriteQueue,

    // Got EOF from low level raw stream
    eof: bool,

    // remoteGoAway indicates the remote side does
    // not want further connections. Must be first for alignment.
    remote_go_away: bool,

    // localGoAway indicates that we should stop
    // accepting further connections. Must be first for alignment.
    local_go_away: bool,

    // nextStreamID is the next stream we should
    // send. This depends if we are a client/server.
    next_stream_id: StreamId,
    ty: SessionType,

    // config holds our configuration
    config: Config,

    // pings is used to track inflight pings
    pings: BTreeMap<u32, Instant>,
    ping_id: u32,
    // Patched (tenth change): the round trip of the latest answered ping,
    // in microseconds (0: none yet), for whoever holds `ping_rtt()`.
    ping_rtt_us: Arc<AtomicU64>,

    // streams maps a stream id to a sender of stream,
    // PATCHED: each stream's queue is unbounded, with the data bytes queued
    // on it counted, so a stream nobody reads never stops the session from
    // reading (upstream stopped reading the connection when one stream's
    // 8-frame queue was full: head-of-line blocking, then ping timeouts).
    // A peer that queues more than the largest receive window on a stream
    // breaks the protocol and gets GoAway(ProtocolError).
    streams: HashMap<StreamId, (UnboundedSender<Frame>, Arc<Queued>), foldhash::fast::RandomState>,
    // PATCHED (thirteenth change): the burst windows its streams share.
    burst: Option<Arc<Burst>>,
    // The StreamHandle not yet been polled
    pending_streams: VecDeque<StreamHandle>,
    // The buffer which will send to underlying network
    write_pending_frames: VecDeque<Frame>,
    // Patched: how many of `write_pending_frames` are control frames
    // (bounded by `MAX_PENDING_CONTROL_FRAMES`).
    control_pending: usize,
    // Patched: ends the session when the connection takes nothing for
    // `connection_write_timeout` while frames wait.
    write_deadline: WriteDeadline,
    // Patched: the frames encoded so far wait for the runtime's next look
    // at I/O (see `poll_next`); set while such a deferred flush is owed.
    flush_deferred: bool,
    // The buffer which will distribute to sub streams
    read_pending_frames: VecDeque<Frame>,

    // Why can unbound channel be used here?
    //
    // The only reason for the unbound channel being rejected is
    // that there is a potential memory explosion problem.
    // We just need to prove that there is no potential infinite
    // write problem here to use it safely.
    //
    // As a network library, it has two influencers, remote behavior and local behavior,
    // we discuss separately:
    //
    // remote:
    // This unbound channel cannot be used by the remote end, only for local transmission
    //
    // local:
    // Since each stream has a limit such as `send window`, when the upper limit is reached,
    // it will return to pending and can no longer send data to the channel
    //
    // The only problem is that if the stream is opened infinitely, the upper limit of the total
    // buffer will increase linearly. This behavior can be controlled by the user

    // For receive events from sub streams (for clone to new stream)
    event_sender: UnboundedSender<StreamEvent>,
    // For receive events from sub streams
    event_receiver: UnboundedReceiver<StreamEvent>,

    /// use to async open stream/close session
    control_sender: Sender<Command>,
    control_receiver: Receiver<Command>,

    keepalive: Option<Interval>,
    /// wasi use time mock to recording time changes
    /// yamux's timeout statistics are session independent
    #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
    time_mock: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Session type, client or server
#[derive(Copy, Clone, Debug, Eq, PartialEq, Ord, PartialOrd)]
pub enum SessionType {
    /// The session is a client
    Client,
    /// The session is a server (typical low level stream is an accepted TcpStream)
    Server,
}

impl SessionType {
    /// If this is a client type (inbound connection)
    pub fn is_client(self) -> bool {
        self == SessionType::Client
    }

    /// If this is a server type (outbound connection)
    pub fn is_server(self) -> bool {
        self == SessionType::Server
    }
}

impl<T> Session<T>
where
    T: FrameIo,
{
    /// Create a new session from a low level stream
    pub fn new(raw_stream: T, config: Config, ty: SessionType) -> Session<T> {
        assert!(config.max_stream_window_size >= crate::config::INITIAL_STREAM_WINDOW);
        let next_stream_id = match ty {
            SessionType::Client => 1,
            SessionType::Server => 2,
        };
        let (event_sender, event_receiver) = unbounded();
        let (control_sender, control_receiver) = channel(32);
        // Patched: the read and write buffers start empty and grow on
        // demand (upstream allocates 8 KiB each up front), so an idle
        // session holds next to nothing; `release_idle_buffers` gives them
        // back once traffic stops.
        let framed_stream = FrameReader::new(
            raw_stream,
            FrameCodec::default().max_frame_size(config.largest_stream_window()),
        );
        #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
        let time_mock = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let keepalive = if config.enable_keepalive {
            #[cfg(not(all(target_family = "wasm", not(target_os = "unknown"))))]
            let interval = interval(config.keepalive_interval);

            #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
            let mut interval = interval(config.keepalive_interval);
            #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
            interval.mock_instant(time_mock.clone());

            Some(interval)
        } else {
            None
        };

        Session {
            framed_stream,
            write_queue: WriteQueue::default(),
            eof: false,
            remote_go_away: false,
            local_go_away: false,
            next_stream_id,
            ty,
            config,
            pings: BTreeMap::default(),
            ping_id: 0,
            ping_rtt_us: Arc::default(),
            streams: HashMap::default(),
            burst: (config.burst_streams > 0
                && config.burst_stream_window_size > config.max_stream_window_size)
                .then(|| {
                    Arc::new(Burst::new(
                        config.burst_stream_window_size,
                        config.burst_streams,
                    ))
                }),
            pending_streams: VecDeque::default(),
            write_pending_frames: VecDeque::default(),
            control_pending: 0,
            write_deadline: WriteDeadline::new(config.connection_write_timeout),
            flush_deferred: false,
            read_pending_frames: VecDeque::default(),
            event_sender,
            event_receiver,
            control_sender,
            control_receiver,
            keepalive,
            #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
            time_mock,
        }
    }

    /// Create a server session (typical raw_stream is an accepted TcpStream)
    pub fn new_server(raw_stream: T, config: Config) -> Session<T> {
        Self::new(raw_stream, config, SessionType::Server)
    }

    /// Create a client session
    pub fn new_client(raw_stream: T, config: Config) -> Session<T> {
        Self::new(raw_stream, config, SessionType::Client)
    }

    /// shutdown is used to close the session and all streams.
    /// Attempts to send a GoAway before closing the connection.
    pub fn shutdown(&mut self, cx: &mut Context) -> Result<(), io::Error> {
        if self.is_dead() {
            return Ok(());
        }

        // Ignore frames remaining in pending queue
        self.clear_pending();
        self.send_go_away(cx)?;
        Ok(())
    }

    // Send all pending frames to remote streams
    fn flush(&mut self, cx: &mut Context) -> Result<(), io::Error> {
        if !self.read_pending_frames.is_empty() || !self.write_pending_frames.is_empty() {
            self.send_all(cx)?;
            self.distribute_to_substream(cx)?;
        }
        Ok(())
    }

    fn is_dead(&self) -> bool {
        self.remote_go_away && self.local_go_away || self.eof
    }

    #[cfg(not(all(target_family = "wasm", not(target_os = "unknown"))))]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
    fn now(&self) -> Instant {
        Instant::from_u64(self.time_mock.load(std::sync::atomic::Ordering::Acquire) as u64)
    }

    fn send_ping(&mut self, cx: &mut Context, ping_id: Option<u32>) -> Result<u32, io::Error> {
        let (flag, ping_id) = match ping_id {
            Some(ping_id) => (Flag::Ack, ping_id),
            None => {
                self.ping_id = self.ping_id.overflowing_add(1).0;
                (Flag::Syn, self.ping_id)
            }
        };
        let frame = Frame::new_ping(Flags::from(flag), ping_id);
        self.send_frame(cx, frame).map(|_| ping_id)
    }

    /// GoAway can be used to prevent accepting further
    /// connections. It does not close the underlying conn.
    pub fn send_go_away(&mut self, cx: &mut Context) -> Result<(), io::Error> {
        self.send_go_away_with_code(cx, GoAwayCode::Normal)
    }

    fn send_go_away_with_code(
        &mut self,
        cx: &mut Context,
        code: GoAwayCode,
    ) -> Result<(), io::Error> {
        // clear all pending write and then send go away to close session
        self.clear_pending();
        let frame = Frame::new_go_away(code);
        self.send_frame(cx, frame)?;
        self.local_go_away = true;
        let mut new_timer = interval(self.config.connection_write_timeout);
        // force registration of new timer to driver
        let _ignore = Pin::new(&mut new_timer).as_mut().poll_next(cx);
        // Reuse the keepalive timer to set a time out. If remote peer does not respond
        // within the time out, consider this session as remote gone away.
        self.keepalive = Some(new_timer);
        Ok(())
    }

    /// Patched: on each keepalive tick, give back the codec buffers that
    /// hold nothing, so a session that was busy once and is idle now costs
    /// no more than one that never was.
    fn release_idle_buffers(&mut self) {
        fn release(buf: &mut bytes::BytesMut) {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = bytes::BytesMut::new();
            }
        }
        release(self.framed_stream.read_buffer_mut());
        self.write_queue.release_if_idle();
        if self.write_queue.is_idle() && self.write_pending_frames.is_empty() {
            self.write_deadline.release();
        }
    }

    /// Open a new stream to remote session
    pub fn open_stream(&mut self) -> Result<StreamHandle, Error> {
        if self.is_dead() {
            Err(Error::SessionShutdown)
        } else if self.remote_go_away {
            Err(Error::RemoteGoAway)
        } else {
            let stream = self.create_stream(None)?;
            Ok(stream)
        }
    }

    /// Patched: the round trip of the latest answered keepalive ping, in
    /// microseconds (0 until one is answered), updated as answers arrive.
    pub fn ping_rtt(&self) -> Arc<AtomicU64> {
        self.ping_rtt_us.clone()
    }

    /// Return a control to async open stream/close session
    pub fn control(&self) -> Control {
        Control::new(self.control_sender.clone())
    }

    fn keep_alive(&mut self, cx: &mut Context, ping_at: Instant) -> Result<(), io::Error> {
        // If the remote peer does not follow the protocol, doesn't ack ping message,
        // there may be a memory leak, yamux does not clearly define how this should be handled.
        // According to the authoritative [spec](https://tools.ietf.org/html/rfc6455#section-5.5.2)
        // of websocket, the keep alive message **must** respond. If it is not responding,
        // it is a protocol exception and should be disconnected.
        // Patched: a ping has `connection_write_timeout` to be answered
        // (upstream: a fixed 30 s, whatever the configuration said).
        let timeout = self.config.connection_write_timeout;
        if self
            .pings
            .iter()
            .any(|(_id, time)| ping_at.saturating_duration_since(*time) > timeout)
        {
            #[cfg(feature = "metrics")]
            metrics::counter!("yamux.ping_timeout").increment(1);
            return Err(io::ErrorKind::TimedOut.into());
        }

        let ping_id = self.send_ping(cx, None)?;
        debug!("[{:?}] sent keep_alive ping (id={:?})", self.ty, ping_id);
        self.pings.insert(ping_id, ping_at);
        Ok(())
    }

    fn create_stream(&mut self, stream_id: Option<StreamId>) -> Result<StreamHandle, Error> {
        let (stream_id, state) = match stream_id {
            Some(stream_id) => (stream_id, StreamState::SynReceived),
            None => {
                let next_id = self.next_stream_id;
                self.next_stream_id = self
                    .next_stream_id
                    .checked_add(2)
                    .ok_or(Error::StreamsExhausted)?;
                (next_id, StreamState::Init)
            }
        };
        let (frame_sender, frame_receiver) = unbounded();
        let queued = Arc::new(Queued::new(self.config.max_stream_window_size));

        match self.streams.entry(stream_id) {
            Entry::Occupied(_) => return Err(Error::DuplicateStream),
            Entry::Vacant(entry) => entry.insert((frame_sender, queued.clone())),
        };
        let mut stream = StreamHandle::new(
            stream_id,
            self.event_sender.clone(),
            frame_receiver,
            queued,
            self.burst.clone(),
            state,
            self.config.max_stream_window_size,
        );
        if let Err(err) = stream.send_window_update() {
            debug!("[{:?}] stream.send_window_update error={:?}", self.ty, err);
        }
        Ok(stream)
    }

    /// Sink `start_send` Ready -> data send to buffer
    /// Sink `start_send` NotReady -> buffer full need poll complete
    #[inline]
    fn send_all(&mut self, cx: &mut Context) -> Result<bool, io::Error> {
        while let Some(frame) = self.pop_pending() {
            if self.is_dead() {
                break;
            }

            // Patched: past the boundary the queue is written out before
            // it takes more (what `Framed::poll_ready` did).
            if self.write_queue.len() >= WRITE_BACKPRESSURE_BOUNDARY && self.poll_complete(cx)? {
                debug!("[{:?}] write queue NotReady, frame: {:?}", self.ty, frame);
                self.push_pending_front(frame);
                return Ok(true);
            }
            self.write_queue.push(frame);
        }
        // Patched: no flush here. Frames are encoded into the write buffer
        // as they come and `poll_next` flushes at the end of a turn (the
        // first such flush deferred once), so the frames that turns
        // produce (many streams' data, window updates, ping answers) leave
        // in one write instead of one write each.
        Ok(false)
    }

    /// https://docs.rs/tokio/0.1.19/tokio/prelude/trait.Sink.html
    /// Must use poll complete to ensure data send to lower-level
    ///
    /// Sink `poll_complete` Ready -> no buffer remain, flush all
    /// Sink `poll_complete` NotReady -> there is more work left to do, may wake up next poll
    fn poll_complete(&mut self, cx: &mut Context) -> Result<bool, io::Error> {
        match self
            .write_queue
            .poll_write_all(self.framed_stream.get_mut(), cx)
        {
            Poll::Pending => Ok(true),
            Poll::Ready(res) => res.map(|_| false),
        }
    }

    fn send_frame(&mut self, cx: &mut Context, frame: Frame) -> Result<(), io::Error> {
        self.push_pending(frame);
        if self.send_all(cx)? {
            debug!("[{:?}] Session::send_frame() finished", self.ty);
        }
        Ok(())
    }

    /// Patched: queue `frame` behind the others, counting control frames.
    fn push_pending(&mut self, frame: Frame) {
        self.control_pending += usize::from(frame.ty() != Type::Data);
        self.write_pending_frames.push_back(frame);
    }

    fn push_pending_front(&mut self, frame: Frame) {
        self.control_pending += usize::from(frame.ty() != Type::Data);
        self.write_pending_frames.push_front(frame);
    }

    fn pop_pending(&mut self) -> Option<Frame> {
        let frame = self.write_pending_frames.pop_front()?;
        self.control_pending -= usize::from(frame.ty() != Type::Data);
        Some(frame)
    }

    fn clear_pending(&mut self) {
        self.write_pending_frames.clear();
        self.control_pending = 0;
    }

    /// Patched: too many control frames wait for the connection; the
    /// session reads nothing more until they are written.
    /// The bound is `MAX_PENDING_CONTROL_FRAMES`, or two per stream the
    /// session may hold (a window update and a close each), if more.
    fn write_backlogged(&self) -> bool {
        self.control_pending
            >= MAX_PENDING_CONTROL_FRAMES.max(self.config.max_stream_count.saturating_mul(2))
    }

    fn handle_frame(&mut self, cx: &mut Context, frame: Frame) -> Result<(), io::Error> {
        match frame.ty() {
            Type::Data | Type::WindowUpdate => {
                self.handle_stream_message(cx, frame)?;
            }
            Type::Ping => {
                self.handle_ping(cx, &frame)?;
            }
            Type::GoAway => {
                self.handle_go_away(cx, &frame)?;
            }
        }
        Ok(())
    }

    /// Try send buffer to all sub streams
    fn distribute_to_substream(&mut self, cx: &mut Context) -> Result<(), io::Error> {
        let new = if self.read_pending_frames.len() > BUF_SHRINK_THRESHOLD {
            VecDeque::with_capacity(BUF_SHRINK_THRESHOLD)
        } else {
            VecDeque::new()
        };

        let buf = ::std::mem::replace(&mut self.read_pending_frames, new);
        for frame in buf {
            let stream_id = frame.stream_id();
            if frame.flags().contains(Flag::Syn) {
                if self.local_go_away {
                    let flags = Flags::from(Flag::Rst);
                    let frame = Frame::new_window_update(flags, stream_id, 0);
                    self.send_frame(cx, frame)?;
                    debug!(
                        "substream({}) local go away send Reset to remote, session.ty={:?}",
                        stream_id, self.ty
                    );
                    // TODO: should report error?
                    return Ok(());
                }
                if self.streams.len() < self.config.max_stream_count
                    && self.pending_streams.len() < self.config.accept_backlog
                {
                    debug!(
                        "substream({}) accepted, session.ty={:?}",
                        stream_id, self.ty
                    );
                    let stream = match self.create_stream(Some(stream_id)) {
                        Ok(stream) => stream,
                        Err(_) => {
                            self.send_go_away_with_code(cx, GoAwayCode::ProtocolError)?;
                            return Ok(());
                        }
                    };
                    self.pending_streams.push_back(stream);
                } else {
                    // close the stream immediately
                    debug!("substream({}) closed, session.ty={:?}", stream_id, self.ty);
                    let mut flags = Flags::from(Flag::Ack);
                    flags.add(Flag::Rst);
                    let frame = Frame::new_window_update(flags, stream_id, 0);
                    self.push_pending(frame);
                }
            }
            let disconnected = {
                match self.streams.get_mut(&stream_id) {
                    Some((frame_sender, queued)) => {
                        if frame.ty() == Type::Data {
                            let length = frame.length();
                            let before = queued.bytes.fetch_add(length, Ordering::AcqRel);
                            if u64::from(before) + u64::from(length)
                                > u64::from(queued.limit.load(Ordering::Acquire))
                            {
                                debug!(
                                    "substream({}) peer exceeded the receive window",
                                    stream_id
                                );
                                self.send_go_away_with_code(cx, GoAwayCode::ProtocolError)?;
                                return Ok(());
                            }
                        }
                        match frame_sender.unbounded_send(frame) {
                            Ok(()) => false,
                            Err(err) => {
                                debug!("substream({}) send failed: {}", stream_id, err);
                                true
                            }
                        }
                    }
                    _ => {
                        // TODO: stream already closed ?
                        debug!(
                            "substream({}) should exist but not, may drop by self",
                            stream_id
                        );
                        false
                    }
                }
            };
            if disconnected {
                debug!("substream({}) removed, session.ty={:?}", stream_id, self.ty);
                self.streams.remove(&stream_id);
            }
        }

        Ok(())
    }

    // Send message to stream (Data/WindowUpdate)
    fn handle_stream_message(&mut self, cx: &mut Context, frame: Frame) -> Result<(), io::Error> {
        self.read_pending_frames.push_back(frame);
        self.distribute_to_substream(cx)?;
        Ok(())
    }

    fn handle_ping(&mut self, cx: &mut Context, frame: &Frame) -> Result<(), io::Error> {
        let flags = frame.flags();
        if flags.contains(Flag::Syn) {
            // Send ping back
            self.send_ping(cx, Some(frame.length()))?;
        } else if flags.contains(Flag::Ack) {
            let ping_id = frame.length();
            // Patched: an ACK for a ping we never sent (a forged
            // `u32::MAX` cleared every outstanding ping upstream) is
            // ignored; an answer to one we sent also settles the older ones.
            let Some(sent_ping_at) = self.pings.remove(&ping_id) else {
                debug!("[{:?}] ignored ACK of unsent ping {}", self.ty, ping_id);
                return Ok(());
            };
            let latency = self.now().saturating_duration_since(sent_ping_at);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
            self.ping_rtt_us.store(micros, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::histogram!("yamux.ping_latency").record(latency.as_millis() as f64);
            self.pings = self.pings.split_off(&ping_id);
        } else {
            // TODO: unexpected case, send a GoAwayCode::ProtocolError ?
        }
        Ok(())
    }

    fn handle_go_away(&mut self, cx: &mut Context, frame: &Frame) -> Result<(), io::Error> {
        let mut close = || -> Result<(), io::Error> {
            self.remote_go_away = true;
            self.clear_pending();
            if !self.local_go_away {
                self.send_go_away(cx)?;
            }
            Ok(())
        };
        match GoAwayCode::from(frame.length()) {
            GoAwayCode::Normal => close(),
            GoAwayCode::ProtocolError => {
                // TODO: report error
                close()
            }
            GoAwayCode::InternalError => {
                // TODO: report error
                close()
            }
        }
    }

    // Receive frames from low level stream
    fn recv_frames(&mut self, cx: &mut Context) -> Poll<Option<Result<(), io::Error>>> {
        trace!("[{:?}] poll from framed_stream", self.ty);
        match Pin::new(&mut self.framed_stream).as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.handle_frame(cx, frame)?;
                Poll::Ready(Some(Ok(())))
            }
            Poll::Ready(None) => {
                self.eof = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                trace!("[{:?}] poll framed_stream NotReady", self.ty);
                Poll::Pending
            }
            Poll::Ready(Some(Err(err))) => {
                debug!("[{:?}] Session recv_frames error: {:?}", self.ty, err);
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn handle_event(&mut self, cx: &mut Context, event: StreamEvent) -> Result<(), io::Error> {
        match event {
            StreamEvent::Frame(frame) => {
                self.send_frame(cx, frame)?;
            }
            StreamEvent::Closed(stream_id) => {
                self.streams.remove(&stream_id);
                if self.streams.capacity() - self.streams.len() > BUF_SHRINK_THRESHOLD {
                    self.streams.shrink_to_fit();
                }
            }
            StreamEvent::GoAway => self.send_go_away_with_code(cx, GoAwayCode::ProtocolError)?,
        }
        Ok(())
    }

    // Receive events from sub streams
    fn recv_events(&mut self, cx: &mut Context) -> Poll<Option<Result<(), io::Error>>> {
        match Pin::new(&mut self.event_receiver).as_mut().poll_next(cx) {
            Poll::Ready(Some(event)) => {
                self.handle_event(cx, event)?;
                Poll::Ready(Some(Ok(())))
            }
            Poll::Ready(None) => {
                // Since session hold one event sender,
                // the channel can not be disconnected.
                unreachable!()
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn control_poll(&mut self, cx: &mut Context) -> Poll<Option<Result<(), io::Error>>> {
        match Pin::new(&mut self.control_receiver).as_mut().poll_next(cx) {
            Poll::Ready(Some(event)) => {
                match event {
                    Command::OpenStream(tx) => {
                        let _ignore = tx.send(self.open_stream());
                    }
                    Command::Shutdown(tx) => {
                        self.shutdown(cx)?;
                        let _ignore = tx.send(());
                    }
                }
                Poll::Ready(Some(Ok(())))
            }
            Poll::Ready(None) => {
                // Since session hold one event sender,
                // the channel can not be disconnected.
                unreachable!()
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Stream for Session<T>
where
    T: FrameIo,
{
    type Item = Result<StreamHandle, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<Option<Self::Item>> {
        if self.is_dead() {
            debug!("yamux::Session finished because is_dead");
            // Patched: what an earlier turn encoded still goes out.
            let _ignore = self.poll_complete(cx);
            return Poll::Ready(None);
        }

        if log_enabled!(log::Level::Trace)
            && !(self.write_pending_frames.is_empty() && self.read_pending_frames.is_empty())
        {
            trace!(
                "yamux::Session write_pending_frames: {}, read_pending_frames: {}",
                self.write_pending_frames.len(),
                self.read_pending_frames.len()
            );
        }

        let mut keep_alive_wake = false;
        if let Some(ref mut interval) = self.keepalive {
            match Pin::new(interval).as_mut().poll_next(cx) {
                Poll::Ready(Some(_)) => {
                    keep_alive_wake = true;
                    self.release_idle_buffers();
                    if self.local_go_away {
                        // The remote peer has not responded to our sent go away code.
                        // Assume that remote peer has gone away and this session should be closed.
                        self.remote_go_away = true;
                    } else {
                        let now = self.now();
                        self.keep_alive(cx, now)?;
                    }
                }
                Poll::Ready(None) => {
                    debug!("yamux::Session poll keepalive interval finished");
                }
                Poll::Pending => (),
            }
        }

        let mut need_wake = false;

        for _ in 0..16 {
            if self.is_dead() {
                debug!("yamux::Session finished because is_dead, end");
                // Patched: what this turn encoded still goes out.
                let _ignore = self.poll_complete(cx);
                return Poll::Ready(None);
            }

            // Reset initial value
            need_wake = false;

            self.flush(cx)?;

            // Open stream as soon as possible
            if let Some(stream) = self.pending_streams.pop_front() {
                debug!("yamux::Session [{:?}] A stream is ready", self.ty);
                return Poll::Ready(Some(Ok(stream)));
            }

            let mut is_pending = self.control_poll(cx)?.is_pending();
            if self.write_backlogged() {
                trace!(
                    "[{:?}] skip recv_frames while {} control frames wait to be written",
                    self.ty,
                    self.control_pending
                );
            } else if self.read_pending_frames.is_empty() {
                is_pending &= self.recv_frames(cx)?.is_pending();
            } else {
                trace!(
                    "[{:?}] skip recv_frames while read_pending_frames is backpressured: {}",
                    self.ty,
                    self.read_pending_frames.len()
                );
            }
            is_pending &= self.recv_events(cx)?.is_pending();

            if is_pending {
                break;
            } else {
                need_wake = true;
            }
        }

        // Patched: one flush for every frame this turn encoded, and for
        // those the tasks that run before the runtime next polls for I/O
        // hand it meanwhile: the first turn that leaves bytes behind defers
        // its flush once (a deferred wake, as `yield_now` does), the next
        // turn writes them all. Under load the requests of many streams
        // then leave in one write instead of one write each; when nothing
        // else is ready the wake comes at once. A session that is closing
        // flushes at once, so its GoAway is out before its owner stops
        // polling it.
        // Seventh change: also while the writer's own flush is pending
        // (it may hold bytes it took from the queue).
        if self.write_queue.is_idle() {
            self.flush_deferred = false;
        } else if self.flush_deferred || self.local_go_away || self.remote_go_away {
            self.flush_deferred = false;
            self.poll_complete(cx)?;
        } else {
            self.flush_deferred = true;
            defer_wake(cx);
        }

        // Eighth change: frames waiting and a connection that has taken
        // nothing for `connection_write_timeout` end the session.
        let waiting = !self.write_queue.is_idle() || !self.write_pending_frames.is_empty();
        let progress = self.write_queue.progress();
        if self.write_deadline.poll_expired(waiting, progress, cx) {
            debug!("[{:?}] write deadline passed", self.ty);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "yamux write timed out",
            ))));
        }

        if need_wake || keep_alive_wake {
            // To ensure we do not starve other tasks waiting on the executor,
            // we yield here, but immediately wake ourselves up to continue.
            cx.waker().wake_by_ref()
        }

        Poll::Pending
    }
}

/// Patched (eighth change): the deadline of a connection that takes
/// nothing. It runs from the moment frames wait, or from the connection's
/// last progress (bytes taken, a flush finished), whichever is later. Its
/// timer is kept while traffic goes on (moving it costs a reset only once
/// the old deadline has passed) and given back on an idle keepalive tick.
struct WriteDeadline {
    timeout: Duration,
    progress: u64,
    since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            progress: 0,
            since: None,
            timer: None,
        }
    }

    /// Whether frames have `waiting` with no `progress` for the timeout;
    /// otherwise arms the timer to wake the session when it would be.
    fn poll_expired(&mut self, waiting: bool, progress: u64, cx: &mut Context) -> bool {
        if !waiting {
            self.since = None;
            return false;
        }
        let now = tokio::time::Instant::now();
        if self.since.is_none() || progress != self.progress {
            self.since = Some(now);
            self.progress = progress;
        }
        let deadline = self.since.unwrap_or(now) + self.timeout;
        if now >= deadline {
            return true;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() <= now {
            timer.as_mut().reset(deadline);
        }
        // Pending until the (possibly earlier) deadline it holds; the
        // wake-up then looks again.
        let _ = std::future::Future::poll(timer.as_mut(), cx);
        false
    }

    fn release(&mut self) {
        self.since = None;
        self.timer = None;
    }
}

/// Patched: wake the task once the runtime has looked at I/O again (outside
/// a runtime, at once).
fn defer_wake(cx: &mut Context) {
    let mut yielded = std::pin::pin!(tokio::task::yield_now());
    if std::future::Future::poll(yielded.as_mut(), cx).is_ready() {
        cx.waker().wake_by_ref();
    }
}

mod timer {
    #[cfg(feature = "generic-timer")]
    pub use generic_time::{Interval, interval};
    #[cfg(feature = "tokio-timer")]
    pub use inter::{Interval, interval};

    #[cfg(feature = "tokio-timer")]
    mod inter {
        use futures::Stream;
        use std::{
            pin::Pin,
            task::{Context, Poll},
            time::Duration,
        };
        use tokio::time::{Instant, Interval as Inner, interval_at};

        pub struct Interval(Inner);

        impl Interval {
            fn new(period: Duration) -> Self {
                Self(interval_at(Instant::now() + period, period))
            }
        }

        impl Stream for Interval {
            type Item = ();

            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
                match self.0.poll_tick(cx) {
                    Poll::Ready(_) => Poll::Ready(Some(())),
                    Poll::Pending => Poll::Pending,
                }
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                (usize::MAX, None)
            }
        }

        pub fn interval(period: Duration) -> Interval {
            Interval::new(period)
        }
    }

    #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
    pub use wasm_mock::Instant;

    #[cfg(feature = "generic-timer")]
    mod generic_time {
        use futures::{Future, Stream};
        use futures_timer::Delay;
        use std::{
            pin::Pin,
            task::{Context, Poll},
            time::Duration,
        };

        pub struct Interval {
            delay: Delay,
            period: Duration,
            #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
            mock_instant: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        }

        impl Interval {
            fn new(period: Duration) -> Self {
                Self {
                    delay: Delay::new(period),
                    period,
                    #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
                    mock_instant: Default::default(),
                }
            }

            #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
            pub fn mock_instant(
                &mut self,
                mock_instant: std::sync::Arc<std::sync::atomic::AtomicUsize>,
            ) {
                self.mock_instant = mock_instant;
            }
        }

        impl Stream for Interval {
            type Item = ();

            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
                match Pin::new(&mut self.delay).poll(cx) {
                    Poll::Ready(_) => {
                        let dur = self.period;
                        self.delay.reset(dur);
                        #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
                        self.mock_instant.fetch_add(
                            dur.as_millis() as usize,
                            std::sync::atomic::Ordering::AcqRel,
                        );
                        Poll::Ready(Some(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }

        pub fn interval(period: Duration) -> Interval {
            assert!(period > Duration::new(0, 0), "`period` must be non-zero.");

            Interval::new(period)
        }
    }

    #[cfg(all(target_family = "wasm", not(target_os = "unknown")))]
    #[allow(dead_code)]
    mod wasm_mock {
        use std::cmp::{Eq, Ord, Ordering, PartialEq, PartialOrd};
        use std::ops::{Add, AddAssign, Sub};
        use std::time::Duration;

        #[derive(Debug, Copy, Clone)]
        pub struct Instant {
            /// mock
            inner: u64,
        }

        impl PartialEq for Instant {
            fn eq(&self, other: &Instant) -> bool {
                // Note that this will most likely only compare equal if we clone an `Instant`,
                // but that's ok.
                self.inner == other.inner
            }
        }

        impl Eq for Instant {}

        impl PartialOrd for Instant {
            fn partial_cmp(&self, other: &Instant) -> Option<Ordering> {
                self.inner.partial_cmp(&other.inner)
            }
        }

        impl Ord for Instant {
            fn cmp(&self, other: &Self) -> Ordering {
                self.inner.partial_cmp(&other.inner).unwrap()
            }
        }

        impl Instant {
            pub const fn from_u64(val: u64) -> Self {
                Instant { inner: val }
            }

            pub fn duration_since(&self, earlier: Instant) -> Duration {
                *self - earlier
            }

            pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
                *self - earlier
            }
        }

        impl Add<Duration> for Instant {
            type Output = Instant;

            fn add(self, other: Duration) -> Instant {
                let new_val = self.inner + other.as_millis() as u64;
                Instant { inner: new_val }
            }
        }

        impl Sub<Duration> for Instant {
            type Output = Instant;

            fn sub(self, other: Duration) -> Instant {
                let new_val = self
                    .inner
                    .checked_sub(other.as_millis() as u64)
                    .unwrap_or_default();
                Instant { inner: new_val }
            }
        }

        impl Sub<Instant> for Instant {
            type Output = Duration;

            fn sub(self, other: Instant) -> Duration {
                let ms = self.inner.checked_sub(other.inner).unwrap_or_default();
                Duration::from_millis(ms)
            }
        }

        impl AddAssign<Duration> for Instant {
            fn add_assign(&mut self, rhs: Duration) {
                *self = *self + rhs;
            }
        }
    }
}
