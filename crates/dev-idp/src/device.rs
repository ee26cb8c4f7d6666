//! The device login (RFC 8628) of the development provider: a client asks
//! `POST /device/code` for a device code and a user code; the user opens
//! `GET /device?user_code=…`, picks a demo user and so approves it; the
//! client's token requests with the device code answer
//! `authorization_pending` until then, and tokens once (the grant is gone
//! after). One-second polling interval: this is for local development.

use crate::{authenticate, issue, oauth_error, DevIdp, Refusal, DEMO_USERS};
use axum::extract::{Form, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use edge_core::text::html_escape;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// The device-code grant type.
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a device login may wait for its user (seconds).
const DEVICE_TTL_SECS: i64 = 600;

/// A device login in progress.
pub struct DeviceGrant {
    client_id: String,
    user_code: String,
    /// The demo user who approved it, once one has.
    approved: Option<usize>,
    expires: i64,
}

#[derive(Deserialize)]
pub struct AuthorizeForm {
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `POST /device/code`: a device code and the user code to confirm.
pub async fn authorize(
    State(idp): State<DevIdp>,
    headers: HeaderMap,
    Form(f): Form<AuthorizeForm>,
) -> Result<Response, Refusal> {
    let client_id = authenticate(
        &idp,
        &headers,
        f.client_id.as_deref(),
        f.client_secret.as_deref(),
    )?;
    let device_code = edge_core::Secret::random(24).expose().to_owned();
    let user_code = user_code();
    idp.0
        .devices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            device_code.clone(),
            DeviceGrant {
                client_id,
                user_code: user_code.clone(),
                approved: None,
                expires: crate::jwt::now() + DEVICE_TTL_SECS,
            },
        );
    let page = format!("{}/device", idp.0.issuer);
    Ok(Json(serde_json::json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": page,
        "verification_uri_complete": format!("{page}?user_code={user_code}"),
        "expires_in": DEVICE_TTL_SECS,
        "interval": 1,
    }))
    .into_response())
}

/// Eight letters from an alphabet without look-alikes, `XXXX-XXXX`.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    // Eight random bytes (hex from the OS CSPRNG), one letter each.
    let random = edge_core::Secret::random(8);
    let letters: String = random
        .expose()
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let b = std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            char::from(ALPHABET[usize::from(b) % ALPHABET.len()])
        })
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

#[derive(Deserialize)]
pub struct PageQuery {
    user_code: Option<String>,
}

/// `GET /device`: the code to confirm and a button per demo user.
pub async fn page(Query(q): Query<PageQuery>) -> Html<String> {
    let code = html_escape(q.user_code.as_deref().unwrap_or_default());
    let buttons = DEMO_USERS
        .iter()
        .map(|(sub, name, _)| {
            format!(
                r#"<li><button type="submit" name="user" value="{sub}">Confirm as {}</button></li>"#,
                html_escape(name)
            )
        })
        .collect::<String>();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Confirm a device login</title></head>
<body><h1>Development OpenID Provider</h1><p>A terminal asks to sign in. Confirm only if it shows this code:</p>
<form method="post" action="device"><label>Code <input name="user_code" value="{code}"></label><ul>{buttons}</ul></form></body></html>"#
    ))
}

#[derive(Deserialize)]
pub struct ApproveForm {
    user_code: String,
    user: String,
}

/// `POST /device`: the chosen demo user approves the login with that code.
pub async fn approve(State(idp): State<DevIdp>, Form(f): Form<ApproveForm>) -> Response {
    let Some(user) = DEMO_USERS.iter().position(|(sub, _, _)| *sub == f.user) else {
        return (StatusCode::BAD_REQUEST, "unknown demo user").into_response();
    };
    let wanted = f.user_code.trim().to_ascii_uppercase();
    let now = crate::jwt::now();
    let mut devices = idp.0.devices.lock().unwrap_or_else(|p| p.into_inner());
    devices.retain(|_, g| g.expires >= now);
    match devices.values_mut().find(|g| g.user_code == wanted) {
        Some(grant) => {
            grant.approved = Some(user);
            Html("<!doctype html><p>Signed in. You can return to your terminal.</p>")
                .into_response()
        }
        None => (StatusCode::BAD_REQUEST, "unknown or expired code").into_response(),
    }
}

/// The token request of the device grant.
pub fn token(idp: &DevIdp, client_id: String, device_code: Option<&str>) -> Response {
    let mut devices = idp.0.devices.lock().unwrap_or_else(|p| p.into_inner());
    let key = device_code.unwrap_or_default();
    let Some(grant) = devices.get(key) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown device code",
        );
    };
    if grant.client_id != client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "another client's code",
        );
    }
    if grant.expires < crate::jwt::now() {
        devices.remove(key);
        return oauth_error(StatusCode::BAD_REQUEST, "expired_token", "the code expired");
    }
    let Some(user) = grant.approved else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "not yet approved",
        );
    };
    devices.remove(key);
    drop(devices);
    issue(idp, &client_id, user, None)
}
