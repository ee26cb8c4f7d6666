//! The proxy's lane (ADR 032, ADR 037): `GET /api/devices/{id}/proxy/...`
//! from programs, answered straight off the connection ahead of hyper's
//! server and the router. It reads request heads itself (`httparse`) and
//! keeps them as bytes: the proxy route's checks (`proxy::lane_forward`,
//! the same ones `proxy::console_forward` runs, so every error is the
//! route's) read the fields where they lie, the box's request head is
//! written from them, and the box's answer is written back through the
//! same header rules with what the router's layers add: the request id,
//! the console's headers, HSTS, the HTTP metrics. Anything else (another
//! route or method, a body, an upgrade, a browser's request, a head it
//! cannot read) hands the connection to the router, with the bytes read so
//! far, for the rest of its life; the router then answers exactly as it
//! would have.

use crate::box_wire::{push_field, Answer};
use crate::hygiene;
use crate::state::AppState;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use edge_core::fields::{range, span_of, Fields, RawFields, Span};
use edge_core::request_id::{self, RequestId};
use edge_core::serve::{Lane, LaneConn, LaneIo};
use http::{header, HeaderValue, Method, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy route's templates, as the HTTP metrics name them.
const ROOT_ROUTE: &str = crate::router::PROXY_PATHS[0];
const PATH_ROUTE: &str = crate::router::PROXY_PATHS[1];
/// Most headers a request the lane takes may carry.
const MAX_HEADERS: usize = 64;
/// Answer bytes gathered before they are written.
const WRITE_GATHER: usize = 16 * 1024;

/// Headers that make a request the router's: bodies, upgrades,
/// expectations, and a page's `Origin`. A browser's fetch metadata does
/// too ([`hygiene::from_browser`]): the route refuses browsers, and the
/// router says how.
const ROUTER_HEADERS: &[&str] = &["transfer-encoding", "upgrade", "expect", "origin"];

/// The lane over the api-server's state.
pub struct ProxyLane {
    state: AppState,
}

impl ProxyLane {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The lane as a listener takes it.
pub fn handle(state: AppState) -> edge_core::serve::LaneHandle {
    edge_core::serve::LaneHandle(std::sync::Arc::new(ProxyLane::new(state)))
}

impl Lane for ProxyLane {
    fn serve(&self, conn: LaneConn) -> Pin<Box<dyn Future<Output = Option<LaneConn>> + Send>> {
        Box::pin(serve(self.state.clone(), conn))
    }
}

/// A request the lane takes.
struct Taken {
    /// The request's fields, slices of its head.
    fields: RawFields,
    /// Where the request target lies in the head.
    target_at: Span,
    /// Where the device id lies in the head.
    id_at: Span,
    /// The caller: the client a trusted proxy names, else the peer.
    client: std::net::IpAddr,
    route: &'static str,
    /// The client asked to close after the answer.
    close: bool,
}

/// What the bytes read so far hold.
enum Inspected {
    /// Not a whole head yet.
    Partial,
    /// A request the lane takes, its head split off the bytes read.
    Take(Box<Taken>),
    /// A request for the router.
    HandOver,
}

async fn serve(state: AppState, mut conn: LaneConn) -> Option<LaneConn> {
    let mut out = Vec::with_capacity(WRITE_GATHER);
    // One wait for the server's drain and one timer for the header
    // timeout, kept for the connection's whole life. Made and dropped
    // around every read, each was registered and left again per request.
    let mut waits = Waits {
        draining: std::pin::pin!(conn.shutdown.clone().cancelled_owned()),
        head_timer: std::pin::pin!(tokio::time::sleep(conn.opts.header_read_timeout)),
    };
    loop {
        let taken = match next_request(&state, &mut conn, &mut waits).await {
            Next::Take(taken) => taken,
            Next::HandOver => return Some(conn),
            Next::Closed => return None,
        };
        // A failed write ends the connection.
        if answer(&state, *taken, &mut conn, &mut out)
            .await
            .unwrap_or(true)
        {
            let _ = conn.io.shutdown().await;
            return None;
        }
    }
}

enum Next {
    Take(Box<Taken>),
    HandOver,
    Closed,
}

/// What a connection's reads wait on besides the caller.
struct Waits<'a> {
    /// The server's drain.
    draining: Pin<&'a mut tokio_util::sync::WaitForCancellationFutureOwned>,
    /// Set for the header timeout of a request read before; when it
    /// fires early for the request being read, it is set again for that
    /// one's (deadlines only move later), so a request that comes in time
    /// costs the timer nothing.
    head_timer: Pin<&'a mut tokio::time::Sleep>,
}

/// Read until a whole request head is in, within the header timeout; a
/// connection idle at shutdown, silent past the timeout or closed ends.
async fn next_request(state: &AppState, conn: &mut LaneConn, waits: &mut Waits<'_>) -> Next {
    let deadline = tokio::time::Instant::now() + conn.opts.header_read_timeout;
    loop {
        if !conn.read.is_empty() {
            match inspect(state, conn) {
                Inspected::Take(taken) => return Next::Take(taken),
                Inspected::HandOver => return Next::HandOver,
                Inspected::Partial if conn.read.len() >= conn.opts.max_header_bytes => {
                    // The router answers 431.
                    return Next::HandOver;
                }
                Inspected::Partial => {}
            }
        }
        if conn.read.capacity() - conn.read.len() < 1024 {
            conn.read.reserve(4096);
        }
        let idle = conn.read.is_empty();
        tokio::select! {
            () = waits.draining.as_mut(), if idle => return Next::Closed,
            () = waits.head_timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return Next::Closed;
                }
                waits.head_timer.as_mut().reset(deadline);
            }
            read = conn.io.read_buf(&mut conn.read) => match read {
                Ok(n) if n > 0 => {}
                _ => return Next::Closed,
            },
        }
    }
}

/// Whether the bytes read start with a request the lane takes. A taken
/// request's head is split off the read buffer and kept whole, its fields
/// found where they lie, not copied; a head read whole but handed over is
/// put back first.
fn inspect(state: &AppState, conn: &mut LaneConn) -> Inspected {
    let (len, fields, target_at, plain) = {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(&conn.read, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Inspected::Partial,
            Err(_) => return Inspected::HandOver,
        };
        let Some((close, raw_id, route)) = plain_get(&parsed) else {
            return Inspected::HandOver;
        };
        // Where the target, the device id and each header's name and
        // value lie in the head.
        let at = |part: &[u8]| span_of(&conn.read, part);
        let target_at = parsed.path.map_or([0, 0], |p| at(p.as_bytes()));
        let fields: Vec<[Span; 2]> = parsed
            .headers
            .iter()
            .map(|h| [at(h.name.as_bytes()), at(h.value)])
            .collect();
        let plain = Plain {
            close,
            id_at: at(raw_id.as_bytes()),
            route,
        };
        (len, fields, target_at, plain)
    };
    let head = conn.read.split_to(len).freeze();
    let fields = RawFields::new(head, fields);
    match take(state, fields, target_at, plain, conn) {
        Ok(taken) => Inspected::Take(Box::new(taken)),
        Err(fields) => {
            let head = fields.head();
            let mut whole = bytes::BytesMut::with_capacity(head.len() + conn.read.len());
            whole.extend_from_slice(head);
            whole.extend_from_slice(&conn.read);
            conn.read = whole;
            Inspected::HandOver
        }
    }
}

/// What [`plain_get`] found in a head the lane takes.
struct Plain {
    /// The client asked to close after the answer.
    close: bool,
    /// Where the device id lies in the head.
    id_at: Span,
    /// The proxy route's template the path matches.
    route: &'static str,
}

/// Whether `parsed` is a `GET` over HTTP/1.1 for the proxy route, without
/// a body, an upgrade or a header that is the router's; if so, whether the
/// client asked to close after the answer, the device id in the path, and
/// the route's template.
fn plain_get<'b>(parsed: &httparse::Request<'_, 'b>) -> Option<(bool, &'b str, &'static str)> {
    if parsed.version != Some(1) || parsed.method != Some("GET") {
        return None;
    }
    let (raw_id, rest) = proxy_target(parsed.path?)?;
    let route = if rest.is_empty() {
        ROOT_ROUTE
    } else {
        PATH_ROUTE
    };
    let mut close = false;
    let mut lengths = 0;
    for h in parsed.headers.iter() {
        let name = h.name;
        if ROUTER_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if h.value != b"0" || lengths > 1 {
                return None;
            }
        }
        if name.eq_ignore_ascii_case("connection") {
            // Visible ASCII only, as `HeaderValue::to_str` takes it.
            if !h
                .value
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return None;
            }
            let tokens = std::str::from_utf8(h.value).ok()?;
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
    }
    Some((close, raw_id, route))
}

/// `GET /api/devices/{id}/proxy/{rest}` ([`plain_get`]) from a program,
/// for the console's origin, with a target the router would read as the
/// lane does: the request, ready for the route's checks; else its fields
/// back, for the router.
fn take(
    state: &AppState,
    fields: RawFields,
    target_at: Span,
    plain: Plain,
    conn: &LaneConn,
) -> Result<Taken, RawFields> {
    if hygiene::from_browser(&fields) || !plain_target(&fields.head()[range(target_at)]) {
        return Err(fields);
    }
    let host = fields.text(&header::HOST);
    if host.is_some_and(|h| state.settings.device_origins.device_of_host(h).is_some()) {
        return Err(fields);
    }
    let client = conn
        .opts
        .trusted_proxies
        .client_ip(conn.remote.ip(), &fields);
    Ok(Taken {
        fields,
        target_at,
        id_at: plain.id_at,
        client,
        route: plain.route,
        close: plain.close,
    })
}

/// Whether the lane may pass `target` to the box as it is: only the
/// characters of an origin-form path and query that `http`'s `Uri` takes
/// unchanged (no fragment, no space, no quote, no byte past ASCII); the
/// router reads any other.
fn plain_target(target: &[u8]) -> bool {
    target.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'?'
                    | b'='
                    | b'&'
                    | b'%'
                    | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'+'
                    | b','
                    | b';'
                    | b':'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
            )
    })
}

/// The device id and the rest of the path in `/api/devices/{id}/proxy/{rest}`
/// (query excluded); an id with anything but `A-Z a-z 0-9 - _` (an
/// escape, say) is the router's.
fn proxy_target(target: &str) -> Option<(&str, &str)> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let after = path.strip_prefix("/api/devices/")?;
    let (id, rest) = after.split_once('/')?;
    let rest = rest.strip_prefix("proxy/")?;
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    plain.then_some((id, rest))
}

/// Answer `taken` on the connection: the box's answer through the header
/// rules, or the route's error, with everything the router's layers add.
/// `Ok(true)` when the connection is to close after it.
async fn answer(
    state: &AppState,
    taken: Taken,
    conn: &mut LaneConn,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Taken {
        fields,
        target_at,
        id_at,
        client,
        route,
        close,
    } = taken;
    let id = fields
        .first(&request_id::HEADER)
        .and_then(RequestId::parse_bytes)
        .unwrap_or_else(RequestId::generate);
    let started = Instant::now();
    let head = fields.head();
    // Checked by `plain_get`: `A-Z a-z 0-9 - _` only.
    let raw_id = std::str::from_utf8(&head[range(id_at)]).unwrap_or_default();
    let target = &head[range(target_at)];
    // An error's body names the request: it is made within the scope.
    let result = request_id::scope(id.clone(), async {
        crate::proxy::lane_forward(state, raw_id, client, &fields, target)
            .await
            .map_err(IntoResponse::into_response)
    })
    .await;
    let close = close || conn.shutdown.is_cancelled();
    let secure = state.settings.cookie_secure;
    match result {
        Ok(answer) => {
            let status = answer.head.status;
            state
                .metrics
                .lane_answered(route, &Method::GET, status, started);
            write_box_answer(&mut conn.io, answer, &id, secure, close, out).await?;
        }
        Err(mut res) => {
            state
                .metrics
                .lane_answered(route, &Method::GET, res.status(), started);
            hygiene::proxied_console_headers(&mut res);
            hygiene::strict_transport(&mut res, secure);
            if let Ok(v) = HeaderValue::from_str(id.as_str()) {
                res.headers_mut().insert(request_id::HEADER, v);
            }
            write_answer(&mut conn.io, res, close, out).await?;
        }
    }
    Ok(close)
}

/// Box answer fields the lane writes itself: the framing, and what the
/// router's layers set whatever the box said.
const LANE_OWN: &[&str] = &[
    "content-length",
    "cross-origin-resource-policy",
    "x-request-id",
];

/// Write the box's `answer` as HTTP/1.1: its fields through the console
/// door's header rules, then what [`hygiene::proxied_console_headers`],
/// [`hygiene::strict_transport`] and the request id add, as the router's
/// layers do; `Connection: close` when `close`.
async fn write_box_answer(
    io: &mut Box<dyn LaneIo>,
    answer: Answer,
    id: &RequestId,
    secure: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let Answer { head, body } = answer;
    out.clear();
    status_line(out, head.status);
    let mut dated = false;
    proxy_rules::console_response_fields(head.fields.iter(), LANE_OWN, |name, value| {
        dated |= name.eq_ignore_ascii_case(b"date");
        push_field(out, name, value);
    });
    push_field(
        out,
        b"cross-origin-resource-policy",
        hygiene::CONSOLE_CORP.as_bytes(),
    );
    if secure {
        push_field(out, b"strict-transport-security", hygiene::HSTS.as_bytes());
    }
    push_field(out, request_id::HEADER.as_str().as_bytes(), id.as_bytes());
    // The head is written out: its fields (slices of the box's read
    // buffer) are not kept for the body's length.
    let status = head.status;
    drop(head);
    finish_and_send(io, status, body, dated, close, out).await
}

/// Write `res` as HTTP/1.1: its length when the body knows it, else
/// chunks; `Connection: close` when `close`. A body that fails ends the
/// connection (the caller sees a cut answer, as from the router).
async fn write_answer(
    io: &mut Box<dyn LaneIo>,
    res: Response,
    close: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let (parts, body) = res.into_parts();
    out.clear();
    status_line(out, parts.status);
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let dated = parts.headers.contains_key(header::DATE);
    let status = parts.status;
    // The head is written out: its headers (which may hold on to the
    // box's read buffer) are not kept for the body's length.
    drop(parts);
    finish_and_send(io, status, body, dated, close, out).await
}

/// `HTTP/1.1 {status} {reason}`.
fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The end of an answer's head after its fields (`Date` unless `dated`,
/// `Connection: close` when `close`, the framing) and its body: its length
/// when the body knows it, else chunks. A body that fails ends the
/// connection (the caller sees a cut answer, as from the router).
async fn finish_and_send<B>(
    io: &mut Box<dyn LaneIo>,
    status: StatusCode,
    mut body: B,
    dated: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    if !dated {
        with_date(|date| push_field(out, b"date", date.as_bytes()));
    }
    if close {
        push_field(out, b"connection", b"close");
    }
    let chunked = !bodiless && length.is_none();
    match length {
        _ if bodiless => {}
        Some(n) => push_content_length(out, n),
        None => push_field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    let mut sent = 0u64;
    if !bodiless {
        while let Some(frame) = next_frame(io, &mut body, out).await? {
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => {
                    // What came is sent, then the connection is cut.
                    let _ = io.write_all(out).await;
                    return Err(std::io::Error::other(err));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                return Err(std::io::Error::other("body longer than its length"));
            }
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            write_data(io, out, data).await?;
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
        if length.is_some_and(|n| sent != n) {
            return Err(std::io::Error::other("body shorter than its length"));
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// The body's next frame; what is gathered in `out` is written first
/// when the frame is not there yet, so a slow body's head and early
/// pieces are not held back.
async fn next_frame<B: hyper::body::Body<Data = Bytes> + Unpin>(
    io: &mut Box<dyn LaneIo>,
    body: &mut B,
    out: &mut Vec<u8>,
) -> std::io::Result<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
    if let Poll::Ready(frame) = polled {
        return Ok(frame);
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
        io.flush().await?;
    }
    Ok(std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await)
}

/// Gather `data` after `out`, or write both when that grows large (a big
/// piece is written as it is, not copied).
async fn write_data(
    io: &mut Box<dyn LaneIo>,
    out: &mut Vec<u8>,
    mut data: Bytes,
) -> std::io::Result<()> {
    if out.len() + data.len() <= WRITE_GATHER {
        out.extend_from_slice(&data);
        return Ok(());
    }
    let mut head = &out[..];
    while !head.is_empty() || !data.is_empty() {
        let bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(&data)];
        let n = io.write_vectored(&bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        data.advance(n - from_head);
    }
    out.clear();
    Ok(())
}

/// `Content-Length: n`, without a string made for the number.
fn push_content_length(out: &mut Vec<u8>, n: u64) {
    push_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

/// Call `f` with `Date` in IMF-fixdate, made at most once a second per
/// thread.
fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second || c.1.is_empty() {
            *c = (second, httpdate::fmt_http_date(now));
        }
        f(&c.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_route_with_a_plain_id_is_taken() {
        assert_eq!(
            proxy_target("/api/devices/dev-1_a/proxy/x/y?q=1"),
            Some(("dev-1_a", "x/y"))
        );
        assert_eq!(proxy_target("/api/devices/d/proxy/"), Some(("d", "")));
        assert_eq!(proxy_target("/api/devices/d/proxy"), None);
        assert_eq!(proxy_target("/api/devices//proxy/"), None);
        assert_eq!(proxy_target("/api/devices/d%2F/proxy/"), None);
        assert_eq!(proxy_target("/api/devices/d/other/"), None);
        assert_eq!(proxy_target("/api/devices/d/e/proxy/"), None);
        assert_eq!(proxy_target("/api/devices"), None);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let d = with_date(str::to_owned);
        assert!(httpdate::parse_http_date(&d).is_ok(), "{d}");
        assert!(d.ends_with(" GMT"));
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0, 7, 10, 65_536, 1_000_000_007, u64::MAX] {
            let mut out = Vec::new();
            push_content_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
        }
    }
}
