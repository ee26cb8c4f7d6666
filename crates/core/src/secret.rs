//! Secret values that cannot be printed: `Debug` and `Display` show a mask,
//! and the only way to the bytes is an explicit `expose()`.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// A secret string (token, shared secret, client secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }

    /// Random secret of `bytes` bytes from the OS CSPRNG, hex encoded.
    pub fn random(bytes: usize) -> Self {
        let mut buf = vec![0u8; bytes];
        rand::rngs::OsRng.fill_bytes(&mut buf);
        Self(hex::encode(buf))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A device credential: 256 random bits. Only its SHA-256 hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(Secret);

/// Prefix that makes a device token recognisable in a leak scanner.
pub const DEVICE_TOKEN_PREFIX: &str = "edt_";

impl DeviceToken {
    pub fn generate() -> Self {
        Self(Secret::new(format!(
            "{DEVICE_TOKEN_PREFIX}{}",
            Secret::random(32).expose()
        )))
    }

    pub fn from_secret(secret: Secret) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The hash the store keeps (hex SHA-256 of the whole token).
    pub fn hash(&self) -> String {
        sha256_hex(self.0.expose().as_bytes())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceToken(***)")
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        let t = DeviceToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn device_tokens_carry_256_bits_and_differ() {
        let a = DeviceToken::generate();
        let b = DeviceToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), DEVICE_TOKEN_PREFIX.len() + 64);
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.expose());
    }

    #[test]
    fn constant_time_compare_matches_equality() {
        let s = Secret::new("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
    }
}
