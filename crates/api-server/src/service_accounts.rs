//! Service accounts (ADR 029), as their owner manages them: create one
//! (name, scopes, an optional label selector, expiry and public key; its
//! first secret is shown once), list and read them, rotate a secret with
//! an overlap during which the old one still works, revoke a secret
//! (ending its tokens), set the key for `private_key_jwt`, and delete the
//! account (ending every token and connection it holds). Persons only:
//! a service account's own token cannot manage accounts. Every change is
//! audited under the owner.

use crate::error::{ApiError, PersonChangeErrors, SessionErrors};
use crate::extract::{public_id, ApiJson};
use crate::session::CurrentUser;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use edge_core::error_body::ErrorBody;
use edge_core::scope::{Scope, Scopes};
use edge_core::time::now_ms;
use edge_core::Secret;
use serde::{Deserialize, Serialize};
use store::{NewServiceAccount, ServiceAccount, ServiceSecret};

/// What a service account's secret starts with (so a leaked one is
/// recognisable to secret scanners).
pub const SECRET_PREFIX: &str = "edge_sk_";
/// A rotation's default overlap: the old secret works one more day.
pub const DEFAULT_OVERLAP_SECS: i64 = 86_400;
/// The longest overlap a rotation may ask for (30 days).
pub const MAX_OVERLAP_SECS: i64 = 30 * 86_400;

/// What the store keeps of a secret: its SHA-256 in a namespace of its
/// own. Secrets are 256 random bits, so a plain hash resists guessing.
pub fn secret_hash(secret: &str) -> String {
    edge_core::secret::sha256_hex(format!("service-secret:{secret}").as_bytes())
}

/// A fresh secret and its id.
fn fresh_secret() -> (Secret, String) {
    (
        Secret::new(format!("{SECRET_PREFIX}{}", Secret::random(32).expose())),
        format!("sk-{}", Secret::random(8).expose()),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// 1 to 100 characters.
    name: String,
    /// At least one of `devices:read`, `devices:manage`, `devices:remote`.
    scopes: Vec<String>,
    /// Labels a device must all carry for the account to see it (default:
    /// none, every device of the owner's).
    #[serde(default)]
    selector: Vec<String>,
    /// After this (Unix ms) the account gets no more tokens (default: never).
    expires_at: Option<i64>,
    /// A public JWK (EC P-256/P-384, RSA or Ed25519) for `private_key_jwt`.
    #[schema(value_type = Option<Object>)]
    public_jwk: Option<serde_json::Value>,
}

/// A new account with its first secret: the only time the secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedAccount {
    account: ServiceAccount,
    /// The account's OAuth `client_id` (its id).
    client_id: String,
    /// Shown once.
    client_secret: String,
}

/// A rotated secret, shown once, and until when the older ones still work.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    secret: ServiceSecret,
    client_secret: String,
    /// Older secrets stop working at this time (Unix ms).
    previous_expire_at: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// How long the older secrets keep working, in seconds (0 to 30 days;
    /// default one day).
    overlap_secs: Option<i64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    /// The new public JWK, or `null` to remove it.
    #[schema(value_type = Option<Object>)]
    public_jwk: Option<serde_json::Value>,
}

/// Record a change to one of the caller's service accounts.
async fn audit(
    state: &AppState,
    user: &CurrentUser,
    action: &str,
    account: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    Ok(state
        .store
        .audit(user.id, action, Some(account), detail)
        .await?)
}

/// The id of the caller's service account `raw` (404 otherwise): checked
/// before a body is read, so another owner's id answers as a missing one
/// whatever the body.
async fn owned<'a>(
    state: &AppState,
    user: &CurrentUser,
    raw: &'a str,
) -> Result<&'a str, ApiError> {
    let id = public_id(raw)?;
    state
        .store
        .service_account_of(user.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(id)
}

/// A JSON body read as `T` (after the object was found the caller's).
fn body_as<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|_| {
        ApiError::BadRequest("the request body is not the JSON this route expects".into())
    })
}

/// A name, scopes and selector checked (labels as device labels are).
fn checked(
    name: &str,
    scopes: &[String],
    selector: &[String],
) -> Result<(String, Scopes, Vec<String>), ApiError> {
    let name = edge_core::text::display_safe(name);
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let scopes = scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let scopes = Scopes::new(scopes);
    if scopes.is_empty() {
        return Err(ApiError::BadRequest("give at least one scope".into()));
    }
    let selector = crate::devices::checked_labels(selector).ok_or_else(|| {
        ApiError::BadRequest("selector: up to 20 labels of 1 to 40 characters".into())
    })?;
    Ok((name, scopes, selector))
}

/// A public JWK the token endpoint can verify with (see
/// [`auth::client_assertion::check_public_jwk`]); never echoed.
pub fn checked_jwk(jwk: &serde_json::Value) -> Result<(), ApiError> {
    auth::client_assertion::check_public_jwk(jwk)
        .map_err(|m| ApiError::BadRequest(format!("public_jwk: {m}")))
}

#[utoipa::path(
    get,
    path = "/api/service-accounts",
    tag = "service-accounts",
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's service accounts (never a secret)", body = Vec<ServiceAccount>),
        (status = 403, description = "a service account's token (`insufficient_scope`)", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn list(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<ServiceAccount>>, ApiError> {
    Ok(Json(state.store.service_accounts_of(user.id).await?))
}

#[utoipa::path(
    post,
    path = "/api/service-accounts",
    tag = "service-accounts",
    request_body = NewAccount,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "the account and its first secret, shown once", body = CreatedAccount),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 409, description = "as many service accounts as an owner may have", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        PersonChangeErrors
    )
)]
pub async fn create(
    user: CurrentUser,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<CreatedAccount>), ApiError> {
    let (name, scopes, selector) = checked(&new.name, &new.scopes, &new.selector)?;
    let now = now_ms();
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::BadRequest(
            "expires_at must be in the future".into(),
        ));
    }
    if let Some(jwk) = &new.public_jwk {
        checked_jwk(jwk)?;
    }
    let id = format!("sa-{}", Secret::random(12).expose());
    let (secret, secret_id) = fresh_secret();
    let hash = secret_hash(secret.expose());
    let account = state
        .store
        .create_service_account(&NewServiceAccount {
            id: &id,
            owner: user.id,
            name: &name,
            scopes: &scopes,
            selector: &selector,
            public_jwk: new.public_jwk.as_ref(),
            expires_at: new.expires_at,
            secret: (&secret_id, &hash),
            now,
        })
        .await?;
    audit(&state, &user, "service_account_created", &id, serde_json::json!({ "name": account.name, "scopes": account.scopes.to_string(), "selector": account.selector })).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccount {
            client_id: account.id.clone(),
            account,
            client_secret: secret.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/service-accounts/{id}",
    tag = "service-accounts",
    params(("id" = String, Path, description = "service account id")),
    security(("session" = [])),
    responses(
        (status = 200, description = "one service account", body = ServiceAccount),
        (status = 403, description = "a service account's token (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn get(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceAccount>, ApiError> {
    Ok(Json(
        state
            .store
            .service_account_of(user.id, public_id(&id)?)
            .await?
            .ok_or(ApiError::NotFound)?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/service-accounts/{id}",
    tag = "service-accounts",
    params(("id" = String, Path, description = "service account id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "deleted; its tokens end, and with them its open connections"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        PersonChangeErrors
    )
)]
pub async fn delete(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = public_id(&id)?;
    if !state.store.delete_service_account(user.id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.access_changes.notify();
    audit(
        &state,
        &user,
        "service_account_deleted",
        id,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/service-accounts/{id}/secrets",
    tag = "service-accounts",
    params(("id" = String, Path, description = "service account id")),
    request_body = Rotation,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "a new secret, shown once; the older ones work until `previous_expire_at`", body = RotatedSecret),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        (status = 409, description = "the account holds as many secrets as it may", body = ErrorBody),
        PersonChangeErrors
    )
)]
pub async fn rotate(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<RotatedSecret>), ApiError> {
    let id = owned(&state, &user, &id).await?;
    let rotation: Rotation = body_as(body)?;
    let overlap = rotation.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if !(0..=MAX_OVERLAP_SECS).contains(&overlap) {
        return Err(ApiError::BadRequest(
            "overlap_secs is 0 to 2592000 (30 days)".into(),
        ));
    }
    let now = now_ms();
    let until = now + overlap * 1000;
    let (secret, secret_id) = fresh_secret();
    let made = state
        .store
        .rotate_service_secret(
            user.id,
            id,
            (&secret_id, &secret_hash(secret.expose())),
            now,
            until,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    if overlap == 0 {
        state.access_changes.notify();
    }
    audit(
        &state,
        &user,
        "service_secret_rotated",
        id,
        serde_json::json!({ "secret": made.id, "overlap_secs": overlap }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RotatedSecret {
            secret: made,
            client_secret: secret.expose().to_owned(),
            previous_expire_at: until,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/service-accounts/{id}/secrets/{secret_id}",
    tag = "service-accounts",
    params(("id" = String, Path, description = "service account id"), ("secret_id" = String, Path, description = "secret id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "revoked; tokens issued for it end"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        PersonChangeErrors
    )
)]
pub async fn revoke_secret(
    user: CurrentUser,
    State(state): State<AppState>,
    Path((id, secret_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, secret_id) = (public_id(&id)?, public_id(&secret_id)?);
    if !state
        .store
        .revoke_service_secret(user.id, id, secret_id)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.access_changes.notify();
    audit(
        &state,
        &user,
        "service_secret_revoked",
        id,
        serde_json::json!({ "secret": secret_id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/api/service-accounts/{id}/key",
    tag = "service-accounts",
    params(("id" = String, Path, description = "service account id")),
    request_body = KeyUpdate,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "the account with its new key", body = ServiceAccount),
        (status = 400, description = "not a usable public key", body = ErrorBody),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        PersonChangeErrors
    )
)]
pub async fn set_key(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<ServiceAccount>, ApiError> {
    let id = owned(&state, &user, &id).await?;
    let update: KeyUpdate = body_as(body)?;
    if let Some(jwk) = &update.public_jwk {
        checked_jwk(jwk)?;
    }
    if !state
        .store
        .set_service_account_key(user.id, id, update.public_jwk.as_ref())
        .await?
    {
        return Err(ApiError::NotFound);
    }
    audit(
        &state,
        &user,
        "service_key_changed",
        id,
        serde_json::json!({ "has_key": update.public_jwk.is_some() }),
    )
    .await?;
    get(user, State(state), Path(id.to_owned())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scopes_and_selectors_are_checked() {
        let (name, scopes, sel) = checked(
            "ci",
            &["devices:remote".into(), "devices:read".into()],
            &["site=a".into()],
        )
        .unwrap();
        assert_eq!(
            (name.as_str(), scopes.to_string().as_str()),
            ("ci", "devices:read devices:remote")
        );
        assert_eq!(sel, vec!["site=a".to_owned()]);
        assert!(checked("", &["devices:read".into()], &[]).is_err());
        assert!(checked("ci", &[], &[]).is_err());
        assert!(checked("ci", &["admin".into()], &[]).is_err());
        assert!(checked("ci", &["devices:read".into()], &[" ".into()]).is_err());
    }

    #[test]
    fn private_and_foreign_keys_are_refused() {
        let public = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        assert!(checked_jwk(&public).is_ok());
        let mut private = public.clone();
        private["d"] = serde_json::json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
        assert!(checked_jwk(&private).is_err());
        assert!(checked_jwk(&serde_json::json!({"kty": "oct", "k": "AAAA"})).is_err());
        assert!(checked_jwk(&serde_json::json!("a string")).is_err());
    }

    #[test]
    fn secrets_are_prefixed_and_hashed_apart() {
        let (a, id) = fresh_secret();
        let (b, _) = fresh_secret();
        assert!(a.expose().starts_with(SECRET_PREFIX) && id.starts_with("sk-"));
        assert_ne!(secret_hash(a.expose()), secret_hash(b.expose()));
        assert_ne!(
            secret_hash(a.expose()),
            edge_core::secret::sha256_hex(a.expose().as_bytes())
        );
    }
}
