//! The scheduled sweep: every `housekeeping_interval` (and once shortly
//! after start) delete expired sessions, pairing codes, entry tickets and
//! logout-token records, audit events past their retention, and telemetry
//! windows and rollups past theirs, in batches.
//! Replicas may sweep at the same time; the deletes do not conflict.

use crate::state::AppState;
use edge_core::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Audit rows deleted per statement.
pub const AUDIT_BATCH: i64 = 1000;

/// One sweep now; returns what it deleted.
pub async fn sweep_once(
    state: &AppState,
) -> Result<(store::Swept, store::TelemetrySwept), store::StoreError> {
    let now = now_ms();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let swept = state
        .store
        .sweep(
            now,
            ms(state.settings.session_idle),
            now.saturating_sub(ms(state.settings.audit_retention)),
            AUDIT_BATCH,
        )
        .await?;
    let telemetry = state
        .store
        .sweep_telemetry(
            now.saturating_sub(ms(state.settings.telemetry_raw_retention)),
            now.saturating_sub(ms(state.settings.telemetry_rollup_retention)),
            AUDIT_BATCH,
        )
        .await?;
    Ok((swept, telemetry))
}

/// Sweep on the schedule until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let every = state.settings.housekeeping_interval;
    let mut next = tokio::time::Instant::now() + Duration::from_secs(5).min(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        match sweep_once(&state).await {
            Ok((swept, telemetry)) => tracing::info!(?swept, ?telemetry, "housekeeping"),
            Err(err) => tracing::warn!(error = %err, "housekeeping failed; retrying next time"),
        }
        next = tokio::time::Instant::now() + every;
    }
}
