//! The relay's Prometheus metrics (prefix `edge_relay_`): tunnels online,
//! tunnel connects by result, sessions ended by reason, streams, bytes,
//! time from connect to registered, internal API requests by route and
//! status, and the telemetry scraper's outcomes. Served on `--metrics-listen` (`edge_core::metrics`).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use edge_core::metrics::prometheus_client::metrics::counter::Counter;
use edge_core::metrics::prometheus_client::metrics::family::Family;
use edge_core::metrics::prometheus_client::metrics::gauge::Gauge;
use edge_core::metrics::prometheus_client::metrics::histogram::Histogram;
use edge_core::metrics::prometheus_client::registry::Registry;

type Labels1 = [(&'static str, &'static str); 1];
type RouteStatus = [(&'static str, String); 2];

/// Every relay metric; cheap to clone (each is a shared handle).
#[derive(Clone)]
pub struct RelayMetrics {
    pub tunnels_online: Gauge,
    pub connects: Family<Labels1, Counter>,
    pub sessions_ended: Family<Labels1, Counter>,
    pub streams_open: Gauge,
    pub streams_opened: Counter,
    pub channel_streams_across_shards: Gauge,
    pub bytes: Family<Labels1, Counter>,
    pub connect_to_registered: Histogram,
    pub internal_requests: Family<RouteStatus, Counter>,
    pub tasks_alive: Gauge,
    pub lease_refresh_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub lease_refresh_failures: Counter,
    pub telemetry_scrapes: Family<Labels1, Counter>,
    pub telemetry_skipped: Counter,
    pub telemetry_write_errors: Counter,
    pub telemetry_dropped: Counter,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            tunnels_online: Gauge::default(),
            connects: Family::default(),
            sessions_ended: Family::default(),
            streams_open: Gauge::default(),
            streams_opened: Counter::default(),
            channel_streams_across_shards: Gauge::default(),
            bytes: Family::default(),
            connect_to_registered: edge_core::metrics::latency_histogram(),
            internal_requests: Family::default(),
            tasks_alive: Gauge::default(),
            lease_refresh_seconds: Gauge::default(),
            lease_refresh_failures: Counter::default(),
            telemetry_scrapes: Family::default(),
            telemetry_skipped: Counter::default(),
            telemetry_write_errors: Counter::default(),
            telemetry_dropped: Counter::default(),
        }
    }
}

impl RelayMetrics {
    /// A registry holding every metric, under `edge_relay_`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("edge_relay");
        r.register(
            "lease_refresh_seconds",
            "How long the last refresh pass over this node's Redis leases took (multi-node mode; keep it well under the lease TTL)",
            self.lease_refresh_seconds.clone(),
        );
        r.register(
            "lease_refresh_failures",
            "Leases a refresh pass could not refresh (Redis errors; the pass goes on)",
            self.lease_refresh_failures.clone(),
        );
        r.register(
            "telemetry_scrapes",
            "Telemetry scrapes of devices by outcome (ok, none: no metrics path, or the failure's code)",
            self.telemetry_scrapes.clone(),
        );
        r.register(
            "telemetry_skipped",
            "Scrapes skipped because every scrape slot was busy at the device's turn",
            self.telemetry_skipped.clone(),
        );
        r.register(
            "telemetry_write_errors",
            "Telemetry writes the store refused (the batch is kept for the next pass)",
            self.telemetry_write_errors.clone(),
        );
        r.register(
            "telemetry_dropped",
            "Telemetry windows dropped after failed writes filled the retry bound",
            self.telemetry_dropped.clone(),
        );
        r.register(
            "tasks_alive",
            "Tokio tasks alive in the process now (a leak shows as growth at rest)",
            self.tasks_alive.clone(),
        );
        r.register(
            "tunnels_online",
            "Device tunnels registered on this node now",
            self.tunnels_online.clone(),
        );
        r.register(
            "tunnel_connects",
            "Tunnel connects by result (accepted, bad_token, rate_limited, over_capacity, owner_quota, draining, bad_request, handshake_timeout, handshake_failed, error)",
            self.connects.clone(),
        );
        r.register(
            "sessions_ended",
            "Tunnel sessions ended by reason (peer_closed, idle, replaced, protocol_error, revoked, closed, drained, shutdown, error)",
            self.sessions_ended.clone(),
        );
        r.register(
            "streams_open",
            "Streams open to devices now",
            self.streams_open.clone(),
        );
        r.register(
            "streams_opened",
            "Streams opened to devices",
            self.streams_opened.clone(),
        );
        r.register(
            "channel_streams_across_shards",
            "Streams open now from an api-server's channel to a device whose session another of the relay's threads drives (ADR 043: 0 once api-servers follow the relay's shard answers)",
            self.channel_streams_across_shards.clone(),
        );
        r.register(
            "tunnel_bytes",
            "Tunnel bytes by direction (to_device, from_device)",
            self.bytes.clone(),
        );
        r.register(
            "connect_to_registered_seconds",
            "Time from a tunnel request to its registered session",
            self.connect_to_registered.clone(),
        );
        r.register(
            "internal_requests",
            "Internal API requests by route template and status code",
            self.internal_requests.clone(),
        );
        r
    }

    pub fn connect(&self, result: &'static str) {
        self.connects.get_or_create(&[("result", result)]).inc();
    }

    pub fn ended(&self, reason: &'static str) {
        self.sessions_ended
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn add_bytes(&self, to_device: u64, from_device: u64) {
        self.bytes
            .get_or_create(&[("direction", "to_device")])
            .inc_by(to_device);
        self.bytes
            .get_or_create(&[("direction", "from_device")])
            .inc_by(from_device);
    }
}

/// Counts internal API requests by route template and status.
pub async fn count_internal(
    axum::extract::State(metrics): axum::extract::State<RelayMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    metrics
        .internal_requests
        .get_or_create(&[
            ("route", route),
            ("status", res.status().as_u16().to_string()),
        ])
        .inc();
    res
}
