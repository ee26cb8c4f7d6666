//! Compact JWS signature checks (RFC 7515) against a set of JWKs, with the
//! platform's algorithm allow-list: the provider's logout tokens and the
//! service accounts' client assertions are both checked here.

use crate::oidc::{decode_part, ALLOWED_ALGS};
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::JsonWebKey;

#[derive(Debug, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("critical header parameters are not supported")]
    Critical,
    #[error("no provider key matches")]
    NoKey,
    #[error("bad signature")]
    Signature,
}

/// Check a compact JWS against `keys`: allowed algorithm, no `crit`, a
/// key with the header's `kid` (or any usable key when it has none) whose
/// signature verifies. Verification itself is openidconnect's.
pub fn verify_compact(keys: &[CoreJsonWebKey], token: &str) -> Result<(), JwsError> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header = decode_part(token, 0).ok_or(JwsError::Malformed)?;
    if header.get("crit").is_some() {
        return Err(JwsError::Critical);
    }
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or(JwsError::Algorithm)?;
    if !ALLOWED_ALGS.contains(&alg) {
        return Err(JwsError::Algorithm);
    }
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| JwsError::Malformed)?;
    let kid = header.get("kid").and_then(|k| k.as_str());
    let message = format!("{h}.{c}");
    let mut candidates = keys
        .iter()
        .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid)
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwsError::NoKey);
    }
    if candidates.any(|k| {
        k.verify_signature(&alg, message.as_bytes(), &signature)
            .is_ok()
    }) {
        Ok(())
    } else {
        Err(JwsError::Signature)
    }
}
