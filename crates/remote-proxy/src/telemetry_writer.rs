//! The telemetry writer: one task per relay that gathers the scraper's
//! results and stores them every `write_every` in one transaction. Per
//! device it keeps the open window (the current hour's samples, packed as
//! they come by [`box_metrics::recorder`]) and rewrites it, with the
//! five-minute rollups of its buckets, every `window_every` while it
//! fills; it is written a last time when the hour ends or the device has
//! not been scraped for a while (it left this relay). The device's last
//! scrape (its figures and outcome) is written on the same clock: at most
//! every `window_every`, but at the next pass when the outcome or its
//! error changed, when it is the device's first, and when the device goes
//! quiet or the writer stops. A failed write is kept for the next pass, up
//! to a bound; past it the oldest is dropped and counted.

use crate::metrics::RelayMetrics;
use box_metrics::figures::resolution_exp;
use box_metrics::recorder::Recorder;
use box_metrics::Figures;
use edge_core::DeviceId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use store::{LatestRow, RollupRow, SeriesRow, Store, TelemetryBatch, WindowRow};
use tokio::sync::{mpsc, watch};

/// A rollup bucket: five minutes.
pub const BUCKET_MS: i64 = 300_000;
/// The longest a window runs: an hour (12 buckets), so a window's
/// per-series overhead is paid 24 times a day, not 288.
pub const WINDOW_MS: i64 = 3_600_000;
/// Items held for retry after failed writes, at most.
const MAX_PENDING: usize = 200_000;

/// How one scrape ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(Figures),
    /// The box has no metrics path (404): no telemetry, not an error.
    NoMetrics,
    /// The scrape failed: a stable code and a message for the owner.
    Failed(&'static str, String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ok(_) => "ok",
            Self::NoMetrics => "none",
            Self::Failed(code, _) => code,
        }
    }
}

/// One scrape's result.
#[derive(Debug)]
pub struct Scraped {
    pub device: DeviceId,
    pub at_ms: i64,
    pub outcome: Outcome,
}

/// A device's last scrape, before its row is made.
struct Latest {
    scraped_at: i64,
    outcome: &'static str,
    error: Option<String>,
}

/// What the writer keeps per device.
struct DeviceState {
    /// The hour the open window belongs to.
    hour: i64,
    window: Recorder,
    window_dirty: bool,
    /// When the open window was last written (ms).
    window_written: i64,
    known: HashSet<u32>,
    /// Figures JSON of the last good scrape (kept across failures).
    figures: String,
    last_ok_at: Option<i64>,
    /// The last scrape, not yet written (its row is made when it is: most
    /// scrapes are followed by another before the row is due).
    latest: Option<Latest>,
    /// When the last scrape was last written (ms; `None`: never), and its
    /// outcome and error then.
    latest_written: Option<i64>,
    written_outcome: (&'static str, Option<String>),
    last_seen: i64,
}

impl Default for DeviceState {
    fn default() -> Self {
        Self {
            hour: 0,
            window: Recorder::new(BUCKET_MS),
            window_dirty: false,
            window_written: 0,
            known: HashSet::new(),
            figures: String::new(),
            last_ok_at: None,
            latest: None,
            latest_written: None,
            written_outcome: ("", None),
            last_seen: 0,
        }
    }
}

struct Writer {
    devices: HashMap<DeviceId, DeviceState>,
    pending: TelemetryBatch,
    metrics: RelayMetrics,
    written: Arc<watch::Sender<u64>>,
}

/// The stored form of the last figures (`telemetry_latest.figures`):
/// `{"series":[{"metric","labels":{..},"value"}],"models":[..]}`,
/// serialised straight from the figures into `out`'s buffer (reused: this
/// runs at every scrape), each value at the resolution the windows keep.
fn figures_json_into(f: &Figures, out: &mut String) {
    use serde::ser::{SerializeMap, Serializer};
    struct Labels<'a>(&'a [(box_metrics::figures::Name, String)]);
    impl serde::Serialize for Labels<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Series<'a> {
        metric: &'a str,
        labels: Labels<'a>,
        value: f64,
    }
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        series: Vec<Series<'a>>,
        models: &'a [box_metrics::figures::ModelInfo],
    }
    let stored = Stored {
        series: f
            .values
            .iter()
            .map(|(k, v)| Series {
                metric: &k.metric,
                labels: Labels(&k.labels),
                value: box_metrics::codec::at_resolution(*v, resolution_exp(&k.metric)),
            })
            .collect(),
        models: &f.models,
    };
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    *out = match serde_json::to_writer(&mut buf, &stored) {
        Ok(()) => String::from_utf8(buf).unwrap_or_else(|_| "{}".to_owned()),
        Err(_) => "{}".to_owned(),
    };
}

impl Writer {
    fn take(&mut self, s: Scraped) {
        let state = self.devices.entry(s.device).or_default();
        state.last_seen = s.at_ms;
        let (outcome, error) = match s.outcome {
            Outcome::Ok(figures) => {
                let hour = s.at_ms - s.at_ms.rem_euclid(WINDOW_MS);
                if !state.window.is_empty() && hour != state.hour {
                    close(s.device, state, &mut self.pending);
                }
                state.hour = hour;
                let mut values = Vec::with_capacity(figures.values.len());
                for (key, v) in &figures.values {
                    let id = key.id();
                    if state.known.insert(id) {
                        let labels: serde_json::Map<String, serde_json::Value> = key
                            .labels
                            .iter()
                            .map(|(a, b)| (a.to_string(), b.clone().into()))
                            .collect();
                        self.pending.series.push(SeriesRow {
                            device_id: s.device,
                            series_id: id,
                            metric: key.metric.to_string(),
                            labels: serde_json::Value::Object(labels).to_string(),
                        });
                    }
                    values.push((id, resolution_exp(&key.metric), *v));
                }
                if !state.window.push(s.at_ms, &values) {
                    // Full (a very short interval): close it and start the next.
                    close(s.device, state, &mut self.pending);
                    state.window.push(s.at_ms, &values);
                }
                state.window_dirty = true;
                figures_json_into(&figures, &mut state.figures);
                state.last_ok_at = Some(s.at_ms);
                ("ok", None)
            }
            Outcome::NoMetrics => ("none", None),
            Outcome::Failed(code, message) => ("failed", Some(format!("{code}: {message}"))),
        };
        if state.figures.is_empty() {
            state.figures = "{}".into();
        }
        state.latest = Some(Latest {
            scraped_at: s.at_ms,
            outcome,
            error,
        });
    }

    /// The batch of this pass: closed windows of devices gone quiet, open
    /// windows that changed and were not written for `window_ms`, and the
    /// last scrapes that are due (see the module's doc).
    fn batch(
        &mut self,
        now: i64,
        quiet_ms: i64,
        window_ms: i64,
        everything: bool,
    ) -> TelemetryBatch {
        let mut gone = Vec::new();
        for (device, state) in &mut self.devices {
            let quiet = now - state.last_seen > quiet_ms;
            if let Some(latest) = state.latest.take_if(|l| {
                quiet
                    || everything
                    || state.latest_written.is_none_or(|at| now - at >= window_ms)
                    || state.written_outcome.0 != l.outcome
                    || state.written_outcome.1 != l.error
            }) {
                state.latest_written = Some(now);
                state.written_outcome = (latest.outcome, latest.error.clone());
                self.pending.latest.push(LatestRow {
                    device_id: *device,
                    scraped_at: latest.scraped_at,
                    outcome: latest.outcome.into(),
                    error: latest.error,
                    last_ok_at: state.last_ok_at,
                    figures: state.figures.clone(),
                });
            }
            if (quiet || everything) && !state.window.is_empty() {
                close(*device, state, &mut self.pending);
            } else if state.window_dirty && now - state.window_written >= window_ms {
                self.pending
                    .windows
                    .push(window_row(*device, &state.window));
                self.pending
                    .rollups
                    .push(rollup_row(*device, state.hour, &state.window));
                state.window_dirty = false;
                state.window_written = now;
            }
            if quiet {
                gone.push(*device);
            }
        }
        for device in gone {
            self.devices.remove(&device);
        }
        std::mem::take(&mut self.pending)
    }

    /// Keep a failed batch for the next pass, dropping the oldest beyond
    /// the bound.
    fn requeue(&mut self, mut failed: TelemetryBatch) {
        let next = std::mem::take(&mut self.pending);
        failed.series.extend(next.series);
        failed.windows.extend(next.windows);
        failed.rollups.extend(next.rollups);
        failed.latest.extend(next.latest);
        let total =
            failed.series.len() + failed.windows.len() + failed.rollups.len() + failed.latest.len();
        if total > MAX_PENDING {
            let over = total - MAX_PENDING;
            let drop_n = over.min(failed.windows.len());
            failed.windows.drain(..drop_n);
            self.metrics.telemetry_dropped.inc_by(drop_n as u64);
        }
        self.pending = failed;
    }
}

fn window_row(device: DeviceId, w: &Recorder) -> WindowRow {
    let (start_ms, end_ms) = w.span();
    WindowRow {
        device_id: device,
        start_ms,
        end_ms,
        samples: w.len() as i64,
        data: w.encode(),
    }
}

/// The rollups of `w`'s five-minute buckets, keyed by its hour.
fn rollup_row(device: DeviceId, hour: i64, w: &Recorder) -> RollupRow {
    let start_ms = if w.is_empty() { hour } else { w.span().0 };
    RollupRow {
        device_id: device,
        bucket_ms: hour,
        start_ms,
        data: w.encode_rollups(hour),
    }
}

/// Write `state`'s window a last time, with its rollups, and start afresh.
fn close(device: DeviceId, state: &mut DeviceState, out: &mut TelemetryBatch) {
    let w = std::mem::replace(&mut state.window, Recorder::new(BUCKET_MS));
    state.window_dirty = false;
    state.window_written = 0;
    closed_rows(device, state.hour, &w, out);
}

/// The rows a finished window of `hour` leaves: its rollups and its raw
/// samples (also what the telemetry bench replays a day into).
pub fn closed_rows(device: DeviceId, hour: i64, w: &Recorder, out: &mut TelemetryBatch) {
    out.rollups.push(rollup_row(device, hour, w));
    out.windows.push(window_row(device, w));
}

/// Gather from `rx` and write every `write_every` until `rx` closes; then
/// write everything held, windows closed.
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Scraped>,
    write_every: Duration,
    window_every: Duration,
    quiet_after: Duration,
    metrics: RelayMetrics,
    written: Arc<watch::Sender<u64>>,
) {
    let window_ms = i64::try_from(window_every.as_millis()).unwrap_or(i64::MAX);
    let mut w = Writer {
        devices: HashMap::new(),
        pending: TelemetryBatch::default(),
        metrics,
        written,
    };
    let quiet_ms = i64::try_from(quiet_after.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(write_every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One write in flight; results keep being taken while it runs.
    let mut writing: Option<WriteTask> = None;
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(s) => w.take(s),
                None => break,
            },
            done = async {
                match writing.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if writing.is_some() => {
                writing = None;
                w.finished(done);
            }
            _ = tick.tick(), if writing.is_none() => {
                let batch = w.batch(edge_core::time::now_ms(), quiet_ms, window_ms, false);
                if !batch.is_empty() {
                    let store = store.clone();
                    writing = Some(tokio::spawn(async move {
                        store.write_telemetry(&batch).await.map_err(|e| (batch, e))
                    }));
                }
            }
        }
    }
    if let Some(pending) = writing.take() {
        let done = pending.await;
        w.finished(done);
    }
    let batch = w.batch(edge_core::time::now_ms(), quiet_ms, window_ms, true);
    write(&store, &mut w, batch).await;
}

/// A store write in flight; a failed one hands its batch back.
type WriteTask = tokio::task::JoinHandle<WriteResult>;
type WriteResult = Result<(), (TelemetryBatch, store::StoreError)>;

impl Writer {
    /// Account for a finished write: counted, or kept for the next pass.
    fn finished(&mut self, done: Result<WriteResult, tokio::task::JoinError>) {
        match done {
            Ok(Ok(())) => self.written.send_modify(|n| *n += 1),
            Ok(Err((batch, err))) => {
                tracing::warn!(error = %err, "cannot store telemetry; kept for the next pass");
                self.metrics.telemetry_write_errors.inc();
                self.requeue(batch);
            }
            Err(err) => tracing::error!(error = %err, "telemetry write task failed"),
        }
    }
}

/// Store `batch` now (the last pass), accounted as any other write.
async fn write(store: &Store, w: &mut Writer, batch: TelemetryBatch) {
    if batch.is_empty() {
        return;
    }
    let done = store.write_telemetry(&batch).await.map_err(|e| (batch, e));
    w.finished(Ok(done));
}

#[cfg(test)]
mod tests {
    use super::*;
    use box_metrics::figures::{ModelInfo, SeriesKey};

    #[test]
    fn the_stored_figures_keep_their_shape() {
        let figures = Figures {
            values: vec![
                (
                    SeriesKey::new("inference_fps", &[("model", "yolo \"v8\"")]),
                    29.5,
                ),
                (SeriesKey::new("cpu_busy_ratio", &[]), f64::NAN),
            ],
            models: vec![ModelInfo {
                model: "yolo".into(),
                version: "8".into(),
                runtime: "rknn".into(),
            }],
        };
        // Written over an earlier, longer text: nothing of it is left.
        let mut text = "x".repeat(4096);
        figures_json_into(&figures, &mut text);
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            stored,
            serde_json::json!({
                "series": [
                    {"metric": "inference_fps", "labels": {"model": "yolo \"v8\""}, "value": 29.5},
                    {"metric": "cpu_busy_ratio", "labels": {}, "value": null},
                ],
                "models": [{"model": "yolo", "version": "8", "runtime": "rknn"}],
            })
        );
    }

    fn writer() -> Writer {
        Writer {
            devices: HashMap::new(),
            pending: TelemetryBatch::default(),
            metrics: RelayMetrics::default(),
            written: Arc::new(watch::channel(0).0),
        }
    }

    fn ok(device: DeviceId, at_ms: i64, fps: f64) -> Scraped {
        Scraped {
            device,
            at_ms,
            outcome: Outcome::Ok(Figures {
                values: vec![(SeriesKey::new("inference_fps", &[("model", "m")]), fps)],
                models: Vec::new(),
            }),
        }
    }

    /// The last scrapes of one pass: (scraped_at, outcome).
    fn latest_of(batch: &TelemetryBatch) -> Vec<(i64, String)> {
        batch
            .latest
            .iter()
            .map(|l| (l.scraped_at, l.outcome.clone()))
            .collect()
    }

    #[test]
    fn last_scrapes_are_written_at_most_every_window_but_changes_at_once() {
        let mut w = writer();
        let d = DeviceId::new();
        let window = 60_000;
        let quiet = 600_000;
        // The first scrape is written at the next pass.
        w.take(ok(d, 1_000, 30.0));
        assert_eq!(
            latest_of(&w.batch(1_100, quiet, window, false)),
            [(1_000, "ok".into())]
        );
        // Later ones with the same outcome wait for the window…
        w.take(ok(d, 16_000, 31.0));
        assert!(w.batch(16_100, quiet, window, false).latest.is_empty());
        w.take(ok(d, 31_000, 32.0));
        assert!(w.batch(31_100, quiet, window, false).latest.is_empty());
        // …and then the newest is written.
        w.take(ok(d, 61_000, 33.0));
        let b = w.batch(61_100, quiet, window, false);
        assert_eq!(latest_of(&b), [(61_000, "ok".into())]);
        assert!(
            b.latest[0].figures.contains("33"),
            "{}",
            b.latest[0].figures
        );
        // A failure is written at once, and so is the recovery after it.
        w.take(Scraped {
            device: d,
            at_ms: 76_000,
            outcome: Outcome::Failed("timeout", "no answer".into()),
        });
        assert_eq!(
            latest_of(&w.batch(76_100, quiet, window, false)),
            [(76_000, "failed".into())]
        );
        w.take(ok(d, 91_000, 34.0));
        assert_eq!(
            latest_of(&w.batch(91_100, quiet, window, false)),
            [(91_000, "ok".into())]
        );
        // A held scrape is written when the writer stops.
        w.take(ok(d, 106_000, 35.0));
        assert!(w.batch(106_100, quiet, window, false).latest.is_empty());
        assert_eq!(
            latest_of(&w.batch(106_200, quiet, window, true)),
            [(106_000, "ok".into())]
        );
        // Nothing new: nothing written.
        assert!(w.batch(200_000, quiet, window, true).latest.is_empty());
    }

    #[test]
    fn a_held_last_scrape_is_written_when_the_device_goes_quiet() {
        let mut w = writer();
        let d = DeviceId::new();
        w.take(ok(d, 1_000, 30.0));
        assert_eq!(w.batch(1_100, 30_000, 60_000, false).latest.len(), 1);
        w.take(ok(d, 16_000, 31.0));
        assert!(w.batch(16_100, 30_000, 60_000, false).latest.is_empty());
        // Not scraped for longer than `quiet`: written, and the device forgotten.
        assert_eq!(
            latest_of(&w.batch(50_000, 30_000, 60_000, false)),
            [(16_000, "ok".into())]
        );
        assert!(w.devices.is_empty());
    }
}
