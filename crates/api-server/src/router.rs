//! Every route of the api-server, declared once: each handler's
//! `#[utoipa::path]` names its method and path, `routes!` (utoipa-axum)
//! makes of it both the axum route and its OpenAPI entry, and the
//! [`route_table`] that the auth and isolation tests walk is read back
//! from that document, so a route cannot exist without being documented
//! and checked. A route is public when its entry asks for no credential.
//! Handlers that need a caller take
//! [`CurrentUser`](crate::session::CurrentUser) in their signature.

use crate::state::AppState;
use crate::{
    auth_routes, cli_login, console, device_origin, devices, forward, health, hygiene, oauth,
    pairing, proxy, service_accounts, system, telemetry, webhooks,
};
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use http::Method;
use std::convert::Infallible;
use tower::ServiceExt;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::OpenApi;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// Methods the proxy's routes are checked with (they take any).
pub const ANY_METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// One route as the tests walk it: its path as routed, the methods it
/// answers, and whether it is public (its document entry asks for no
/// credential, or accepts none: the console's files, health, readiness,
/// this document, the two halves of the login, the provider's back-channel
/// logout, the pairing exchange, the terminal's logins and the OAuth token
/// endpoint, each with a credential of its own or none to guard).
pub struct RouteDef {
    pub path: String,
    pub methods: Vec<Method>,
    pub public: bool,
}

/// The proxy's paths as routed: every method, and the rest of the path
/// as a wildcard, which OpenAPI cannot say (the document has them as
/// `{path}`, one operation per method, from `openapi::ApiDoc`).
pub(crate) const PROXY_PATHS: [&str; 2] = [
    "/api/devices/{id}/proxy/",
    "/api/devices/{id}/proxy/{*path}",
];

/// Every documented route, declared once: `routes!` (utoipa-axum) takes
/// each handler's method and path from its `#[utoipa::path]` and gives
/// both the axum route and the document's entry.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(console::index))
        .routes(routes!(console::asset))
        .routes(routes!(console::favicon))
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(auth_routes::status))
        .routes(routes!(auth_routes::login))
        .routes(routes!(auth_routes::callback))
        .routes(routes!(auth_routes::backchannel_logout))
        .routes(routes!(cli_login::start).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)))
        .routes(routes!(cli_login::poll).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)))
        .routes(routes!(cli_login::authorize))
        .routes(routes!(cli_login::trade_code).layer(DefaultBodyLimit::max(cli_login::BODY_LIMIT)))
        .routes(routes!(auth_routes::me))
        .routes(routes!(auth_routes::logout))
        .routes(routes!(auth_routes::list_sessions))
        .routes(routes!(auth_routes::end_session))
        .routes(routes!(pairing::list_codes, pairing::create_code))
        .routes(routes!(pairing::cancel_code))
        .routes(
            routes!(pairing::exchange).layer(DefaultBodyLimit::max(pairing::EXCHANGE_BODY_LIMIT)),
        )
        .routes(routes!(devices::list))
        .routes(routes!(devices::get, devices::update, devices::delete))
        .routes(routes!(devices::rotate))
        .routes(routes!(devices::disconnect))
        .routes(routes!(device_origin::create_ticket))
        .routes(routes!(forward::forward))
        .routes(routes!(telemetry::latest))
        .routes(routes!(telemetry::series))
        .routes(routes!(telemetry::fleet))
        .routes(routes!(health::get_rules, health::put_rules))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(devices::audit))
        .routes(routes!(oauth::token).layer(DefaultBodyLimit::max(oauth::BODY_LIMIT)))
        .routes(routes!(service_accounts::list, service_accounts::create))
        .routes(routes!(service_accounts::get, service_accounts::delete))
        .routes(routes!(service_accounts::rotate))
        .routes(routes!(service_accounts::revoke_secret))
        .routes(routes!(service_accounts::set_key))
        .route(PROXY_PATHS[0], any(proxy::forward_root))
        .route(PROXY_PATHS[1], any(proxy::forward_path))
}

/// The document the routes make (security schemes and the proxy's
/// entries included), built once.
pub(crate) fn document() -> &'static OpenApi {
    static DOC: std::sync::OnceLock<OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| documented().split_for_parts().1)
}

/// The routes as the tests walk them, read from the document (and the
/// proxy's two, which take any method).
pub fn route_table() -> Vec<RouteDef> {
    let doc = document();
    let mut table: Vec<RouteDef> = doc
        .paths
        .paths
        .iter()
        .filter(|(path, _)| !path.starts_with("/api/devices/{id}/proxy/"))
        .map(|(path, item)| {
            let operations = operations(item);
            RouteDef {
                path: path.clone(),
                methods: operations.iter().map(|(m, _)| m.clone()).collect(),
                public: operations.iter().all(|(_, op)| asks_no_credential(op)),
            }
        })
        .collect();
    table.extend(PROXY_PATHS.iter().map(|path| RouteDef {
        path: (*path).to_owned(),
        methods: ANY_METHODS.to_vec(),
        public: false,
    }));
    table
}

/// The operations of `item`, with their methods.
fn operations(item: &PathItem) -> Vec<(Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::POST, &item.post),
        (Method::PUT, &item.put),
        (Method::PATCH, &item.patch),
        (Method::DELETE, &item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
    .collect()
}

/// No security requirement, or an empty one among them (any caller).
fn asks_no_credential(op: &Operation) -> bool {
    op.security.as_ref().is_none_or(|reqs| {
        reqs.iter().any(|r| {
            serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
        })
    })
}

/// Build the application: the console origin's router from the route
/// table, the device origins' router, and the host dispatch between them.
pub fn build_app(state: AppState) -> Router {
    let (console, _) = documented().split_for_parts();
    let console = console
        .fallback(system::not_found)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_http,
        ))
        .with_state(state.clone());
    let devices = device_origin::router(state.clone())
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_http,
        ));
    dispatch(state, console, devices)
        .layer(axum::middleware::from_fn(edge_core::request_id::middleware))
}

/// Both origins as one service: a request whose `Host` names a device
/// origin goes to `devices` (with the device id as an extension), any
/// other to `console`, each under the [`hygiene`] rules.
fn dispatch(state: AppState, console: Router, devices: Router) -> Router {
    let service = tower::service_fn(move |req: Request| {
        let (state, console, devices) = (state.clone(), console.clone(), devices.clone());
        async move {
            let mut req = hygiene::with_idle_body(req, state.settings.body_idle_timeout);
            let device = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| state.settings.device_origins.device_of_host(h));
            let mut res = match device {
                Some(device) => {
                    req.extensions_mut().insert(device);
                    devices.oneshot(req).await?
                }
                None => hygiene::console_request(console, req).await,
            };
            hygiene::strict_transport(&mut res, state.settings.cookie_secure);
            Ok::<Response, Infallible>(res)
        }
    });
    Router::new().fallback_service(service)
}
