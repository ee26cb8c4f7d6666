//! The OAuth 2.0 token endpoint for service accounts (ADR 029):
//! `POST /api/oauth/token` with the `client_credentials` grant (RFC 6749
//! §4.4). The client authenticates with `client_secret_basic` (§2.3.1) or
//! `private_key_jwt` (RFC 7523 §2.2, its `jti` single use across
//! replicas), and gets a short-lived access token: a bearer session of
//! kind `service` under the account's owner, carrying the granted scopes
//! and the account's label selector. Errors are RFC 6749 §5.2 bodies;
//! every failed client authentication is the same `invalid_client`.

use crate::error::{ApiError, OAuthError};
use crate::service_accounts::secret_hash;
use crate::session::{bearer_hash, BEARER_PREFIX};
use crate::state::AppState;
use auth::client_assertion::{self, JWT_BEARER_ASSERTION};
use auth::SessionId;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use edge_core::scope::Scopes;
use edge_core::time::now_ms;
use edge_core::Secret;
use http::{header, HeaderMap, HeaderValue};
use serde::Serialize;
use std::collections::HashMap;
use store::{Actor, ServiceAccount, ServiceGrant};

/// The endpoint's path (also the `aud` a client assertion names).
pub const TOKEN_PATH: &str = "/api/oauth/token";
/// Largest token request body.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Clock leeway for a client assertion's times (s).
const ASSERTION_SKEW_SECS: i64 = 30;

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: i64,
    /// The granted scopes, space-separated.
    scope: String,
}

/// The form fields of a token request, each at most once (§3.2).
fn form_fields(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let mut fields = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if fields.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::InvalidRequest(
                "a parameter is given more than once".into(),
            ));
        }
    }
    Ok(fields)
}

/// How the client authenticated (its credentials print redacted).
#[derive(Debug)]
enum ClientAuth {
    /// `client_secret_basic`: client id and secret (form-url-decoded).
    Basic { id: String, secret: Secret },
    /// `private_key_jwt`: the signed assertion.
    Assertion(Secret),
}

/// The client's authentication: exactly one method (§2.3).
fn client_auth(
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
) -> Result<ClientAuth, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
    let assertion = fields.get("client_assertion");
    if fields.contains_key("client_secret") {
        return Err(OAuthError::InvalidRequest(
            "client_secret_post is not supported; use HTTP Basic or private_key_jwt".into(),
        ));
    }
    match (basic, assertion) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest(
            "use one client authentication method".into(),
        )),
        (Some(b64), None) => {
            let refused = || OAuthError::InvalidClient { basic: true };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| refused())?;
            let raw = String::from_utf8(raw).map_err(|_| refused())?;
            let (id, secret) = raw.split_once(':').ok_or_else(refused)?;
            // Form-url-decoded (§2.3.1): `+` is a space, `%XX` a byte.
            let decode = |s: &str| -> String {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Ok(ClientAuth::Basic {
                id: decode(id),
                secret: Secret::new(decode(secret)),
            })
        }
        (None, Some(jwt)) => {
            if fields.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER_ASSERTION)
            {
                return Err(OAuthError::InvalidRequest(format!(
                    "client_assertion_type must be {JWT_BEARER_ASSERTION}"
                )));
            }
            Ok(ClientAuth::Assertion(Secret::new(jwt.clone())))
        }
        (None, None) => Err(OAuthError::InvalidClient { basic: false }),
    }
}

/// Whether a time limit (Unix ms; `None`: none) has not passed at `now`.
fn unexpired(limit: Option<i64>, now: i64) -> bool {
    limit.is_none_or(|at| at > now)
}

/// The account a client authenticated as, and the secret it used (if
/// any), when its credential holds at `now`.
async fn authenticate(
    state: &AppState,
    auth: &ClientAuth,
    form_client_id: Option<&str>,
    now: i64,
) -> Result<(ServiceAccount, Option<String>), ApiError> {
    match auth {
        ClientAuth::Basic { id, secret } => {
            let refused = OAuthError::InvalidClient { basic: true };
            if form_client_id.is_some_and(|c| c != id) {
                return Err(refused.into());
            }
            let (account, secret) = state
                .store
                .service_account_by_secret(&secret_hash(secret.expose()))
                .await?
                .filter(|(a, s)| &a.id == id && unexpired(s.expires_at, now))
                .ok_or(refused)?;
            Ok((account, Some(secret.id)))
        }
        ClientAuth::Assertion(jwt) => {
            let refused = OAuthError::InvalidClient { basic: false };
            let jwt = jwt.expose();
            let claimed = client_assertion::claimed_client(jwt).ok_or(refused.clone())?;
            if form_client_id.is_some_and(|c| c != claimed) || !valid_client_id(&claimed) {
                return Err(refused.into());
            }
            let account = state
                .store
                .service_account(&claimed)
                .await?
                .ok_or(refused.clone())?;
            let jwk = account.public_jwk.as_ref().ok_or(refused.clone())?;
            let endpoint = format!("{}{TOKEN_PATH}", state.settings.public_origin);
            let audiences = [endpoint.as_str(), state.settings.public_origin.as_str()];
            let checked = client_assertion::verify(
                jwt,
                jwk,
                &account.id,
                &audiences,
                now / 1000,
                ASSERTION_SKEW_SECS,
            )
            .map_err(|e| {
                tracing::info!(client = %account.id, error = %e, "client assertion refused");
                refused.clone()
            })?;
            let jti_hash = edge_core::secret::sha256_hex(
                format!("client-assertion:{}:{}", account.id, checked.jti).as_bytes(),
            );
            let until = (checked.expires_at + ASSERTION_SKEW_SECS) * 1000;
            if !state
                .store
                .remember_logout_token(&jti_hash, now, until)
                .await?
            {
                tracing::info!(client = %account.id, "client assertion replayed");
                return Err(refused.into());
            }
            Ok((account, None))
        }
    }
}

/// A client id as this platform makes them (never sent to the store
/// otherwise).
fn valid_client_id(id: &str) -> bool {
    crate::extract::public_id(id).is_ok()
}

#[utoipa::path(
    post,
    path = "/api/oauth/token",
    tag = "service-accounts",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`grant_type=client_credentials`, optional `scope` (a subset of the account's); the client authenticates with HTTP Basic (`client_secret_basic`) or `client_assertion_type` + `client_assertion` (`private_key_jwt`)"),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, description = "a short-lived access token, used as `Authorization: Bearer`", body = TokenResponse),
        (status = 400, description = "RFC 6749 error: `invalid_request`, `unsupported_grant_type`, `invalid_scope`"),
        (status = 401, description = "RFC 6749 error `invalid_client`: unknown client, wrong credential, expired account or secret"),
        (status = 413, description = "body too large", body = edge_core::error_body::ErrorBody)
    )
)]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = form_fields(&headers, &body)?;
    let auth = client_auth(&headers, &fields)?;
    match fields.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType.into()),
        None => {
            return Err(OAuthError::InvalidRequest("grant_type is required".into()).into());
        }
    }
    let now = now_ms();
    let (account, secret_id) = authenticate(
        &state,
        &auth,
        fields.get("client_id").map(String::as_str),
        now,
    )
    .await?;
    if !unexpired(account.expires_at, now) {
        return Err(OAuthError::InvalidClient {
            basic: matches!(auth, ClientAuth::Basic { .. }),
        }
        .into());
    }
    let scopes = granted_scopes(&account, fields.get("scope").map(String::as_str))?;
    let method = match auth {
        ClientAuth::Basic { .. } => "client_secret_basic",
        ClientAuth::Assertion(_) => "private_key_jwt",
    };
    let body = issue(&state, &account, scopes, secret_id.as_deref(), method, now).await?;
    let mut res = Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The scopes a token gets: those asked for (`scope`, a subset of the
/// account's; `invalid_scope` otherwise), or all of the account's.
fn granted_scopes(account: &ServiceAccount, asked: Option<&str>) -> Result<Scopes, OAuthError> {
    let Some(asked) = asked else {
        return Ok(account.scopes.clone());
    };
    let asked = Scopes::parse(asked).map_err(|_| OAuthError::InvalidScope)?;
    if asked.is_empty() || !account.scopes.covers(&asked) {
        return Err(OAuthError::InvalidScope);
    }
    Ok(asked)
}

/// Issue `account` a token with `scopes` (a bearer session of kind
/// `service`, never outliving the account) and audit it under the
/// account and its owner.
async fn issue(
    state: &AppState,
    account: &ServiceAccount,
    scopes: Scopes,
    secret_id: Option<&str>,
    method: &'static str,
    now: i64,
) -> Result<TokenResponse, ApiError> {
    let lifetime =
        i64::try_from(state.settings.service_token_lifetime.as_millis()).unwrap_or(i64::MAX);
    let expires = account
        .expires_at
        .map_or(now.saturating_add(lifetime), |at| {
            at.min(now.saturating_add(lifetime))
        });
    let grant = ServiceGrant {
        account: account.id.clone(),
        scopes,
        selector: account.selector.clone(),
    };
    let id = SessionId::generate();
    let public_id = edge_core::Secret::random(12).expose().to_owned();
    state
        .store
        .issue_service_token(
            account,
            (&bearer_hash(&id), &public_id),
            (now, expires),
            &grant,
            secret_id,
        )
        .await?;
    state
        .store
        .audit(
            Actor {
                user: account.owner_id,
                service_account: Some(account.id.clone()),
            },
            "service_token_issued",
            Some(&account.id),
            serde_json::json!({ "scope": grant.scopes.to_string(), "auth": method, "expires_at": expires }),
        )
        .await?;
    Ok(TokenResponse {
        access_token: format!("{BEARER_PREFIX}{}", id.expose()),
        token_type: "Bearer",
        expires_in: (expires - now) / 1000,
        scope: grant.scopes.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    #[test]
    fn basic_credentials_are_form_url_decoded() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("sa-1:edge_sk_a%2Bb%26c=d+e");
        let h = headers(&[FORM, ("authorization", &format!("Basic {b64}"))]);
        let fields = form_fields(&h, b"grant_type=client_credentials").unwrap();
        let auth = client_auth(&h, &fields).unwrap();
        assert!(!format!("{auth:?}").contains("edge_sk_a"));
        let ClientAuth::Basic { id, secret } = auth else {
            panic!("not basic: {auth:?}");
        };
        assert_eq!(
            (id.as_str(), secret.expose()),
            ("sa-1", "edge_sk_a+b&c=d e")
        );
    }

    #[test]
    fn one_method_once_and_a_form_body_are_required() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("a:b");
        let h = headers(&[FORM, ("authorization", &format!("Basic {b64}"))]);
        let both = form_fields(
            &h,
            b"client_assertion=x&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer",
        )
        .unwrap();
        assert!(matches!(
            client_auth(&h, &both),
            Err(OAuthError::InvalidRequest(_))
        ));
        assert!(matches!(
            form_fields(&h, b"scope=a&scope=b"),
            Err(OAuthError::InvalidRequest(_))
        ));
        let json = headers(&[("content-type", "application/json")]);
        assert!(form_fields(&json, b"{}").is_err());
        let none = headers(&[FORM]);
        assert!(matches!(
            client_auth(&none, &HashMap::new()),
            Err(OAuthError::InvalidClient { basic: false })
        ));
        let post = form_fields(&none, b"client_id=a&client_secret=b").unwrap();
        assert!(matches!(
            client_auth(&none, &post),
            Err(OAuthError::InvalidRequest(_))
        ));
        let wrong_type = form_fields(&none, b"client_assertion=x&client_assertion_type=y").unwrap();
        assert!(matches!(
            client_auth(&none, &wrong_type),
            Err(OAuthError::InvalidRequest(_))
        ));
    }

    #[test]
    fn limits_hold_until_they_pass() {
        assert!(unexpired(None, 5));
        assert!(unexpired(Some(6), 5));
        assert!(!unexpired(Some(5), 5));
    }
}
