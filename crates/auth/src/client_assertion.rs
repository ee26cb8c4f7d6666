//! `private_key_jwt` client authentication (RFC 7523 §3, RFC 7521 §4.2;
//! OIDC Core §9), for service accounts (ADR 029): a JWT the client signs with its private key, checked
//! against the public JWK registered for it. The claims: `iss` and `sub`
//! are the client id, `aud` names the token endpoint, `exp` is near (at
//! most [`MAX_ASSERTION_LIFETIME_SECS`] ahead, so the replay memory stays
//! small), and `jti` is present. Single use of the `jti` is the caller's
//! to enforce.

use crate::jws::{verify_compact, JwsError};
use crate::oidc::decode_part;
use openidconnect::core::CoreJsonWebKey;

/// `client_assertion_type` for a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead an assertion's `exp` may be.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// What a verified assertion tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub client_id: String,
    pub jti: String,
    /// Its `exp` (Unix s): until when a replay must be recognised.
    pub expires_at: i64,
}

/// Why an assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client assertion is not a readable JWT")]
    Malformed,
    #[error("the client's registered key is not a usable JWK")]
    BadKey,
    #[error("the client assertion's signature does not verify")]
    Signature,
    #[error("the client assertion's {0} claim is wrong or missing")]
    Claim(&'static str),
}

/// Largest public key a client may register (serialised JWK).
pub const MAX_JWK_BYTES: usize = 4096;

/// Whether `jwk` is a public key assertions can be checked with: small,
/// EC, RSA or OKP, readable by the verifier, and public (a private or
/// symmetric key pasted by mistake is refused). The error says why.
pub fn check_public_jwk(jwk: &serde_json::Value) -> Result<(), &'static str> {
    if jwk.to_string().len() > MAX_JWK_BYTES {
        return Err("too large");
    }
    let obj = jwk.as_object().ok_or("must be a JWK object")?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return Err("this is a private or symmetric key; register the public key only");
    }
    let kty = obj.get("kty").and_then(|v| v.as_str()).unwrap_or_default();
    if !matches!(kty, "EC" | "RSA" | "OKP") {
        return Err("kty must be EC, RSA or OKP");
    }
    serde_json::from_value::<CoreJsonWebKey>(jwk.clone()).map_err(|_| "not a usable key")?;
    Ok(())
}

/// The client id an assertion claims (`iss`, which must equal `sub`),
/// read before its signature is checked, to find the key to check it with.
pub fn claimed_client(token: &str) -> Option<String> {
    let c = decode_part(token, 1)?;
    let iss = c.get("iss")?.as_str()?;
    (c.get("sub")?.as_str()? == iss).then(|| iss.to_owned())
}

/// Verify `token` as `client_id`'s assertion, signed by `jwk`, for one of
/// `audiences`, at `now` (Unix s) with `skew` seconds of clock leeway.
pub fn verify(
    token: &str,
    jwk: &serde_json::Value,
    client_id: &str,
    audiences: &[&str],
    now: i64,
    skew: i64,
) -> Result<Assertion, AssertionError> {
    let key: CoreJsonWebKey =
        serde_json::from_value(jwk.clone()).map_err(|_| AssertionError::BadKey)?;
    verify_compact(std::slice::from_ref(&key), token).map_err(|e| match e {
        JwsError::Malformed => AssertionError::Malformed,
        _ => AssertionError::Signature,
    })?;
    let c = decode_part(token, 1).ok_or(AssertionError::Malformed)?;
    let text = |name: &str| c.get(name).and_then(|v| v.as_str());
    if text("iss") != Some(client_id) {
        return Err(AssertionError::Claim("iss"));
    }
    if text("sub") != Some(client_id) {
        return Err(AssertionError::Claim("sub"));
    }
    let aud_ok = match c.get("aud") {
        Some(serde_json::Value::String(a)) => audiences.contains(&a.as_str()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .any(|v| v.as_str().is_some_and(|a| audiences.contains(&a))),
        _ => false,
    };
    if !aud_ok {
        return Err(AssertionError::Claim("aud"));
    }
    let exp = c
        .get("exp")
        .and_then(|v| v.as_i64())
        .ok_or(AssertionError::Claim("exp"))?;
    if exp < now - skew || exp > now + MAX_ASSERTION_LIFETIME_SECS + skew {
        return Err(AssertionError::Claim("exp"));
    }
    if let Some(iat) = c.get("iat") {
        if iat.as_i64().is_none_or(|iat| iat > now + skew) {
            return Err(AssertionError::Claim("iat"));
        }
    }
    if let Some(nbf) = c.get("nbf") {
        if nbf.as_i64().is_none_or(|nbf| nbf > now + skew) {
            return Err(AssertionError::Claim("nbf"));
        }
    }
    let jti = text("jti")
        .filter(|j| (1..=200).contains(&j.len()))
        .ok_or(AssertionError::Claim("jti"))?;
    Ok(Assertion {
        client_id: client_id.to_owned(),
        jti: jti.to_owned(),
        expires_at: exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    const AUD: &str = "https://edge.example/api/oauth/token";

    fn key() -> (SigningKey, serde_json::Value) {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        });
        (sk, jwk)
    }

    fn sign(sk: &SigningKey, claims: &serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig: Signature = sk.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({"iss": "sa_1", "sub": "sa_1", "aud": AUD, "exp": now + 60, "iat": now, "jti": "j1"})
    }

    #[test]
    fn a_well_formed_assertion_verifies_and_names_its_client() {
        let (sk, jwk) = key();
        let now = 1_800_000_000;
        let token = sign(&sk, &claims(now));
        assert_eq!(claimed_client(&token).as_deref(), Some("sa_1"));
        let a = verify(&token, &jwk, "sa_1", &[AUD], now, 30).unwrap();
        assert_eq!((a.jti.as_str(), a.expires_at), ("j1", now + 60));
    }

    #[test]
    fn wrong_key_audience_subject_expiry_or_missing_jti_are_refused() {
        let (sk, jwk) = key();
        let (_, other_jwk) = key();
        let now = 1_800_000_000;
        let good = sign(&sk, &claims(now));
        assert_eq!(
            verify(&good, &other_jwk, "sa_1", &[AUD], now, 30),
            Err(AssertionError::Signature)
        );
        assert_eq!(
            verify(&good, &jwk, "sa_2", &[AUD], now, 30),
            Err(AssertionError::Claim("iss"))
        );
        assert_eq!(
            verify(&good, &jwk, "sa_1", &["https://other/token"], now, 30),
            Err(AssertionError::Claim("aud"))
        );
        assert_eq!(
            verify(&good, &jwk, "sa_1", &[AUD], now + 200, 30),
            Err(AssertionError::Claim("exp"))
        );
        let mut far = claims(now);
        far["exp"] = serde_json::json!(now + 3600);
        assert_eq!(
            verify(&sign(&sk, &far), &jwk, "sa_1", &[AUD], now, 30),
            Err(AssertionError::Claim("exp"))
        );
        let mut no_jti = claims(now);
        no_jti.as_object_mut().unwrap().remove("jti");
        assert_eq!(
            verify(&sign(&sk, &no_jti), &jwk, "sa_1", &[AUD], now, 30),
            Err(AssertionError::Claim("jti"))
        );
        let mut other_sub = claims(now);
        other_sub["sub"] = serde_json::json!("sa_2");
        assert_eq!(claimed_client(&sign(&sk, &other_sub)), None);
        let tampered = format!("{}x", &good[..good.len() - 1]);
        assert!(verify(&tampered, &jwk, "sa_1", &[AUD], now, 30).is_err());
        assert_eq!(
            verify("not.a.jwt", &jwk, "sa_1", &[AUD], now, 30),
            Err(AssertionError::Malformed)
        );
    }
}
