//! The relay (`remote-proxy`): accepts device tunnels on the tunnel port,
//! keeps this node's session directory, and serves the internal API the
//! api-server uses to reach devices. `run` is what the binary calls; tests
//! use [`Relay::serve`] with listeners they bound themselves.

pub mod config;
pub mod error;
pub mod internal;
pub mod registry;
pub mod tunnel_listener;

use config::{Config, Limits};
use directory::NodeId;
use edge_core::serve::{serve, ServeOptions};
use edge_core::Secret;
use error::RelayError;
use registry::LocalDirectory;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state of one relay node.
pub struct Relay {
    pub store: Store,
    pub directory: Arc<LocalDirectory>,
    pub limits: Limits,
    internal_secret: Secret,
    /// Per-device reconnect attempts: a burst, then one per second.
    limiter: edge_core::ratelimit::KeyedLimiter<edge_core::DeviceId>,
    tunnel_slots: Arc<Semaphore>,
    tunnels: TaskTracker,
    shutdown: CancellationToken,
    draining: AtomicBool,
}

impl Relay {
    pub fn new(store: Store, node: NodeId, internal_secret: Secret, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            store,
            directory: Arc::new(LocalDirectory::new(node, limits.open_stream_timeout)),
            limits,
            internal_secret,
            limiter: edge_core::ratelimit::KeyedLimiter::new(limits.reconnect_burst, 1.0),
            tunnel_slots: Arc::new(Semaphore::new(limits.max_tunnels)),
            tunnels: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Serve both listeners until `shutdown`; then refuse new tunnels (503),
    /// close every session with GoAway(0) and wait for them to end.
    pub async fn serve(
        self: Arc<Self>,
        tunnel: TcpListener,
        internal: TcpListener,
        shutdown: CancellationToken,
    ) {
        let tunnel_opts = ServeOptions {
            max_connections: self.limits.max_tunnels.saturating_add(1024),
            header_read_timeout: self.limits.handshake_timeout,
            drain_timeout: self.limits.drain_timeout,
        };
        let internal_opts = ServeOptions {
            drain_timeout: self.limits.drain_timeout,
            ..ServeOptions::default()
        };
        let closer = {
            let relay = self.clone();
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                relay.draining.store(true, Ordering::Relaxed);
                tracing::info!(
                    sessions = relay.directory.len(),
                    "closing tunnels with GoAway"
                );
                relay.shutdown.cancel();
            }
        };
        tokio::join!(
            serve(
                tunnel,
                tunnel_listener::router(self.clone()),
                tunnel_opts,
                shutdown.clone()
            ),
            serve(
                internal,
                internal::router(self.clone()),
                internal_opts,
                shutdown.clone()
            ),
            closer,
        );
        self.tunnels.close();
        if tokio::time::timeout(self.limits.drain_timeout, self.tunnels.wait())
            .await
            .is_err()
        {
            tracing::warn!("tunnels still open after the drain timeout");
        }
    }
}

/// Start a relay from configuration and run it until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RelayError> {
    let tunnel = TcpListener::bind(config.tunnel_listen)
        .await
        .map_err(|e| RelayError::Startup(format!("bind {}: {e}", config.tunnel_listen)))?;
    let internal = TcpListener::bind(config.internal_listen)
        .await
        .map_err(|e| RelayError::Startup(format!("bind {}: {e}", config.internal_listen)))?;
    run_on(config, tunnel, internal, shutdown).await
}

/// [`run`] on listeners the caller already bound (the two `*_listen`
/// settings are not used), for launchers that pick ephemeral ports.
pub async fn run_on(
    config: Config,
    tunnel: TcpListener,
    internal: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let store = Store::connect(&config.database_url())
        .await
        .map_err(|e| RelayError::Startup(e.to_string()))?;
    let secret = edge_core::secret::internal_secret(&config.internal_secret_path())
        .map_err(|e| RelayError::Startup(format!("internal secret: {e}")))?;
    let addr = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| RelayError::Startup(format!("listener: {e}")))
    };
    let (tunnel_addr, internal_addr) = (addr(&tunnel)?, addr(&internal)?);
    let node = NodeId(
        config
            .node_url
            .clone()
            .unwrap_or_else(|| format!("http://{internal_addr}")),
    );
    tracing::info!(tunnel = %tunnel_addr, internal = %internal_addr, node = %node.0, "remote-proxy listening");
    Relay::new(store, node, secret, config.limits())
        .serve(tunnel, internal, shutdown)
        .await;
    tracing::info!("remote-proxy stopped");
    Ok(())
}
