//! The relay (`remote-proxy`): accepts device tunnels on the tunnel port,
//! keeps this node's session directory, serves the internal API the
//! api-server uses to reach devices, and scrapes the metrics of the
//! devices it holds ([`scrape`]). `run` is what the binary calls; tests
//! use [`Relay::serve`] with listeners they bound themselves.

pub mod config;
pub mod device_stream;
pub mod error;
pub mod internal;
pub mod internal_socket;
pub mod leases;
pub mod metrics;
pub mod registry;
pub mod scrape;
pub mod seen;
pub mod telemetry_writer;
pub mod tunnel_listener;

use config::{Config, Limits};
use directory::NodeId;
use edge_core::serve::{serve_tls, ServeOptions};
use edge_core::Secret;
use error::RelayError;
use registry::LocalDirectory;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    /// (Counted across relays once [`Relay::use_leases`] shares it.)
    limiter: directory::shared_limits::Bucket<edge_core::DeviceId>,
    /// Bad credentials per client address (IPv6: per /64): a burst, then
    /// one per second; an address without tokens left gets 429 before its
    /// credential is looked up, so bad tokens cannot drive the store.
    bad_credentials: edge_core::ratelimit::KeyedLimiter<std::net::IpAddr>,
    tunnel_slots: Arc<Semaphore>,
    /// Devices' last-seen times, written in batches ([`seen`]).
    pub seen: Arc<seen::Seen>,
    tunnels: TaskTracker,
    /// The shards serving while [`Relay::serve_all`] runs (ADR 042), for
    /// the task gauge; not held, so they stop when serving ends.
    shards: std::sync::OnceLock<std::sync::Weak<edge_core::shard::Shards>>,
    shutdown: CancellationToken,
    /// Cancelled when the node starts draining.
    pub(crate) draining: CancellationToken,
    /// One token per api-server channel that has not sent its drain notice
    /// yet: the drain waits for them before any lease goes away.
    pub(crate) notices: TaskTracker,
    /// Multi-node mode: this node's leases in Redis (ADR 017).
    leases: std::sync::OnceLock<directory::leases::RelayLeases>,
    /// Tells this process's connections apart from other processes' in
    /// lease values.
    instance: String,
    pub metrics: metrics::RelayMetrics,
    /// Counts the telemetry writer's stored batches (tests await it).
    pub telemetry_writes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// How long a drain waits for its notices to the api-servers' channels.
const NOTICES_WITHIN: Duration = Duration::from_secs(1);

/// Bad credentials one address may present at once before its bucket
/// (refilled one per second) holds it off.
pub const BAD_CREDENTIAL_BURST: u32 = 20;

impl Relay {
    pub fn new(store: Store, node: NodeId, internal_secret: Secret, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            store,
            directory: Arc::new(LocalDirectory::new(node, limits.open_stream_timeout)),
            limiter: directory::shared_limits::Bucket::new(
                "reconnect",
                limits.reconnect_burst,
                1.0,
            ),
            bad_credentials: edge_core::ratelimit::KeyedLimiter::new(BAD_CREDENTIAL_BURST, 1.0),
            tunnel_slots: Arc::new(Semaphore::new(limits.max_tunnels)),
            seen: Arc::default(),
            limits,
            internal_secret,
            tunnels: TaskTracker::new(),
            shards: std::sync::OnceLock::new(),
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            notices: TaskTracker::new(),
            leases: std::sync::OnceLock::new(),
            instance: Secret::random(6).expose().to_owned(),
            metrics: metrics::RelayMetrics::default(),
            telemetry_writes: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// This node's metrics endpoint content; gauges of live state are read
    /// at each scrape.
    pub fn exposition(self: &Arc<Self>) -> edge_core::metrics::Exposition {
        let relay = Arc::downgrade(self);
        edge_core::metrics::Exposition::new(self.metrics.registry(), move || {
            if let Some(relay) = relay.upgrade() {
                let (tunnels, streams) = relay.directory.counts();
                relay.metrics.tunnels_online.set(tunnels as i64);
                relay.metrics.streams_open.set(streams as i64);
                let on_shards = relay
                    .shards
                    .get()
                    .and_then(std::sync::Weak::upgrade)
                    .map_or(0, |shards| shards.alive_tasks());
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let alive = rt.metrics().num_alive_tasks() + on_shards;
                    relay.metrics.tasks_alive.set(alive as i64);
                }
            }
        })
    }

    /// Turn on multi-node mode: keep a lease in Redis for every tunnel and
    /// count device reconnects together with the other relays.
    /// Call before serving.
    pub fn use_leases(
        &self,
        leases: directory::leases::RelayLeases,
        shared: directory::shared_limits::SharedBuckets,
    ) {
        let _ = self.leases.set(leases);
        self.limiter.share(shared);
    }

    pub fn leases(&self) -> Option<&directory::leases::RelayLeases> {
        self.leases.get()
    }

    /// The lease value of connection `conn` that connected at `since`.
    pub fn lease(&self, conn: directory::ConnectionId, since: i64) -> directory::leases::Lease {
        directory::leases::Lease {
            node: self.directory.node().clone(),
            holder: format!("{}-{}", self.instance, conn.0),
            connected_since: since,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Serve both listeners in plain TCP; see [`Relay::serve_tls`].
    pub async fn serve(
        self: Arc<Self>,
        tunnel: TcpListener,
        internal: TcpListener,
        shutdown: CancellationToken,
    ) {
        self.serve_tls(tunnel, internal, RelayTls::default(), shutdown)
            .await;
    }

    /// Serve both listeners (each over TLS when `tls` says so) until
    /// `shutdown`; then drain ([`Relay::drain`]) and stop.
    pub async fn serve_tls(
        self: Arc<Self>,
        tunnel: TcpListener,
        internal: TcpListener,
        tls: RelayTls,
        shutdown: CancellationToken,
    ) {
        self.serve_all(tunnel, internal, None, tls, shutdown).await;
    }

    /// [`Relay::serve_tls`], with the internal API also on a Unix-domain
    /// socket when `internal_unix` is given (ADR 041).
    pub async fn serve_all(
        self: Arc<Self>,
        tunnel: TcpListener,
        internal: TcpListener,
        internal_unix: Option<tokio::net::UnixListener>,
        tls: RelayTls,
        shutdown: CancellationToken,
    ) {
        // Both TCP ports hand their connections to the same shards (ADR
        // 042). Held here until the tunnels have ended: dropping the last
        // handle stops the shards and every task on them, and a tunnel's
        // teardown (directory, lease, last-seen) runs on its shard.
        let shards = self.start_shards();
        let tunnel_opts = ServeOptions {
            max_connections: self.limits.max_tunnels.saturating_add(1024),
            max_connections_per_client: self.limits.max_connections_per_client,
            header_read_timeout: self.limits.handshake_timeout,
            drain_timeout: self.limits.drain_timeout,
            trusted_proxies: self.limits.trusted_proxies.clone(),
            shards: shards.clone(),
            ..ServeOptions::default()
        };
        // The Unix socket is served off the shards (ADR 041).
        let unix_opts = ServeOptions {
            drain_timeout: self.limits.drain_timeout,
            ..ServeOptions::default()
        };
        let internal_opts = ServeOptions {
            shards: shards.clone(),
            ..unix_opts.clone()
        };
        // Both ports stay open while draining: the tunnel port answers 503
        // `draining` (the agent moves to another node) and the internal
        // port keeps serving the streams that are still in flight.
        let stop_serving = CancellationToken::new();
        let closer = {
            let relay = self.clone();
            let stop_serving = stop_serving.clone();
            async move {
                shutdown.cancelled().await;
                relay.drain().await;
                relay.shutdown.cancel();
                stop_serving.cancel();
            }
        };
        // Stopped once the tunnels have ended, so their last times are
        // written too.
        let stop_seen = CancellationToken::new();
        let seen_writer = tokio::spawn(seen::run(
            self.seen.clone(),
            self.store.clone(),
            stop_seen.clone(),
        ));
        let scraper = tokio::spawn(scrape::run(
            self.clone(),
            self.limits.telemetry.clone(),
            self.shutdown.clone(),
        ));
        if let Some(leases) = self.leases.get() {
            tokio::spawn(leases::keep(self.clone(), leases.clone()));
            tokio::spawn(leases::hear_takeovers(self.clone(), leases.clone()));
        }
        tokio::join!(
            serve_tls(
                tunnel,
                tunnel_listener::router(self.clone()),
                tunnel_opts,
                tls.tunnel,
                stop_serving.clone()
            ),
            serve_tls(
                internal,
                internal::router(self.clone()),
                internal_opts,
                tls.internal,
                stop_serving.clone()
            ),
            async {
                if let Some(listener) = internal_unix {
                    edge_core::serve::serve_unix(
                        listener,
                        internal::router(self.clone()),
                        unix_opts,
                        stop_serving.clone(),
                    )
                    .await;
                }
            },
            closer,
        );
        // The scraper stopped when draining began; its writer stores what
        // it holds before the task ends.
        let _ = scraper.await;
        self.tunnels.close();
        if tokio::time::timeout(self.limits.drain_timeout, self.tunnels.wait())
            .await
            .is_err()
        {
            tracing::warn!("tunnels still open after the drain timeout");
        }
        stop_seen.cancel();
        let _ = seen_writer.await;
        drop(shards);
    }

    /// The shards of `Limits::shards`, or none (also when their threads
    /// cannot start: the main runtime then serves, as with 0).
    fn start_shards(&self) -> Option<Arc<edge_core::shard::Shards>> {
        if self.limits.shards == 0 {
            return None;
        }
        match edge_core::shard::Shards::start(self.limits.shards, "relay") {
            Ok(shards) => {
                let shards = Arc::new(shards);
                let _ = self.shards.set(Arc::downgrade(&shards));
                tracing::info!(
                    shards = shards.len(),
                    "tunnels and channels served on shards"
                );
                Some(shards)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot start shard threads; the main runtime serves");
                None
            }
        }
    }

    /// Drain this node (SIGTERM): refuse new tunnels with 503 `draining`,
    /// leave the node set, and close each session with GoAway(0) once it
    /// has no open stream, or when the drain timeout passes. A closed
    /// session's lease is deleted as it ends, so its device reconnects to
    /// another node at once.
    pub async fn drain(&self) {
        self.draining.cancel();
        self.directory.set_draining();
        // Every api-server hears of the drain before a device's lease goes
        // away: one that then finds a device without a lease waits for it
        // to reappear elsewhere instead of answering "offline".
        self.notices.close();
        if tokio::time::timeout(NOTICES_WITHIN, self.notices.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain notices not all sent within {NOTICES_WITHIN:?}");
        }
        let sessions = self.directory.live();
        tracing::info!(
            sessions = sessions.len(),
            timeout = ?self.limits.drain_timeout,
            "draining: closing each tunnel with GoAway once its streams end"
        );
        if let Some(leases) = self.leases.get() {
            if let Err(err) = leases.withdraw().await {
                tracing::warn!(error = %err, "cannot withdraw this relay node");
            }
        }
        let deadline = tokio::time::Instant::now() + self.limits.drain_timeout;
        let busy = AtomicUsize::new(0);
        futures_util::future::join_all(sessions.into_iter().map(|(device, conn, _)| {
            let busy = &busy;
            async move {
                let idle = self.directory.until_idle(device, conn);
                if tokio::time::timeout_at(deadline, idle).await.is_err() {
                    busy.fetch_add(1, Ordering::Relaxed);
                }
                self.directory.close_conn(device, conn, "drained");
            }
        }))
        .await;
        let busy = busy.into_inner();
        if busy > 0 {
            tracing::warn!(
                sessions = busy,
                "drain timeout: closed tunnels that still had open streams"
            );
        }
    }
}

/// TLS for the relay's two listeners (`None`: plain TCP, e.g. behind a
/// TLS-terminating proxy).
#[derive(Clone, Default)]
pub struct RelayTls {
    pub tunnel: Option<edge_tls::TlsAcceptor>,
    pub internal: Option<edge_tls::TlsAcceptor>,
}

/// How often certificate files are checked for changes.
const CERT_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// A reloading acceptor for `cert`/`key` when both are set; its watcher
/// runs until `shutdown`.
fn acceptor(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    shutdown: &CancellationToken,
) -> Result<Option<edge_tls::TlsAcceptor>, RelayError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let reloading =
        edge_tls::ReloadingCert::load(cert, key).map_err(|e| RelayError::Startup(e.to_string()))?;
    let acceptor = reloading
        .acceptor()
        .map_err(|e| RelayError::Startup(e.to_string()))?;
    tokio::spawn(reloading.watch(CERT_WATCH_INTERVAL, shutdown.clone()));
    Ok(Some(acceptor))
}

impl Config {
    /// The TLS acceptors this configuration asks for (their certificate
    /// watchers stop with `shutdown`).
    pub fn tls(&self, shutdown: &CancellationToken) -> Result<RelayTls, RelayError> {
        Ok(RelayTls {
            tunnel: acceptor(self.tls_cert.as_deref(), self.tls_key.as_deref(), shutdown)?,
            internal: acceptor(
                self.internal_tls_cert.as_deref(),
                self.internal_tls_key.as_deref(),
                shutdown,
            )?,
        })
    }
}

/// Start a relay from configuration and run it until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RelayError> {
    // Each tunnel is one descriptor; a default soft limit of 1,024 would
    // cap the relay far below what it can hold.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    let tunnel = edge_core::listen::bind(config.tunnel_listen)
        .map_err(|e| RelayError::Startup(format!("bind {}: {e}", config.tunnel_listen)))?;
    let internal = edge_core::listen::bind(config.internal_listen)
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
    let tls = config.tls(&shutdown)?;
    let internal_scheme = if tls.internal.is_some() {
        "https"
    } else {
        "http"
    };
    let node = NodeId(
        config
            .node_url
            .clone()
            .unwrap_or_else(|| format!("{internal_scheme}://{internal_addr}")),
    );
    tracing::info!(tunnel = %tunnel_addr, internal = %internal_addr, node = %node.0,
        tunnel_tls = tls.tunnel.is_some(), internal_tls = tls.internal.is_some(), "remote-proxy listening");
    let limits = config.limits().map_err(RelayError::Startup)?;
    let lease_key = directory::leases::LeaseKey::derive(&secret);
    let relay = Relay::new(store, node.clone(), secret, limits);
    if let Some(url) = &config.redis_url {
        let redis = directory::leases::RedisConn::connect(
            url,
            Duration::from_millis(config.redis_timeout_ms.clamp(50, 30_000)),
        )
        .await
        .map_err(|e| RelayError::Startup(format!("redis: {e}")))?;
        let leases = directory::leases::RelayLeases::new(
            redis.clone(),
            node,
            lease_key,
            Duration::from_secs(config.lease_ttl_secs.clamp(6, 300)),
        );
        let shared = directory::shared_limits::SharedBuckets::new(redis);
        relay.use_leases(leases, shared);
        tracing::info!("multi-node mode: tunnel leases in Redis");
    }
    if let Some(addr) = config.metrics_listen.0 {
        edge_core::metrics::spawn(addr, relay.exposition(), shutdown.clone())
            .await
            .map_err(|e| RelayError::Startup(format!("metrics listener {addr}: {e}")))?;
    }
    let internal_unix = match &config.internal_socket {
        Some(path) => {
            let listener = internal_socket::bind(path).await?;
            tracing::info!(socket = %path.display(), "internal API on a Unix socket too");
            Some(listener)
        }
        None => None,
    };
    relay
        .serve_all(tunnel, internal, internal_unix, tls, shutdown)
        .await;
    if let Some(path) = &config.internal_socket {
        // Stopped cleanly: the next start finds no file (a killed relay's
        // file is replaced then).
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("remote-proxy stopped");
    Ok(())
}
