//! Signed cookies. The cookie value is `<value>.<expiry_ms>.<mac>` where the
//! MAC is HMAC-SHA256 over the cookie's name, its purpose, the expiry and the
//! value, so a value moved to another cookie name or presented for another
//! purpose fails, and an expired one fails. MACs compare in constant time.
//! One key signs; every configured key verifies (rotation).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edge_core::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a cookie was not accepted. Deliberately coarse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CookieError {
    #[error("malformed cookie")]
    Malformed,
    #[error("bad cookie signature")]
    BadSignature,
    #[error("cookie expired")]
    Expired,
}

/// One HMAC key (at least 32 bytes of material).
#[derive(Clone)]
pub struct CookieKey(Secret);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(***)")
    }
}

impl CookieKey {
    /// A key from secret material; `None` when shorter than 32 bytes.
    pub fn new(material: Secret) -> Option<Self> {
        (material.expose().len() >= 32).then_some(Self(material))
    }

    fn mac(&self, name: &str, purpose: &str, expiry: i64, value: &str) -> HmacSha256 {
        // Length-prefixed fields: no two distinct inputs share an encoding.
        let Ok(mut mac) = HmacSha256::new_from_slice(self.0.expose().as_bytes()) else {
            unreachable_hmac()
        };
        for field in [name, purpose, &expiry.to_string(), value] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

// HMAC accepts keys of any length, so `new_from_slice` cannot fail.
#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 accepts keys of any length")
}

/// The signing key and the keys still accepted for verification.
#[derive(Clone, Debug)]
pub struct CookieKeys {
    signing: CookieKey,
    verifying: Vec<CookieKey>,
}

impl CookieKeys {
    /// `signing` signs and verifies; `retired` only verify.
    pub fn new(signing: CookieKey, retired: Vec<CookieKey>) -> Self {
        let mut verifying = vec![signing.clone()];
        verifying.extend(retired);
        Self { signing, verifying }
    }

    /// The cookie value carrying `value` (URL-safe, no `.`) until `expiry_ms`.
    pub fn sign(&self, name: &str, purpose: &str, value: &str, expiry_ms: i64) -> String {
        let tag = self
            .signing
            .mac(name, purpose, expiry_ms, value)
            .finalize()
            .into_bytes();
        format!("{value}.{expiry_ms}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Check a cookie value; returns the carried value.
    pub fn verify(
        &self,
        name: &str,
        purpose: &str,
        raw: &str,
        now_ms: i64,
    ) -> Result<String, CookieError> {
        self.verify_until(name, purpose, raw, now_ms)
            .map(|(value, _)| value)
    }

    /// Check a cookie value; returns the carried value and the signed
    /// expiry (Unix ms) after which the same value no longer verifies.
    pub fn verify_until(
        &self,
        name: &str,
        purpose: &str,
        raw: &str,
        now_ms: i64,
    ) -> Result<(String, i64), CookieError> {
        let mut parts = raw.rsplitn(3, '.');
        let (Some(tag), Some(expiry), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CookieError::Malformed);
        };
        let expiry: i64 = expiry.parse().map_err(|_| CookieError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CookieError::Malformed)?;
        let valid = self.verifying.iter().any(|k| {
            k.mac(name, purpose, expiry, value)
                .verify_slice(&tag)
                .is_ok()
        });
        if !valid {
            return Err(CookieError::BadSignature);
        }
        if now_ms >= expiry {
            return Err(CookieError::Expired);
        }
        Ok((value.to_owned(), expiry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> CookieKey {
        CookieKey::new(Secret::new(c.to_string().repeat(40))).unwrap_or_else(|| unreachable_hmac())
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let keys = CookieKeys::new(key('a'), vec![]);
        let c = keys.sign("session", "session", "abc", 10_000);
        assert_eq!(
            keys.verify("session", "session", &c, 5_000),
            Ok("abc".into())
        );
        assert_eq!(
            keys.verify_until("session", "session", &c, 5_000),
            Ok(("abc".into(), 10_000))
        );
        assert_eq!(
            keys.verify("session", "session", &c, 10_000),
            Err(CookieError::Expired)
        );
        let tampered = c.replacen("abc", "abd", 1);
        assert_eq!(
            keys.verify("session", "session", &tampered, 5_000),
            Err(CookieError::BadSignature)
        );
        let later = c.replacen("10000", "99999", 1);
        assert_eq!(
            keys.verify("session", "session", &later, 5_000),
            Err(CookieError::BadSignature)
        );
        assert_eq!(
            keys.verify("other", "session", &c, 5_000),
            Err(CookieError::BadSignature)
        );
        assert_eq!(
            keys.verify("session", "login", &c, 5_000),
            Err(CookieError::BadSignature)
        );
        assert_eq!(
            keys.verify("session", "session", "garbage", 5_000),
            Err(CookieError::Malformed)
        );
    }

    #[test]
    fn rotation_verifies_retired_keys_but_signs_with_the_new_one() {
        let old = CookieKeys::new(key('o'), vec![]);
        let rotated = CookieKeys::new(key('n'), vec![key('o')]);
        let fresh = CookieKeys::new(key('n'), vec![]);
        let c = old.sign("s", "p", "v", 10);
        assert!(rotated.verify("s", "p", &c, 0).is_ok());
        assert_eq!(
            fresh.verify("s", "p", &c, 0),
            Err(CookieError::BadSignature)
        );
        assert!(fresh
            .verify("s", "p", &rotated.sign("s", "p", "v", 10), 0)
            .is_ok());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(CookieKey::new(Secret::new("short")).is_none());
    }
}
