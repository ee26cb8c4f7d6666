//! Login and session endpoints of the backend-for-frontend:
//! `GET /api/auth/login`, `GET /api/auth/callback`,
//! `POST /api/auth/backchannel-logout` (public; the provider's signed
//! logout token is its credential), and, for a signed-in caller, `GET /api/auth/me`, `POST /api/auth/logout`,
//! `GET /api/auth/sessions`, `DELETE /api/auth/sessions/{id}`.
//! Tokens never reach the browser; only the session cookie does.

use crate::error::{ApiError, ChangeErrors, SessionErrors};
use crate::extract::ApiQuery;
use crate::session::{
    self, pending_cookie_name, presented_session_hash, read_cookie, set_cookie, CurrentUser,
    PENDING_LOGIN_SECS,
};
use crate::state::AppState;
use auth::pending::{is_local_path, PendingLogin, PENDING_PURPOSE};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Local path to return to after the login (default `/`).
    return_to: Option<String>,
}

/// A `302` to `location`, never cached, setting `cookies`.
pub(crate) fn redirect(location: &str, cookies: &[String]) -> Result<Response, ApiError> {
    let mut res = StatusCode::FOUND.into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|_| ApiError::Internal)?,
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        res.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(c).map_err(|_| ApiError::Internal)?,
        );
    }
    Ok(res)
}

/// Start a login: 302 to the provider with PKCE, state and nonce; the
/// in-flight values ride in the signed pending-login cookie.
#[utoipa::path(
    get,
    path = "/api/auth/login",
    tag = "auth",
    params(LoginQuery),
    responses(
        (status = 302, description = "redirect to the provider's authorization endpoint"),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 503, description = "the provider is unavailable", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Result<Response, ApiError> {
    let return_to = q.return_to.unwrap_or_else(|| "/".into());
    if !is_local_path(&return_to) {
        return Err(ApiError::BadRequest(
            "return_to must be a local path".into(),
        ));
    }
    let start = state.oidc.start_login(return_to).await?;
    let secure = state.settings.cookie_secure;
    let name = pending_cookie_name(secure);
    let expires = now_ms() + PENDING_LOGIN_SECS * 1000;
    let value = state
        .cookies
        .sign(name, PENDING_PURPOSE, &start.pending.encode(), expires);
    redirect(
        &start.authorize_url,
        &[set_cookie(secure, name, &value, PENDING_LOGIN_SECS)],
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Finish a login: check state, exchange the code, verify the ID token,
/// upsert the user, end any session the browser held, start a new one.
/// Counted in `edge_api_logins` by outcome and reason.
#[utoipa::path(
    get,
    path = "/api/auth/callback",
    tag = "auth",
    params(CallbackQuery),
    responses(
        (status = 302, description = "signed in: redirect to the return path"),
        (status = 400, description = "the login failed", body = ErrorBody),
        (status = 503, description = "the provider is unavailable", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    match finish_callback(&state, headers, q).await {
        Ok(res) => {
            state.metrics.login("ok", "none");
            Ok(res)
        }
        Err((err, reason)) => {
            state.metrics.login("failed", reason);
            Err(err)
        }
    }
}

/// The user the provider vouched for, made or updated from its claims
/// (display-safe, bounded); every login ends here.
pub(crate) async fn upsert_identity(
    state: &AppState,
    identity: &auth::oidc::Identity,
) -> Result<edge_core::UserId, ApiError> {
    let clean = |s: &Option<String>, max| {
        s.as_deref()
            .map(|v| edge_core::text::display_safe_bounded(v, max))
            .filter(|v| !v.is_empty())
    };
    let user = state
        .store
        .upsert_user_claims(&store::UserClaims {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            email: clean(&identity.email, 320),
            email_verified: identity.email_verified,
            name: clean(&identity.name, 200),
        })
        .await?;
    Ok(user.id)
}

/// A failed login step and its metrics reason.
type Failed = (ApiError, &'static str);

fn failed(reason: &'static str) -> impl FnOnce(ApiError) -> Failed {
    move |e| (e, reason)
}

/// The callback in named steps: the provider's answer and our pending
/// login checked, the code exchanged and the ID token verified, then the
/// user's session started.
async fn finish_callback(
    state: &AppState,
    headers: HeaderMap,
    q: CallbackQuery,
) -> Result<Response, Failed> {
    let pending_name = pending_cookie_name(state.settings.cookie_secure);
    let (pending, code) = checked_callback(state, &headers, q, pending_name)?;
    let identity = state
        .oidc
        .finish_login(&code, &pending)
        .await
        .map_err(|e| {
            let reason = e.reason();
            (ApiError::from(e), reason)
        })?;
    let session_cookie = start_user_session(state, &headers, &identity).await?;
    let return_to = if is_local_path(&pending.return_to) {
        pending.return_to
    } else {
        "/".into()
    };
    redirect(
        &return_to,
        &[
            session_cookie,
            set_cookie(state.settings.cookie_secure, pending_name, "", 0),
        ],
    )
    .map_err(failed("error"))
}

/// The pending login (from its signed cookie) and the provider's code,
/// when the provider's answer is no error, carries code and state, and
/// the state is the one this login sent.
fn checked_callback(
    state: &AppState,
    headers: &HeaderMap,
    q: CallbackQuery,
    pending_name: &str,
) -> Result<(PendingLogin, String), Failed> {
    if let Some(err) = q.error {
        let code: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err((
            ApiError::LoginFailed(format!("the provider refused the login ({code})")),
            "provider_error",
        ));
    }
    let pending = read_cookie(headers, pending_name)
        .and_then(|raw| {
            state
                .cookies
                .verify(pending_name, PENDING_PURPOSE, raw, now_ms())
                .ok()
        })
        .and_then(|v| PendingLogin::decode(&v))
        .ok_or_else(|| {
            (
                ApiError::LoginFailed(
                    "no login in progress (missing or expired login cookie)".into(),
                ),
                "no_login",
            )
        })?;
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return Err((
            ApiError::LoginFailed("the provider's answer lacks code or state".into()),
            "bad_callback",
        ));
    };
    if !pending.state_matches(&returned_state) {
        return Err((ApiError::LoginFailed("state mismatch".into()), "state"));
    }
    Ok((pending, code))
}

/// The verified user's record updated, any session the browser held
/// ended (session fixation), a fresh session started and the login
/// audited; the new session's `Set-Cookie`.
async fn start_user_session(
    state: &AppState,
    headers: &HeaderMap,
    identity: &auth::oidc::Identity,
) -> Result<String, Failed> {
    let user = upsert_identity(state, identity)
        .await
        .map_err(failed("error"))?;
    if let Some(old) = presented_session_hash(state, headers) {
        state
            .store
            .delete_session(&old)
            .await
            .map_err(|e| failed("error")(e.into()))?;
    }
    let session_cookie = session::start_login_session(state, user, identity.sid.as_deref())
        .await
        .map_err(failed("error"))?;
    state
        .store
        .audit(
            user,
            "login",
            None,
            serde_json::json!({ "issuer": identity.issuer }),
        )
        .await
        .map_err(|e| failed("error")(e.into()))?;
    tracing::info!(%user, "user logged in");
    Ok(session_cookie)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    id: String,
    email: Option<String>,
    /// Whether the provider verified the email (`null`: it did not say).
    email_verified: Option<bool>,
    name: Option<String>,
}

async fn me_of(state: &AppState, user: &CurrentUser) -> Result<Me, ApiError> {
    let u = state
        .store
        .user(user.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(Me {
        id: u.id.to_string(),
        email: u.email,
        email_verified: u.email_verified,
        name: u.name,
    })
}

#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("session" = [])),
    responses(
        (status = 200, description = "the signed-in user", body = Me),
        SessionErrors
    )
)]
pub async fn me(user: CurrentUser, State(state): State<AppState>) -> Result<Json<Me>, ApiError> {
    Ok(Json(me_of(&state, &user).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    signed_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Me>,
}

/// `GET /api/auth/status` (public): whether the caller is signed in, and as
/// whom. The console asks this on load, so a signed-out visitor does not
/// provoke a 401 (which the browser would log as an error).
#[utoipa::path(
    get,
    path = "/api/auth/status",
    tag = "auth",
    responses(
        (status = 200, description = "whether the caller is signed in, and as whom", body = Status),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn status(
    user: Option<CurrentUser>,
    State(state): State<AppState>,
) -> Result<Json<Status>, ApiError> {
    let user = match user {
        Some(u) => Some(me_of(&state, &u).await?),
        None => None,
    };
    Ok(Json(Status {
        signed_in: user.is_some(),
        user,
    }))
}

/// Where to go to sign out at the provider too (`null`: it has no such page).
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoggedOut {
    end_session_url: Option<String>,
}

/// End the caller's session; returns the provider's end-session URL when it
/// advertises one.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "signed out; the provider's end-session URL if it has one", body = LoggedOut),
        ChangeErrors
    )
)]
pub async fn logout(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    state.store.delete_session(&user.session_hash).await?;
    state.access_changes.notify();
    state
        .store
        .audit(user.id, "logout", None, serde_json::json!({}))
        .await?;
    let secure = state.settings.cookie_secure;
    let end_session_url = state.oidc.end_session_url().await;
    let mut res = Json(LoggedOut { end_session_url }).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie(secure, session::cookie_name(secure), "", 0))
            .map_err(|_| ApiError::Internal)?,
    );
    Ok(res)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    id: String,
    /// `browser` (the console's cookie) or `bearer` (a terminal's, from
    /// `edge login`).
    #[schema(value_type = String)]
    kind: store::SessionKind,
    /// What a terminal called itself (`edge CLI on HOST`).
    client: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    current: bool,
}

/// The caller's live sessions.
#[utoipa::path(
    get,
    path = "/api/auth/sessions",
    tag = "auth",
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's sessions", body = Vec<SessionView>),
        SessionErrors
    )
)]
pub async fn list_sessions(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let current = state
        .store
        .session(&user.session_hash)
        .await?
        .map(|s| s.public_id);
    let sessions = state.store.sessions_of(user.id, now_ms()).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| SessionView {
                current: current.as_deref() == Some(s.public_id.as_str()),
                id: s.public_id,
                kind: s.kind,
                client: s.label,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
            })
            .collect(),
    ))
}

/// End one of the caller's sessions (404 for anyone else's).
#[utoipa::path(
    delete,
    path = "/api/auth/sessions/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "session id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "the session ended"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn end_session(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = crate::extract::public_id(&id)?;
    if state.store.delete_session_of(user.id, id).await? {
        state.access_changes.notify();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LogoutTokenForm {
    logout_token: String,
}

/// `POST /api/auth/backchannel-logout` (OIDC Back-Channel Logout 1.0): the
/// provider ends a user's sessions server-side. The logout token is
/// verified (signature, iss, aud, iat window, events, no nonce, sid or sub)
/// and its `jti` is accepted once across all replicas; then the sessions it
/// names are deleted, which also ends their device access (every device
/// origin request and open WebSocket re-checks the session).
#[utoipa::path(
    post,
    path = "/api/auth/backchannel-logout",
    tag = "auth",
    request_body(content = LogoutTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "the provider's session is ended here"),
        (status = 400, description = "the logout token is not acceptable", body = ErrorBody),
        (status = 415, description = "not a form", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn backchannel_logout(
    State(state): State<AppState>,
    crate::extract::ApiForm(form): crate::extract::ApiForm<LogoutTokenForm>,
) -> Result<Response, ApiError> {
    let request = state
        .oidc
        .verify_logout_token(form.logout_token.trim())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "back-channel logout refused");
            ApiError::InvalidLogoutToken("the logout token was not acceptable".into())
        })?;
    let jti_hash =
        edge_core::secret::sha256_hex(format!("{}\n{}", request.issuer, request.jti).as_bytes());
    // The jti is remembered and the sessions deleted in one transaction:
    // a failed delete leaves the token unused, so the provider's retry
    // still ends the sessions.
    let Some(ended) = state
        .store
        .end_idp_sessions_once(
            &jti_hash,
            now_ms(),
            request.accept_until.saturating_mul(1000),
            (
                &request.issuer,
                request.subject.as_deref(),
                request.sid.as_deref(),
            ),
        )
        .await?
    else {
        tracing::warn!("back-channel logout refused: logout token replayed");
        return Err(ApiError::InvalidLogoutToken(
            "the logout token was already used".into(),
        ));
    };
    state.access_changes.notify();
    tracing::info!(sessions = ended, "back-channel logout ended sessions");
    let mut res = StatusCode::OK.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
