//! The api-server's Prometheus metrics (prefix `edge_api_`): HTTP requests
//! by route template (never the raw path), method and status class with a
//! latency histogram; proxied requests by outcome with time to first byte;
//! logins by outcome and reason; pairing exchanges by outcome; store
//! statement latency; the audit writer's queue, held events, failing
//! state and losses. Served on
//! `--metrics-listen` (`edge_core::metrics`).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use edge_core::metrics::prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, LabelSetEncoder,
};
use edge_core::metrics::prometheus_client::metrics::counter::Counter;
use edge_core::metrics::prometheus_client::metrics::family::Family;
use edge_core::metrics::prometheus_client::metrics::gauge::Gauge;
use edge_core::metrics::prometheus_client::metrics::histogram::Histogram;
use edge_core::metrics::prometheus_client::registry::Registry;
use std::time::Instant;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// An HTTP request's labels, made without allocating: the route template
/// is the router's own (shared), the method and status class are static.
/// Without a status they are the latency histogram's labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    route: Route,
    method: &'static str,
    status: Option<&'static str>,
}

/// The matched route template (the router's, or one named by a handler
/// outside it), or `unmatched`.
#[derive(Clone, Debug)]
enum Route {
    Matched(MatchedPath),
    Named(&'static str),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(m) => m.as_str(),
            Self::Named(n) => n,
            Self::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("route", self.route.as_str()).encode(encoder.encode_label())?;
        ("method", self.method).encode(encoder.encode_label())?;
        if let Some(status) = self.status {
            ("status", status).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Every api-server metric; cheap to clone (each is a shared handle).
#[derive(Clone)]
pub struct ApiMetrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram>,
    pub proxied: Family<Labels1, Counter>,
    pub proxy_first_byte: Histogram,
    pub logins: Family<Labels2, Counter>,
    pub pairing_exchanges: Family<Labels1, Counter>,
    pub audit_queue_depth: Gauge,
    pub audit_pending: Gauge,
    pub audit_failing: Gauge,
    pub audit_lost: Gauge,
    pub audit_recorded: Gauge,
    pub remote_access_opened: Gauge,
    pub forged_directory_entries: Counter,
    /// Requests the proxy's lane answered (the rest of the proxied ones
    /// went through the router).
    pub lane_requests: Counter,
    /// Series every answered proxied request touches.
    hot: std::sync::Arc<HotSeries>,
}

/// The series of a proxied request that went well, each found in its
/// family on first use and kept: a family lookup hashes the labels and
/// takes the family's lock, and the lane made three per request.
#[derive(Default)]
struct HotSeries {
    /// By proxy route template (`router::PROXY_PATHS`): the latency of
    /// `GET` and the count of its `2xx` answers.
    lane_get: [std::sync::OnceLock<(Histogram, Counter)>; 2],
    proxied_ok: std::sync::OnceLock<Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(edge_core::metrics::latency_histogram),
            proxied: Family::default(),
            proxy_first_byte: edge_core::metrics::latency_histogram(),
            logins: Family::default(),
            pairing_exchanges: Family::default(),
            audit_queue_depth: Gauge::default(),
            audit_pending: Gauge::default(),
            audit_failing: Gauge::default(),
            audit_lost: Gauge::default(),
            audit_recorded: Gauge::default(),
            remote_access_opened: Gauge::default(),
            forged_directory_entries: Counter::default(),
            lane_requests: Counter::default(),
            hot: std::sync::Arc::default(),
        }
    }
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiMetrics").finish_non_exhaustive()
    }
}

impl ApiMetrics {
    /// A registry holding every metric, under `edge_api_`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("edge_api");
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status class",
            self.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency (to response headers) by route template and method",
            self.http_duration.clone(),
        );
        r.register(
            "proxied_requests",
            "Requests proxied to boxes by outcome (ok, offline, timeout, unreachable, directory_unavailable, audit_unavailable, store_unavailable, error)",
            self.proxied.clone(),
        );
        r.register(
            "proxy_lane_requests",
            "Requests answered by the proxy's lane, ahead of the router",
            self.lane_requests.clone(),
        );
        r.register(
            "proxy_first_byte_seconds",
            "Time from a proxied request to the box's response headers",
            self.proxy_first_byte.clone(),
        );
        r.register(
            "logins",
            "Logins by outcome (ok, failed) and reason (state, nonce, issuer, audience, expiry, signature, provider_error, provider_unavailable, ...)",
            self.logins.clone(),
        );
        r.register(
            "pairing_exchanges",
            "Pairing-code exchanges by outcome (ok, invalid_code, rate_limited, bad_request, error)",
            self.pairing_exchanges.clone(),
        );
        r.register(
            "store_statement_seconds",
            "Store (SQL) statement latency",
            edge_core::metrics::statement_seconds(),
        );
        r.register(
            "audit_queue_depth",
            "Remote-access audit events queued for the writer",
            self.audit_queue_depth.clone(),
        );
        r.register(
            "audit_pending",
            "Audit events held for retry because the database cannot take them",
            self.audit_pending.clone(),
        );
        r.register(
            "audit_failing",
            "1 while the audit trail cannot be written (remote access is refused)",
            self.audit_failing.clone(),
        );
        r.register(
            "audit_events_lost",
            "Audit events that could not be written at all since start",
            self.audit_lost.clone(),
        );
        r.register(
            "audit_events_recorded",
            "Audit events handed to the writer since start",
            self.audit_recorded.clone(),
        );
        r.register(
            "remote_access_sessions_opened",
            "Remote-access sessions (connections to boxes) opened since start; each has an audit row",
            self.remote_access_opened.clone(),
        );
        r.register(
            "forged_directory_entries",
            "Lease values and relay-node entries read from Redis whose signature did not hold (ignored; someone other than a relay writes to Redis)",
            self.forged_directory_entries.clone(),
        );
        r
    }

    /// Count a proxied request that ended so, `first_byte` after it began.
    pub fn proxied<T>(&self, result: &Result<T, ApiError>, started: Instant) {
        let outcome = match result {
            Ok(_) => {
                self.proxy_first_byte
                    .observe(started.elapsed().as_secs_f64());
                self.hot
                    .proxied_ok
                    .get_or_init(|| self.proxied.get_or_create(&[("outcome", "ok")]).clone())
                    .inc();
                return;
            }
            Err(ApiError::DeviceOffline) => "offline",
            Err(ApiError::DeviceTimeout | ApiError::RequestTimeout) => "timeout",
            Err(ApiError::DeviceUnreachable | ApiError::RelayUnavailable) => "unreachable",
            Err(ApiError::DirectoryUnavailable) => "directory_unavailable",
            Err(ApiError::AuditUnavailable) => "audit_unavailable",
            Err(ApiError::StoreUnavailable) => "store_unavailable",
            Err(ApiError::Unauthenticated | ApiError::NotFound) => return,
            Err(_) => "error",
        };
        self.proxied.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// A request answered outside the router (by the proxy's lane) on
    /// `route`, counted as [`count_http`] counts the router's.
    pub fn lane_answered(
        &self,
        route: &'static str,
        method: &http::Method,
        status: http::StatusCode,
        started: Instant,
    ) {
        self.lane_requests.inc();
        let hot = crate::router::PROXY_PATHS
            .iter()
            .position(|p| *p == route)
            .filter(|_| method == http::Method::GET && status.is_success());
        let Some(at) = hot else {
            self.observe_http(Route::Named(route), known_method(method), status, started);
            return;
        };
        let (duration, count) = self.hot.lane_get[at].get_or_init(|| {
            let mut labels = HttpLabels {
                route: Route::Named(route),
                method: "GET",
                status: None,
            };
            let duration = self.http_duration.get_or_create(&labels).clone();
            labels.status = Some(STATUS_CLASSES[2]);
            (duration, self.http_requests.get_or_create(&labels).clone())
        });
        duration.observe(started.elapsed().as_secs_f64());
        count.inc();
    }

    fn observe_http(
        &self,
        route: Route,
        method: &'static str,
        status: http::StatusCode,
        started: Instant,
    ) {
        let mut labels = HttpLabels {
            route,
            method,
            status: None,
        };
        self.http_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        labels.status = STATUS_CLASSES
            .get(usize::from(status.as_u16() / 100))
            .copied();
        self.http_requests.get_or_create(&labels).inc();
    }

    pub fn login(&self, outcome: &'static str, reason: &'static str) {
        self.logins
            .get_or_create(&[("outcome", outcome), ("reason", reason)])
            .inc();
    }

    pub fn pairing_exchange(&self, outcome: &'static str) {
        self.pairing_exchanges
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }
}

/// Status class labels, by the status's first digit.
const STATUS_CLASSES: [&str; 10] = [
    "0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
];

/// A method label: the standard ones, else `other` (a client cannot grow
/// the label set).
fn known_method(m: &http::Method) -> &'static str {
    use http::Method as M;
    [
        (M::GET, "GET"),
        (M::POST, "POST"),
        (M::PUT, "PUT"),
        (M::PATCH, "PATCH"),
        (M::DELETE, "DELETE"),
        (M::HEAD, "HEAD"),
        (M::OPTIONS, "OPTIONS"),
    ]
    .into_iter()
    .find(|(k, _)| k == m)
    .map_or("other", |(_, v)| v)
}

/// Count and time each request by its route template (`unmatched` when
/// no route matched: a raw path never becomes a label).
pub async fn count_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .cloned()
        .map_or(Route::Unmatched, Route::Matched);
    let method = known_method(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    state
        .metrics
        .observe_http(route, method, res.status(), started);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_core::metrics::prometheus_client::encoding::text::encode;

    fn scrape(m: &ApiMetrics) -> String {
        let mut out = String::new();
        encode(&mut out, &m.registry()).unwrap();
        out
    }

    #[test]
    fn kept_series_are_the_families_own() {
        let m = ApiMetrics::default();
        let route = crate::router::PROXY_PATHS[1];
        let started = Instant::now();
        for (method, status) in [
            (http::Method::GET, 200),
            (http::Method::GET, 201),
            (http::Method::GET, 404),
            (http::Method::HEAD, 200),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            m.lane_answered(route, &method, status, started);
        }
        let ok = || Ok(Response::new(axum::body::Body::empty()));
        m.proxied(&ok(), started);
        m.proxied(&ok(), started);
        m.proxied(&Err::<(), _>(ApiError::DeviceOffline), started);

        let text = scrape(&m);
        let requests = |method: &str, class: &str| {
            format!(
                r#"edge_api_http_requests_total{{route="{route}",method="{method}",status="{class}"}}"#
            )
        };
        let timed = format!(
            r#"edge_api_http_request_duration_seconds_count{{route="{route}",method="GET"}}"#
        );
        for (series, value) in [
            (requests("GET", "2xx"), "2"),
            (requests("GET", "4xx"), "1"),
            (requests("HEAD", "2xx"), "1"),
            (timed, "3"),
            (
                r#"edge_api_proxied_requests_total{outcome="ok"}"#.into(),
                "2",
            ),
            (
                r#"edge_api_proxied_requests_total{outcome="offline"}"#.into(),
                "1",
            ),
            ("edge_api_proxy_lane_requests_total".into(), "4"),
        ] {
            let line = format!("{series} {value}\n");
            assert!(text.contains(&line), "{line:?} in:\n{text}");
        }
    }
}
