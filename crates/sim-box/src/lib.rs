//! A simulated edge box's local service. Product-like endpoints: `/` (a
//! page), `/api/info` (device info), `/api/inference` (WebSocket of fake
//! inference results). Test endpoints: `/test/download?bytes=N` (a
//! deterministic byte pattern, see [`pattern`]), `/test/upload` (returns
//! length and SHA-256 of the body), `/test/ws-echo`, `/test/headers` (echoes
//! the request headers it received), `/test/delay?ms=N` (GET, or POST that
//! reads its whole body first; and `/test/delay/waiting`: how many of those
//! are being answered now). `/metrics` serves the telemetry contract's
//! figures, moving as a real box's do ([`metrics`]).
//!
//! [`Mode::Hostile`] turns the box against its owner for security tests:
//! its page (`/`, `/hostile.js`) tries to use the owner's console session,
//! read another device's origin, plant our cookies, install a service
//! worker and reach the opener; `/hostile/plant-cookies` answers with
//! `Set-Cookie` for our names, `Clear-Site-Data` and
//! `Service-Worker-Allowed`; `/sw.js` is a service worker script.

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use http::{header, StatusCode};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Largest download the test endpoint serves (4 GiB).
const MAX_DOWNLOAD: u64 = 4 << 30;
const CHUNK: usize = 64 * 1024;

pub mod metrics;

struct BoxState {
    name: String,
    started: Instant,
    metrics: metrics::SimMetrics,
    /// `/test/delay` requests being answered now.
    delays: std::sync::atomic::AtomicUsize,
}

/// How the simulated box behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A well-behaved box.
    #[default]
    Normal,
    /// A compromised box whose page attacks its owner (tests only).
    Hostile,
}

/// The box's router.
pub fn router(name: impl Into<String>) -> Router {
    router_with(name, Mode::Normal)
}

/// The box's router in `mode`.
pub fn router_with(name: impl Into<String>, mode: Mode) -> Router {
    let state = Arc::new(BoxState {
        name: name.into(),
        started: Instant::now(),
        metrics: metrics::SimMetrics::default(),
        delays: std::sync::atomic::AtomicUsize::new(0),
    });
    let page_route = match mode {
        Mode::Normal => get(page),
        Mode::Hostile => get(hostile_page),
    };
    let router = match mode {
        Mode::Normal => Router::new(),
        Mode::Hostile => Router::new()
            .route("/hostile.js", get(hostile_script))
            .route("/hostile/plant-cookies", get(plant_cookies))
            .route("/hostile/ws-cookies", get(ws_plant_cookies))
            .route("/sw.js", get(service_worker)),
    };
    router
        .route("/", page_route)
        .route("/api/info", get(info))
        .route("/metrics", get(prometheus))
        .route("/api/inference", get(inference))
        .route("/test/download", get(download))
        .route("/test/upload", post(upload))
        .route("/test/ws-echo", get(ws_echo))
        .route("/test/headers", get(headers).post(headers))
        .route("/test/delay", get(delay).post(delay))
        .route("/test/delay/waiting", get(delays_waiting))
        .with_state(state)
}

/// Serve the box on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, name: String, shutdown: CancellationToken) {
    serve_with(listener, name, Mode::Normal, shutdown).await;
}

/// [`serve`] in `mode`.
pub async fn serve_with(
    listener: TcpListener,
    name: String,
    mode: Mode,
    shutdown: CancellationToken,
) {
    edge_core::serve::serve(
        listener,
        router_with(name, mode),
        edge_core::serve::ServeOptions::default(),
        shutdown,
    )
    .await;
}

/// The deterministic byte at offset `i` of a download.
pub fn pattern_byte(i: u64) -> u8 {
    // A cheap mix so runs of equal bytes (which compress or hide bugs) do
    // not occur, while any offset can be recomputed.
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

/// Fill `buf` with the pattern starting at `offset`.
pub fn pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}

/// SHA-256 (hex) of the first `n` pattern bytes.
pub fn pattern_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        pattern(off, &mut buf[..len]);
        hasher.update(&buf[..len]);
        off += len as u64;
    }
    hex::encode(hasher.finalize())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn hostile_page() -> Html<&'static str> {
    Html(include_str!("hostile.html"))
}

async fn hostile_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("hostile.js"),
    )
        .into_response()
}

/// Headers a compromised box would love the browser to obey.
async fn plant_cookies() -> Response {
    let mut res = "planted".into_response();
    let h = res.headers_mut();
    for c in [
        "__Host-edge_session=evil; Path=/; Secure",
        "edge_session=evil; Path=/; Domain=localhost",
        "edge_session=evil; Path=/",
        "edge_device=evil; Path=/",
        "box_pref=kept; Path=/",
    ] {
        h.append(header::SET_COOKIE, http::HeaderValue::from_static(c));
    }
    h.insert(
        "clear-site-data",
        http::HeaderValue::from_static("\"cookies\", \"storage\""),
    );
    h.insert(
        "service-worker-allowed",
        http::HeaderValue::from_static("/"),
    );
    res
}

/// A WebSocket whose 101 answer plants the same cookies as
/// `plant_cookies`, then echoes.
async fn ws_plant_cookies(req: Request) -> Response {
    let mut res = ws_echo(req).await;
    let planted = plant_cookies().await;
    for c in planted.headers().get_all(header::SET_COOKIE) {
        res.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    res
}

async fn service_worker() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (http::HeaderName::from_static("service-worker-allowed"), "/"),
        ],
        "self.addEventListener('fetch', (e) => e.respondWith(new Response('owned')));",
    )
        .into_response()
}

async fn prometheus(State(state): State<Arc<BoxState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn info(State(state): State<Arc<BoxState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": state.name,
        "model": "SIM-1",
        "firmware": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
    }))
}

#[derive(Deserialize)]
struct DownloadQuery {
    bytes: u64,
}

async fn download(Query(q): Query<DownloadQuery>) -> Response {
    if q.bytes > MAX_DOWNLOAD {
        return (StatusCode::BAD_REQUEST, "too large").into_response();
    }
    let total = q.bytes;
    let chunks = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= total {
            return None;
        }
        let len = (total - off).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; len];
        pattern(off, &mut buf);
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
            off + len as u64,
        ))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, total)
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn upload(body: Body) -> Response {
    let mut hasher = Sha256::new();
    let mut n: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    n += data.len() as u64;
                }
            }
            Err(_) => return (StatusCode::BAD_REQUEST, "body error").into_response(),
        }
    }
    Json(serde_json::json!({ "bytes": n, "sha256": hex::encode(hasher.finalize()) }))
        .into_response()
}

async fn headers(req: Request) -> Json<serde_json::Value> {
    let map: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    Json(serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": map,
    }))
}

#[derive(Deserialize)]
struct DelayQuery {
    ms: u64,
}

/// Reads the request's body (a POST's; a GET's is empty) before it waits,
/// so the connection stays reusable after the answer.
async fn delay(
    State(state): State<Arc<BoxState>>,
    Query(q): Query<DelayQuery>,
    body: Body,
) -> Result<&'static str, StatusCode> {
    if body.collect().await.is_err() {
        return Err(StatusCode::BAD_REQUEST);
    }
    /// Counts one delay in `delays` for as long as it lives (also when its
    /// client goes away first).
    struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    state
        .delays
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _waiting = Waiting(&state.delays);
    tokio::time::sleep(Duration::from_millis(q.ms.min(120_000))).await;
    Ok("done")
}

/// How many `/test/delay` requests are being answered now: a test knows
/// its slow requests reached the box.
async fn delays_waiting(State(state): State<Arc<BoxState>>) -> String {
    state
        .delays
        .load(std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

/// Accept a WebSocket upgrade and run `session` on it.
fn websocket<F, Fut>(mut req: Request, session: F) -> Response
where
    F: FnOnce(tunnel::upgrade::UpgradedWs) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let accept = match tunnel::upgrade::accept_key(req.headers()) {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "cannot upgrade").into_response();
    };
    tokio::spawn(async move {
        if let Ok(ws) = tunnel::upgrade::websocket(on_upgrade, Default::default()).await {
            session(ws).await;
        }
    });
    tunnel::upgrade::switching_protocols(&accept)
}

async fn ws_echo(req: Request) -> Response {
    websocket(req, |mut ws| async move {
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(_) | Message::Binary(_) => msg,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    })
}

async fn inference(req: Request) -> Response {
    websocket(req, |ws| async move {
        let (mut tx, mut rx) = ws.split();
        let labels = ["person", "car", "bicycle", "dog", "package"];
        let mut seq: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let label = labels[(seq % labels.len() as u64) as usize];
                    let confidence = 0.55 + ((pattern_byte(seq) as f64) / 255.0) * 0.44;
                    let event = serde_json::json!({
                        "seq": seq,
                        "label": label,
                        "confidence": (confidence * 100.0).round() / 100.0,
                        "ts_ms": edge_core::time::now_ms(),
                    });
                    if tx.send(Message::Text(event.to_string().into())).await.is_err() {
                        break;
                    }
                    seq += 1;
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    _ => {}
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_not_constant() {
        let mut a = [0u8; 256];
        let mut b = [0u8; 256];
        pattern(1000, &mut a);
        pattern(1000, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != a[0]));
        assert_eq!(pattern_sha256(0), hex::encode(Sha256::digest([])));
    }
}
