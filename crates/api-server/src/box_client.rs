//! Connections to boxes: HTTP/1 over relay streams, kept alive and reused
//! across requests (hyper-util's pooled client with our own connector).
//! A pooled connection belongs to one user and one device (the pool key is
//! the authority `<device>.<user>.box.invalid`), so one connection never
//! carries two users' requests, and each connection is one audited
//! remote-access session: `remote_access_opened` when the stream to the
//! box opens, `remote_access_closed` with bytes each way and duration when
//! it closes (the box or the tunnel ends it, or it stays idle for
//! `box_idle`). Access is not the pool's business: every request is
//! authorized before it is handed here. A connection through a relay node
//! that started draining serves no further request (it is poisoned after
//! its response), so the node's streams end and its devices move on.
//! Idle connections hold streams of the device's session, whose number
//! the relay bounds (`--max-streams-per-session`): when the session
//! refuses a stream, the device's idle connections are told to end and
//! the stream is asked for again, so kept connections never starve a new
//! request, another user's or an `edge forward`'s. Bodiless requests
//! without an upgrade (most of them) skip hyper's client: `box_wire`
//! sends them on streams it keeps itself, opened and audited here alike.

use crate::audit_writer::AuditWriter;
use crate::box_wire::{self, Kept};
use crate::error::ApiError;
use axum::body::Body;
use directory::{BoxStream, DirectoryError, Retiring, SessionView};
use edge_core::DeviceId;
use hyper_util::client::legacy::connect::{capture_connection, Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use store::Actor;

/// Host suffix of pool keys; `.invalid` never resolves (RFC 6761).
const KEY_SUFFIX: &str = ".box.invalid";
/// A connection through a draining node that has sat idle in the pool this
/// long since its last answer ended ends itself, so the node's stream
/// closes and its drain need not wait for the pool.
const RETIRE_QUIET: Duration = Duration::from_secs(1);

/// Pauses before a refused stream is asked for again, once the device's
/// idle connections were told to end (their streams close within a round
/// trip to the relay).
const RECLAIM_PAUSES: [Duration; 4] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(150),
];

/// The pooled client of every box.
#[derive(Clone)]
pub struct BoxClient {
    client: Client<Connector, Body>,
    connector: Connector,
    opened: Arc<AtomicU64>,
    idle: Arc<IdleFlags>,
}

/// One flag per device that its pooled connections watch: set, the idle
/// ones end at once and the busy ones after their answer. A device's flag
/// is replaced once set, so connections opened later watch a new one.
/// Beside them, the streams `box_wire` keeps, ended with the flag.
struct IdleFlags {
    devices: Mutex<Flags>,
    kept: Arc<Kept>,
}

#[derive(Default)]
struct Flags {
    by_device: HashMap<DeviceId, Retiring>,
    /// Past this many entries, flags no connection holds are dropped.
    prune_at: usize,
}

impl IdleFlags {
    /// The flag a connection to `device` opened now watches.
    fn flag(&self, device: DeviceId) -> Retiring {
        let mut flags = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if flags.by_device.len() >= flags.prune_at.max(1024) {
            flags.by_device.retain(|_, f| f.holders() > 1);
            flags.prune_at = flags.by_device.len() * 2;
        }
        flags.by_device.entry(device).or_default().clone()
    }

    /// Tell `device`'s pooled connections to end when idle; whether any
    /// was watching.
    fn reclaim(&self, device: DeviceId) -> bool {
        let kept = self.kept.end_device(device);
        let flag = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_device
            .remove(&device);
        let pooled = flag.is_some_and(|f| {
            f.set();
            f.holders() > 1
        });
        kept || pooled
    }
}

impl std::fmt::Debug for BoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxClient").finish_non_exhaustive()
    }
}

impl BoxClient {
    /// A client that opens streams through `directory` (each within
    /// `connect_timeout`) and keeps up to `idle_per_key` idle connections
    /// per user and device for `idle`.
    pub fn new(
        directory: Arc<dyn SessionView>,
        audit: AuditWriter,
        connect_timeout: Duration,
        idle: Duration,
        idle_per_key: usize,
    ) -> Self {
        let opened = Arc::new(AtomicU64::new(0));
        let flags = Arc::new(IdleFlags {
            devices: Mutex::default(),
            kept: Arc::new(Kept::new(idle, idle_per_key)),
        });
        let connector = Connector {
            directory,
            audit,
            connect_timeout,
            opened: opened.clone(),
            idle: flags.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(if idle.is_zero() { 0 } else { idle_per_key })
            .set_host(false)
            .build(connector.clone());
        Self {
            client,
            connector,
            opened,
            idle: flags,
        }
    }

    /// `open()`'s stream to `device`; when the device's session refuses it
    /// (its streams are all taken) and pooled connections to the device
    /// are open, they are told to end when idle and the stream is asked
    /// for again a few times. For streams outside the pool too (`edge
    /// forward`'s).
    pub async fn reclaiming<T, Fut>(
        &self,
        device: DeviceId,
        open: impl FnMut() -> Fut,
    ) -> Result<T, DirectoryError>
    where
        Fut: Future<Output = Result<T, DirectoryError>>,
    {
        reclaiming(&self.idle, device, open).await
    }

    /// Streams opened to boxes so far (a request on a warm connection
    /// opens none).
    pub fn streams_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Reads [`streams_opened`](Self::streams_opened) without keeping the
    /// pool (and its connections and audit handle) alive.
    pub fn streams_opened_probe(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let opened = self.opened.clone();
        move || opened.load(Ordering::Relaxed)
    }

    /// Send a bodiless request without an upgrade (its `head`, made by
    /// [`box_wire::request_head`]) to `device` for `actor`, on a stream
    /// kept from an earlier answer when there is one. An idempotent
    /// request that met a kept stream's end before any answer is sent
    /// again once, on a new stream.
    pub async fn exchange(
        &self,
        actor: &Actor,
        device: DeviceId,
        method: &http::Method,
        head: &[u8],
    ) -> Result<box_wire::Answer, ApiError> {
        let kept = &self.idle.kept;
        let mut reused = kept.take(device, actor);
        loop {
            let from_kept = reused.is_some();
            let io = match reused.take() {
                Some(io) => io,
                None => self
                    .connector
                    .open(device, actor.clone(), true)
                    .await
                    .map_err(|err| ApiError::from_directory(&err))?,
            };
            match box_wire::exchange(io, head, method, kept, device, actor.clone()).await {
                Ok(res) => return Ok(res),
                Err((err, answered)) => {
                    tracing::debug!(%device, error = %err, "box request failed");
                    if from_kept && !answered && method.is_idempotent() {
                        continue;
                    }
                    return Err(ApiError::DeviceUnreachable);
                }
            }
        }
    }

    /// Send `req` (origin-form path in its URI) to `device` for `actor`.
    pub async fn send(
        &self,
        actor: &Actor,
        device: DeviceId,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<AnswerBody>, ApiError> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *req.uri_mut() = format!("http://{}{path}", pool_key(device, actor))
            .parse()
            .map_err(|_| ApiError::BadRequest("cannot forward this request path".into()))?;
        let connection = capture_connection(&mut req);
        let res = self.client.request(req).await.map_err(|err| {
            tracing::debug!(%device, error = %err, "box request failed");
            failure(&err)
        })?;
        if let Some(meta) = connection.connection_metadata().as_ref() {
            let mut extras = http::Extensions::new();
            meta.get_extras(&mut extras);
            if extras.get::<Retiring>().is_some_and(Retiring::is_set) {
                meta.poison();
            }
        }
        // An upgraded connection never goes back to the pool: its answer
        // does not make it idle.
        let turn = (res.status() != http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| res.extensions().get::<Turn>().cloned())
            .flatten();
        Ok(res.map(|inner| AnswerBody::new(inner, turn)))
    }
}

async fn reclaiming<T, Fut>(
    idle: &IdleFlags,
    device: DeviceId,
    mut open: impl FnMut() -> Fut,
) -> Result<T, DirectoryError>
where
    Fut: Future<Output = Result<T, DirectoryError>>,
{
    let mut result = open().await;
    if !matches!(result, Err(DirectoryError::Stream(_))) || !idle.reclaim(device) {
        return result;
    }
    for pause in RECLAIM_PAUSES {
        tokio::time::sleep(pause).await;
        result = open().await;
        if !matches!(result, Err(DirectoryError::Stream(_))) {
            break;
        }
    }
    result
}

/// Where a pooled connection is between a request and its answer: idle
/// (and since when) once the answer's body was read to its end, busy
/// from the next request's first byte. Only the answer's body knows its
/// end (hyper decodes the framing), so it tells the connection's byte pipe
/// through hyper's connection extras; bytes alone cannot tell a slow
/// answer from an idle connection.
#[derive(Clone, Default)]
struct Turn(Arc<TurnInner>);

#[derive(Default)]
struct TurnInner {
    idle_since: Mutex<Option<Instant>>,
    /// The byte pipe's last read that found nothing, woken at an answer's end.
    reader: futures_util::task::AtomicWaker,
}

impl Turn {
    fn asked(&self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn answered(&self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.reader.wake();
    }

    fn idle_since(&self) -> Option<Instant> {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A box's answer on a pooled connection, as hyper's client reads it; at
/// its clean end the connection is idle ([`Turn::answered`]).
pub struct AnswerBody {
    inner: hyper::body::Incoming,
    turn: Option<Turn>,
}

impl AnswerBody {
    fn new(inner: hyper::body::Incoming, turn: Option<Turn>) -> Self {
        let mut body = Self { inner, turn };
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.ended();
        }
        body
    }

    fn ended(&mut self) {
        if let Some(turn) = self.turn.take() {
            turn.answered();
        }
    }
}

impl hyper::body::Body for AnswerBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.ended(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.ended(),
            // A broken answer: hyper closes the connection.
            Some(Err(_)) => self.turn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a failed box request means to the caller.
fn failure(err: &hyper_util::client::legacy::Error) -> ApiError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(dir) = e.downcast_ref::<DirectoryError>() {
            return ApiError::from_directory(dir);
        }
        cur = e.source();
    }
    if crate::extract::is_body_timeout(err) {
        ApiError::RequestTimeout
    } else {
        ApiError::DeviceUnreachable
    }
}

/// Opens one relay stream per new pooled connection.
#[derive(Clone)]
struct Connector {
    directory: Arc<dyn SessionView>,
    audit: AuditWriter,
    connect_timeout: Duration,
    opened: Arc<AtomicU64>,
    idle: Arc<IdleFlags>,
}

/// The pool key (an authority) of `actor`'s connections to `device`:
/// `<device>.<user>[.<service account>].box.invalid`, so a person's and
/// each of their service accounts' requests never share a connection,
/// and each connection is audited under the one who made it.
fn pool_key(device: DeviceId, actor: &Actor) -> String {
    match &actor.service_account {
        Some(sa) => format!("{device}.{}.{sa}{KEY_SUFFIX}", actor.user),
        None => format!("{device}.{}{KEY_SUFFIX}", actor.user),
    }
}

/// The device and actor a pool key names.
fn parse_key(uri: &http::Uri) -> Option<(DeviceId, Actor)> {
    let host = uri.host()?.strip_suffix(KEY_SUFFIX)?;
    let mut parts = host.split('.');
    let (device, user) = (parts.next()?, parts.next()?);
    let service_account = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return None;
    }
    Some((
        device.parse().ok()?,
        Actor {
            user: user.parse().ok()?,
            service_account,
        },
    ))
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Audited>;
    type Error = DirectoryError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (device, actor) = parse_key(&uri)
                .ok_or_else(|| DirectoryError::Relay("malformed box pool key".into()))?;
            Ok(TokioIo::new(this.open(device, actor, false).await?))
        })
    }
}

impl Connector {
    /// A new audited stream to `device` for `actor`, within the connect
    /// timeout; `kept_by_caller` when `box_wire` keeps it (then it never
    /// ends itself: its keeper looks at [`Audited::spent`]).
    async fn open(
        &self,
        device: DeviceId,
        actor: Actor,
        kept_by_caller: bool,
    ) -> Result<Audited, DirectoryError> {
        let open = || self.directory.open_stream_retiring(device);
        let (stream, retiring) =
            tokio::time::timeout(self.connect_timeout, reclaiming(&self.idle, device, open))
                .await
                .map_err(|_| DirectoryError::Timeout)??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.audit.record(
            actor.clone(),
            "remote_access_opened",
            Some(device.to_string()),
            serde_json::json!({}),
        );
        Ok(Audited {
            inner: stream,
            retiring,
            reclaim: self.idle.flag(device),
            kept_by_caller,
            turn: Turn::default(),
            retire_wait: None,
            quiet: None,
            to_device: 0,
            from_device: 0,
            started: Instant::now(),
            audit: self.audit.clone(),
            actor,
            device,
        })
    }
}

/// The byte pipe of one remote-access session: counts bytes each way and
/// records `remote_access_closed` when the session ends.
pub struct Audited {
    inner: BoxStream,
    retiring: Retiring,
    /// Set when a stream to the device was refused: end once idle.
    reclaim: Retiring,
    /// Kept between requests by `box_wire`, which ends it itself.
    kept_by_caller: bool,
    /// Whether the pooled connection on it waits for an answer.
    turn: Turn,
    retire_wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    quiet: Option<Pin<Box<tokio::time::Sleep>>>,
    to_device: u64,
    from_device: u64,
    started: Instant,
    audit: AuditWriter,
    actor: Actor,
    device: DeviceId,
}

impl Connection for Audited {
    fn connected(&self) -> Connected {
        Connected::new()
            .extra(self.retiring.clone())
            .extra(self.turn.clone())
    }
}

impl tokio::io::AsyncRead for Audited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.received(buf.filled().len() - before);
        if res.is_pending() && self.ends_idle(cx) {
            // End of stream: hyper drops the idle connection.
            return Poll::Ready(Ok(()));
        }
        res
    }
}

impl tunnel::splice::ChunkRead for Audited {
    /// What the stream received, in the buffers it arrived in, counted
    /// as [`AsyncRead::poll_read`](tokio::io::AsyncRead) counts it.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<std::io::Result<Option<bytes::BytesMut>>> {
        let res = self.inner.poll_read_chunk(cx, max);
        if let Poll::Ready(Ok(Some(chunk))) = &res {
            self.received(chunk.len());
        }
        if res.is_pending() && self.ends_idle(cx) {
            return Poll::Ready(Ok(None));
        }
        res
    }
}

impl Audited {
    /// Count `n` bytes read.
    fn received(&mut self, n: usize) {
        self.from_device += n as u64;
    }

    /// Whether a read that found nothing should end the stream instead: a
    /// pooled connection that sits idle and was retired.
    fn ends_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if self.kept_by_caller {
            return false;
        }
        // Woken when an answer ends, to look again.
        self.turn.0.reader.register(cx.waker());
        self.retired(cx)
    }

    /// Whether this stream may serve no further request: its relay node
    /// is draining, or its device ran out of streams.
    pub(crate) fn spent(&self) -> bool {
        self.retiring.is_set() || self.reclaim.is_set()
    }

    /// Whether this connection sits idle and was asked to end (its device
    /// refused a stream), or idle for [`RETIRE_QUIET`] since its last
    /// answer ended on a node that is draining; arranges a wake-up for
    /// when that may become true.
    fn retired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(since) = self.turn.idle_since() else {
            return false;
        };
        if self.reclaim.is_set() {
            return true;
        }
        if !self.retiring.is_set() {
            let (retiring, reclaim) = (self.retiring.clone(), self.reclaim.clone());
            let wait = self.retire_wait.get_or_insert_with(|| {
                Box::pin(async move {
                    tokio::select! {
                        () = retiring.until_set() => {}
                        () = reclaim.until_set() => {}
                    }
                })
            });
            if wait.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.reclaim.is_set() {
                return true;
            }
        }
        let due = tokio::time::Instant::from_std(since + RETIRE_QUIET);
        let quiet = self
            .quiet
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if quiet.deadline() != due {
            quiet.as_mut().reset(due);
        }
        quiet.as_mut().poll(cx).is_ready()
    }
}

impl Audited {
    /// Count what a write took; a written request makes the connection busy.
    fn wrote(&mut self, res: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = res {
            self.to_device += *n as u64;
            if *n > 0 && !self.kept_by_caller {
                self.turn.asked();
            }
        }
    }
}

impl tokio::io::AsyncWrite for Audited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&res);
        res
    }

    /// hyper writes a request's head and body chunks as one vectored
    /// write; the stream sends them as one frame.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&res);
        res
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

impl Drop for Audited {
    fn drop(&mut self) {
        self.audit.record(
            self.actor.clone(),
            "remote_access_closed",
            Some(self.device.to_string()),
            serde_json::json!({
                "bytes_to_device": self.to_device,
                "bytes_from_device": self.from_device,
                "duration_ms": self.started.elapsed().as_millis() as u64,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys_name_one_device_and_one_actor() {
        let (d, u) = (DeviceId::new(), edge_core::UserId::new());
        let person = Actor::from(u);
        let uri: http::Uri = format!("http://{}/x?y", pool_key(d, &person))
            .parse()
            .unwrap();
        assert_eq!(parse_key(&uri), Some((d, person.clone())));
        let robot = Actor {
            user: u,
            service_account: Some("sa-0123abcd".into()),
        };
        let uri: http::Uri = format!("http://{}/", pool_key(d, &robot)).parse().unwrap();
        assert_eq!(parse_key(&uri), Some((d, robot.clone())));
        assert_ne!(pool_key(d, &person), pool_key(d, &robot));
        let other: http::Uri = format!("http://{d}.{u}.example.net/").parse().unwrap();
        assert_eq!(parse_key(&other), None);
    }
}
