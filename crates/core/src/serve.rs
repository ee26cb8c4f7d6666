//! The HTTP/1.1 accept loop every listener of the platform uses: a connection
//! limit overall and per client address (429 JSON beyond it, answered
//! without taking a place in the overall limit; both places stay with a
//! connection that was upgraded, for as long as the upgraded stream lives),
//! optional TLS,
//! a header-read (handshake) timeout and size bound, the client address of
//! each request ([`ClientIp`]), upgrades, `Connection: close` on an answer
//! given before the request body was read (and the connection read to its
//! end before it closes, so the answer is not lost to a reset), and a
//! graceful drain when the
//! shutdown token fires. Nothing slow runs on the
//! accept path: the TLS handshake runs in the connection's own task, under
//! the same timeout as reading the request head. A [`Lane`], when given,
//! sees each connection first and may answer requests ahead of the router.
//! With [`Shards`](crate::shard::Shards), each accepted connection is
//! served on the next shard's runtime instead of the accepting one.
//! [`serve_unix`] serves the same way on a Unix-domain socket.

use axum::extract::ConnectInfo;
use axum::Router;
use http::HeaderValue;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::client_addr::{rate_key, ClientIp, TrustedProxies};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; further accepts wait.
    pub max_connections: usize,
    /// Connections one client address (IPv6: one /64) may hold at once;
    /// 0 means no cap. Trusted proxies are exempt.
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers), in bytes; a larger
    /// one is answered 431 and the connection closed.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head (and, on TLS listeners,
    /// to finish the handshake).
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Requests answered ahead of the router, if any.
    pub lane: Option<LaneHandle>,
    /// Runtimes that accepted connections are handed to in turn (ADR
    /// 034); `None`: each connection is a task of the accepting runtime.
    pub shards: Option<Arc<crate::shard::Shards>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_client: 0,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
            lane: None,
            shards: None,
        }
    }
}

/// A connection's byte stream, whatever it runs over (TCP, TLS).
pub trait LaneIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> LaneIo for T {}

/// A connection as a [`Lane`] gets it, and gives it back.
pub struct LaneConn {
    pub io: Box<dyn LaneIo>,
    /// Bytes read from `io` and not answered yet: the router reads them
    /// first when the connection is handed back.
    pub read: bytes::BytesMut,
    pub remote: std::net::SocketAddr,
    /// The listener's limits, which hold for the lane's requests too.
    pub opts: ServeOptions,
    /// Fired when the server starts draining: the lane finishes the
    /// request in hand (saying `Connection: close`) and ends the connection.
    pub shutdown: CancellationToken,
}

/// Requests a server answers itself ahead of its router, on the same
/// connection: a lane serves a connection's requests for as long as it
/// wants them, then hands the connection back with the bytes it read and
/// did not answer, and the router serves it from there on. `None`: the
/// lane ended the connection.
pub trait Lane: Send + Sync + 'static {
    fn serve(&self, conn: LaneConn) -> Pin<Box<dyn Future<Output = Option<LaneConn>> + Send>>;
}

/// A shared [`Lane`] in [`ServeOptions`].
#[derive(Clone)]
pub struct LaneHandle(pub Arc<dyn Lane>);

impl std::fmt::Debug for LaneHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaneHandle")
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerClient(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in [`PerClient`], released on drop.
struct ClientSlot {
    table: Arc<PerClient>,
    key: std::net::IpAddr,
}

impl PerClient {
    /// Take a slot for `key` unless it already holds `cap`.
    fn take(self: &Arc<Self>, key: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Over-cap connections being refused at once, at most; beyond it one is
/// closed with no answer.
const MAX_REFUSING: usize = 256;
/// Time a refused connection gets to take its answer.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// What a client over its connection cap gets, before it sent anything
/// (plaintext listeners; a TLS listener closes such a connection).
fn over_cap_answer() -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": "too many connections from this address",
    }})
    .to_string();
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer an over-cap connection 429 and close it, holding no place in
/// the listener's limit: write, half-close, and read what the client sent
/// for a moment (closing with it unread would reset the connection and
/// could lose the answer).
fn refuse(
    mut stream: tokio::net::TcpStream,
    tls: bool,
    refusing: &Arc<Semaphore>,
    answer: &Arc<[u8]>,
) {
    let Ok(place) = refusing.clone().try_acquire_owned() else {
        return;
    };
    if tls {
        return;
    }
    let answer = answer.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _place = place;
        let _ = tokio::time::timeout(REFUSE_LINGER, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// A connection's places in the listener's limits, released when the
/// connection ends or, after an upgrade, when the upgraded stream does.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: Option<ClientSlot>,
}

/// A connection's byte stream: what a lane read and handed back first,
/// then the socket's; it holds the connection's [`Held`] places (the
/// stream a lane hands back holds them inside).
struct HeldIo<I> {
    io: I,
    _held: Option<Held>,
    read: Bytes,
}

impl<I> HeldIo<I> {
    /// A freshly accepted connection's stream, holding its places.
    fn new(io: I, held: Held) -> Self {
        Self {
            io,
            _held: Some(held),
            read: Bytes::new(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeldIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeldIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled, then stop
/// accepting, let in-flight requests finish (bounded by the drain timeout)
/// and return. Each request carries `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    serve_tls(listener, app, opts, None, shutdown).await;
}

/// [`serve`], over TLS when `tls` is given (HTTP/1.1 inside).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let answer: Arc<[u8]> = over_cap_answer().into();
    let tracker = TaskTracker::new();
    loop {
        let Some((permit, (stream, remote))) =
            next_connection(&limit, &shutdown, || listener.accept()).await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let capped =
            opts.max_connections_per_client > 0 && !opts.trusted_proxies.contains(remote.ip());
        let slot = match capped
            .then(|| per_client.take(rate_key(remote.ip()), opts.max_connections_per_client))
        {
            Some(None) => {
                tracing::info!(%remote, "connection over the per-client cap");
                drop(permit);
                refuse(stream, tls.is_some(), &refusing, &answer);
                continue;
            }
            Some(Some(slot)) => Some(slot),
            None => None,
        };
        let held = Held {
            _permit: permit,
            _slot: slot,
        };
        let (app, tls, shutdown) = (app.clone(), tls.clone(), shutdown.clone());
        let Some(shards) = opts.shards.clone() else {
            let stream = HeldIo::new(stream, held);
            tracker.spawn(handshake_and_serve(
                stream,
                remote,
                app,
                opts.clone(),
                tls,
                shutdown,
            ));
            continue;
        };
        // The socket leaves this runtime's reactor for the shard's, so
        // its readiness wakes the shard's thread, not this one.
        let Some(stream) = usable(stream.into_std(), remote) else {
            continue;
        };
        // The connection does not hold the shards: the last one would
        // otherwise keep them running for as long as it lives.
        let opts = ServeOptions {
            shards: None,
            ..opts.clone()
        };
        shards.spawn(tracker.track_future(async move {
            let Some(stream) = usable(tokio::net::TcpStream::from_std(stream), remote) else {
                return;
            };
            let stream = HeldIo::new(stream, held);
            handshake_and_serve(stream, remote, app, opts, tls, shutdown).await;
        }));
    }
    drop(listener);
    drain(tracker, opts.drain_timeout).await;
}

/// The address a Unix-socket peer's requests carry (`ConnectInfo`,
/// [`ClientIp`]): the peer is on this host, as a loopback peer is.
pub const UNIX_PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// [`serve`] on a Unix-domain socket (ADR 041): the same connection limit,
/// header timeout, upgrades and drain; no TLS, no per-client cap and no
/// shards, since every peer is a process on this host that the socket
/// file's permissions let in. Requests carry [`UNIX_PEER`].
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let Some((permit, (stream, _))) =
            next_connection(&limit, &shutdown, || listener.accept()).await
        else {
            break;
        };
        let held = Held {
            _permit: permit,
            _slot: None,
        };
        let stream = HeldIo::new(stream, held);
        tracker.spawn(lane_then_router(
            stream,
            UNIX_PEER,
            app.clone(),
            opts.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    drain(tracker, opts.drain_timeout).await;
}

/// The next accepted connection, once `limit` has a place for it, with
/// that place; `None` once `shutdown` fires. A failed accept (EMFILE and
/// friends) backs off briefly instead of spinning.
async fn next_connection<T, F, Fut>(
    limit: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    mut accept: F,
) -> Option<(tokio::sync::OwnedSemaphorePermit, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = limit.clone().acquire_owned() => p.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = accept() => match accepted {
                Ok(conn) => return Some((permit, conn)),
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Wait for a stopped listener's connections, bounded by `timeout`.
async fn drain(tracker: TaskTracker, timeout: Duration) {
    tracker.close();
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!("drain timeout elapsed with connections still open");
    }
}

/// An accepted socket moved between reactors, or `None` (logged) when it
/// could not be.
fn usable<T>(moved: std::io::Result<T>, remote: std::net::SocketAddr) -> Option<T> {
    moved
        .map_err(|err| tracing::debug!(error = %err, %remote, "accepted socket unusable"))
        .ok()
}

/// The TLS handshake when there is TLS (bounded like a request head),
/// then the connection.
async fn handshake_and_serve(
    stream: HeldIo<tokio::net::TcpStream>,
    remote: std::net::SocketAddr,
    app: Router,
    opts: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let Some(acceptor) = tls else {
        return lane_then_router(stream, remote, app, opts, shutdown).await;
    };
    match tokio::time::timeout(opts.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => lane_then_router(stream, remote, app, opts, shutdown).await,
        Ok(Err(err)) => tracing::debug!(error = %err, %remote, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
}

/// The lane first, if there is one, then the router for what it hands back.
async fn lane_then_router<I>(
    io: I,
    remote: std::net::SocketAddr,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(lane) = opts.lane.clone() else {
        return serve_connection(io, remote, app, opts, shutdown).await;
    };
    let conn = LaneConn {
        io: Box::new(io),
        read: bytes::BytesMut::new(),
        remote,
        opts: opts.clone(),
        shutdown: shutdown.clone(),
    };
    if let Some(conn) = lane.0.serve(conn).await {
        let io = HeldIo {
            io: conn.io,
            _held: None,
            read: conn.read.freeze(),
        };
        serve_connection(io, remote, app, opts, shutdown).await;
    }
}

/// One HTTP/1.1 connection on `io`, until it ends or the drain is over.
async fn serve_connection<I>(
    io: I,
    remote: std::net::SocketAddr,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let trusted = opts.trusted_proxies.clone();
    let linger = Arc::new(AtomicBool::new(false));
    let io = Lingering {
        io: Some(io),
        linger: linger.clone(),
    };
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let client = ClientIp(trusted.client_ip(remote.ip(), req.headers()));
        req.extensions_mut().insert(ConnectInfo(remote));
        req.extensions_mut().insert(client);
        let (req, read) = ReadToEnd::wrap(req);
        let answer = app.clone().oneshot(req);
        let linger = linger.clone();
        async move {
            let mut res = answer.await?;
            if read.is_some_and(|r| !r.load(Ordering::Acquire))
                && res.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                res.headers_mut()
                    .insert(http::header::CONNECTION, CLOSE.clone());
                linger.store(true, Ordering::Release);
            }
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .max_buf_size(opts.max_header_bytes.max(8192))
        .header_read_timeout(opts.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, %remote, "connection ended with error");
    }
}

static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// A connection's stream that, when it was answered before its request
/// body was read, is not simply dropped: closing a socket with unread
/// bytes resets it, and the reset can destroy the answer before the
/// client reads it. Such a stream is half-closed and read to its end (or
/// for [`REFUSE_LINGER`]) in a task of its own, as an over-cap refusal is.
struct Lingering<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<I>,
    linger: Arc<AtomicBool>,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<I> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        if !self.linger.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(REFUSE_LINGER, async {
                let _ = io.shutdown().await;
                let mut sink = [0u8; 8192];
                while io.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            })
            .await;
        });
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A request body that records when it has been read to its end. hyper
/// closes a connection whose request body was left unread, but it may
/// already have sent the answer as keep-alive; a client that reuses the
/// connection then loses its next request to the close. An answer sent
/// before the body was read therefore says `Connection: close` itself.
struct ReadToEnd {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl ReadToEnd {
    /// `req` with its body wrapped, and the flag that says it was read;
    /// no flag (and no wrapper) when the request has no body.
    fn wrap(
        req: http::Request<Incoming>,
    ) -> (http::Request<axum::body::Body>, Option<Arc<AtomicBool>>) {
        if req.body().is_end_stream() {
            return (req.map(axum::body::Body::new), None);
        }
        let read = Arc::new(AtomicBool::new(false));
        let flag = read.clone();
        let req = req.map(|inner| axum::body::Body::new(Self { inner, read: flag }));
        (req, Some(read))
    }
}

impl hyper::body::Body for ReadToEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
