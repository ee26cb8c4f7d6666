//! Logins from a terminal (ADR 028): the `edge` CLI asks for a device login
//! (`POST /api/cli/login`), shows the user the provider's code and page,
//! and polls (`POST /api/cli/login/poll`) until the user approved it there.
//! The api-server runs the provider's device authorization grant with its
//! own client, hands the device code to the CLI sealed (signed with the
//! cookie keys, bound to this purpose, an expiry and the client's name),
//! keeps nothing between the calls, and ends the login with a bearer
//! session: listed under "my sessions", revoked by `POST /api/auth/logout`.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::session;
use crate::state::AppState;
use auth::device_login::DevicePoll;
use axum::extract::State;
use axum::Json;
use base64::Engine;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use serde::{Deserialize, Serialize};

/// The name and purpose the sealed login is signed under.
const SEAL_NAME: &str = "edge_cli_login";
const SEAL_PURPOSE: &str = "cli-device-login";
/// The longest client name kept.
const MAX_CLIENT_NAME: usize = 80;
/// Request bodies of both routes, at most.
pub const BODY_LIMIT: usize = 4096;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StartLogin {
    /// What the client calls itself in "my sessions" (default `edge CLI`).
    #[serde(default)]
    client: Option<String>,
}

/// A device login in progress.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginStarted {
    /// Sealed; send it back to poll (a secret: it can become a session).
    login: String,
    /// The code the user confirms on the provider's page.
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    /// Seconds until the login expires.
    expires_in: u64,
    /// Seconds to wait between polls.
    interval: u64,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    code: String,
    client: String,
}

/// Start a device login (RFC 8628) at the provider.
#[utoipa::path(
    post,
    path = "/api/cli/login",
    tag = "auth",
    request_body = StartLogin,
    responses(
        (status = 200, description = "the code to show and the login to poll with", body = LoginStarted),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 501, description = "the provider offers no device login", body = ErrorBody),
        (status = 503, description = "the identity provider is unavailable", body = ErrorBody)
    )
)]
pub async fn start(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<StartLogin>,
) -> Result<Json<LoginStarted>, ApiError> {
    let client = req
        .client
        .as_deref()
        .map(|c| edge_core::text::display_safe_bounded(c, MAX_CLIENT_NAME))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "edge CLI".to_owned());
    let login = state
        .oidc
        .start_device_login()
        .await?
        .ok_or(ApiError::DeviceLoginUnsupported)?;
    let expires =
        now_ms().saturating_add(i64::try_from(login.expires_in.min(3600)).unwrap_or(0) * 1000);
    let sealed = serde_json::to_vec(&Sealed {
        code: login.device_code.expose().to_owned(),
        client,
    })
    .map_err(|_| ApiError::Internal)?;
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    Ok(Json(LoginStarted {
        login: state.cookies.sign(SEAL_NAME, SEAL_PURPOSE, &value, expires),
        user_code: login.user_code,
        verification_uri: login.verification_uri,
        verification_uri_complete: login.verification_uri_complete,
        expires_in: login.expires_in,
        interval: login.interval,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PollLogin {
    login: String,
}

/// Where a device login stands: `pending` or `slow_down` (poll again after
/// the interval, plus five seconds for `slow_down`), or `done` with the
/// bearer token (shown once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginPolled {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// Ask once whether the user approved the login.
#[utoipa::path(
    post,
    path = "/api/cli/login/poll",
    tag = "auth",
    request_body = PollLogin,
    responses(
        (status = 200, description = "pending, slow_down, or done with the bearer token", body = LoginPolled),
        (status = 400, description = "the login was denied, expired or is not one of ours (`login_failed`)", body = ErrorBody),
        (status = 503, description = "the identity provider is unavailable", body = ErrorBody)
    )
)]
pub async fn poll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PollLogin>,
) -> Result<Json<LoginPolled>, ApiError> {
    let sealed = state
        .cookies
        .verify(SEAL_NAME, SEAL_PURPOSE, req.login.trim(), now_ms())
        .ok()
        .and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .ok()
        })
        .and_then(|v| serde_json::from_slice::<Sealed>(&v).ok())
        .ok_or_else(|| ApiError::LoginFailed("no such login, or it expired".into()))?;
    let code = edge_core::Secret::new(sealed.code);
    let identity = match state.oidc.poll_device_login(&code).await {
        Ok(DevicePoll::Pending) => return Ok(Json(status("pending"))),
        Ok(DevicePoll::SlowDown) => return Ok(Json(status("slow_down"))),
        Ok(DevicePoll::Done(identity)) => identity,
        Err(auth::oidc::OidcError::Rejected(code)) => {
            state.metrics.login("failed", "device_grant");
            return Err(ApiError::LoginFailed(format!("the provider said {code}")));
        }
        Err(err) => {
            state.metrics.login("failed", err.reason());
            return Err(err.into());
        }
    };
    let user = crate::auth_routes::upsert_identity(&state, &identity).await?;
    let (token, expires_at) =
        session::start_bearer_session(&state, user, identity.sid.as_deref(), &sealed.client)
            .await?;
    state
        .store
        .audit(
            user,
            "login",
            None,
            serde_json::json!({ "issuer": identity.issuer, "client": sealed.client }),
        )
        .await?;
    state.metrics.login("ok", "none");
    tracing::info!(%user, "user logged in from a terminal");
    Ok(Json(LoginPolled {
        status: "done",
        token: Some(token.expose().to_owned()),
        expires_at: Some(expires_at),
    }))
}

fn status(s: &'static str) -> LoginPolled {
    LoginPolled {
        status: s,
        token: None,
        expires_at: None,
    }
}
