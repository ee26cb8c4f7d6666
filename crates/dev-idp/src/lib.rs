//! DEVELOPMENT-ONLY OpenID Provider: discovery, a JWKS with one P-256 key,
//! an authorize page where you pick a demo user, a token endpoint that
//! enforces PKCE S256 and single-use codes, the device login (RFC 8628,
//! for `edge login`), and end-session. Tests can make
//! the next ID token faulty ([`Fault`]) through the in-process handle; no
//! HTTP route can. It is a test peer, not an auth path of the product.

mod device;
mod jwt;

use axum::extract::{Form, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use edge_core::text::html_escape;
use http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Codes live this long (seconds).
const CODE_TTL_SECS: i64 = 60;
/// ID tokens live this long (seconds).
const TOKEN_TTL_SECS: i64 = 300;

/// Demo users: (subject, name, email).
pub const DEMO_USERS: &[(&str, &str, &str)] = &[
    ("alice", "Alice Example", "alice@example.test"),
    ("bob", "Bob Example", "bob@example.test"),
    ("carol", "Carol Example", "carol@example.test"),
];

/// A registered client.
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    /// `None`: public client (PKCE only).
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
}

impl Client {
    pub fn public(id: impl Into<String>, redirect: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            redirect_uris: vec![redirect.into()],
        }
    }
}

/// A deliberate defect in the next ID token, for negative tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    UnknownKey,
    AlgNone,
    WrongAudience,
    WrongIssuer,
    Expired,
    WrongNonce,
    /// The UserInfo endpoint answers for another subject.
    UserInfoWrongSubject,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: usize,
    expires: i64,
}

struct Inner {
    issuer: String,
    key: Mutex<jwt::Key>,
    jwks_fetches: std::sync::atomic::AtomicU64,
    clients: Vec<Client>,
    codes: Mutex<HashMap<String, Grant>>,
    /// Device logins (RFC 8628) by device code.
    devices: Mutex<HashMap<String, device::DeviceGrant>>,
    /// Access token → (demo user index, fault for its UserInfo answer).
    access_tokens: Mutex<HashMap<String, (usize, Option<Fault>)>>,
    /// The `sid` of the latest login of each subject.
    sids: Mutex<HashMap<String, String>>,
    fault: Mutex<Option<Fault>>,
}

/// Handle to a provider instance.
#[derive(Clone)]
pub struct DevIdp(Arc<Inner>);

impl DevIdp {
    pub fn new(issuer: String, clients: Vec<Client>) -> Self {
        Self(Arc::new(Inner {
            issuer,
            key: Mutex::new(jwt::Key::generate()),
            jwks_fetches: std::sync::atomic::AtomicU64::new(0),
            clients,
            codes: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            access_tokens: Mutex::new(HashMap::new()),
            sids: Mutex::new(HashMap::new()),
            fault: Mutex::new(None),
        }))
    }

    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }

    /// Make the next issued ID token faulty.
    pub fn set_fault(&self, fault: Fault) {
        *self.0.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    /// The provider session id (`sid`) of `subject`'s latest login.
    pub fn sid_of(&self, subject: &str) -> Option<String> {
        self.0
            .sids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(subject)
            .cloned()
    }

    /// Sign `claims` as a JWT with the provider's current key (for tests
    /// that send back-channel logout tokens).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.0
            .key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sign(claims)
    }

    /// Sign `claims` with a key the provider never published.
    pub fn sign_with_unknown_key(claims: &serde_json::Value) -> String {
        jwt::Key::generate().sign(claims)
    }

    /// Replace the signing key (new key id), as a provider rotating keys.
    pub fn rotate_key(&self) {
        *self.0.key.lock().unwrap_or_else(|p| p.into_inner()) = jwt::Key::generate();
    }

    /// How many times the JWKS has been served.
    pub fn jwks_fetches(&self) -> u64 {
        self.0
            .jwks_fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize_page).post(authorize_select))
            .route("/token", axum::routing::post(token))
            .route("/device/code", axum::routing::post(device::authorize))
            .route("/device", get(device::page).post(device::approve))
            .route("/userinfo", get(userinfo))
            .route("/end-session", get(end_session))
            .with_state(self.clone())
    }

    fn client(&self, id: &str) -> Option<&Client> {
        self.0.clients.iter().find(|c| c.id == id)
    }
}

/// The development provider listens on loopback only.
pub fn check_listen(addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to bind {addr}: the development provider listens on loopback only"
        ))
    }
}

/// Serve the provider until `shutdown`.
pub async fn serve(listener: TcpListener, idp: DevIdp, shutdown: CancellationToken) {
    edge_core::serve::serve(listener, idp.router(), Default::default(), shutdown).await;
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

async fn discovery(State(idp): State<DevIdp>) -> Json<serde_json::Value> {
    let i = &idp.0.issuer;
    Json(serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "end_session_endpoint": format!("{i}/end-session"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "sid", "email", "email_verified", "name"],
        "grant_types_supported": ["authorization_code", device::GRANT],
        "device_authorization_endpoint": format!("{i}/device/code"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
    }))
}

async fn jwks(State(idp): State<DevIdp>) -> Json<serde_json::Value> {
    idp.0
        .jwks_fetches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let jwk = idp.0.key.lock().unwrap_or_else(|p| p.into_inner()).jwk();
    Json(serde_json::json!({ "keys": [jwk] }))
}

#[derive(Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

#[derive(Deserialize)]
struct SelectParams {
    #[serde(flatten)]
    params: AuthorizeParams,
    user: String,
}

/// Validate an authorization request; returns the PKCE challenge, or why
/// the request is refused (shown to the user, never redirected).
fn check_authorize(idp: &DevIdp, p: &AuthorizeParams) -> Result<String, &'static str> {
    let client = idp.client(&p.client_id).ok_or("unknown client_id")?;
    if !client.redirect_uris.iter().any(|r| r == &p.redirect_uri) {
        return Err("redirect_uri is not registered");
    }
    if p.response_type.as_deref() != Some("code") {
        return Err("response_type must be code");
    }
    let scope = p.scope.as_deref().unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err("scope must include openid");
    }
    match (&p.code_challenge, p.code_challenge_method.as_deref()) {
        (Some(c), Some("S256")) if !c.is_empty() => Ok(c.clone()),
        _ => Err("PKCE with S256 is required"),
    }
}

async fn authorize_page(State(idp): State<DevIdp>, Query(p): Query<AuthorizeParams>) -> Response {
    if let Err(why) = check_authorize(&idp, &p) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let hidden = [
        ("response_type", p.response_type.as_deref()),
        ("client_id", Some(p.client_id.as_str())),
        ("redirect_uri", Some(p.redirect_uri.as_str())),
        ("state", p.state.as_deref()),
        ("nonce", p.nonce.as_deref()),
        ("scope", p.scope.as_deref()),
        ("code_challenge", p.code_challenge.as_deref()),
        ("code_challenge_method", p.code_challenge_method.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| {
        v.map(|v| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                html_escape(v)
            )
        })
    })
    .collect::<String>();
    let buttons = DEMO_USERS
        .iter()
        .map(|(sub, name, email)| {
            format!(r#"<li><button type="submit" name="user" value="{sub}">Sign in as {} &lt;{}&gt;</button></li>"#, html_escape(name), html_escape(email))
        })
        .collect::<String>();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Development sign-in</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1b1b1b}}button{{margin:.3rem 0;padding:.5rem 1rem;font-size:1rem}}</style></head>
<body><h1>Development OpenID Provider</h1><p><strong>For local development only.</strong> Choose a demo user:</p>
<form method="post" action="authorize">{hidden}<ul>{buttons}</ul></form></body></html>"#
    ))
    .into_response()
}

async fn authorize_select(State(idp): State<DevIdp>, Form(sel): Form<SelectParams>) -> Response {
    let challenge = match check_authorize(&idp, &sel.params) {
        Ok(c) => c,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let Some(user) = DEMO_USERS.iter().position(|(sub, _, _)| *sub == sel.user) else {
        return (StatusCode::BAD_REQUEST, "unknown demo user").into_response();
    };
    let code = edge_core::Secret::random(24).expose().to_owned();
    idp.0
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            code.clone(),
            Grant {
                client_id: sel.params.client_id.clone(),
                redirect_uri: sel.params.redirect_uri.clone(),
                challenge,
                nonce: sel.params.nonce.clone(),
                user,
                expires: jwt::now() + CODE_TTL_SECS,
            },
        );
    let Ok(mut url) = url::Url::parse(&sel.params.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = &sel.params.state {
        url.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(url.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(check_listen("127.0.0.1:3790".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:3790".parse().unwrap()).is_ok());
        assert!(check_listen("0.0.0.0:3790".parse().unwrap()).is_err());
        assert!(check_listen("192.0.2.10:3790".parse().unwrap()).is_err());
    }
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    device_code: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, form-urlencoded parts).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

/// An OAuth error answer: status, `error` and `error_description`.
pub(crate) struct Refusal(StatusCode, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        oauth_error(self.0, self.1, self.2)
    }
}

/// The client a request authenticates as (HTTP Basic, or `client_id` and
/// `client_secret` in the form), or the OAuth error to answer.
fn authenticate(
    idp: &DevIdp,
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<String, Refusal> {
    let (client_id, presented_secret) = match basic_credentials(headers) {
        Some((id, secret)) => (id, Some(secret)),
        None => match form_id {
            Some(id) => (id.to_owned(), form_secret.map(str::to_owned)),
            None => {
                return Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "no client authentication",
                ))
            }
        },
    };
    let Some(client) = idp.client(&client_id) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client",
        ));
    };
    if let Some(expected) = &client.secret {
        use subtle::ConstantTimeEq;
        let ok =
            presented_secret.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
        if !ok {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            ));
        }
    }
    Ok(client_id)
}

async fn token(
    State(idp): State<DevIdp>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Result<Response, Refusal> {
    let client_id = authenticate(
        &idp,
        &headers,
        f.client_id.as_deref(),
        f.client_secret.as_deref(),
    )?;
    Ok(match f.grant_type.as_str() {
        "authorization_code" => code_grant(&idp, client_id, f),
        device::GRANT => device::token(&idp, client_id, f.device_code.as_deref()),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code and the device code",
        ),
    })
}

/// The authorization-code grant: a single-use code, its client and
/// redirect, and PKCE S256.
fn code_grant(idp: &DevIdp, client_id: String, f: TokenForm) -> Response {
    let code = f.code.unwrap_or_default();
    // Single use: the code is gone once presented, whatever happens next.
    let grant = idp
        .0
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&code);
    let Some(grant) = grant else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if grant.expires < jwt::now()
        || grant.client_id != client_id
        || Some(&grant.redirect_uri) != f.redirect_uri.as_ref()
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code does not match",
        );
    }
    let Some(verifier) = f.code_verifier else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier required",
        );
    };
    if !jwt::pkce_s256_matches(&verifier, &grant.challenge) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    issue(idp, &client_id, grant.user, grant.nonce)
}

/// Tokens for demo user `user` (index into [`DEMO_USERS`]) and `client_id`:
/// an ID token (with `nonce` when the login sent one, and the pending
/// [`Fault`] if any), an access token for UserInfo.
fn issue(idp: &DevIdp, client_id: &str, user: usize, nonce: Option<String>) -> Response {
    let fault = idp.0.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (sub, name, email) = DEMO_USERS[user];
    let now = jwt::now();
    let sid = edge_core::Secret::random(12).expose().to_owned();
    idp.0
        .sids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sub.to_owned(), sid.clone());
    let mut claims = serde_json::json!({
        "iss": idp.0.issuer,
        "sub": sub,
        "aud": client_id,
        "iat": now,
        "exp": now + TOKEN_TTL_SECS,
        "sid": sid,
        "email": email,
        "name": name,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = serde_json::Value::String(nonce);
    }
    match fault {
        Some(Fault::WrongAudience) => claims["aud"] = "someone-else".into(),
        Some(Fault::WrongIssuer) => claims["iss"] = "https://evil.example".into(),
        Some(Fault::Expired) => {
            claims["iat"] = (now - 7200).into();
            claims["exp"] = (now - 3600).into();
        }
        Some(Fault::WrongNonce) => claims["nonce"] = "not-the-nonce".into(),
        _ => {}
    }
    let id_token = match fault {
        Some(Fault::UnknownKey) => jwt::Key::generate().sign(&claims),
        Some(Fault::AlgNone) => jwt::unsigned(&claims),
        _ => idp
            .0
            .key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sign(&claims),
    };
    let access_token = edge_core::Secret::random(24).expose().to_owned();
    let info_fault = fault.filter(|f| *f == Fault::UserInfoWrongSubject);
    idp.0
        .access_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(access_token.clone(), (user, info_fault));
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_SECS,
            "id_token": id_token,
        })),
    )
        .into_response()
}

/// `GET /userinfo` with `Authorization: Bearer <access token>`.
async fn userinfo(State(idp): State<DevIdp>, headers: http::HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let found = idp
        .0
        .access_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .copied();
    let Some((user, fault)) = found else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "unknown access token",
        );
    };
    let (sub, name, email) = DEMO_USERS[user];
    let sub = if fault == Some(Fault::UserInfoWrongSubject) {
        "someone-else"
    } else {
        sub
    };
    Json(serde_json::json!({
        "sub": sub, "email": email, "email_verified": true, "name": name,
    }))
    .into_response()
}

async fn end_session() -> Html<&'static str> {
    Html("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>Signed out</title></head><body><h1>Signed out</h1><p>You are signed out of the development provider.</p></body></html>")
}
