//! Pairing: a signed-in user creates one-time codes (10 Crockford base32
//! characters = 50 bits, shown `XXXXX-XXXXX`, case-insensitive, dashes
//! ignored, stored hashed, 10 minutes by default), lists and cancels them;
//! a box exchanges a code for a device credential (public route, the code is
//! its credential). Wrong, expired, used and cancelled codes get one error.
//! Failed exchanges are rate-limited per client address and globally.

use crate::error::ApiError;
use crate::session::CurrentUser;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use edge_core::secret::sha256_hex;
use edge_core::time::now_ms;
use edge_core::DeviceToken;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use store::{ExchangeError, NewDevice};

/// Crockford base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 10;

/// A fresh code as shown to the user: `XXXXX-XXXXX`.
pub fn new_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let raw: String = (0..CODE_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    format!("{}-{}", &raw[..5], &raw[5..])
}

/// Canonical form of a typed code: uppercase, dashes and spaces dropped,
/// Crockford's look-alikes mapped (I/L → 1, O → 0); `None` if malformed.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c if ALPHABET.contains(&(c as u8)) && c.is_ascii() => c,
            _ => return None,
        };
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

/// What the store keeps for a code.
pub fn code_hash(normalized: &str) -> String {
    sha256_hex(normalized.as_bytes())
}

#[derive(Serialize)]
pub struct CreatedCode {
    id: String,
    /// Shown once.
    code: String,
    expires_at: i64,
}

pub async fn create_code(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<CreatedCode>), ApiError> {
    let code = new_code();
    let normalized = normalize(&code).ok_or(ApiError::Internal)?;
    let lifetime =
        i64::try_from(state.settings.pairing_code_lifetime.as_millis()).unwrap_or(600_000);
    let created = state
        .store
        .create_pairing_code(user.id, &code_hash(&normalized), now_ms() + lifetime)
        .await?;
    state
        .store
        .audit(
            user.id,
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

pub async fn list_codes(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<store::PairingCode>>, ApiError> {
    Ok(Json(
        state.store.pending_pairing_codes(user.id, now_ms()).await?,
    ))
}

pub async fn cancel_code(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.cancel_pairing_code(user.id, &id).await? {
        state
            .store
            .audit(
                user.id,
                "pairing_code_cancelled",
                Some(&id),
                serde_json::json!({}),
            )
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize)]
pub struct ExchangeRequest {
    code: String,
    name: String,
    model: Option<String>,
    serial: Option<String>,
    agent_version: Option<String>,
}

#[derive(Serialize)]
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

/// The box's side of pairing.
pub async fn exchange(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Json(req): Json<ExchangeRequest>,
) -> Result<(StatusCode, Json<ExchangeResponse>), ApiError> {
    let ip: IpAddr = remote.ip();
    let limits = &state.pairing_limits;
    if let Some(secs) = limits
        .per_address
        .retry_after(&ip)
        .or_else(|| limits.global.retry_after(&()))
    {
        return Err(ApiError::RateLimited(secs));
    }
    let failed = |state: &AppState| {
        let a = state.pairing_limits.per_address.check(ip).err();
        let g = state.pairing_limits.global.check(()).err();
        tracing::info!(%ip, limited = a.is_some() || g.is_some(), "pairing exchange failed");
        ApiError::InvalidPairingCode
    };
    let Some(normalized) = normalize(&req.code) else {
        return Err(failed(&state));
    };
    let name = edge_core::text::display_safe(&req.name);
    let name = name.as_str();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let new = NewDevice {
        name: name.to_owned(),
        model: bounded(req.model, 100),
        serial: bounded(req.serial, 100),
        agent_version: bounded(req.agent_version, 64),
    };
    let token = DeviceToken::generate();
    match state
        .store
        .exchange_pairing_code(&code_hash(&normalized), &new, &token.hash(), now_ms())
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
        Err(ExchangeError::InvalidCode) => Err(failed(&state)),
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
    fn codes_have_fifty_bits_in_the_display_format() {
        let c = new_code();
        assert_eq!(c.len(), 11);
        assert_eq!(&c[5..6], "-");
        assert_ne!(new_code(), c);
        assert_eq!(normalize(&c).map(|n| n.len()), Some(10));
    }

    #[test]
    fn typing_is_forgiving_but_not_sloppy() {
        assert_eq!(normalize("abcde-fghjk").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalize(" 0O1IL-23456 ").as_deref(), Some("0011123456"));
        assert_eq!(normalize("ABCDEFGHJ"), None, "too short");
        assert_eq!(normalize("ABCDE-FGHJKU"), None, "U is not in the alphabet");
        assert_eq!(normalize("ÄBCDE-FGHJK"), None);
    }
}
