//! Session ids: 256 bits from the OS CSPRNG, hex in the cookie; the store
//! keeps only their SHA-256.

use edge_core::secret::sha256_hex;
use edge_core::Secret;

/// A session id as the browser holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionId(Secret);

impl SessionId {
    pub fn generate() -> Self {
        Self(Secret::random(32))
    }

    /// Accept a value taken from a verified cookie.
    pub fn from_cookie_value(value: &str) -> Option<Self> {
        (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(Secret::new(value)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// What the store keeps.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.expose().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_and_hash_differs() {
        let a = SessionId::generate();
        assert_ne!(a, SessionId::generate());
        assert_eq!(SessionId::from_cookie_value(a.expose()), Some(a.clone()));
        assert_ne!(a.hash(), a.expose());
        assert!(SessionId::from_cookie_value("xyz").is_none());
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
