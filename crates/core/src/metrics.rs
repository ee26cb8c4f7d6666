//! The Prometheus endpoint every server has: one registry per process,
//! served on its own listener (`--metrics-listen`, loopback by default),
//! never on a public port. A scraper that asks for OpenMetrics (Prometheus
//! does) gets it as `prometheus-client` writes it; any other client gets
//! the classic text format 0.0.4 (what `promtool check metrics` reads). Also the tracing layer that times
//! store statements from sqlx's own per-statement events.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

pub use prometheus_client;

/// Content types of the two formats.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metrics endpoint serves: the registry, and a hook that brings
/// gauges read from live state up to date just before each scrape.
#[derive(Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
    refresh: Arc<dyn Fn() + Send + Sync>,
}

impl Exposition {
    pub fn new(registry: Registry, refresh: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            registry: Arc::new(registry),
            refresh: Arc::new(refresh),
        }
    }

    /// The exposition in the classic text format 0.0.4: the same samples;
    /// counter families named with their `_total`, no `# UNIT`/`# EOF`.
    pub fn render_text(&self) -> String {
        let open = self.render();
        let mut counters = std::collections::HashSet::new();
        for line in open.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.strip_suffix(" counter") {
                    counters.insert(name.to_owned());
                }
            }
        }
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find(|p| line.starts_with(p));
            match meta {
                Some(prefix) => {
                    let rest = &line[prefix.len()..];
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let name = if counters.contains(name) {
                        format!("{name}_total")
                    } else {
                        name.to_owned()
                    };
                    out.push_str(&format!("{prefix}{name} {tail}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The OpenMetrics text a scrape gets.
    pub fn render(&self) -> String {
        (self.refresh)();
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// `GET /metrics` for `exposition`.
pub fn router(exposition: Exposition) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(exposition)
}

async fn scrape(State(exposition): State<Exposition>, headers: header::HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], exposition.render()).into_response()
    } else {
        ([(header::CONTENT_TYPE, TEXT_004)], exposition.render_text()).into_response()
    }
}

/// Serve `exposition` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, exposition: Exposition, shutdown: CancellationToken) {
    let app = router(exposition);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %err, "metrics listener failed");
    }
}

/// Bind `addr` and serve `exposition` there in the background.
pub async fn spawn(
    addr: std::net::SocketAddr,
    exposition: Exposition,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = crate::listen::bind(addr)?;
    let bound = listener.local_addr()?;
    tracing::info!(metrics = %bound, "metrics listening");
    tokio::spawn(serve(listener, exposition, shutdown));
    Ok(bound)
}

/// A `--metrics-listen` value: an address, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<std::net::SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("`{s}` is not an address or `off`: {e}"))
    }
}

/// Buckets (seconds) for request and statement latencies: 0.5 ms to 10 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// The process's store statement latencies (fed by [`StatementTimer`],
/// which `telemetry::init` installs).
pub fn statement_seconds() -> Histogram {
    static HISTOGRAM: std::sync::OnceLock<Histogram> = std::sync::OnceLock::new();
    HISTOGRAM.get_or_init(latency_histogram).clone()
}

/// Observes each sqlx statement's `elapsed_secs` into a histogram.
pub struct StatementTimer(pub Histogram);

struct Elapsed(Option<f64>);

impl Visit for Elapsed {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for StatementTimer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut elapsed = Elapsed(None);
        event.record(&mut elapsed);
        if let Some(secs) = elapsed.0 {
            self.0.observe(secs);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn renders_registered_metrics_after_the_refresh_hook() {
        let mut registry = Registry::with_prefix("edge_test");
        let hits = Counter::<u64>::default();
        registry.register("hits", "Hits so far", hits.clone());
        let bumped = hits.clone();
        let exposition = Exposition::new(registry, move || {
            bumped.inc();
        });
        let text = exposition.render();
        assert!(text.contains("edge_test_hits_total 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert!(text.contains("# TYPE edge_test_hits counter"), "{text}");
        let classic = exposition.render_text();
        assert!(
            classic.contains("# HELP edge_test_hits_total Hits so far.\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE edge_test_hits_total counter\n"),
            "{classic}"
        );
        assert!(classic.contains("edge_test_hits_total 2\n"), "{classic}");
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
