//! User sessions on the server side: creating one (a fresh id every time),
//! resolving the caller from the session cookie, idle and absolute expiry.
//! [`CurrentUser`] is the only way a handler learns who is calling.

use crate::error::ApiError;
use crate::state::AppState;
use auth::SessionId;
use axum::extract::FromRequestParts;
use edge_core::time::now_ms;
use edge_core::UserId;
use http::header;
use http::request::Parts;

/// Purpose bound into the session cookie's MAC.
pub const SESSION_PURPOSE: &str = "session";
/// Refresh `last_seen` at most this often (ms) to spare the store.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Cookie name: `__Host-` prefixed whenever cookies are Secure.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edge_session"
    } else {
        "edge_session"
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    /// Hash of the session id the request came with.
    pub session_hash: String,
}

/// Start a new session for `user`; returns the `Set-Cookie` header value.
pub async fn start_session(state: &AppState, user: UserId) -> Result<String, ApiError> {
    let id = SessionId::generate();
    let now = now_ms();
    let lifetime = i64::try_from(state.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lifetime);
    state
        .store
        .create_session(&id.hash(), user, now, expires)
        .await?;
    let name = cookie_name(state.settings.cookie_secure);
    let value = state
        .cookies
        .sign(name, SESSION_PURPOSE, id.expose(), expires);
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    Ok(format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        lifetime / 1000
    ))
}

/// The value of cookie `name` in the request, if present.
pub fn read_cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = cookie_name(state.settings.cookie_secure);
        let raw = read_cookie(parts, name).ok_or(ApiError::Unauthenticated)?;
        let now = now_ms();
        let value = state
            .cookies
            .verify(name, SESSION_PURPOSE, raw, now)
            .map_err(|_| ApiError::Unauthenticated)?;
        let id = SessionId::from_cookie_value(&value).ok_or(ApiError::Unauthenticated)?;
        let hash = id.hash();
        let record = state
            .store
            .session(&hash)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        let idle = i64::try_from(state.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
        if now >= record.expires_at || now.saturating_sub(record.last_seen_at) >= idle {
            state.store.delete_session(&hash).await?;
            return Err(ApiError::Unauthenticated);
        }
        if now - record.last_seen_at >= TOUCH_EVERY_MS {
            state.store.touch_session(&hash, now).await?;
        }
        Ok(Self {
            id: record.user_id,
            session_hash: hash,
        })
    }
}
