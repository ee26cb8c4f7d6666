//! Health and readiness endpoints, and the JSON 404 for unknown routes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store answers. Also says how many relay nodes are up
/// (their addresses are internal, so only the count) or that the device
/// directory cannot be asked (Redis down: this replica still serves all
/// but lookups).
pub async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    let relays = match state.directory.nodes().await {
        Ok(nodes) => serde_json::json!(nodes.len()),
        Err(err) => {
            tracing::warn!(error = %err, "relay nodes unknown");
            serde_json::Value::Null
        }
    };
    Ok(Json(serde_json::json!({
        "status": "ready",
        "relay_nodes": relays,
        "directory": if relays.is_null() { "unavailable" } else { "ok" },
    })))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
