//! Every route of the api-server, in one table. `build_app` builds the
//! router from [`route_table`], and the auth test walks the same table, so a
//! route cannot exist without being checked. Handlers that need a caller take
//! [`CurrentUser`](crate::session::CurrentUser) in their signature.

use crate::state::AppState;
use crate::{
    auth_routes, cli_login, console, device_origin, devices, forward, health, hygiene, oauth,
    pairing, proxy, service_accounts, system, telemetry, webhooks,
};
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post, MethodRouter};
use axum::Router;
use http::Method;

/// Routes reachable without a session: the console's static files (they
/// hold no data; the page asks the API, which checks the session), health,
/// readiness, the two halves of the login (the callback's credential is the
/// pending-login cookie plus the provider's code), the provider's
/// back-channel logout (its credential is the signed logout token), and the
/// pairing exchange (the code is its credential), the OAuth token
/// endpoint (the client's secret or signed assertion is its credential),
/// and the terminal's
/// logins (the sealed login or code is their credential; the loopback
/// login's first step reads the session but sends a signed-out browser to
/// the login instead of answering 401). Device origins have a
/// router of their own (`device_origin`), entered only with a ticket. `/api/auth/status` reads the session but
/// answers `signed_in: false` instead of 401 and returns nothing else.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/",
    "/console/{file}",
    "/favicon.ico",
    "/api/health",
    "/api/ready",
    "/api/openapi.json",
    "/api/auth/status",
    "/api/auth/login",
    "/api/auth/callback",
    "/api/auth/backchannel-logout",
    "/api/pairing/exchange",
    "/api/cli/login",
    "/api/cli/login/poll",
    "/api/cli/authorize",
    "/api/cli/login/code",
    "/api/oauth/token",
];

/// Methods `any(...)` routes are checked with.
pub const ANY_METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// One route: its path, the methods it answers, and its handlers.
pub struct RouteDef {
    pub path: &'static str,
    pub methods: &'static [Method],
    pub handler: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &'static [Method],
    handler: MethodRouter<AppState>,
) -> RouteDef {
    RouteDef {
        path,
        methods,
        handler,
    }
}

/// The route table.
pub fn route_table() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route("/", &[M::GET], get(console::index)),
        route("/console/{file}", &[M::GET], get(console::asset)),
        route("/favicon.ico", &[M::GET], get(console::favicon)),
        route("/api/health", &[M::GET], get(system::health)),
        route("/api/ready", &[M::GET], get(system::ready)),
        route(
            "/api/openapi.json",
            &[M::GET],
            get(crate::openapi::openapi_json),
        ),
        route("/api/auth/status", &[M::GET], get(auth_routes::status)),
        route("/api/auth/login", &[M::GET], get(auth_routes::login)),
        route("/api/auth/callback", &[M::GET], get(auth_routes::callback)),
        route(
            "/api/auth/backchannel-logout",
            &[M::POST],
            post(auth_routes::backchannel_logout),
        ),
        route(
            "/api/cli/login",
            &[M::POST],
            post(cli_login::start).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)),
        ),
        route(
            "/api/cli/login/poll",
            &[M::POST],
            post(cli_login::poll).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)),
        ),
        route("/api/cli/authorize", &[M::GET], get(cli_login::authorize)),
        route(
            "/api/cli/login/code",
            &[M::POST],
            post(cli_login::trade_code).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)),
        ),
        route("/api/auth/me", &[M::GET], get(auth_routes::me)),
        route("/api/auth/logout", &[M::POST], post(auth_routes::logout)),
        route(
            "/api/auth/sessions",
            &[M::GET],
            get(auth_routes::list_sessions),
        ),
        route(
            "/api/auth/sessions/{id}",
            &[M::DELETE],
            delete(auth_routes::end_session),
        ),
        route(
            "/api/pairing/codes",
            &[M::GET, M::POST],
            get(pairing::list_codes).post(pairing::create_code),
        ),
        route(
            "/api/pairing/codes/{id}",
            &[M::DELETE],
            delete(pairing::cancel_code),
        ),
        route(
            "/api/pairing/exchange",
            &[M::POST],
            post(pairing::exchange).layer(DefaultBodyLimit::max(pairing::EXCHANGE_BODY_LIMIT)),
        ),
        route("/api/devices", &[M::GET], get(devices::list)),
        route(
            "/api/devices/{id}",
            &[M::GET, M::PATCH, M::DELETE],
            get(devices::get)
                .patch(devices::update)
                .delete(devices::delete),
        ),
        route(
            "/api/devices/{id}/credential",
            &[M::POST],
            post(devices::rotate),
        ),
        route(
            "/api/devices/{id}/disconnect",
            &[M::POST],
            post(devices::disconnect),
        ),
        route(
            "/api/devices/{id}/ui-ticket",
            &[M::POST],
            post(device_origin::create_ticket),
        ),
        route(
            "/api/devices/{id}/forward",
            &[M::GET],
            get(forward::forward),
        ),
        route(
            "/api/devices/{id}/telemetry",
            &[M::GET],
            get(telemetry::latest),
        ),
        route(
            "/api/devices/{id}/telemetry/series",
            &[M::GET],
            get(telemetry::series),
        ),
        route("/api/telemetry/fleet", &[M::GET], get(telemetry::fleet)),
        route(
            "/api/health-rules",
            &[M::GET, M::PUT],
            get(health::get_rules).put(health::put_rules),
        ),
        route(
            "/api/webhooks",
            &[M::GET, M::POST],
            get(webhooks::list).post(webhooks::create),
        ),
        route("/api/webhooks/{id}", &[M::DELETE], delete(webhooks::delete)),
        route(
            "/api/webhooks/{id}/deliveries",
            &[M::GET],
            get(webhooks::deliveries),
        ),
        route("/api/audit", &[M::GET], get(devices::audit)),
        route(
            oauth::TOKEN_PATH,
            &[M::POST],
            post(oauth::token).layer(DefaultBodyLimit::max(oauth::BODY_LIMIT)),
        ),
        route(
            "/api/service-accounts",
            &[M::GET, M::POST],
            get(service_accounts::list).post(service_accounts::create),
        ),
        route(
            "/api/service-accounts/{id}",
            &[M::GET, M::DELETE],
            get(service_accounts::get).delete(service_accounts::delete),
        ),
        route(
            "/api/service-accounts/{id}/secrets",
            &[M::POST],
            post(service_accounts::rotate),
        ),
        route(
            "/api/service-accounts/{id}/secrets/{secret_id}",
            &[M::DELETE],
            delete(service_accounts::revoke_secret),
        ),
        route(
            "/api/service-accounts/{id}/key",
            &[M::PUT],
            axum::routing::put(service_accounts::set_key),
        ),
        route(
            "/api/devices/{id}/proxy/",
            ANY_METHODS,
            any(proxy::forward_root),
        ),
        route(
            "/api/devices/{id}/proxy/{*path}",
            ANY_METHODS,
            any(proxy::forward_path),
        ),
    ]
}

/// Build the application: the console origin's router from the route
/// table, the device origins' router, and the host dispatch between them.
pub fn build_app(state: AppState) -> Router {
    let console = route_table()
        .into_iter()
        .fold(Router::new(), |r, def| r.route(def.path, def.handler))
        .fallback(system::not_found)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::count_http,
        ))
        .with_state(state.clone());
    let devices = device_origin::router(state.clone())
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::count_http,
        ));
    hygiene::dispatch(state, console, devices)
        .layer(axum::middleware::from_fn(edge_core::request_id::middleware))
}
