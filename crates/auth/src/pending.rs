//! The pending-login cookie: state, nonce, PKCE verifier and return path of
//! a login in flight, carried by the browser in a short-lived signed cookie
//! (SameSite=Lax so it survives the provider's redirect back), so any
//! api-server replica can finish the login. Nothing is held in memory.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Purpose bound into the pending-login cookie's MAC.
pub const PENDING_PURPOSE: &str = "pending-login";

/// A login in flight.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// Cookie-safe encoding (base64url of JSON).
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
    }

    /// Constant-time comparison of the returned `state`.
    pub fn state_matches(&self, state: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.state.as_bytes().ct_eq(state.as_bytes()).into()
    }
}

/// Whether `path` is a safe local return path: absolute path on this
/// origin, not scheme-relative, no backslashes or control characters.
pub fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
        && path.len() <= 2048
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_accepted() {
        for ok in ["/", "/devices", "/devices?x=1#y"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "",
            "/a\nb",
        ] {
            assert!(!is_local_path(bad), "{bad}");
        }
    }

    #[test]
    fn round_trips_and_hides_secrets_from_debug() {
        let p = PendingLogin {
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v3r1f13r".into(),
            return_to: "/x".into(),
        };
        assert_eq!(PendingLogin::decode(&p.encode()), Some(p.clone()));
        assert!(!format!("{p:?}").contains("v3r1f13r"));
        assert!(p.state_matches("s") && !p.state_matches("t"));
    }
}
