//! Device telemetry for owners (ADR 025): a device's last scrape, a time
//! series of one metric with a step, and fleet queries over rollups
//! ("devices whose `inference_fps` for model X was below N in the last
//! 24 h"). The relay scrapes and stores; this module only reads, always
//! for the caller's own devices (another user's device is the usual 404).
//! Series within the raw retention at a step under five minutes come from
//! raw windows; longer or older ones from the five-minute rollups.

use crate::devices::owned;
use crate::error::{ApiError, SessionErrors};
use crate::extract::ApiQuery;
use crate::session::{ReadDevices, Scoped};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use box_metrics::codec;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use edge_core::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A rollup bucket (ms).
const BUCKET_MS: i64 = 300_000;
/// A rollup row holds one window's buckets, of at most an hour (ms).
const WINDOW_MS: i64 = 3_600_000;

/// The buckets of a rollup row (a corrupt row reads as none, logged).
fn rollups(row: &store::RollupRow) -> Vec<(i64, Vec<codec::Summary>)> {
    codec::decode_buckets(row.bucket_ms, BUCKET_MS, &row.data).unwrap_or_else(|_| {
        tracing::warn!(device = %row.device_id, hour = row.bucket_ms, "corrupt telemetry rollup");
        Vec::new()
    })
}
/// Most points one series answer holds.
const MAX_POINTS: i64 = 2_000;
/// Longest range one query covers (the default rollup retention).
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

/// A device's last scrape.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TelemetryView {
    /// `ok`, `failed`, `none` (the box serves no metrics; not an error) or
    /// `never` (not scraped yet).
    outcome: String,
    scraped_at: Option<i64>,
    last_ok_at: Option<i64>,
    /// Why the last scrape failed (a stable code, a colon, a message).
    error: Option<String>,
    /// The last good scrape's figures: `{series: [{metric, labels, value}], models: [{model, version, runtime}]}`.
    #[schema(value_type = Object)]
    figures: serde_json::Value,
}

impl TelemetryView {
    fn never() -> Self {
        Self {
            outcome: "never".into(),
            scraped_at: None,
            last_ok_at: None,
            error: None,
            figures: serde_json::json!({}),
        }
    }

    pub(crate) fn of(row: store::LatestRow) -> Self {
        Self {
            outcome: row.outcome,
            scraped_at: Some(row.scraped_at),
            last_ok_at: row.last_ok_at,
            error: row.error,
            figures: serde_json::from_str(&row.figures).unwrap_or_else(|_| serde_json::json!({})),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/devices/{id}/telemetry",
    tag = "telemetry",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [])),
    responses(
        (status = 200, description = "the device's last scrape and figures", body = TelemetryView),
        (status = 404, description = "no such device of the caller's", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn latest(
    user: Scoped<ReadDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TelemetryView>, ApiError> {
    let device = owned(&state, &user, &id).await?;
    let mut rows = state.store.telemetry_latest(user.id, &[device.id]).await?;
    Ok(Json(
        rows.remove(&device.id)
            .map_or_else(TelemetryView::never, TelemetryView::of),
    ))
}

/// `?metric=&from=&to=&step=` (times in ms since the epoch; default the
/// last hour; `step` in ms, rounded up to what the range allows).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// A derived metric (e.g. `inference_fps`) or an allow-listed one;
    /// required (checked after the device, so a device of someone else's
    /// is a 404 either way).
    metric: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    step: Option<i64>,
}

/// One series of the answer: its labels and one value per timestamp.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SeriesValues {
    labels: BTreeMap<String, String>,
    /// The mean within each step (`null`: no sample).
    values: Vec<Option<f64>>,
    /// Per step, the smallest and largest sample (rollups: of the bucket).
    min: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
}

/// A metric's series over a range, aligned on one time axis (the shape
/// charting libraries such as uPlot take).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    metric: String,
    from: i64,
    to: i64,
    step: i64,
    /// `raw` (scrape resolution) or `rollup` (five-minute buckets).
    source: &'static str,
    /// The start of each step (ms).
    timestamps: Vec<i64>,
    series: Vec<SeriesValues>,
}

/// Mean, min and max accumulators per step.
#[derive(Clone, Copy, Default)]
struct Cell {
    sum: f64,
    n: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Cell {
    fn add(&mut self, mean: f64, weight: f64, lo: f64, hi: f64) {
        self.sum += mean * weight;
        self.n += weight;
        self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
    }
}

fn valid_metric(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 200
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

#[utoipa::path(
    get,
    path = "/api/devices/{id}/telemetry/series",
    tag = "telemetry",
    params(("id" = String, Path, description = "device id"), SeriesQuery),
    security(("session" = [])),
    responses(
        (status = 200, description = "the metric's series over the range", body = SeriesView),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 404, description = "no such device of the caller's", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn series(
    user: Scoped<ReadDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<SeriesView>, ApiError> {
    let device = owned(&state, &user, &id).await?;
    let metric = q.metric.clone().unwrap_or_default();
    if !valid_metric(&metric) {
        return Err(ApiError::BadRequest("metric must be a metric name".into()));
    }
    let grid = Grid::of(&q, now_ms(), state.settings.telemetry_raw_retention)?;
    let known = state
        .store
        .telemetry_series(user.id, device.id, Some(&metric))
        .await?;
    let mut cells: HashMap<u32, Vec<Cell>> = known
        .iter()
        .map(|s| (s.series_id, vec![Cell::default(); grid.steps]))
        .collect();
    if !cells.is_empty() {
        fill(&state, user.id, device.id, &grid, &mut cells).await?;
    }
    let series = known
        .iter()
        .map(|s| {
            let c = cells.remove(&s.series_id).unwrap_or_default();
            SeriesValues {
                labels: serde_json::from_str(&s.labels).unwrap_or_default(),
                values: c.iter().map(|c| (c.n > 0.0).then(|| c.sum / c.n)).collect(),
                min: c.iter().map(|c| c.min).collect(),
                max: c.iter().map(|c| c.max).collect(),
            }
        })
        .collect();
    Ok(Json(SeriesView {
        metric,
        from: grid.from,
        to: grid.to,
        step: grid.step,
        source: if grid.raw { "raw" } else { "rollup" },
        timestamps: (0..grid.steps as i64)
            .map(|i| grid.from + i * grid.step)
            .collect(),
        series,
    }))
}

/// The time steps a series answer has: from raw windows when the step is
/// under a rollup bucket and the range is within raw retention, else from
/// rollups at whole buckets.
struct Grid {
    from: i64,
    to: i64,
    step: i64,
    steps: usize,
    raw: bool,
}

impl Grid {
    fn of(q: &SeriesQuery, now: i64, raw_retention: std::time::Duration) -> Result<Self, ApiError> {
        let to = q.to.unwrap_or(now);
        let from = q.from.unwrap_or(to - 3_600_000);
        if from >= to || to - from > MAX_RANGE_MS {
            return Err(ApiError::BadRequest(
                "from must be before to, at most 400 days apart".into(),
            ));
        }
        let raw_horizon = now - i64::try_from(raw_retention.as_millis()).unwrap_or(i64::MAX);
        let mut step = q
            .step
            .unwrap_or(0)
            .max((to - from + MAX_POINTS - 1) / MAX_POINTS)
            .max(1_000);
        let raw = step < BUCKET_MS && from >= raw_horizon;
        if !raw {
            step = (step + BUCKET_MS - 1) / BUCKET_MS * BUCKET_MS;
        }
        let from = from - from.rem_euclid(step);
        let steps = usize::try_from((to - from) / step + 1).unwrap_or(0);
        Ok(Self {
            from,
            to,
            step,
            steps,
            raw,
        })
    }

    /// The step time `t` falls in.
    fn slot(&self, t: i64) -> Option<usize> {
        (t >= self.from && t <= self.to)
            .then(|| usize::try_from((t - self.from) / self.step).ok())
            .flatten()
            .filter(|i| *i < self.steps)
    }
}

/// Add `device`'s stored values to the cells of their series: the raw
/// samples of its windows, or its five-minute rollups, as `grid` says.
async fn fill(
    state: &AppState,
    user: UserId,
    device: DeviceId,
    grid: &Grid,
    cells: &mut HashMap<u32, Vec<Cell>>,
) -> Result<(), ApiError> {
    let store = &state.store;
    if grid.raw {
        for row in store
            .telemetry_windows(user, device, grid.from, grid.to)
            .await?
        {
            let Ok(w) = codec::decode(row.start_ms, &row.data) else {
                tracing::warn!(device = %device, start = row.start_ms, "corrupt telemetry window");
                continue;
            };
            for (id, col) in &w.series {
                let Some(c) = cells.get_mut(id) else { continue };
                for (t, v) in w.times.iter().zip(&col.values) {
                    if let (Some(i), Some(v)) = (grid.slot(*t), v) {
                        c[i].add(*v, 1.0, *v, *v);
                    }
                }
            }
        }
        return Ok(());
    }
    let from = grid.from - WINDOW_MS;
    for row in store
        .telemetry_rollups(user, &[device], from, grid.to)
        .await?
    {
        for (bucket, sums) in rollups(&row) {
            let Some(i) = grid.slot(bucket) else { continue };
            for s in sums {
                if let Some(c) = cells.get_mut(&s.id) {
                    c[i].add(s.avg, f64::from(s.count), s.min, s.max);
                }
            }
        }
    }
    Ok(())
}

/// `?metric=&label=&below=|above=&hours=`: the caller's devices whose
/// metric went below (or above) a threshold within the last `hours`
/// (default 24, at most 9600) in any five-minute rollup.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    metric: String,
    /// `name=value`: only series with this label (e.g. `model=yolov8n`).
    label: Option<String>,
    below: Option<f64>,
    above: Option<f64>,
    hours: Option<i64>,
}

/// A device that matched a fleet query.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FleetMatch {
    device_id: String,
    name: String,
    /// The matching series' labels.
    labels: BTreeMap<String, String>,
    /// Its smallest and largest five-minute values within the window.
    min: f64,
    max: f64,
}

#[utoipa::path(
    get,
    path = "/api/telemetry/fleet",
    tag = "telemetry",
    params(FleetQuery),
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's devices whose metric crossed the threshold", body = Vec<FleetMatch>),
        (status = 400, description = "malformed request", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn fleet(
    user: Scoped<ReadDevices>,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<Vec<FleetMatch>>, ApiError> {
    if !valid_metric(&q.metric) {
        return Err(ApiError::BadRequest("metric must be a metric name".into()));
    }
    if q.below.is_some() == q.above.is_some() || q.below.or(q.above).is_some_and(|v| !v.is_finite())
    {
        return Err(ApiError::BadRequest(
            "give exactly one of below and above, a finite number".into(),
        ));
    }
    let label = match q.label.as_deref() {
        None => None,
        Some(l) => Some(
            l.split_once('=')
                .ok_or_else(|| ApiError::BadRequest("label must be name=value".into()))?,
        ),
    };
    let series = matching_series(&state, user.id, &q.metric, label).await?;
    let wanted: HashMap<(DeviceId, u32), &store::SeriesRow> = series
        .iter()
        .map(|s| ((s.device_id, s.series_id), s))
        .collect();
    let hours = q.hours.unwrap_or(24).clamp(1, 9_600);
    let ranges = ranges_since(&state, user.id, &wanted, now_ms() - hours * 3_600_000).await?;
    let names: HashMap<DeviceId, String> = state
        .store
        .devices(user.id)
        .await?
        .into_iter()
        .filter(|d| user.sees(&d.labels))
        .map(|d| (d.id, d.name))
        .collect();
    let mut out: Vec<FleetMatch> = ranges
        .into_iter()
        .filter(|(_, (lo, hi))| {
            q.below.is_some_and(|b| *lo < b) || q.above.is_some_and(|a| *hi > a)
        })
        .filter_map(|((device, id), (min, max))| {
            let s = wanted.get(&(device, id))?;
            Some(FleetMatch {
                device_id: device.to_string(),
                name: names.get(&device)?.clone(),
                labels: serde_json::from_str(&s.labels).unwrap_or_default(),
                min,
                max,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.device_id.cmp(&b.device_id)));
    Ok(Json(out))
}

/// The caller's series of `metric`, with label `name=value` when given.
async fn matching_series(
    state: &AppState,
    user: UserId,
    metric: &str,
    label: Option<(&str, &str)>,
) -> Result<Vec<store::SeriesRow>, ApiError> {
    Ok(state
        .store
        .telemetry_series_of_metric(user, metric)
        .await?
        .into_iter()
        .filter(|s| {
            label.is_none_or(|(k, v)| {
                serde_json::from_str::<BTreeMap<String, String>>(&s.labels)
                    .is_ok_and(|m| m.get(k).map(String::as_str) == Some(v))
            })
        })
        .collect())
}

/// The lowest and highest value of each `wanted` series in the five-minute
/// rollups since `from`.
async fn ranges_since(
    state: &AppState,
    user: UserId,
    wanted: &HashMap<(DeviceId, u32), &store::SeriesRow>,
    from: i64,
) -> Result<BTreeMap<(DeviceId, u32), (f64, f64)>, ApiError> {
    let mut devices: Vec<DeviceId> = wanted.keys().map(|(d, _)| *d).collect();
    devices.sort_unstable_by_key(|d| d.to_string());
    devices.dedup();
    let mut ranges: BTreeMap<(DeviceId, u32), (f64, f64)> = BTreeMap::new();
    for row in state
        .store
        .telemetry_rollups(user, &devices, from - WINDOW_MS, now_ms())
        .await?
    {
        let sums = rollups(&row)
            .into_iter()
            .filter(|(bucket, _)| *bucket >= from - BUCKET_MS)
            .flat_map(|(_, sums)| sums);
        for s in sums {
            if wanted.contains_key(&(row.device_id, s.id)) {
                let r = ranges
                    .entry((row.device_id, s.id))
                    .or_insert((f64::INFINITY, f64::NEG_INFINITY));
                r.0 = r.0.min(s.min);
                r.1 = r.1.max(s.max);
            }
        }
    }
    Ok(ranges)
}
