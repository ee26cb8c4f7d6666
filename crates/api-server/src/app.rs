//! One way to assemble the api-server from its parts, used by the binary
//! ([`crate::run_on`], from configuration) and by the test stack
//! (`testkit`, from ephemeral parts): the relay directory (one static
//! node, or Redis leases shared by replicas), the audit writer, the box
//! client, the pairing limits and the background tasks.

use crate::config::Settings;
use crate::state::{AppParts, AppState, PairingLimits};
use crate::{audit_writer, box_client, health, metrics, webhooks};
use auth::oidc::OidcClient;
use auth::CookieKeys;
use directory::leases::{LeaseKey, RedisConn, RedisLocator};
use directory::shared_limits::SharedBuckets;
use directory::{NodeId, NodeLocator, RelayDirectory, SessionView, StaticNode};
use edge_core::Secret;
use std::sync::Arc;
use store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Remote-access audit events that may queue before writes go inline.
pub const AUDIT_QUEUE: usize = 8192;

/// Where the relays holding devices are found.
pub enum RelayNodes {
    /// One relay, at this internal URL.
    One(NodeId),
    /// Any number of relays, through the Redis leases they keep (ADR 017);
    /// the pairing limits are shared through the same Redis.
    Leases(RedisConn),
}

/// The api-server's parts before they are wired together.
pub struct AppBuilder {
    pub store: Store,
    pub settings: Settings,
    pub oidc: OidcClient,
    /// The secret shared with the relays (internal port, lease MACs).
    pub internal_secret: Secret,
    pub cookies: CookieKeys,
    pub pairing_key: Secret,
    pub relays: RelayNodes,
    /// Trust for the relays' internal TLS; `None`: the platform's roots.
    pub relay_tls: Option<Arc<edge_tls::ClientConfig>>,
}

/// The wired api-server, before it serves.
pub struct App {
    pub state: AppState,
    /// The relay client inside `state` (its counters are shared).
    pub relay_client: RelayDirectory,
    audit_task: JoinHandle<()>,
}

impl AppBuilder {
    /// Wire the parts together.
    pub fn build(self) -> App {
        let pairing_limits = Arc::new(PairingLimits::default());
        let metrics = metrics::ApiMetrics::default();
        let multi_node = matches!(self.relays, RelayNodes::Leases(_));
        let locator: Arc<dyn NodeLocator> = match self.relays {
            RelayNodes::One(node) => Arc::new(StaticNode(node)),
            RelayNodes::Leases(redis) => {
                let shared = SharedBuckets::new(redis.clone());
                pairing_limits.per_address.share(shared.clone());
                pairing_limits.global.share(shared);
                Arc::new(RedisLocator::new(
                    redis,
                    LeaseKey::derive(&self.internal_secret),
                    metrics.forged_directory_entries.clone(),
                ))
            }
        };
        let timeout = self.settings.proxy_connect_timeout;
        let mut relay_client = RelayDirectory::new(locator, self.internal_secret, timeout, timeout);
        if let Some(tls) = self.relay_tls {
            relay_client = relay_client.with_tls(tls);
        }
        if multi_node {
            relay_client = relay_client.requiring_tls_off_loopback();
        }
        let (audit, audit_task) = audit_writer::AuditWriter::start(self.store.clone(), AUDIT_QUEUE);
        let directory: Arc<dyn SessionView> = Arc::new(relay_client.clone());
        let boxes = box_client::BoxClient::new(
            directory.clone(),
            audit.clone(),
            timeout,
            self.settings.box_idle,
            self.settings.box_idle_per_device,
        );
        let state = AppState::from(AppParts {
            audit,
            store: self.store,
            directory,
            boxes,
            cookies: self.cookies,
            oidc: Arc::new(self.oidc),
            settings: Arc::new(self.settings),
            pairing_limits,
            access_changes: Arc::default(),
            verified_cookies: Default::default(),
            verified_bearers: Default::default(),
            pairing_key: self.pairing_key,
            metrics,
            signals: Arc::default(),
        });
        App {
            state,
            relay_client,
            audit_task,
        }
    }
}

impl App {
    /// Start the tasks every api-server runs beside its router: health
    /// evaluation and webhook deliveries (the binary adds the scheduled
    /// sweep, which tests run by hand).
    pub fn spawn_tasks(&self, shutdown: &CancellationToken) -> [JoinHandle<()>; 2] {
        [
            tokio::spawn(health::run(self.state.clone(), shutdown.clone())),
            tokio::spawn(webhooks::run(self.state.clone(), shutdown.clone())),
        ]
    }

    /// Drop this handle of the state; the task returned ends once the
    /// audit writer's last handle is gone (the router's, with it), its
    /// queue written.
    pub fn into_audit_task(self) -> JoinHandle<()> {
        self.audit_task
    }
}
