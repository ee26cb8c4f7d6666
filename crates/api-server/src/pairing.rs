//! Pairing: a signed-in user creates one-time codes (10 Crockford base32
//! characters = 50 bits, shown `XXXXX-XXXXX`, case-insensitive, dashes
//! ignored, stored hashed, 10 minutes by default), lists and cancels them;
//! a box exchanges a code for a device credential (public route, the code is
//! its credential). Wrong, expired, used and cancelled codes get one error.
//! Failed exchanges are rate-limited per client address and globally.
//! Codes are stored as HMAC-SHA256 under the server's pairing key.

use crate::error::{ApiError, ChangeErrors, SessionErrors};
use crate::extract::ApiJson;
use crate::session::{ManageDevices, Scoped};
use crate::state::AppState;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::Json;
use edge_core::client_addr::ClientIp;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use edge_core::DeviceToken;
use edge_core::Secret;
use serde::{Deserialize, Serialize};
use store::{ExchangeError, NewDevice};

/// Largest exchange request body (a code, a name and a few short fields).
pub const EXCHANGE_BODY_LIMIT: usize = 4096;

pub use edge_core::pairing_code::{new_code, normalize};

/// What the store keeps for a code: HMAC-SHA256 under the server's
/// pairing key, so a copy of the table alone does not reveal codes (50 bits
/// are quickly brute-forced from a plain hash).
pub fn code_hash(key: &Secret, normalized: &str) -> Result<String, ApiError> {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length; should that ever change, fail rather
    // than hash every code alike.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes())
        .map_err(|_| ApiError::Internal)?;
    mac.update(b"pairing-code\n");
    mac.update(normalized.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedCode {
    id: String,
    /// Shown once.
    code: String,
    expires_at: i64,
}

#[utoipa::path(
    post,
    path = "/api/pairing/codes",
    tag = "pairing",
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "a new code, shown once", body = CreatedCode),
        (status = 409, description = "too many unused codes", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn create_code(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<CreatedCode>), ApiError> {
    let pending = state
        .store
        .pending_pairing_code_count(user.id, now_ms())
        .await?;
    if pending >= i64::from(state.settings.max_pending_codes_per_user) {
        return Err(ApiError::QuotaExceeded(format!(
            "you have {pending} unused pairing codes, the most allowed; cancel one or let it expire"
        )));
    }
    let code = new_code();
    let normalized = normalize(&code).ok_or(ApiError::Internal)?;
    let lifetime =
        i64::try_from(state.settings.pairing_code_lifetime.as_millis()).unwrap_or(600_000);
    let created = state
        .store
        .create_pairing_code(
            user.id,
            &code_hash(&state.pairing_key, &normalized)?,
            now_ms() + lifetime,
        )
        .await?;
    state
        .store
        .audit(
            user.actor(),
            "pairing_code_created",
            Some(&created.id),
            serde_json::json!({ "expires_at": created.expires_at }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedCode {
            id: created.id,
            code,
            expires_at: created.expires_at,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/pairing/codes",
    tag = "pairing",
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's unused codes (never the codes themselves)", body = Vec<store::PairingCode>),
        SessionErrors
    )
)]
pub async fn list_codes(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
) -> Result<Json<Vec<store::PairingCode>>, ApiError> {
    Ok(Json(
        state.store.pending_pairing_codes(user.id, now_ms()).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/pairing/codes/{id}",
    tag = "pairing",
    params(("id" = String, Path, description = "code id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "cancelled"),
        (status = 404, description = "no such resource of the caller's", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn cancel_code(
    user: Scoped<ManageDevices>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = crate::extract::public_id(&id)?;
    if state.store.cancel_pairing_code(user.id, id).await? {
        state
            .store
            .audit(
                user.actor(),
                "pairing_code_cancelled",
                Some(id),
                serde_json::json!({}),
            )
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExchangeRequest {
    code: String,
    name: String,
    model: Option<String>,
    serial: Option<String>,
    agent_version: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExchangeResponse {
    device_id: String,
    /// The device credential, shown once.
    credential: String,
}

/// A box-supplied string made display-safe and bounded; empty is none.
fn bounded(s: Option<String>, max: usize) -> Option<String> {
    s.map(|v| edge_core::text::display_safe_bounded(&v, max))
        .filter(|v| !v.is_empty())
}

/// The box's side of pairing. Rate limits are taken before anything else,
/// per client address (IPv6: per /64) first and then globally, so that one
/// source spends only its own allowance and can never drain the global one
/// that protects the store; attempts that turn out not to be a wrong code
/// are refunded, so only failures count.
#[utoipa::path(
    post,
    path = "/api/pairing/exchange",
    tag = "pairing",
    request_body = ExchangeRequest,
    responses(
        (status = 201, description = "paired: the device id and its credential, shown once", body = ExchangeResponse),
        (status = 400, description = "invalid, used or expired code, or a malformed body", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 429, description = "too many failed exchanges", body = ErrorBody),
        (status = 500, description = "internal error", body = ErrorBody)
    )
)]
pub async fn exchange(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIp>,
    ApiJson(req): ApiJson<ExchangeRequest>,
) -> Result<(StatusCode, Json<ExchangeResponse>), ApiError> {
    let result = exchange_limited(&state, client, req).await;
    state.metrics.pairing_exchange(match &result {
        Ok(_) => "ok",
        Err(ApiError::InvalidPairingCode) => "invalid_code",
        Err(ApiError::RateLimited(_)) => "rate_limited",
        Err(ApiError::BadRequest(_)) => "bad_request",
        Err(_) => "error",
    });
    result
}

async fn exchange_limited(
    state: &AppState,
    client: ClientIp,
    req: ExchangeRequest,
) -> Result<(StatusCode, Json<ExchangeResponse>), ApiError> {
    let key = client.rate_key();
    let limits = &state.pairing_limits;
    limits
        .per_address
        .check(key)
        .await
        .map_err(ApiError::RateLimited)?;
    if let Err(secs) = limits.global.check(crate::state::ALL).await {
        limits.per_address.refund(&key).await;
        return Err(ApiError::RateLimited(secs));
    }
    let outcome = exchange_code(state, req).await;
    match &outcome {
        Err(ApiError::InvalidPairingCode) => {
            tracing::info!(client = %client.0, "pairing exchange failed: invalid code");
        }
        _ => {
            limits.per_address.refund(&key).await;
            limits.global.refund(&crate::state::ALL).await;
        }
    }
    outcome
}

async fn exchange_code(
    state: &AppState,
    req: ExchangeRequest,
) -> Result<(StatusCode, Json<ExchangeResponse>), ApiError> {
    let normalized = normalize(&req.code).ok_or(ApiError::InvalidPairingCode)?;
    let name = edge_core::text::display_safe(&req.name);
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let new = NewDevice {
        name,
        model: bounded(req.model, 100),
        serial: bounded(req.serial, 100),
        agent_version: bounded(req.agent_version, 64),
    };
    let token = DeviceToken::generate();
    match state
        .store
        .exchange_pairing_code(
            &code_hash(&state.pairing_key, &normalized)?,
            &new,
            &token.hash(),
            now_ms(),
            i64::from(state.settings.max_devices_per_user),
        )
        .await
    {
        // The store wrote the audit events in the exchange's transaction.
        Ok((device, _code_id)) => Ok((
            StatusCode::CREATED,
            Json(ExchangeResponse {
                device_id: device.id.to_string(),
                credential: token.expose().to_owned(),
            }),
        )),
        Err(ExchangeError::InvalidCode) => Err(ApiError::InvalidPairingCode),
        Err(ExchangeError::DeviceQuota(n)) => Err(ApiError::QuotaExceeded(format!(
            "the account that made this code already has {n} devices, the most allowed; delete one and pair again"
        ))),
        Err(ExchangeError::Store(e)) => {
            tracing::error!(error = %e, "pairing exchange failed in the store; nothing was kept");
            Err(ApiError::Internal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_are_keyed() {
        let (a, b) = (Secret::random(32), Secret::random(32));
        let hash = |k: &Secret| code_hash(k, "ABCDEFGHJK").unwrap();
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a), edge_core::secret::sha256_hex(b"ABCDEFGHJK"));
        assert_eq!(hash(&a).len(), 64);
    }
}
