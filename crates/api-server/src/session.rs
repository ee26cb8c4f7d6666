//! User sessions on the server side and the cookies that reference them:
//! creating a session (a fresh id every time), resolving the caller from the
//! session cookie (idle and absolute expiry), and the CSRF rule for
//! state-changing requests. [`CurrentUser`] is the only way a handler learns
//! who is calling; there is no fallback identity.
//!
//! Bearer sessions (ADR 028) are the `edge` CLI's: the same table, made
//! by the device login, presented as `Authorization: Bearer edge_s_…`.
//! A request that carries such a bearer is judged by it alone, and refused
//! when it comes from a browser (an `Origin`, `Sec-Fetch-*` or our session
//! cookie beside it); each kind of session opens only its own door. Any
//! other `Authorization` is not ours and is ignored here.
//!
//! Service accounts' access tokens (ADR 029) are bearers too, of kind
//! `service`: they carry scopes and a label selector. [`CurrentUser`]
//! refuses them (403 `insufficient_scope`); a handler that serves them
//! takes [`Scoped`] with the scope it needs, so a route is closed to
//! service accounts unless its signature opens it.
//!
//! Cookies: `HttpOnly`, `Path=/`, no `Domain`, `Secure` and the `__Host-`
//! prefix unless `--cookie-insecure` (plain-http local development).
//! `SameSite=Lax` for both: the pending-login cookie must survive the
//! provider's top-level redirect back, and the session cookie must be sent
//! when a user follows a link into the console; cross-site state changes are
//! stopped by the CSRF header rule instead.

use crate::error::ApiError;
use crate::state::AppState;
use auth::SessionId;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use edge_core::fields::{visible, Fields};
use edge_core::scope::Scope;
use edge_core::time::now_ms;
use edge_core::{DeviceId, UserId};
use http::request::Parts;
use http::{header, Method};
use std::marker::PhantomData;
use store::{Actor, ServiceGrant, SessionKind};

/// Purpose bound into the session cookie's MAC.
pub const SESSION_PURPOSE: &str = "session";
/// Header a state-changing request must carry (value `1`).
pub const CSRF_HEADER: http::HeaderName = http::HeaderName::from_static("x-csrf");
/// Lifetime of the pending-login cookie (s).
pub const PENDING_LOGIN_SECS: i64 = 600;

/// Session cookie name: `__Host-` prefixed whenever cookies are Secure.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edge_session"
    } else {
        "edge_session"
    }
}

/// Pending-login cookie name.
pub fn pending_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edge_login"
    } else {
        "edge_login"
    }
}

/// Device-origin cookie name (host-only on one device's origin).
pub fn device_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-edge_device"
    } else {
        "edge_device"
    }
}

/// Purpose bound into a device cookie's MAC: valid for one device only.
pub fn device_cookie_purpose(device: edge_core::DeviceId) -> String {
    format!("device-ui:{device}")
}

/// A `Set-Cookie` value with this platform's attributes.
pub fn set_cookie(secure: bool, name: &str, value: &str, max_age_secs: i64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
}

/// What a bearer session's token starts with.
pub const BEARER_PREFIX: &str = "edge_s_";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    /// Hash of the session id the request came with.
    pub session_hash: String,
    /// The session's kind: the console's cookie, a person's bearer (the
    /// `edge` CLI) or a service account's access token.
    pub via: SessionKind,
    /// A service account's token: what it was granted. `None`: a person.
    pub service: Option<ServiceGrant>,
}

impl CurrentUser {
    /// Who an audit event is recorded under: the owner, and the service
    /// account when one acts.
    pub fn actor(&self) -> Actor {
        Actor {
            user: self.id,
            service_account: self.service.as_ref().map(|g| g.account.clone()),
        }
    }

    /// Labels a device must all carry to be seen (a person: none).
    pub fn selector(&self) -> &[String] {
        self.service.as_ref().map_or(&[], |g| &g.selector[..])
    }

    /// Whether a device carrying `labels` is visible to the caller.
    pub fn sees(&self, labels: &[String]) -> bool {
        self.service.as_ref().is_none_or(|g| g.admits(labels))
    }

    /// Whether the caller may do what `scope` names (a person may do all).
    pub fn may(&self, scope: Scope) -> bool {
        self.service.as_ref().is_none_or(|g| g.scopes.grants(scope))
    }

    /// Whether the session is a bearer (a person's CLI or a service account).
    pub fn is_bearer(&self) -> bool {
        matches!(self.via, SessionKind::Bearer | SessionKind::Service)
    }
}

/// Start a new session for `user`; returns the `Set-Cookie` header value.
pub async fn start_session(state: &AppState, user: UserId) -> Result<String, ApiError> {
    start_login_session(state, user, None).await
}

/// [`start_session`] remembering the provider's session id (`sid`) for
/// back-channel logout.
pub async fn start_login_session(
    state: &AppState,
    user: UserId,
    idp_sid: Option<&str>,
) -> Result<String, ApiError> {
    let (id, public_id, now, expires) = fresh_session(state);
    state
        .store
        .create_session(&id.hash(), &public_id, user, now, expires, idp_sid)
        .await?;
    let secure = state.settings.cookie_secure;
    let name = cookie_name(secure);
    let value = state
        .cookies
        .sign(name, SESSION_PURPOSE, id.expose(), expires);
    Ok(set_cookie(secure, name, &value, (expires - now) / 1000))
}

/// A new session's id, public id, start and end (ms).
fn fresh_session(state: &AppState) -> (SessionId, String, i64, i64) {
    let now = now_ms();
    let lifetime = i64::try_from(state.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    (
        SessionId::generate(),
        edge_core::Secret::random(12).expose().to_owned(),
        now,
        now.saturating_add(lifetime),
    )
}

/// Start a bearer session (ADR 028) for `user`, named `label` in "my
/// sessions"; returns the token to hand to the client, once.
pub async fn start_bearer_session(
    state: &AppState,
    user: UserId,
    idp_sid: Option<&str>,
    label: &str,
) -> Result<(edge_core::Secret, i64), ApiError> {
    let (id, public_id, now, expires) = fresh_session(state);
    state
        .store
        .create_bearer_session(
            &bearer_hash(&id),
            &public_id,
            user,
            (now, expires),
            idp_sid,
            label,
        )
        .await?;
    Ok((
        edge_core::Secret::new(format!("{BEARER_PREFIX}{}", id.expose())),
        expires,
    ))
}

/// What the store keeps of a bearer session's id: its hash in a namespace
/// of its own, so a browser session's id presented as a bearer names
/// nothing (and a bearer id cannot be a cookie: cookies are signed).
pub fn bearer_hash(id: &SessionId) -> String {
    edge_core::secret::sha256_hex(format!("bearer:{}", id.expose()).as_bytes())
}

/// The session id in an `Authorization: Bearer edge_s_…` header: `None`
/// when there is no bearer of ours (an `Authorization` meant for something
/// else is left alone), `Some(None)` when it has our prefix but is no id.
fn presented_bearer(headers: &impl Fields) -> Option<Option<SessionId>> {
    let token = headers
        .text(&header::AUTHORIZATION)?
        .strip_prefix("Bearer ")?
        .trim()
        .strip_prefix(BEARER_PREFIX)?;
    Some(SessionId::from_cookie_value(token))
}

/// The session a request presents, by its stored hash, and how: a bearer
/// (judged alone; refused from a browser) or else the session cookie.
/// `None`: neither.
pub fn presented_session(
    state: &AppState,
    headers: &impl Fields,
) -> Result<Option<(String, SessionKind)>, ApiError> {
    if let Some(bearer) = presented_bearer(headers) {
        if from_browser(state, headers) {
            return Err(ApiError::BearerFromBrowser);
        }
        let id = bearer.ok_or(ApiError::Unauthenticated)?;
        let hash = state
            .verified_bearers
            .session_hash(id.expose(), now_ms(), || Some((bearer_hash(&id), i64::MAX)))
            .ok_or(ApiError::Unauthenticated)?;
        return Ok(Some((hash, SessionKind::Bearer)));
    }
    Ok(presented_session_hash(state, headers).map(|h| (h, SessionKind::Browser)))
}

/// Whether a request comes from a browser's page: fetch metadata
/// ([`crate::hygiene::from_browser`]), an `Origin`, or our session cookie.
fn from_browser(state: &AppState, headers: &impl Fields) -> bool {
    crate::hygiene::from_browser(headers)
        || headers.has(&header::ORIGIN)
        || read_cookie(headers, cookie_name(state.settings.cookie_secure)).is_some()
}

/// The `Cookie` request header value (`name=value`) that presents session
/// `id`, signed until `expires` (Unix ms): what a browser sends after login,
/// for programs and harnesses that hold a session made in the store.
pub fn session_cookie_pair(
    cookies: &auth::CookieKeys,
    secure: bool,
    id: &SessionId,
    expires: i64,
) -> String {
    let name = cookie_name(secure);
    format!(
        "{name}={}",
        cookies.sign(name, SESSION_PURPOSE, id.expose(), expires)
    )
}

/// A session of `user` made directly in `store`, lasting `lifetime_ms`,
/// and its `Cookie` header value signed with the session key the
/// api-server keeps in `data_dir` (made there when missing): how
/// harnesses that start the api-server binary over a data directory they
/// own (benchmarks, soak, fault tests) sign a user in without a provider.
pub async fn sign_in_over_data_dir(
    store: &store::Store,
    data_dir: &std::path::Path,
    user: edge_core::UserId,
    via: &str,
    lifetime_ms: i64,
) -> Result<String, ApiError> {
    let key = edge_core::secret::load_or_create_file(&data_dir.join("session-key"))
        .map_err(|e| ApiError::Config(format!("session key: {e}")))?;
    let key = auth::CookieKey::new(key)
        .ok_or_else(|| ApiError::Config("session key shorter than 32 bytes".into()))?;
    let cookies = auth::CookieKeys::new(key, vec![]);
    let sid = SessionId::generate();
    let now = edge_core::time::now_ms();
    store
        .create_session(&sid.hash(), via, user, now, now + lifetime_ms, None)
        .await?;
    Ok(session_cookie_pair(
        &cookies,
        false,
        &sid,
        now + lifetime_ms,
    ))
}

/// The value of cookie `name` in the request, if present.
pub fn read_cookie<'a>(headers: &'a impl Fields, name: &str) -> Option<&'a str> {
    // `name=` at the start of a pair: a cookie name holds no `=`, so this
    // is the pair whose name (before its first `=`) is `name`.
    headers.values_of(&header::COOKIE).find_map(|v| {
        visible(v)?
            .split(';')
            .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
    })
}

/// The hash of the session id in a validly signed session cookie, if any
/// (whether or not the session still exists).
pub fn presented_session_hash(state: &AppState, headers: &impl Fields) -> Option<String> {
    let name = cookie_name(state.settings.cookie_secure);
    let raw = read_cookie(headers, name)?;
    let now = now_ms();
    state.verified_cookies.session_hash(raw, now, || {
        let (value, expires_at) = state
            .cookies
            .verify_until(name, SESSION_PURPOSE, raw, now)
            .ok()?;
        SessionId::from_cookie_value(&value).map(|id| (id.hash(), expires_at))
    })
}

/// Every method but GET, HEAD and OPTIONS needs `X-CSRF: 1`; any request
/// that sends an `Origin` must send ours (this also covers WebSocket
/// upgrades).
pub fn check_csrf(
    method: &Method,
    headers: &impl Fields,
    public_origin: &str,
) -> Result<(), ApiError> {
    if let Some(origin) = headers.first(&header::ORIGIN) {
        if origin != public_origin.as_bytes() {
            return Err(ApiError::Forbidden);
        }
    }
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && headers.first(&CSRF_HEADER) != Some(&b"1"[..]) {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// The live session stored under `hash`: it exists, is within its idle and
/// absolute limits (an expired one is deleted), and is touched at most once
/// a minute. The console's cookie and a device origin's cookie both end here.
pub async fn live_session(state: &AppState, hash: &str) -> Result<UserId, ApiError> {
    live_session_of(state, hash, SessionKind::Browser).await
}

/// [`live_session`] for a session presented through `door`'s kind (a
/// cookie names only browser sessions; a bearer, a person's or a service
/// account's); another kind is no session.
pub async fn live_session_of(
    state: &AppState,
    hash: &str,
    door: SessionKind,
) -> Result<UserId, ApiError> {
    Ok(live_record(state, hash, door).await?.user_id)
}

/// The live session record behind [`live_session_of`].
async fn live_record(
    state: &AppState,
    hash: &str,
    door: SessionKind,
) -> Result<store::SessionRecord, ApiError> {
    let record = state
        .store
        .session(hash)
        .await?
        .filter(|r| door_of(r.kind) == door)
        .ok_or(ApiError::Unauthenticated)?;
    still_live(state, hash, &record, Check::Activity).await?;
    Ok(record)
}

/// How a session of `kind` is presented: a browser session by its cookie,
/// every other by `Authorization: Bearer`.
fn door_of(kind: SessionKind) -> SessionKind {
    match kind {
        SessionKind::Browser => SessionKind::Browser,
        SessionKind::Bearer | SessionKind::Service => SessionKind::Bearer,
    }
}

/// Whether a session may reach a device remotely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Its user owns the device (and a service account's selector admits
    /// it and it holds `devices:remote`).
    Granted,
    /// A service account that sees the device but lacks `devices:remote`.
    NoScope,
    /// Not the caller's, or outside a service account's selector: a 404.
    Hidden,
}

/// Who is behind the session under `hash` (as [`live_session`]) and
/// whether they may reach `device`, read in one statement: the check
/// behind every proxied request and every open connection's re-check.
/// A grant is remembered for `access_cache_ttl` (under a second; emptied
/// at once when this replica ends a session or deletes a device).
pub async fn session_and_device(
    state: &AppState,
    hash: &str,
    device: DeviceId,
    check: Check,
) -> Result<(Actor, Reach), ApiError> {
    let ttl = state.settings.access_cache_ttl;
    if let Some(actor) = state.access_changes.granted(hash, device, ttl) {
        return Ok((actor, Reach::Granted));
    }
    let generation = state.access_changes.generation();
    let (record, labels) = state
        .store
        .session_access(hash, device)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let user = still_live(state, hash, &record, check).await?;
    let reach = match (&labels, &record.service) {
        (None, _) => Reach::Hidden,
        (Some(labels), Some(grant)) if !grant.admits(labels) => Reach::Hidden,
        (Some(_), Some(grant)) if !grant.scopes.grants(Scope::DevicesRemote) => Reach::NoScope,
        (Some(_), _) => Reach::Granted,
    };
    let actor = Actor {
        user,
        service_account: record.service.map(|g| g.account),
    };
    if reach == Reach::Granted && !ttl.is_zero() {
        state
            .access_changes
            .grant(hash, device, actor.clone(), generation);
    }
    Ok((actor, reach))
}

/// Whether a session check is the user's own activity (a request they
/// made, which keeps the session from idling out) or a re-check made for
/// them (an open connection's), which must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Activity,
    Recheck,
}

/// `record`'s user when the session is within its limits; an expired
/// session is deleted. Writes only when expired or, for the user's own
/// activity, once a minute.
async fn still_live(
    state: &AppState,
    hash: &str,
    record: &store::SessionRecord,
    check: Check,
) -> Result<UserId, ApiError> {
    let now = now_ms();
    let idle = i64::try_from(state.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
    if now >= record.expires_at || now.saturating_sub(record.last_seen_at) >= idle {
        state.store.delete_session(hash).await?;
        return Err(ApiError::Unauthenticated);
    }
    let touch_every =
        i64::try_from(state.settings.session_touch_every.as_millis()).unwrap_or(i64::MAX);
    if check == Check::Activity && now - record.last_seen_at >= touch_every {
        state.store.touch_session(hash, now).await?;
    }
    Ok(record.user_id)
}

/// The caller of a request, whatever kind of session it presents.
async fn any_caller(parts: &Parts, state: &AppState) -> Result<CurrentUser, ApiError> {
    let (hash, door) =
        presented_session(state, &parts.headers)?.ok_or(ApiError::Unauthenticated)?;
    let record = live_record(state, &hash, door).await?;
    if door == SessionKind::Browser {
        check_csrf(&parts.method, &parts.headers, &state.settings.public_origin)?;
    }
    Ok(CurrentUser {
        id: record.user_id,
        session_hash: hash,
        via: record.kind,
        service: record.service,
    })
}

/// A person (the console or the `edge` CLI): service accounts' tokens
/// get 403 `insufficient_scope` from every route that takes this.
impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = any_caller(parts, state).await?;
        if caller.service.is_some() {
            return Err(ApiError::InsufficientScope);
        }
        Ok(caller)
    }
}

/// The scope a route needs of a service account's token.
pub trait NeedsScope {
    const SCOPE: Scope;
}

/// Listing and reading devices and their telemetry.
#[derive(Debug)]
pub struct ReadDevices;
/// Changing, deleting and pairing devices.
#[derive(Debug)]
pub struct ManageDevices;
/// Reaching a box (the proxied API, `edge forward`).
#[derive(Debug)]
pub struct RemoteAccess;

impl NeedsScope for ReadDevices {
    const SCOPE: Scope = Scope::DevicesRead;
}
impl NeedsScope for ManageDevices {
    const SCOPE: Scope = Scope::DevicesManage;
}
impl NeedsScope for RemoteAccess {
    const SCOPE: Scope = Scope::DevicesRemote;
}

/// A person, or a service account whose token holds `S`'s scope (403
/// `insufficient_scope` otherwise). Dereferences to [`CurrentUser`],
/// whose [`CurrentUser::sees`] applies the account's label selector.
#[derive(Debug)]
pub struct Scoped<S>(pub CurrentUser, PhantomData<S>);

impl<S> std::ops::Deref for Scoped<S> {
    type Target = CurrentUser;

    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<S: NeedsScope + Send> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = any_caller(parts, state).await?;
        if !caller.may(S::SCOPE) {
            return Err(ApiError::InsufficientScope);
        }
        Ok(Self(caller, PhantomData))
    }
}

/// `Option<CurrentUser>`: `None` when the request carries no live session
/// (for the one public route that tells the console whether it is signed
/// in); store errors and CSRF failures are still errors.
impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        match <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(user) => Ok(Some(user)),
            Err(ApiError::Unauthenticated) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_by_its_whole_name_in_any_cookie_field() {
        let mut h = http::HeaderMap::new();
        let mut add = |v: &'static [u8]| {
            h.append(header::COOKIE, http::HeaderValue::from_bytes(v).unwrap());
        };
        add(b"edge_session2=no; other=1");
        add(b"bad=\x80; edge_session=hidden");
        add(b" a = 1 ;edge_session ; edge_session=yes=1 ; edge_session=later");
        assert_eq!(read_cookie(&h, "edge_session"), Some("yes=1"));
        assert_eq!(read_cookie(&h, "edge_session2"), Some("no"));
        assert_eq!(read_cookie(&h, "other"), Some("1"));
        assert_eq!(read_cookie(&h, "a"), None, "a name is not trimmed inside");
        assert_eq!(
            read_cookie(&h, "bad"),
            None,
            "a field with a byte past ASCII holds none"
        );
        assert_eq!(read_cookie(&h, "missing"), None);
    }

    #[test]
    fn secure_cookies_get_the_host_prefix_and_secure_attribute() {
        let c = set_cookie(true, cookie_name(true), "v", 60);
        assert!(c.starts_with("__Host-edge_session=v;"));
        for attr in [
            "; Path=/",
            "; HttpOnly",
            "; SameSite=Lax",
            "; Max-Age=60",
            "; Secure",
        ] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        assert!(!c.contains("Domain"));
        let dev = set_cookie(false, pending_cookie_name(false), "v", 600);
        assert!(dev.starts_with("edge_login=v;") && !dev.contains("Secure"));
    }
}
