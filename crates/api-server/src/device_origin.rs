//! Box content on the device's own origin. The console asks for a ticket
//! (`POST /api/devices/{id}/ui-ticket`: single use, bound to the user, the
//! user's session and the device, 30 s) and posts it in a form to
//! `<device origin>/__edge/enter`, which trades it for a host-only cookie
//! valid on that one origin. Every request there re-checks that cookie, the
//! user's session behind it and ownership, and is then forwarded to the box;
//! upgraded connections are re-checked for as long as they live. Service
//! workers and cross-site subrequests are refused. Nothing here is reachable
//! on the console's origin, and no secret ever appears in a URL.

use crate::error::{ApiError, ChangeErrors};
use crate::extract::ApiForm;
use crate::hygiene;
use crate::proxy::{self, Access, Door};
use crate::session::Check;
use crate::session::{
    device_cookie_name, device_cookie_purpose, read_cookie, set_cookie, CurrentUser,
};
use crate::state::AppState;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use edge_core::error_body::ErrorBody;
use edge_core::text::html_escape;
use edge_core::time::now_ms;
use edge_core::{DeviceId, Secret};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Where a device origin takes its ticket (reserved on every device origin).
pub const ENTER_PATH: &str = "/__edge/enter";

/// The device origins' router. Each request carries the [`DeviceId`] its
/// `Host` names as an extension (set by the host dispatch,
/// `router::dispatch`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(ENTER_PATH, post(enter))
        .route("/", any(forward))
        .route("/{*path}", any(forward))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// The device origin's entry URL: post `ticket` there in a form.
    action: String,
    /// Single use, valid for `expires_at`; never put it in a URL.
    ticket: String,
    expires_at: i64,
}

/// `POST /api/devices/{id}/ui-ticket`: a ticket to enter the device's origin.
#[utoipa::path(
    post,
    path = "/api/devices/{id}/ui-ticket",
    tag = "devices",
    params(("id" = String, Path, description = "device id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "a single-use ticket to enter the device's own origin", body = Ticket),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn create_ticket(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Ticket>, ApiError> {
    let device = proxy::authorize(&state, user.id, &id).await?;
    let ticket = Secret::random(32);
    let now = now_ms();
    let lifetime =
        i64::try_from(state.settings.device_ticket_lifetime.as_millis()).unwrap_or(30_000);
    state
        .store
        .create_device_ticket(
            &edge_core::secret::sha256_hex(ticket.expose().as_bytes()),
            user.id,
            &user.session_hash,
            device,
            now,
            now + lifetime,
        )
        .await?;
    Ok(Json(Ticket {
        action: format!(
            "{}{ENTER_PATH}",
            state.settings.device_origins.origin_of(device)
        ),
        ticket: ticket.expose().to_owned(),
        expires_at: now + lifetime,
    }))
}

#[derive(Deserialize)]
pub struct EnterForm {
    ticket: String,
}

/// A small page for a person who arrived without (or lost) access.
fn access_page(status: StatusCode, state: &AppState, message: &str) -> Response {
    let console = html_escape(&state.settings.public_origin);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">\
         <title>Device access</title></head><body><h1>Device access</h1><p>{}</p>\
         <p><a href=\"{console}/\">Go to the console</a></p></body></html>",
        html_escape(message)
    );
    let mut res = (status, Html(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    res
}

/// `POST /__edge/enter` on a device origin, from the console's form: trade
/// the ticket for this origin's cookie and go to the box's start page.
async fn enter(
    State(state): State<AppState>,
    axum::Extension(device): axum::Extension<DeviceId>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<EnterForm>,
) -> Result<Response, ApiError> {
    // Only the console's own page may post here.
    let origin_ok = headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == state.settings.public_origin.as_bytes());
    if !origin_ok {
        tracing::info!(%device, origin = ?headers.get(header::ORIGIN), "device entry refused: not posted by the console");
        return Err(ApiError::Forbidden);
    }
    let now = now_ms();
    let hash = edge_core::secret::sha256_hex(form.ticket.trim().as_bytes());
    let Some(redeemed) = state.store.redeem_device_ticket(&hash, device, now).await? else {
        return Ok(access_page(
            StatusCode::FORBIDDEN,
            &state,
            &ApiError::InvalidTicket.to_string(),
        ));
    };
    let allowed = proxy::owner_behind(&state, &redeemed.session_hash, device, Check::Activity)
        .await?
        .is_some_and(|actor| actor.user == redeemed.user_id);
    if !allowed {
        return Ok(access_page(
            StatusCode::FORBIDDEN,
            &state,
            &ApiError::InvalidTicket.to_string(),
        ));
    }
    let secure = state.settings.cookie_secure;
    let name = device_cookie_name(secure);
    let lifetime = i64::try_from(state.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    let value = state.cookies.sign(
        name,
        &device_cookie_purpose(device),
        &redeemed.session_hash,
        now.saturating_add(lifetime),
    );
    state
        .store
        .audit(
            redeemed.user_id,
            "device_ui_opened",
            Some(&device.to_string()),
            serde_json::json!({}),
        )
        .await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie(secure, name, &value, lifetime / 1000))
            .map_err(|_| ApiError::Internal)?,
    );
    Ok(res)
}

/// The caller's access to this device origin, from its cookie.
async fn access_of(
    state: &AppState,
    device: DeviceId,
    headers: &HeaderMap,
) -> Result<Access, ApiError> {
    let name = device_cookie_name(state.settings.cookie_secure);
    let session_hash = read_cookie(headers, name)
        .and_then(|raw| {
            state
                .cookies
                .verify(name, &device_cookie_purpose(device), raw, now_ms())
                .ok()
        })
        .ok_or(ApiError::DeviceAccessRequired)?;
    let actor = proxy::owner_behind(state, &session_hash, device, Check::Activity)
        .await?
        .ok_or(ApiError::DeviceAccessRequired)?;
    Ok(Access {
        actor,
        session_hash,
        device,
    })
}

/// Fetch-metadata rule for a device origin: same-origin requests and
/// user-typed navigations pass; from another site (another device's origin
/// included) only top-level GET/HEAD navigations do, so no other page can
/// send credentialed subrequests or posts to this box. A request without
/// fetch metadata (an older browser, or no browser) may read; to change
/// anything or upgrade it must name this device's `origin` as its `Origin`.
fn fetch_allowed(method: &Method, headers: &HeaderMap, origin: &str) -> bool {
    match hygiene::fetch_site(headers) {
        Some("same-origin" | "none") => true,
        Some(_) => hygiene::is_navigation(headers) && matches!(*method, Method::GET | Method::HEAD),
        None => {
            let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
                && !headers.contains_key(header::UPGRADE);
            reads || headers.get(header::ORIGIN).is_some_and(|o| o == origin)
        }
    }
}

/// Everything on a device origin but the entry: checked, then forwarded.
async fn forward(
    State(state): State<AppState>,
    axum::Extension(device): axum::Extension<DeviceId>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    // Device origins have no service workers (ADR 011): one would outlive
    // the user's access and answer for the box offline.
    if req
        .headers()
        .get("service-worker")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"script"))
    {
        return Err(ApiError::ServiceWorkerRefused);
    }
    let origin = state.settings.device_origins.origin_of(device);
    if !fetch_allowed(req.method(), req.headers(), &origin) {
        return Err(ApiError::CrossSite);
    }
    let access = match access_of(&state, device, req.headers()).await {
        Ok(a) => a,
        Err(ApiError::DeviceAccessRequired) if hygiene::is_navigation(req.headers()) => {
            return Ok(access_page(
                StatusCode::UNAUTHORIZED,
                &state,
                "Open this device from the console to use it here.",
            ));
        }
        Err(err) => return Err(err),
    };
    let host = req.headers().get(header::HOST).cloned();
    let client = proxy::client_of(&req, remote);
    proxy::forward(&state, access, client, req, Door::DeviceOrigin { host }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    const ORIGIN: &str = "https://d1.devices.example.net";

    fn allowed(method: Method, pairs: &[(&'static str, &'static str)]) -> bool {
        fetch_allowed(&method, &h(pairs), ORIGIN)
    }

    #[test]
    fn only_same_origin_or_top_level_navigations_pass() {
        assert!(allowed(Method::POST, &[("sec-fetch-site", "same-origin")]));
        assert!(allowed(
            Method::GET,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate")
            ]
        ));
        assert!(!allowed(
            Method::POST,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate")
            ]
        ));
        assert!(!allowed(
            Method::GET,
            &[("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")]
        ));
        assert!(!allowed(
            Method::GET,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "no-cors")
            ]
        ));
    }

    #[test]
    fn without_fetch_metadata_only_reads_pass_unless_origin_is_this_device() {
        assert!(allowed(Method::GET, &[]), "reads from any client");
        assert!(allowed(Method::HEAD, &[]));
        // A sibling device's page in a browser without fetch metadata.
        let sibling = ("origin", "https://d2.devices.example.net");
        assert!(!allowed(Method::POST, &[]), "no Origin at all");
        assert!(!allowed(Method::POST, &[sibling]));
        assert!(!allowed(Method::DELETE, &[("origin", "null")]));
        assert!(!allowed(Method::GET, &[("upgrade", "websocket"), sibling]));
        assert!(!allowed(Method::GET, &[("upgrade", "websocket")]));
        // This device's own page.
        assert!(allowed(Method::POST, &[("origin", ORIGIN)]));
        assert!(allowed(
            Method::GET,
            &[("upgrade", "websocket"), ("origin", ORIGIN)]
        ));
    }
}
