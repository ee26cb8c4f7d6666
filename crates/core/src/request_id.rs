//! Request ids: every HTTP request to a server of the platform gets one (a
//! well-formed incoming `X-Request-Id` is kept, anything else replaced by a
//! fresh one). It is returned in the `X-Request-Id` response header and in
//! every JSON error body, kept in a task-local for the request's future so
//! every log line of the request carries it ([`crate::telemetry`] adds it
//! as `request_id`), and available to outbound calls ([`current`]) so the
//! relay logs under the same id.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};

/// The header that carries it.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a caller.
const MAX_LEN: usize = 64;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// One request's id: 1 to 64 of `A-Z a-z 0-9 - _ . :`, held in place (a
/// request copies it into its scope, its header and its error body; none
/// of that allocates).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// A fresh id (128 random bits, hex), from the thread's CSPRNG: no
    /// system call per request (`uuid::new_v4` makes one).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bits = rand::random::<u128>();
        let mut bytes = [0u8; MAX_LEN];
        for slot in bytes[..32].iter_mut().rev() {
            *slot = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        Self { len: 32, bytes }
    }

    /// `raw` when it is a well-formed id.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::parse_bytes(raw.as_bytes())
    }

    /// [`parse`](Self::parse) for a field value as it was sent.
    pub fn parse_bytes(raw: &[u8]) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !ok {
            return None;
        }
        let mut bytes = [0u8; MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Self {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The id's bytes (ASCII), for a head written as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (`parse`, `generate`).
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of the request this task is serving, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Run `fut` as part of request `id`: in its scope, where [`current`] and
/// every log line see the id. A task-local, not a `tracing` span: a span
/// per request was made, formatted, entered and left at each poll, and
/// closed, work on every request for the rare line written (ADR 036). Not an
/// `async fn`: that would hold `fut` twice (as its argument and inside
/// the scope), and a request's future is kilobytes, copied each time it
/// moves.
pub fn scope<F: std::future::Future>(
    id: RequestId,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(id, fut)
}

/// Middleware: give the request its id, serve it in the id's scope, and
/// return the id in the response header.
pub async fn middleware(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| RequestId::parse_bytes(v.as_bytes()))
        .unwrap_or_else(RequestId::generate);
    let mut res = scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(HEADER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_are_kept() {
        assert_eq!(
            RequestId::parse("abc-123_x.y:z").map(|i| i.as_str().to_owned()),
            Some("abc-123_x.y:z".into())
        );
        for bad in ["", "has space", "semi;colon", "ünicode", &"x".repeat(65)] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        let made = RequestId::generate();
        assert_eq!(made.as_str().len(), 32);
        assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(made, RequestId::generate());
        let longest = "x".repeat(64);
        assert_eq!(RequestId::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            RequestId::parse_bytes(longest.as_bytes())
                .unwrap()
                .as_bytes(),
            longest.as_bytes()
        );
        assert_eq!(RequestId::parse_bytes(b"caf\xc3\xa9"), None);
        assert_eq!(
            format!("{made:?}"),
            format!("RequestId({:?})", made.as_str())
        );
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let id = RequestId::generate();
        let seen = scope(id.clone(), async { current() }).await;
        assert_eq!(seen, Some(id));
    }
}
