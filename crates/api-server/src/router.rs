//! Every route of the api-server, in one place. Handlers that need a caller
//! take [`CurrentUser`](crate::session::CurrentUser) in their signature.

use crate::state::AppState;
use crate::{auth_routes, proxy, system};
use axum::routing::{any, delete, get, post};
use axum::Router;

/// Routes reachable without a session: health, readiness, and the two
/// halves of the login (the callback's credential is the pending-login
/// cookie plus the provider's code).
pub const PUBLIC_ROUTES: &[&str] = &[
    "/api/health",
    "/api/ready",
    "/api/auth/login",
    "/api/auth/callback",
];

/// Build the application router.
pub fn build_app(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(system::health))
        .route("/api/ready", get(system::ready))
        .route("/api/auth/login", get(auth_routes::login))
        .route("/api/auth/callback", get(auth_routes::callback))
        .route("/api/auth/me", get(auth_routes::me))
        .route("/api/auth/logout", post(auth_routes::logout))
        .route("/api/auth/sessions", get(auth_routes::list_sessions))
        .route("/api/auth/sessions/{id}", delete(auth_routes::end_session))
        .route("/api/devices/{id}/proxy/", any(proxy::forward_root))
        .route("/api/devices/{id}/proxy/{*path}", any(proxy::forward_path))
        .fallback(system::not_found)
        .with_state(state)
}
