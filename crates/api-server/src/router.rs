//! Every route of the api-server, in one place. Handlers that need a caller
//! take [`CurrentUser`](crate::session::CurrentUser) in their signature.

use crate::state::AppState;
use crate::{proxy, system};
use axum::routing::{any, get};
use axum::Router;

/// Routes reachable without a session (health checks only, for now).
pub const PUBLIC_ROUTES: &[&str] = &["/api/health", "/api/ready"];

/// Build the application router.
pub fn build_app(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(system::health))
        .route("/api/ready", get(system::ready))
        .route("/api/devices/{id}/proxy/", any(proxy::forward_root))
        .route("/api/devices/{id}/proxy/{*path}", any(proxy::forward_path))
        .fallback(system::not_found)
        .with_state(state)
}
