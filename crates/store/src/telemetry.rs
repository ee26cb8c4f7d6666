//! Device telemetry rows (ADR 025): the series a device has, its raw
//! windows, their five-minute rollups and its last scrape. The relay writes
//! them in one transaction per batch; every read takes the owner's id and
//! joins the device, so another user's device reads as empty.

use crate::{parse_id, Store, StoreError};
use edge_core::{DeviceId, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

/// A series of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRow {
    pub device_id: DeviceId,
    pub series_id: u32,
    pub metric: String,
    /// A JSON object of label → value.
    pub labels: String,
}

/// A window of raw samples (packed by `box_metrics::codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub device_id: DeviceId,
    pub start_ms: i64,
    pub end_ms: i64,
    pub samples: i64,
    pub data: Vec<u8>,
}

/// A window's five-minute rollup (packed by `box_metrics::codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub device_id: DeviceId,
    pub bucket_ms: i64,
    pub start_ms: i64,
    pub data: Vec<u8>,
}

/// A device's last scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRow {
    pub device_id: DeviceId,
    pub scraped_at: i64,
    /// `ok`, `failed` or `none` (the box has no metrics path).
    pub outcome: String,
    pub error: Option<String>,
    pub last_ok_at: Option<i64>,
    /// JSON of the last successful scrape's figures.
    pub figures: String,
}

/// What one writer pass stores.
#[derive(Debug, Default)]
pub struct TelemetryBatch {
    pub series: Vec<SeriesRow>,
    pub windows: Vec<WindowRow>,
    pub rollups: Vec<RollupRow>,
    pub latest: Vec<LatestRow>,
}

impl TelemetryBatch {
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
            && self.windows.is_empty()
            && self.rollups.is_empty()
            && self.latest.is_empty()
    }
}

/// How much a telemetry sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetrySwept {
    pub windows: u64,
    pub rollups: u64,
}

fn latest_from_row(row: &AnyRow) -> Result<LatestRow, StoreError> {
    Ok(LatestRow {
        device_id: parse_id(row, "device_id")?,
        scraped_at: row.try_get("scraped_at")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        last_ok_at: row.try_get("last_ok_at")?,
        figures: row.try_get("figures")?,
    })
}

/// `$first, $first+1, …` for `n` placeholders.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows per insert statement (at most 6 parameters each: far under
/// SQLite's and PostgreSQL's limits).
const ROWS_PER_STATEMENT: usize = 100;

/// `($1,$2),($3,$4),…`: `rows` rows of `columns` placeholders.
fn rows_of(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(r * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A query of the `Any` driver with its arguments.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `INSERT INTO <into> VALUES … <then>` for `rows`, [`ROWS_PER_STATEMENT`]
/// to a statement, `bind` giving each row's `columns` values.
async fn insert_rows<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    into: &str,
    then: &str,
    columns: usize,
    rows: &[&T],
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO {into} VALUES {} {then}",
            rows_of(chunk.len(), columns)
        );
        let q = chunk.iter().fold(sqlx::query(&sql), |q, r| bind(q, *r));
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The rows of `rows` in order, each key's last occurrence only.
fn last_of_each<T, K: std::hash::Hash + Eq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut last = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(key(r), i);
    }
    rows.iter()
        .enumerate()
        .filter(|(i, r)| last.get(&key(r)) == Some(i))
        .map(|(_, r)| r)
        .collect()
}

const OWNED: &str =
    "JOIN devices d ON d.id = t.device_id AND d.owner_id = $1 AND d.revoked_at IS NULL";

impl Store {
    /// Store one writer pass in one transaction: new series (kept when
    /// already known), windows and rollups (replaced when rewritten), and
    /// each device's last scrape.
    pub async fn write_telemetry(&self, batch: &TelemetryBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Many rows per statement (each statement is a round trip to the
        // database, or to SQLite's worker thread). One statement may not
        // update a row twice (PostgreSQL refuses it), and a batch that
        // failed once and came back with the next one can hold a row
        // twice: the later one is kept.
        let series = last_of_each(&batch.series, |s| (s.device_id, s.series_id));
        let windows = last_of_each(&batch.windows, |w| (w.device_id, w.start_ms));
        let rollups = last_of_each(&batch.rollups, |r| (r.device_id, r.bucket_ms, r.start_ms));
        let latest = last_of_each(&batch.latest, |l| l.device_id);
        let mut tx = self.write_tx().await?;
        insert_rows(
            &mut tx,
            "telemetry_series (device_id, series_id, metric, labels)",
            "ON CONFLICT (device_id, series_id) DO NOTHING",
            4,
            &series,
            |q, s| {
                q.bind(s.device_id.to_string())
                    .bind(i64::from(s.series_id))
                    .bind(s.metric.as_str())
                    .bind(s.labels.as_str())
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            "telemetry_windows (device_id, start_ms, end_ms, samples, data)",
            "ON CONFLICT (device_id, start_ms) DO UPDATE
             SET end_ms = excluded.end_ms, samples = excluded.samples, data = excluded.data",
            5,
            &windows,
            |q, w| {
                q.bind(w.device_id.to_string())
                    .bind(w.start_ms)
                    .bind(w.end_ms)
                    .bind(w.samples)
                    .bind(w.data.as_slice())
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            "telemetry_rollups (device_id, bucket_ms, start_ms, data)",
            "ON CONFLICT (device_id, bucket_ms, start_ms) DO UPDATE SET data = excluded.data",
            4,
            &rollups,
            |q, r| {
                q.bind(r.device_id.to_string())
                    .bind(r.bucket_ms)
                    .bind(r.start_ms)
                    .bind(r.data.as_slice())
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            "telemetry_latest (device_id, scraped_at, outcome, error, last_ok_at, figures)",
            "ON CONFLICT (device_id) DO UPDATE
             SET scraped_at = excluded.scraped_at, outcome = excluded.outcome,
                 error = excluded.error, last_ok_at = excluded.last_ok_at,
                 figures = excluded.figures",
            6,
            &latest,
            |q, l| {
                q.bind(l.device_id.to_string())
                    .bind(l.scraped_at)
                    .bind(l.outcome.as_str())
                    .bind(l.error.as_deref())
                    .bind(l.last_ok_at)
                    .bind(l.figures.as_str())
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The last scrape of each of `owner`'s `devices` that has one, in one
    /// query.
    pub async fn telemetry_latest(
        &self,
        owner: UserId,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, LatestRow>, StoreError> {
        let mut out = HashMap::new();
        for chunk in devices.chunks(500) {
            let sql = format!(
                "SELECT t.* FROM telemetry_latest t {OWNED} WHERE t.device_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(owner.to_string());
            for d in chunk {
                q = q.bind(d.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                let l = latest_from_row(&row)?;
                out.insert(l.device_id, l);
            }
        }
        Ok(out)
    }

    /// The series of `owner`'s `device`, optionally of one metric.
    pub async fn telemetry_series(
        &self,
        owner: UserId,
        device: DeviceId,
        metric: Option<&str>,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT t.* FROM telemetry_series t {OWNED}
             WHERE t.device_id = $2 AND ($3 = '' OR t.metric = $3) ORDER BY t.metric, t.labels"
        ))
        .bind(owner.to_string())
        .bind(device.to_string())
        .bind(metric.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_from_row).collect()
    }

    /// `owner`'s devices' series of `metric` (for fleet queries).
    pub async fn telemetry_series_of_metric(
        &self,
        owner: UserId,
        metric: &str,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT t.* FROM telemetry_series t {OWNED} WHERE t.metric = $2"
        ))
        .bind(owner.to_string())
        .bind(metric)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_from_row).collect()
    }

    /// The raw windows of `owner`'s `device` that overlap `[from, to]` (ms).
    pub async fn telemetry_windows(
        &self,
        owner: UserId,
        device: DeviceId,
        from: i64,
        to: i64,
    ) -> Result<Vec<WindowRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT t.* FROM telemetry_windows t {OWNED}
             WHERE t.device_id = $2 AND t.start_ms <= $4 AND t.end_ms >= $3 ORDER BY t.start_ms"
        ))
        .bind(owner.to_string())
        .bind(device.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WindowRow {
                    device_id: parse_id(row, "device_id")?,
                    start_ms: row.try_get("start_ms")?,
                    end_ms: row.try_get("end_ms")?,
                    samples: row.try_get("samples")?,
                    data: row.try_get("data")?,
                })
            })
            .collect()
    }

    /// The rollups of `owner`'s `devices` with buckets in `[from, to]` (ms).
    pub async fn telemetry_rollups(
        &self,
        owner: UserId,
        devices: &[DeviceId],
        from: i64,
        to: i64,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in devices.chunks(500) {
            let sql = format!(
                "SELECT t.* FROM telemetry_rollups t {OWNED}
                 WHERE t.bucket_ms >= $2 AND t.bucket_ms <= $3 AND t.device_id IN ({})
                 ORDER BY t.device_id, t.bucket_ms, t.start_ms",
                placeholders(4, chunk.len())
            );
            let mut q = sqlx::query(&sql)
                .bind(owner.to_string())
                .bind(from)
                .bind(to);
            for d in chunk {
                q = q.bind(d.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(RollupRow {
                    device_id: parse_id(&row, "device_id")?,
                    bucket_ms: row.try_get("bucket_ms")?,
                    start_ms: row.try_get("start_ms")?,
                    data: row.try_get("data")?,
                });
            }
        }
        Ok(out)
    }

    /// Delete raw windows that ended before `raw_before` and rollups of
    /// buckets before `rollups_before` (ms), `batch` rows per statement.
    pub async fn sweep_telemetry(
        &self,
        raw_before: i64,
        rollups_before: i64,
        batch: i64,
    ) -> Result<TelemetrySwept, StoreError> {
        let batch = batch.max(1);
        let mut swept = TelemetrySwept::default();
        for (sql, before, count) in [
            (
                "DELETE FROM telemetry_windows WHERE (device_id, start_ms) IN
                 (SELECT device_id, start_ms FROM telemetry_windows WHERE end_ms < $1 LIMIT $2)",
                raw_before,
                &mut swept.windows,
            ),
            (
                "DELETE FROM telemetry_rollups WHERE (device_id, bucket_ms, start_ms) IN
                 (SELECT device_id, bucket_ms, start_ms FROM telemetry_rollups WHERE bucket_ms < $1 LIMIT $2)",
                rollups_before,
                &mut swept.rollups,
            ),
        ] {
            loop {
                let n = sqlx::query(sql)
                    .bind(before)
                    .bind(batch)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                *count += n;
                if n < u64::try_from(batch).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        Ok(swept)
    }
}

fn series_from_row(row: &AnyRow) -> Result<SeriesRow, StoreError> {
    let id: i64 = row.try_get("series_id")?;
    Ok(SeriesRow {
        device_id: parse_id(row, "device_id")?,
        series_id: u32::try_from(id).map_err(|_| StoreError::Corrupt("series_id".into()))?,
        metric: row.try_get("metric")?,
        labels: row.try_get("labels")?,
    })
}
