//! A bodiless request to a box and its answer, on a relay stream that the
//! caller's own task drives: no connection task, no channel between the
//! two, no pool lookup by URI (ADR 032). The request head is written as
//! the box will read it; the answer's head is parsed with `httparse` and
//! its body decoded as it is framed (a length, chunks, or the stream's
//! end), handed on in the pieces it arrives in. A stream whose answer
//! ended cleanly is kept for the same actor's next request to the same
//! device, under the pooled client's rules: one actor and one device per
//! stream, `box_idle` and the per-device cap, never again through a
//! draining node, and ended when the device's streams run out. A box is
//! not trusted: a malformed or ambiguous answer is an error, and a stream
//! that sent more than its answer is not kept. Requests with a body or an
//! upgrade take the pooled client (`box_client`).

use crate::box_client::Audited;
use crate::FastMap;
use bytes::{Buf, Bytes, BytesMut};
use edge_core::fields::{span_of, valid_value, Fields, RawFields};
use edge_core::DeviceId;
use http::{header, HeaderMap, Method, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use store::Actor;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tunnel::splice::ChunkRead;

/// Largest answer head (status line and headers) a box may send.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one answer head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section (read and dropped, as the pooled client does).
const MAX_TRAILERS: usize = 16 * 1024;
/// Interim (1xx) answers passed over before the final one, at most.
const MAX_INTERIM: usize = 8;
/// The most of a received frame one read of an answer takes.
const READ_SIZE: usize = 64 * 1024;
/// How often kept streams are looked over for their end.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the stream to the box failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the box's stream ended before its answer did")]
    Ended,
    #[error("the box's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// How an answer's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the stream ends; the stream is not kept.
    ToEnd,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, this many bytes read so far.
    Trailers(usize),
}

/// Idle kept streams, by device; each remembers its actor, its shard
/// (ADR 034: it travels on that shard's relay channel, and is taken again
/// only there) and since when it is idle, the newest last.
pub(crate) struct Kept {
    by_device: Mutex<FastMap<DeviceId, Vec<KeptStream>>>,
    idle: Duration,
    per_key: usize,
    sweeping: std::sync::Once,
}

struct KeptStream {
    actor: Actor,
    shard: usize,
    io: Audited,
    since: Instant,
}

impl Kept {
    /// Streams idle up to `idle`, at most `per_key` per actor and device;
    /// none when either is zero.
    pub(crate) fn new(idle: Duration, per_key: usize) -> Self {
        Self {
            by_device: Mutex::new(FastMap::default()),
            idle,
            per_key,
            sweeping: std::sync::Once::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<DeviceId, Vec<KeptStream>>> {
        self.by_device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept stream of `actor`'s to `device`, kept on this shard, that is
    /// still open, if any.
    pub(crate) fn take(&self, device: DeviceId, actor: &Actor) -> Option<Audited> {
        let shard = edge_core::shard::current();
        let mut ended = Vec::new();
        let found = {
            let mut map = self.lock();
            let list = map.get_mut(&device)?;
            let mut found = None;
            while let Some(at) = list
                .iter()
                .rposition(|k| k.actor == *actor && k.shard == shard)
            {
                let mut kept = list.remove(at);
                if self.usable(&kept) && open_and_quiet(&mut kept.io) {
                    found = Some(kept.io);
                    break;
                }
                ended.push(kept);
            }
            // An empty list stays (the sweep removes it): the device's
            // next answer puts its stream back without a new list.
            found
        };
        drop(ended);
        found
    }

    /// Keep `io` for `actor`'s next request to `device`, unless it may not
    /// serve one.
    pub(crate) fn put(self: &Arc<Self>, device: DeviceId, actor: Actor, io: Audited) {
        if self.idle.is_zero() || self.per_key == 0 || io.spent() {
            return;
        }
        self.sweeping.call_once(|| {
            tokio::spawn(sweep(Arc::downgrade(self)));
        });
        let dropped = {
            let mut map = self.lock();
            let list = map.entry(device).or_default();
            // The list is counted only when it could hold `per_key` of
            // this actor's streams.
            let full = list.len() >= self.per_key
                && list.iter().filter(|k| k.actor == actor).count() >= self.per_key;
            let dropped = if full {
                list.iter()
                    .position(|k| k.actor == actor)
                    .map(|oldest| list.remove(oldest))
            } else {
                None
            };
            list.push(KeptStream {
                actor,
                shard: edge_core::shard::current(),
                io,
                since: Instant::now(),
            });
            dropped
        };
        drop(dropped);
    }

    /// End every kept stream to `device`; whether there were any.
    pub(crate) fn end_device(&self, device: DeviceId) -> bool {
        let ended = self.lock().remove(&device);
        ended.is_some_and(|l| !l.is_empty())
    }

    fn usable(&self, kept: &KeptStream) -> bool {
        kept.since.elapsed() < self.idle && !kept.io.spent()
    }

    /// End the streams idle too long or no longer to be used.
    fn sweep_once(&self) {
        let ended: Vec<KeptStream> = {
            let mut map = self.lock();
            let mut ended = Vec::new();
            map.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    if self.usable(&list[i]) {
                        i += 1;
                    } else {
                        ended.push(list.remove(i));
                    }
                }
                !list.is_empty()
            });
            ended
        };
        drop(ended);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

async fn sweep(kept: Weak<Kept>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(kept) = kept.upgrade() else { return };
        kept.sweep_once();
    }
}

/// Whether an idle stream is still open and has sent nothing unasked: a
/// read that would wait.
fn open_and_quiet(io: &mut Audited) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

/// The request head as the box reads it: `method`, origin-form `target`,
/// and `headers` as they are.
pub(crate) fn request_head(method: &Method, target: &str, headers: &HeaderMap) -> Vec<u8> {
    let size = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>();
    let mut head = Vec::with_capacity(method.as_str().len() + target.len() + size + 16);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        push_field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `name: value` and its line end, after `out`.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An answer head read from the box: its fields as they were sent, slices
/// of the head's bytes.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub fields: RawFields,
}

/// A box's answer: its head, and its body reading on from the stream.
pub struct Answer {
    pub head: Head,
    pub body: WireBody,
}

impl Answer {
    /// The answer as a response with a header map, for the router's side
    /// (`None` when a field is not one `http` takes; the stream is then
    /// not kept).
    pub fn into_response(self) -> Option<http::Response<WireBody>> {
        // Room for the headers the proxy and the server add.
        let headers = self.head.fields.to_header_map(8)?;
        let mut res = http::Response::new(self.body);
        *res.status_mut() = self.head.status;
        *res.version_mut() = self.head.version;
        *res.headers_mut() = headers;
        Some(res)
    }
}

/// The answer head at the start of `buf`, taken off it: `None` (and `buf`
/// left as it is) until all of it is there. Header values are slices of
/// the head's bytes, not copies; they are checked as `http` checks them.
fn take_head(buf: &mut BytesMut) -> Result<Option<Head>, WireError> {
    let (status, version, fields, len) = {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(WireError::Malformed("answer head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Malformed("too many headers"))
            }
            Err(_) => return Err(WireError::Malformed("bad answer head")),
        };
        if len > MAX_HEAD {
            return Err(WireError::Malformed("answer head too large"));
        }
        let status = res
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(WireError::Malformed("bad status"))?;
        let version = match res.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Where each header's name and value lie in the head.
        let mut fields = Vec::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            if !valid_value(h.value) {
                return Err(WireError::Malformed("bad header value"));
            }
            fields.push([span_of(buf, h.name.as_bytes()), span_of(buf, h.value)]);
        }
        (status, version, fields, len)
    };
    let bytes = buf.split_to(len).freeze();
    Ok(Some(Head {
        status,
        version,
        fields: RawFields::new(bytes, fields),
    }))
}

/// The answer head at the start of `buf` and its length in bytes.
#[cfg(test)]
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, WireError> {
    let mut rest = BytesMut::from(buf);
    let head = take_head(&mut rest)?;
    Ok(head.map(|h| (h, buf.len() - rest.len())))
}

/// How the answer to a `method` request with `head` is framed, and
/// whether the stream may carry another request after it.
fn framing(method: &Method, head: &Head) -> Result<(Framing, bool), WireError> {
    let h = &head.fields;
    let keep = head.version == Version::HTTP_11
        && !h
            .values_of(&header::CONNECTION)
            .any(|v| has_token(v, b"close"));
    let has_te = h.has(&header::TRANSFER_ENCODING);
    let mut lengths = h.values_of(&header::CONTENT_LENGTH);
    let length = match lengths.next() {
        None => None,
        Some(first) => {
            let n = content_length(first)?;
            if lengths.any(|v| content_length(v).ok() != Some(n)) {
                return Err(WireError::Malformed("conflicting content-length"));
            }
            Some(n)
        }
    };
    if *method == Method::HEAD
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep));
    }
    if has_te {
        if length.is_some() {
            return Err(WireError::Malformed(
                "both transfer-encoding and content-length",
            ));
        }
        // Only `chunked`, once and last, is ours to decode.
        let codings: Vec<&[u8]> = h
            .values_of(&header::TRANSFER_ENCODING)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(trim)
            .collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok((Framing::Chunked, keep)),
            _ => Err(WireError::Malformed("unsupported transfer-encoding")),
        };
    }
    Ok(match length {
        Some(0) => (Framing::Empty, keep),
        Some(n) => (Framing::Length(n), keep),
        None => (Framing::ToEnd, false),
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// A `Content-Length` value: digits only, at most 19 of them.
fn content_length(v: &[u8]) -> Result<u64, WireError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(WireError::Malformed("bad content-length"));
    }
    v.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(WireError::Malformed("bad content-length"))
}

/// The size on a chunk-size line (`1*HEXDIG [ BWS ";" chunk-ext ]`).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let bad = WireError::Malformed("bad chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(bad);
    }
    let rest = &line[digits..];
    let ext_ok = rest.is_empty()
        || rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|at| rest[at] == b';')
            && rest
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80);
    if !ext_ok {
        return Err(bad);
    }
    let hex =
        std::str::from_utf8(&line[..digits]).map_err(|_| WireError::Malformed("bad chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| bad)
}

/// The body of an answer: decoded from the stream as the caller reads it;
/// at its clean end the stream goes back to `kept`.
pub struct WireBody {
    io: Option<Audited>,
    buf: BytesMut,
    framing: Framing,
    remaining: u64,
    chunk: Chunk,
    keep: bool,
    done: bool,
    home: Option<(Arc<Kept>, DeviceId, Actor)>,
}

impl WireBody {
    fn finish(&mut self) {
        self.done = true;
        let io = self.io.take();
        if let (Some(io), Some((kept, device, actor))) = (io, self.home.take()) {
            if self.keep && self.buf.is_empty() {
                kept.put(device, actor, io);
            }
        }
    }

    /// Read more of the answer into the buffer; `false` at the stream's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, WireError>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        poll_append(io, cx, &mut self.buf).map_err(WireError::from)
    }

    /// The next decoded piece of a chunked body; `None` at its end.
    fn poll_chunked(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WireError>>> {
        loop {
            match self.chunk {
                Chunk::Data(left) if !self.buf.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let left = left - n as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze())));
                }
                Chunk::DataEnd if self.buf.len() >= 2 => {
                    if &self.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(WireError::Malformed(
                            "chunk not ended by CRLF",
                        ))));
                    }
                    self.buf.advance(2);
                    self.chunk = Chunk::Size;
                    continue;
                }
                Chunk::Size => {
                    if let Some(end) = find_crlf(&self.buf, MAX_CHUNK_LINE) {
                        let size = match chunk_size(&self.buf[..end]) {
                            Ok(s) => s,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        self.buf.advance(end + 2);
                        self.chunk = if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        };
                        continue;
                    }
                    if self.buf.len() >= MAX_CHUNK_LINE {
                        return Poll::Ready(Some(Err(WireError::Malformed(
                            "chunk-size line too long",
                        ))));
                    }
                }
                Chunk::Trailers(read) => {
                    if let Some(end) = find_crlf(&self.buf, MAX_TRAILERS) {
                        self.buf.advance(end + 2);
                        if end == 0 {
                            return Poll::Ready(None);
                        }
                        self.chunk = Chunk::Trailers(read + end + 2);
                        if read + end + 2 > MAX_TRAILERS {
                            return Poll::Ready(Some(Err(WireError::Malformed(
                                "trailers too large",
                            ))));
                        }
                        continue;
                    }
                    if read + self.buf.len() > MAX_TRAILERS {
                        return Poll::Ready(Some(Err(WireError::Malformed("trailers too large"))));
                    }
                }
                Chunk::Data(_) | Chunk::DataEnd => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Some(Err(WireError::Ended))),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// Read the stream's next piece onto the end of `buf`; `false` at the
/// stream's end. Into an empty `buf` the piece comes as the buffer its
/// frame arrived in, so a body handed on whole is never copied here; a
/// piece after a partial line (a head, a chunk-size line) is appended.
fn poll_append(
    io: &mut impl ChunkRead,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<bool>> {
    match ready!(io.poll_read_chunk(cx, READ_SIZE))? {
        None => Poll::Ready(Ok(false)),
        Some(piece) => {
            if buf.is_empty() {
                *buf = piece;
            } else {
                buf.unsplit(piece);
            }
            Poll::Ready(Ok(true))
        }
    }
}

/// Where the first CRLF in `buf` starts, looking no further than `limit`.
fn find_crlf(buf: &[u8], limit: usize) -> Option<usize> {
    let look = &buf[..buf.len().min(limit + 2)];
    look.windows(2).position(|w| w == b"\r\n")
}

impl hyper::body::Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let piece = match this.framing {
            Framing::Empty => None,
            Framing::Length(_) if this.remaining == 0 => None,
            Framing::Length(_) => loop {
                if !this.buf.is_empty() {
                    let n = usize::try_from(this.remaining)
                        .unwrap_or(usize::MAX)
                        .min(this.buf.len());
                    this.remaining -= n as u64;
                    break Some(Ok(this.buf.split_to(n).freeze()));
                }
                match ready!(this.poll_fill(cx)) {
                    Ok(true) => {}
                    Ok(false) => break Some(Err(WireError::Ended)),
                    Err(e) => break Some(Err(e)),
                }
            },
            Framing::Chunked => ready!(this.poll_chunked(cx)),
            Framing::ToEnd => loop {
                if !this.buf.is_empty() {
                    break Some(Ok(this.buf.split().freeze()));
                }
                match ready!(this.poll_fill(cx)) {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(e) => break Some(Err(e)),
                }
            },
        };
        match piece {
            Some(Ok(data)) => {
                if matches!(this.framing, Framing::Length(_)) && this.remaining == 0 {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => {
                this.done = true;
                this.io = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || self.framing == Framing::Empty
            || (matches!(self.framing, Framing::Length(_)) && self.remaining == 0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(_) => SizeHint::with_exact(self.remaining),
            Framing::Chunked | Framing::ToEnd => SizeHint::default(),
        }
    }
}

/// Send a bodiless request (`head`, made by [`request_head`]) on `io`
/// and read the answer's head; the answer, whose body reads on from `io`
/// and takes it back to `kept` at its end. `Err` says whether the
/// request may have reached the box (`true` once any of its answer did).
pub(crate) async fn exchange(
    mut io: Audited,
    head: &[u8],
    method: &Method,
    kept: &Arc<Kept>,
    device: DeviceId,
    actor: Actor,
) -> Result<Answer, (WireError, bool)> {
    io.write_all(head).await.map_err(|e| (e.into(), false))?;
    io.flush().await.map_err(|e| (e.into(), false))?;
    let mut buf = BytesMut::new();
    let mut interim = 0;
    let head = loop {
        // Nothing to read a head from before the first bytes come.
        let taken = if buf.is_empty() {
            Ok(None)
        } else {
            take_head(&mut buf)
        };
        match taken {
            Err(e) => return Err((e, true)),
            Ok(Some(h)) if h.status.is_informational() => {
                // 101 was not asked for; 100 and 103 are passed over.
                if h.status == StatusCode::SWITCHING_PROTOCOLS || interim == MAX_INTERIM {
                    return Err((WireError::Malformed("unexpected interim answer"), true));
                }
                interim += 1;
                continue;
            }
            Ok(Some(h)) => break h,
            Ok(None) => {}
        }
        match std::future::poll_fn(|cx| poll_append(&mut io, cx, &mut buf)).await {
            Ok(false) => return Err((WireError::Ended, !buf.is_empty() || interim > 0)),
            Ok(true) => {}
            Err(e) => return Err((e.into(), !buf.is_empty() || interim > 0)),
        }
    };
    let (framing, keep) = framing(method, &head).map_err(|e| (e, true))?;
    let remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut body = WireBody {
        io: Some(io),
        buf,
        framing,
        remaining,
        chunk: Chunk::Size,
        keep,
        done: false,
        home: Some((kept.clone(), device, actor)),
    };
    if framing == Framing::Empty {
        body.finish();
    }
    Ok(Answer { head, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use hyper::body::Body as _;

    fn head_of(raw: &str) -> Head {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads_parse_only_when_complete_and_well_formed() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n")
            .unwrap()
            .is_none());
        let (h, len) = parse_head(b"HTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        let values: Vec<_> = h
            .fields
            .values_of(&http::HeaderName::from_static("x-a"))
            .collect();
        assert_eq!(values, [b"1", b"2"]);
        assert_eq!(
            len,
            "HTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\n\r\n".len()
        );
        assert!(parse_head(b"HTTP/1.1 20 OK\r\n\r\n").is_err());
        assert!(parse_head(b"NOPE\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(
            parse_head(huge.as_bytes()).is_err(),
            "an endless head is refused"
        );
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_ambiguity() {
        let get = Method::GET;
        let f = |raw: &str| framing(&get, &head_of(raw));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n").unwrap(),
            (Framing::Length(5), true)
        );
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap(),
            (Framing::Chunked, true)
        );
        assert!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n")
                .is_err()
        );
        assert!(f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            (Framing::ToEnd, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n")
                .unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n").unwrap().0,
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n")
                .unwrap()
                .0,
            Framing::Empty
        );
        let head = head_of("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(framing(&Method::HEAD, &head).unwrap().0, Framing::Empty);
    }

    /// Pieces as a relay stream hands them out.
    struct Pieces(std::collections::VecDeque<BytesMut>);

    impl ChunkRead for Pieces {
        fn poll_read_chunk(
            &mut self,
            _: &mut Context<'_>,
            max: usize,
        ) -> Poll<std::io::Result<Option<BytesMut>>> {
            assert_eq!(max, READ_SIZE);
            Poll::Ready(Ok(self.0.pop_front()))
        }
    }

    #[tokio::test]
    async fn a_piece_read_into_an_empty_buffer_is_the_frames_own() {
        let frame = BytesMut::from(&b"a frame's body"[..]);
        let at = frame.as_ptr();
        let mut io = Pieces([frame, BytesMut::from(&b" and more"[..])].into());
        let mut buf = BytesMut::new();
        let read = std::future::poll_fn(|cx| poll_append(&mut io, cx, &mut buf)).await;
        assert!(read.unwrap());
        assert_eq!(buf.as_ptr(), at, "the body was copied");
        // After a partial line the next piece is appended.
        buf.advance(2);
        assert!(
            std::future::poll_fn(|cx| poll_append(&mut io, cx, &mut buf))
                .await
                .unwrap()
        );
        assert_eq!(&buf[..], b"frame's body and more");
        assert!(
            !std::future::poll_fn(|cx| poll_append(&mut io, cx, &mut buf))
                .await
                .unwrap()
        );
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"10;name=value").unwrap(), 16);
        assert_eq!(chunk_size(b"10 ; name").unwrap(), 16);
        for bad in [
            &b""[..],
            b"g",
            b"-1",
            b"10 x",
            b"1000000000000000",
            b" 1",
            b"1;\x00",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    /// A body over `wire` as the stream would deliver it, decoded in full.
    async fn decode(framing: Framing, wire: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut body = WireBody {
            io: None,
            buf: BytesMut::from(wire),
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size,
            keep: true,
            done: false,
            home: None,
        };
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            out.extend_from_slice(&frame?.into_data().unwrap_or_default());
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunked_bodies_decode_and_bad_ones_fail() {
        let ok = b"5\r\nhello\r\n1;x=y\r\n \r\n6\r\nworld!\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(decode(Framing::Chunked, ok).await.unwrap(), b"hello world!");
        assert_eq!(decode(Framing::Chunked, b"0\r\n\r\n").await.unwrap(), b"");
        assert!(decode(Framing::Chunked, b"5\r\nhelloX\r\n0\r\n\r\n")
            .await
            .is_err());
        assert!(decode(Framing::Chunked, b"z\r\n").await.is_err());
        assert!(matches!(
            decode(Framing::Chunked, b"5\r\nhel").await,
            Err(WireError::Ended)
        ));
        let long_line = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(decode(Framing::Chunked, long_line.as_bytes())
            .await
            .is_err());
        let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decode(Framing::Chunked, trailers.as_bytes()).await.is_err());
    }

    #[tokio::test]
    async fn length_bodies_stop_at_their_length_and_fail_when_short() {
        assert_eq!(decode(Framing::Length(3), b"abc").await.unwrap(), b"abc");
        assert!(matches!(
            decode(Framing::Length(4), b"abc").await,
            Err(WireError::Ended)
        ));
        assert_eq!(
            decode(Framing::ToEnd, b"all of it").await.unwrap(),
            b"all of it"
        );
        assert_eq!(decode(Framing::Empty, b"").await.unwrap(), b"");
    }

    /// Arbitrary changes to well-formed answers: reading them never
    /// panics, and a body never yields more than the answer held.
    #[tokio::test]
    async fn mangled_answers_fail_cleanly() {
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nt: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 103 Early\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nto the end",
        ];
        // xorshift64: the same cases on every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let mut wire = answers[round % answers.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() % wire.len() as u64) as usize;
                match next() % 3 {
                    0 => wire[at] = next() as u8,
                    1 => {
                        wire.remove(at);
                    }
                    _ => wire.insert(at, b"\r\n0;:\t "[(next() % 7) as usize]),
                }
                if wire.is_empty() {
                    wire.push(b'H');
                }
            }
            let Ok(Some((head, len))) = parse_head(&wire) else {
                continue;
            };
            let Ok((framing, _)) = framing(&Method::GET, &head) else {
                continue;
            };
            if let Ok(body) = decode(framing, &wire[len..]).await {
                assert!(body.len() <= wire.len() - len, "{wire:?}");
                decoded += 1;
            }
        }
        assert!(decoded > 1_000, "only {decoded} mangled answers decoded");
    }

    #[test]
    fn request_heads_carry_the_headers_as_they_are() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("localhost"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let head = request_head(&Method::GET, "/p?q=1", &h);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: localhost\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let kept = Kept::new(Duration::from_secs(1), 4);
        assert_eq!(kept.len(), 0);
    }
}
