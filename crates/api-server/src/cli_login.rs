//! Logins from a terminal (ADR 028), each ending with a bearer session
//! (listed under "my sessions", revoked by `POST /api/auth/logout`):
//!
//! - The device login: the `edge` CLI asks for one (`POST /api/cli/login`),
//!   shows the user the provider's code and page, and polls
//!   (`POST /api/cli/login/poll`) until the user approved it there. The
//!   api-server runs the provider's device authorization grant with its
//!   own client and hands the device code to the CLI sealed (signed with
//!   the cookie keys, bound to this purpose, an expiry and the client's
//!   name).
//! - The loopback login (RFC 8252, for providers without a device
//!   endpoint): the CLI listens on `127.0.0.1`, and the user opens
//!   `GET /api/cli/authorize` in a browser, signing in to the console as
//!   usual if needed; the api-server sends the browser to the CLI's port
//!   with a short-lived sealed code bound to the CLI's PKCE challenge, and
//!   the CLI trades code and verifier at `POST /api/cli/login/code`.
//!
//! Nothing is kept between the calls.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::session::{self, CurrentUser};
use crate::state::AppState;
use auth::device_login::DevicePoll;
use axum::extract::{OriginalUri, State};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use serde::{Deserialize, Serialize};

/// The name and purpose the sealed login is signed under.
const SEAL_NAME: &str = "edge_cli_login";
const SEAL_PURPOSE: &str = "cli-device-login";
/// The name and purpose the loopback login's code is signed under.
const CODE_NAME: &str = "edge_cli_code";
const CODE_PURPOSE: &str = "cli-loopback-code";
/// How long the loopback login's code is good for.
const CODE_TTL_MS: i64 = 120_000;
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
    let client = client_name(req.client.as_deref());
    let login = state
        .oidc
        .start_device_login()
        .await?
        .ok_or(ApiError::DeviceLoginUnsupported)?;
    let expires =
        now_ms().saturating_add(i64::try_from(login.expires_in.min(3600)).unwrap_or(0) * 1000);
    let sealed = Sealed {
        code: login.device_code.expose().to_owned(),
        client,
    };
    Ok(Json(LoginStarted {
        login: seal(&state, (SEAL_NAME, SEAL_PURPOSE), &sealed, expires)?,
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
    let sealed: Sealed = unseal(&state, (SEAL_NAME, SEAL_PURPOSE), &req.login)
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
    let detail = serde_json::json!({ "issuer": identity.issuer, "client": sealed.client });
    done(
        &state,
        user,
        identity.sid.as_deref(),
        &sealed.client,
        detail,
    )
    .await
}

/// End a terminal's login: its bearer session, the audit row, the metric.
async fn done(
    state: &AppState,
    user: edge_core::UserId,
    idp_sid: Option<&str>,
    client: &str,
    detail: serde_json::Value,
) -> Result<Json<LoginPolled>, ApiError> {
    let (token, expires_at) = session::start_bearer_session(state, user, idp_sid, client).await?;
    state.store.audit(user, "login", None, detail).await?;
    state.metrics.login("ok", "none");
    tracing::info!(%user, "user logged in from a terminal");
    Ok(Json(LoginPolled {
        status: "done",
        token: Some(token.expose().to_owned()),
        expires_at: Some(expires_at),
    }))
}

/// `value` as JSON, base64url, signed with the cookie keys under `(name,
/// purpose)` until `expires` (ms): readable by its holder, unforgeable.
fn seal<T: Serialize>(
    state: &AppState,
    (name, purpose): (&str, &str),
    value: &T,
    expires: i64,
) -> Result<String, ApiError> {
    let json = serde_json::to_vec(value).map_err(|_| ApiError::Internal)?;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    Ok(state.cookies.sign(name, purpose, &encoded, expires))
}

/// What [`seal`] sealed, if `raw` is ours, for `(name, purpose)`, and not
/// expired.
fn unseal<T: serde::de::DeserializeOwned>(
    state: &AppState,
    (name, purpose): (&str, &str),
    raw: &str,
) -> Option<T> {
    let encoded = state
        .cookies
        .verify(name, purpose, raw.trim(), now_ms())
        .ok()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

fn status(s: &'static str) -> LoginPolled {
    LoginPolled {
        status: s,
        token: None,
        expires_at: None,
    }
}

/// The query of the loopback login's first step.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// The CLI's port on `127.0.0.1` (1024 or above).
    port: u16,
    /// `BASE64URL(SHA-256(verifier))`, 43 characters (PKCE S256).
    challenge: String,
    /// Echoed back to the CLI.
    state: String,
    /// What the CLI calls itself.
    client: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SealedCode {
    user: String,
    challenge: String,
    client: String,
}

fn url_safe(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The loopback login (RFC 8252): a signed-in browser is sent to the CLI's
/// port on `127.0.0.1` with a two-minute code bound to the CLI's PKCE
/// challenge; a browser without a session signs in first and comes back.
#[utoipa::path(
    get,
    path = "/api/cli/authorize",
    tag = "auth",
    params(AuthorizeQuery),
    responses(
        (status = 302, description = "to the CLI's loopback port with a code, or to the login first"),
        (status = 400, description = "malformed port, challenge or state", body = ErrorBody)
    )
)]
pub async fn authorize(
    user: Option<CurrentUser>,
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<AuthorizeQuery>,
) -> Result<Response, ApiError> {
    if q.port < 1024 || !url_safe(&q.challenge, 43, 43) || !url_safe(&q.state, 8, 128) {
        return Err(ApiError::BadRequest(
            "port (1024 or above), challenge (PKCE S256) and state are required".into(),
        ));
    }
    let Some(user) = user.filter(|u| u.via == store::SessionKind::Browser) else {
        let back = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let to = format!(
            "/api/auth/login?return_to={}",
            url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        );
        return crate::auth_routes::redirect(&to, &[]);
    };
    let sealed = SealedCode {
        user: user.id.to_string(),
        challenge: q.challenge,
        client: client_name(q.client.as_deref()),
    };
    let code = seal(
        &state,
        (CODE_NAME, CODE_PURPOSE),
        &sealed,
        now_ms() + CODE_TTL_MS,
    )?;
    let mut to = url::Url::parse(&format!("http://127.0.0.1:{}/callback", q.port))
        .map_err(|_| ApiError::Internal)?;
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    crate::auth_routes::redirect(to.as_str(), &[])
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TradeCode {
    code: String,
    /// The PKCE verifier whose S256 challenge the code is bound to.
    verifier: String,
}

/// The loopback login's last step: the code and the PKCE verifier for a
/// bearer session.
#[utoipa::path(
    post,
    path = "/api/cli/login/code",
    tag = "auth",
    request_body = TradeCode,
    responses(
        (status = 200, description = "done, with the bearer token", body = LoginPolled),
        (status = 400, description = "the code is expired, not ours, or not for this verifier (`login_failed`)", body = ErrorBody)
    )
)]
pub async fn trade_code(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TradeCode>,
) -> Result<Json<LoginPolled>, ApiError> {
    let refused = || ApiError::LoginFailed("the code is expired or not for this client".into());
    let sealed: SealedCode =
        unseal(&state, (CODE_NAME, CODE_PURPOSE), &req.code).ok_or_else(refused)?;
    use sha2::Digest;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(req.verifier.as_bytes()));
    let matches = edge_core::Secret::new(challenge).ct_eq(&sealed.challenge);
    let user: edge_core::UserId = sealed.user.parse().map_err(|_| refused())?;
    if !matches {
        state.metrics.login("failed", "pkce");
        return Err(refused());
    }
    let detail = serde_json::json!({ "client": sealed.client, "via": "loopback" });
    done(&state, user, None, &sealed.client, detail).await
}

/// What the client calls itself, display-safe and bounded.
fn client_name(raw: Option<&str>) -> String {
    raw.map(|c| edge_core::text::display_safe_bounded(c, MAX_CLIENT_NAME))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "edge CLI".to_owned())
}
