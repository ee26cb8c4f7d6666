//! What every handler shares: the store, the directory view, cookie keys,
//! the OIDC client and checked settings.

use crate::config::Settings;
use auth::oidc::OidcClient;
use auth::CookieKeys;
use directory::SessionView;
use std::sync::Arc;
use store::Store;

/// Limits on failed pairing exchanges (keys are client addresses, IPv6 by
/// /64).
pub struct PairingLimits {
    pub per_address: edge_core::ratelimit::KeyedLimiter<std::net::IpAddr>,
    pub global: edge_core::ratelimit::KeyedLimiter<()>,
}

impl Default for PairingLimits {
    /// 10 failures per address, refilled one a minute; 100 overall,
    /// refilled one a second.
    fn default() -> Self {
        Self {
            per_address: edge_core::ratelimit::KeyedLimiter::new(10, 1.0 / 60.0),
            global: edge_core::ratelimit::KeyedLimiter::new(100, 1.0),
        }
    }
}

/// Wakes every open device-origin connection of this replica to re-check
/// its access at once (logout, "end this session", back-channel logout);
/// other replicas notice on their next periodic re-check.
#[derive(Debug, Default)]
pub struct AccessChanges(tokio::sync::watch::Sender<u64>);

impl AccessChanges {
    /// Something that may end access happened.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[derive(Clone)]
pub struct AppState {
    /// The remote-access audit trail, written off the request path.
    pub audit: crate::audit_writer::AuditWriter,
    pub store: Store,
    /// Read-and-control view only: the api-server cannot register sessions.
    pub directory: Arc<dyn SessionView>,
    pub cookies: CookieKeys,
    /// The OpenID Connect relying party: the only way users authenticate.
    pub oidc: Arc<OidcClient>,
    pub settings: Arc<Settings>,
    pub pairing_limits: Arc<PairingLimits>,
    pub access_changes: Arc<AccessChanges>,
    /// Key of the pairing-code HMAC (the same on every replica).
    pub pairing_key: edge_core::Secret,
}
