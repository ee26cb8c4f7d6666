//! Credentials already checked: the stored hash of the session a signed
//! cookie or a bearer token presents, remembered by the exact credential,
//! so a client's every request does not pay again for the cookie's
//! signature (HMAC-SHA-256) and the id's hash (SHA-256). What is
//! remembered is only what checking the same bytes again would give: the
//! keys that sign cookies are fixed for the life of the process, and a
//! cookie is not used past the expiry it was signed with. Whether the
//! session still exists, and may reach what it asks for, is not this
//! cache's business: that is checked on every request, as before.

use crate::FastMap;
use std::sync::Mutex;

/// Credentials remembered at most, per kind; the map is emptied when full
/// (a client whose entry went is checked again on its next request).
const MAX_ENTRIES: usize = 8_192;

/// The session hashes of recently presented credentials of one kind.
#[derive(Default)]
pub struct VerifiedCredentials {
    entries: Mutex<FastMap<Box<str>, Verified>>,
}

struct Verified {
    session_hash: String,
    /// Unix ms from which the credential no longer verifies.
    expires_at: i64,
}

impl std::fmt::Debug for VerifiedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are credentials: only their number is shown.
        let len = self.entries.lock().map_or(0, |e| e.len());
        f.debug_struct("VerifiedCredentials")
            .field("entries", &len)
            .finish()
    }
}

impl VerifiedCredentials {
    /// The session hash `credential` presents at `now_ms`: remembered, or
    /// else what `check` says (the hash and the credential's expiry), then
    /// remembered. A credential `check` refuses is not remembered.
    pub fn session_hash(
        &self,
        credential: &str,
        now_ms: i64,
        check: impl FnOnce() -> Option<(String, i64)>,
    ) -> Option<String> {
        if let Some(hash) = self.remembered(credential, now_ms) {
            return Some(hash);
        }
        let (session_hash, expires_at) = check()?;
        if now_ms < expires_at {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                credential.into(),
                Verified {
                    session_hash: session_hash.clone(),
                    expires_at,
                },
            );
        }
        Some(session_hash)
    }

    fn remembered(&self, credential: &str, now_ms: i64) -> Option<String> {
        let mut entries = self.lock();
        let verified = entries.get(credential)?;
        if now_ms < verified.expires_at {
            return Some(verified.session_hash.clone());
        }
        entries.remove(credential);
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Box<str>, Verified>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_credential_is_checked_once_until_it_expires() {
        let cache = VerifiedCredentials::default();
        let checks = Cell::new(0);
        let check = || {
            checks.set(checks.get() + 1);
            Some(("h1".to_owned(), 1_000))
        };
        assert_eq!(cache.session_hash("c1", 10, check), Some("h1".into()));
        assert_eq!(cache.session_hash("c1", 999, check), Some("h1".into()));
        assert_eq!(checks.get(), 1);
        // At its expiry the credential is checked again (and the check
        // decides: here it refuses).
        assert_eq!(cache.session_hash("c1", 1_000, || None), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn refused_and_other_credentials_are_not_taken_for_one_another() {
        let cache = VerifiedCredentials::default();
        assert_eq!(cache.session_hash("bad", 0, || None), None);
        assert_eq!(cache.len(), 0);
        cache.session_hash("c1", 0, || Some(("h1".into(), 100)));
        assert_eq!(
            cache.session_hash("c2", 0, || Some(("h2".into(), 100))),
            Some("h2".into())
        );
        assert_eq!(cache.session_hash("c1x", 0, || None), None);
        // A check that gives an expiry already past is not remembered.
        assert_eq!(
            cache.session_hash("late", 200, || Some(("h3".into(), 100))),
            Some("h3".into())
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedCredentials::default();
        for i in 0..MAX_ENTRIES + 10 {
            cache.session_hash(&format!("c{i}"), 0, || Some((format!("h{i}"), 100)));
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert!(!format!("{cache:?}").contains("c1"));
    }
}
