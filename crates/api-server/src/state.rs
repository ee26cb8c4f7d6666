//! What every handler shares: the store, the directory view, cookie keys,
//! the OIDC client and checked settings.

use crate::config::Settings;
use auth::oidc::OidcClient;
use auth::CookieKeys;
use directory::SessionView;
use std::sync::Arc;
use store::Store;

/// Limits on failed pairing exchanges (keys are client addresses, IPv6 by
/// /64), counted across replicas when Redis is configured.
pub struct PairingLimits {
    pub per_address: directory::shared_limits::Bucket<std::net::IpAddr>,
    pub global: directory::shared_limits::Bucket<&'static str>,
}

impl Default for PairingLimits {
    /// 10 failures per address, refilled one a minute; 100 overall,
    /// refilled one a second.
    fn default() -> Self {
        Self {
            per_address: directory::shared_limits::Bucket::new("pair-addr", 10, 1.0 / 60.0),
            global: directory::shared_limits::Bucket::new("pair-all", 100, 1.0),
        }
    }
}

/// The key of the global pairing bucket.
pub const ALL: &str = "all";

/// Wakes every open device-origin connection of this replica to re-check
/// its access at once (logout, "end this session", back-channel logout,
/// a device deleted), and keeps the short-lived cache of granted access
/// checks that such a change empties. Other replicas notice on their next
/// periodic re-check, and their cached grants are at most
/// `access_cache_ttl` old (under a second), so access ends everywhere
/// within a second.
#[derive(Debug, Default)]
pub struct AccessChanges {
    wake: tokio::sync::watch::Sender<u64>,
    granted: std::sync::Mutex<GrantCache>,
}

/// Granted (session hash, device) checks and when they were made, by
/// session hash and then device, so a lookup borrows the hash it is
/// given instead of copying it into a key.
#[derive(Debug, Default)]
struct GrantCache {
    /// Bumped by every change, so a check that raced one is not cached.
    generation: u64,
    entries: crate::FastMap<String, crate::FastMap<edge_core::DeviceId, Grant>>,
    /// Grants held, over every session.
    len: usize,
}

type Grant = (store::Actor, std::time::Instant);

/// Entries the grant cache holds at most (emptied when full).
const MAX_GRANTS: usize = 16_384;

impl AccessChanges {
    /// Something that may end access happened.
    pub fn notify(&self) {
        if let Ok(mut cache) = self.granted.lock() {
            cache.generation = cache.generation.wrapping_add(1);
            cache.entries.clear();
            cache.len = 0;
        }
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Who was granted `device` under `session_hash` within `ttl`.
    pub fn granted(
        &self,
        session_hash: &str,
        device: edge_core::DeviceId,
        ttl: std::time::Duration,
    ) -> Option<store::Actor> {
        let cache = self.granted.lock().ok()?;
        let (actor, at) = cache.entries.get(session_hash)?.get(&device)?;
        (at.elapsed() < ttl).then(|| actor.clone())
    }

    /// The change generation now; pass it to [`Self::grant`] after the
    /// store said yes.
    pub fn generation(&self) -> u64 {
        self.granted.lock().map(|c| c.generation).unwrap_or(0)
    }

    /// Remember a grant checked at `generation`, unless a change came since.
    pub fn grant(
        &self,
        session_hash: &str,
        device: edge_core::DeviceId,
        actor: store::Actor,
        generation: u64,
    ) {
        if let Ok(mut cache) = self.granted.lock() {
            if cache.generation != generation {
                return;
            }
            if cache.len >= MAX_GRANTS {
                cache.entries.clear();
                cache.len = 0;
            }
            let grant = (actor, std::time::Instant::now());
            let devices = match cache.entries.get_mut(session_hash) {
                Some(devices) => devices,
                None => cache.entries.entry(session_hash.to_owned()).or_default(),
            };
            if devices.insert(device, grant).is_none() {
                cache.len += 1;
            }
        }
    }
}

/// Wake-ups between the health pass, the webhook worker and tests.
#[derive(Debug)]
pub struct Signals {
    /// Deliveries were queued: the webhook worker looks now.
    pub webhook_wake: tokio::sync::Notify,
    /// Counts finished health passes.
    pub health_passes: tokio::sync::watch::Sender<u64>,
    /// Counts delivery attempts made.
    pub delivery_attempts: tokio::sync::watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            webhook_wake: tokio::sync::Notify::new(),
            health_passes: tokio::sync::watch::channel(0).0,
            delivery_attempts: tokio::sync::watch::channel(0).0,
        }
    }
}

/// What every handler shares, behind one `Arc`: axum clones the state for
/// each extractor and middleware of every request, and a clone of the
/// parts themselves (some thirty reference counts, shared by every core)
/// showed as several per cent of a proxied request's CPU.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl From<AppParts> for AppState {
    fn from(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    /// The remote-access audit trail, written off the request path.
    pub audit: crate::audit_writer::AuditWriter,
    pub store: Store,
    /// Read-and-control view only: the api-server cannot register sessions.
    pub directory: Arc<dyn SessionView>,
    /// Pooled keep-alive connections to boxes, over the directory's streams.
    pub boxes: crate::box_client::BoxClient,
    pub cookies: CookieKeys,
    /// Session cookies whose signature was checked, by value.
    pub verified_cookies: crate::verified_credentials::VerifiedCredentials,
    /// Bearer tokens whose session hash was taken, by value.
    pub verified_bearers: crate::verified_credentials::VerifiedCredentials,
    /// The OpenID Connect relying party: the only way users authenticate.
    pub oidc: Arc<OidcClient>,
    pub settings: Arc<Settings>,
    pub pairing_limits: Arc<PairingLimits>,
    pub access_changes: Arc<AccessChanges>,
    /// Key of the pairing-code HMAC (the same on every replica).
    pub pairing_key: edge_core::Secret,
    pub metrics: crate::metrics::ApiMetrics,
    pub signals: Arc<Signals>,
}

impl AppParts {
    /// The metrics endpoint content; the audit writer's status is read at
    /// each scrape.
    pub fn exposition(&self) -> edge_core::metrics::Exposition {
        let (metrics, status) = (self.metrics.clone(), self.audit.status_probe());
        let opened = self.boxes.streams_opened_probe();
        edge_core::metrics::Exposition::new(self.metrics.registry(), move || {
            metrics.remote_access_opened.set(opened() as i64);
            let s = status();
            metrics.audit_queue_depth.set(s.queued as i64);
            metrics.audit_pending.set(s.pending as i64);
            metrics.audit_failing.set(i64::from(s.failing));
            metrics.audit_lost.set(s.lost as i64);
            metrics.audit_recorded.set(s.recorded as i64);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_core::{DeviceId, UserId};
    use std::time::Duration;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_grant_is_reused_until_a_change_empties_the_cache() {
        let changes = AccessChanges::default();
        let (device, user) = (DeviceId::new(), store::Actor::from(UserId::new()));
        assert_eq!(changes.granted("s", device, TTL), None);
        changes.grant("s", device, user.clone(), changes.generation());
        assert_eq!(changes.granted("s", device, TTL), Some(user));
        assert_eq!(changes.granted("other", device, TTL), None);
        assert_eq!(changes.granted("s", DeviceId::new(), TTL), None);
        changes.notify();
        assert_eq!(changes.granted("s", device, TTL), None);
    }

    #[test]
    fn a_check_that_raced_a_change_is_not_cached() {
        let changes = AccessChanges::default();
        let (device, user) = (DeviceId::new(), store::Actor::from(UserId::new()));
        let before = changes.generation();
        changes.notify();
        changes.grant("s", device, user, before);
        assert_eq!(changes.granted("s", device, TTL), None);
    }

    #[test]
    fn a_grant_older_than_the_ttl_is_not_used() {
        let changes = AccessChanges::default();
        let (device, user) = (DeviceId::new(), store::Actor::from(UserId::new()));
        changes.grant("s", device, user, changes.generation());
        assert_eq!(changes.granted("s", device, Duration::ZERO), None);
    }
}
