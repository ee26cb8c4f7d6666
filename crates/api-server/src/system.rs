//! Health and readiness endpoints, and the JSON 404 for unknown routes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use edge_core::error_body::ErrorBody;
use serde::Serialize;

/// `{"status": "ok"}` while the process serves.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/api/health", tag = "system", responses((status = 200, description = "the process serves", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers; relay nodes up (`null` when the device
/// directory cannot be asked) and the directory's state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    status: &'static str,
    relay_nodes: Option<usize>,
    /// `ok`, or `unavailable` (Redis down: this replica serves all but lookups).
    directory: &'static str,
}

/// Ready when the store answers and the audit trail can be written
/// (503 `store_unavailable` or `audit_unavailable` otherwise). Also says how many relay nodes are up
/// (their addresses are internal, so only the count) or that the device
/// directory cannot be asked (Redis down: this replica still serves all
/// but lookups).
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "system",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "the store or a dependency is unavailable", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    state.store.ping().await?;
    if state.audit.is_failing() {
        return Err(ApiError::AuditUnavailable);
    }
    let relays = match state.directory.nodes().await {
        Ok(nodes) => Some(nodes.len()),
        Err(err) => {
            tracing::warn!(error = %err, "relay nodes unknown");
            None
        }
    };
    Ok(Json(Ready {
        status: "ready",
        relay_nodes: relays,
        directory: if relays.is_none() {
            "unavailable"
        } else {
            "ok"
        },
    }))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
