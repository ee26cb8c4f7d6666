//! The telemetry scraper (ADR 025): each relay scrapes the devices it
//! holds, through their tunnels, with a plain HTTP/1.1 `GET` of the
//! metrics path on a cloud-opened stream (what Go devices already serve).
//! Each device has a fixed phase within the interval (a hash of its id), so
//! a relay's scrapes spread evenly over time instead of firing together;
//! at most `concurrency` run at once (a device waits up to half an
//! interval for a free one, else its turn is skipped and counted), each
//! bounded by `timeout`. A scrape reads at most the contract's body size, parses it
//! ([`box_metrics::exposition`]) and turns it into figures; the
//! [`writer`](crate::telemetry_writer) stores them. Nothing here touches
//! what a user sees: no audit, no user's stream quota.

use crate::telemetry_writer::{Outcome, Scraped};
use crate::Relay;
use box_metrics::{AllowList, Tracker};
use bytes::Bytes;
use edge_core::DeviceId;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tunnel::preamble::Target;

/// The default scrape interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The default metrics path on the box's local API.
pub const DEFAULT_PATH: &str = "/metrics";
/// Scrapes one relay runs at once by default.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// How long one scrape may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the writer stores each device's last scrape, by default.
pub const DEFAULT_WRITE_EVERY: Duration = Duration::from_secs(5);
/// How often an open window (and its rollups) is rewritten, by default:
/// series reads lag live data by at most this (the last scrape is always
/// current).
pub const DEFAULT_WINDOW_EVERY: Duration = Duration::from_secs(60);

/// Scrape results the writer may have queued (a few seconds of 10,000
/// devices at 15 s).
const WRITER_QUEUE: usize = 8192;

/// How long stopping waits for the writer's last pass.
const WRITER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scraper does.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `None`: no scraping.
    pub interval: Option<Duration>,
    pub path: String,
    pub allow: AllowList,
    pub concurrency: usize,
    pub timeout: Duration,
    pub write_every: Duration,
    pub window_every: Duration,
    pub parse: box_metrics::Limits,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            interval: Some(DEFAULT_INTERVAL),
            path: DEFAULT_PATH.to_owned(),
            allow: AllowList::default(),
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            write_every: DEFAULT_WRITE_EVERY,
            window_every: DEFAULT_WINDOW_EVERY,
            parse: box_metrics::Limits::default(),
        }
    }
}

/// The offset of `device`'s scrapes within each interval (ms).
fn phase(device: DeviceId, interval_ms: i64) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % interval_ms.max(1) as u64) as i64
}

/// Whether a scrape at `phase` falls in `(last, now]`.
#[cfg(test)]
fn due(last: i64, now: i64, phase: i64, interval: i64) -> bool {
    (now - phase).div_euclid(interval) > (last - phase).div_euclid(interval)
}

/// How often the schedule is rebuilt from the directory: a device that
/// connects is scraped from its first phase after this.
const SCHEDULE_EVERY_MS: i64 = 1_000;

/// The devices this relay holds, sorted by phase, so a tick finds the
/// ones due by a binary search instead of looking at every device.
#[derive(Default)]
struct Schedule {
    by_phase: Vec<(i64, DeviceId)>,
    built_at: Option<i64>,
}

impl Schedule {
    /// Rebuild from `live` when older than [`SCHEDULE_EVERY_MS`].
    fn refresh(&mut self, now: i64, interval: i64, live: impl FnOnce() -> Vec<DeviceId>) {
        if self
            .built_at
            .is_some_and(|at| now - at < SCHEDULE_EVERY_MS.min(interval))
        {
            return;
        }
        self.by_phase.clear();
        self.by_phase
            .extend(live().into_iter().map(|d| (phase(d, interval), d)));
        self.by_phase.sort_unstable();
        self.built_at = Some(now);
    }

    /// The devices whose phase falls in `(last, now]`.
    fn due(&self, last: i64, now: i64, interval: i64) -> impl Iterator<Item = DeviceId> + '_ {
        let at = |offset: i64| self.by_phase.partition_point(|(p, _)| *p <= offset);
        let (lo, hi) = (last.rem_euclid(interval), now.rem_euclid(interval));
        let (first, second) = if now - last >= interval {
            (0..self.by_phase.len(), 0..0)
        } else if now <= last {
            (0..0, 0..0)
        } else if lo < hi {
            (at(lo)..at(hi), 0..0)
        } else {
            (at(lo)..self.by_phase.len(), 0..at(hi))
        };
        self.by_phase[first]
            .iter()
            .chain(&self.by_phase[second])
            .map(|(_, d)| *d)
    }
}

/// Run the scraper and its writer until `shutdown`; the writer stores
/// what it holds before this returns.
pub async fn run(relay: Arc<Relay>, settings: TelemetrySettings, shutdown: CancellationToken) {
    let Some(interval) = settings.interval else {
        return;
    };
    let interval_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    // Room for a few seconds of results while the writer is in the store.
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let writer = tokio::spawn(crate::telemetry_writer::run(
        relay.store.clone(),
        rx,
        settings.write_every,
        settings.window_every,
        interval * 3,
        relay.metrics.clone(),
        relay.telemetry_writes.clone(),
    ));
    let turn = Turn {
        relay: relay.clone(),
        slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        trackers: Arc::default(),
        settings: Arc::new(settings),
        tx,
        wait: interval / 2,
    };
    // A tick is a 150th of the interval (100 ms at 15 s): scrapes start
    // within that of their phase, and wait for a slot when a tick's share
    // outnumbers the free ones.
    let tick = (interval / 150).max(Duration::from_millis(20));
    let mut last = edge_core::time::now_ms();
    let mut schedule = Schedule::default();
    let mut scrapes = tokio::task::JoinSet::new();
    loop {
        while scrapes.try_join_next().is_some() {}
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = relay.draining.cancelled() => break,
            () = tokio::time::sleep(tick) => {}
        }
        let now = edge_core::time::now_ms();
        let mut rebuilt = false;
        schedule.refresh(now, interval_ms, || {
            rebuilt = true;
            relay
                .directory
                .live()
                .into_iter()
                .map(|(d, _, _)| d)
                .collect()
        });
        if rebuilt {
            forget_departed(&turn.trackers, &schedule);
        }
        for device in schedule.due(last, now, interval_ms) {
            scrapes.spawn(turn.clone().take(device));
        }
        last = now;
    }
    // Scrapes still running are abandoned (their streams close with the
    // tunnels); the writer then stores what it holds.
    scrapes.shutdown().await;
    drop(turn);
    if tokio::time::timeout(WRITER_STOP_TIMEOUT, writer)
        .await
        .is_err()
    {
        tracing::warn!("the telemetry writer did not finish storing in time");
    }
}

/// What each device's turn needs: the scraper's shared parts.
#[derive(Clone)]
struct Turn {
    relay: Arc<Relay>,
    slots: Arc<Semaphore>,
    trackers: Arc<Mutex<HashMap<DeviceId, Tracker>>>,
    settings: Arc<TelemetrySettings>,
    tx: mpsc::Sender<Scraped>,
    /// How long a turn waits for a free slot before it is skipped.
    wait: Duration,
}

impl Turn {
    /// `device`'s turn: a slot, the scrape, its result to the writer.
    async fn take(self, device: DeviceId) {
        let metrics = &self.relay.metrics;
        let Ok(Ok(permit)) = tokio::time::timeout(self.wait, self.slots.acquire_owned()).await
        else {
            metrics.telemetry_skipped.inc();
            return;
        };
        let Some(scraped) = scrape(&self.relay, &self.settings, &self.trackers, device).await
        else {
            // It left this relay since the schedule was built.
            return;
        };
        metrics
            .telemetry_scrapes
            .get_or_create(&[("outcome", scraped.outcome.label())])
            .inc();
        // The slot is free once the box answered: a writer busy with the
        // store must not hold scrapes back.
        drop(permit);
        let _ = self.tx.send(scraped).await;
    }
}

/// Drop the trackers of devices the relay no longer holds, once they
/// clearly outnumber the held ones.
fn forget_departed(trackers: &Mutex<HashMap<DeviceId, Tracker>>, schedule: &Schedule) {
    if let Ok(mut t) = trackers.lock() {
        if t.len() > schedule.by_phase.len() * 2 + 64 {
            let held: std::collections::HashSet<DeviceId> =
                schedule.by_phase.iter().map(|(_, d)| *d).collect();
            t.retain(|d, _| held.contains(d));
        }
    }
}

/// Scrape `device` once: its box's metrics path and, when its agent
/// offers one (ADR 026), the agent's own endpoint, whose host figures fill
/// in the families the box does not serve.
async fn scrape(
    relay: &Relay,
    settings: &TelemetrySettings,
    trackers: &Mutex<HashMap<DeviceId, Tracker>>,
    device: DeviceId,
) -> Option<Scraped> {
    let at_ms = edge_core::time::now_ms();
    let path = relay
        .directory
        .metrics_path(device)
        .unwrap_or_else(|| settings.path.clone());
    let both = async {
        tokio::join!(
            fetch(relay, &path, settings, device, Target::Service),
            fetch(relay, AGENT_PATH, settings, device, Target::Agent),
        )
    };
    let outcome = match tokio::time::timeout(settings.timeout, both).await {
        Err(_) => Outcome::Failed("timeout", "the box did not answer in time".into()),
        Ok((Err(Fetch::Offline), _)) => return None,
        Ok((Err(Fetch::Failed(failed)), _)) => failed,
        Ok((service, agent)) => {
            let service = service.ok().flatten();
            let agent = agent.ok().flatten();
            if service.is_none() && agent.is_none() {
                Outcome::NoMetrics
            } else {
                figures(relay, settings, trackers, device, at_ms, service, agent)
            }
        }
    };
    Some(Scraped {
        device,
        at_ms,
        outcome,
    })
}

/// The agent endpoint's metrics path.
const AGENT_PATH: &str = "/metrics";

/// Parse the bodies and turn them into figures with the device's tracker.
fn figures(
    relay: &Relay,
    settings: &TelemetrySettings,
    trackers: &Mutex<HashMap<DeviceId, Tracker>>,
    device: DeviceId,
    at_ms: i64,
    service: Option<Bytes>,
    agent: Option<Bytes>,
) -> Outcome {
    fn parse<'b>(
        b: &'b Option<Bytes>,
        limits: &box_metrics::Limits,
    ) -> Result<Option<box_metrics::exposition::Exposition<'b>>, box_metrics::ParseError> {
        b.as_ref()
            .map(|b| box_metrics::parse(b, limits))
            .transpose()
    }
    let limits = &settings.parse;
    let (mut exposition, extra) = match (parse(&service, limits), parse(&agent, limits)) {
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(e.code(), e.to_string()),
        (Ok(s), Ok(a)) => (s.unwrap_or_default(), a),
    };
    if let Some(agent) = extra {
        exposition.fill_from(agent);
    }
    let mut tracker = trackers
        .lock()
        .ok()
        .and_then(|mut t| t.remove(&device))
        .unwrap_or_default();
    let outcome = match tracker.figures(&exposition, at_ms, &settings.allow) {
        Ok(mut figures) => {
            if let Some((since, rtt)) = relay.directory.tunnel_figures(device) {
                let up = (at_ms - since) as f64 / 1000.0;
                figures.add_tunnel(up, rtt.map(|r| r.as_secs_f64()));
            }
            Outcome::Ok(figures)
        }
        Err(e) => Outcome::Failed(e.code(), e.to_string()),
    };
    if let Ok(mut t) = trackers.lock() {
        t.insert(device, tracker);
    }
    outcome
}

/// Why a fetch has no body.
enum Fetch {
    /// The device left this relay: no scrape to record.
    Offline,
    Failed(Outcome),
}

/// `GET <path>` on a new stream to `target` on `device`: the body, `None`
/// when there is no such endpoint (404, or no agent endpoint), or why not.
async fn fetch(
    relay: &Relay,
    path: &str,
    settings: &TelemetrySettings,
    device: DeviceId,
    target: Target,
) -> Result<Option<Bytes>, Fetch> {
    let unreachable = |e: String| Fetch::Failed(Outcome::Failed("unreachable", e));
    let Some(stream) = relay
        .directory
        .open_stream_to(device, target)
        .await
        .map_err(|e| match e {
            directory::DirectoryError::Offline => Fetch::Offline,
            e => unreachable(e.to_string()),
        })?
    else {
        return Ok(None);
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(
            http::header::ACCEPT,
            "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5,*/*;q=0.1",
        )
        .header(http::header::USER_AGENT, "edge-relay-scraper")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Fetch::Failed(Outcome::Failed("bad_path", e.to_string())))?;
    let limit = settings.parse.max_body_bytes;
    let exchange = async {
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = res.status();
        if status == http::StatusCode::NOT_FOUND || status == http::StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Fetch::Failed(Outcome::Failed(
                "http_status",
                format!("the box answered {}", status.as_u16()),
            )));
        }
        let body = Limited::new(res.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Fetch::Failed(Outcome::Failed(
                        "body_too_large",
                        format!("the body is larger than {limit} bytes"),
                    ))
                } else {
                    unreachable(e.to_string())
                }
            })?;
        Ok(Some(body.to_bytes()))
    };
    // The connection is driven here, beside the exchange, rather than in
    // a task of its own: one task per scrape, not two. It ends (dropped)
    // with the exchange; if it ends first, the exchange still gets what it
    // had read, or the error.
    tokio::pin!(exchange, conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            out = &mut exchange => return out,
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_is_due_once_per_interval() {
        let interval = 15_000;
        for phase in [0, 1, 7_500, 14_999] {
            let mut hits = 0;
            let mut last = 1_000_000;
            for now in (1_000_000 + 333..=1_000_000 + 10 * interval).step_by(333) {
                if due(last, now, phase, interval) {
                    hits += 1;
                }
                last = now;
            }
            assert_eq!(hits, 10, "phase {phase}");
        }
    }

    /// The schedule's binary search picks exactly the devices `due` picks,
    /// across wrap-arounds, gaps longer than an interval and a clock that
    /// stands still.
    #[test]
    fn schedule_finds_the_devices_due() {
        let interval = 15_000;
        let devices: Vec<DeviceId> = (0..500).map(|_| DeviceId::new()).collect();
        let mut schedule = Schedule::default();
        schedule.refresh(0, interval, || devices.clone());
        let steps = [0, 1, 99, 100, 7_777, 14_999, 15_000, 15_001, 40_000];
        let mut last = 1_000_000_i64;
        for (i, step) in steps.iter().cycle().take(200).enumerate() {
            let now = last + step + i as i64;
            let mut got: Vec<DeviceId> = schedule.due(last, now, interval).collect();
            let mut want: Vec<DeviceId> = devices
                .iter()
                .copied()
                .filter(|d| due(last, now, phase(*d, interval), interval))
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "last {last} now {now}");
            last = now;
        }
    }

    #[test]
    fn schedule_is_rebuilt_once_a_second() {
        let interval = 15_000;
        let mut schedule = Schedule::default();
        let mut builds = 0;
        for now in (0..10_000).step_by(100) {
            schedule.refresh(now, interval, || {
                builds += 1;
                vec![DeviceId::new()]
            });
        }
        assert_eq!(builds, 10);
    }

    #[test]
    fn phases_spread_over_the_interval() {
        let interval = 15_000;
        let mut per_second = [0u32; 15];
        for _ in 0..3_000 {
            per_second[(phase(DeviceId::new(), interval) / 1000) as usize] += 1;
        }
        // 200 expected per second; no second gets twice or half that.
        assert!(
            per_second.iter().all(|n| (100..400).contains(n)),
            "{per_second:?}"
        );
    }
}
