//! Command-line and environment configuration of the relay, with the
//! documented defaults, checked once into [`Limits`].

use clap::Parser;
use edge_core::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// remote-proxy: accepts edge device tunnels (WebSocket + yamux) and opens
/// streams to devices for the api-server.
#[derive(Debug, Clone, Parser)]
#[command(name = "remote-proxy", version)]
pub struct Config {
    /// Address of the device tunnel listener.
    #[arg(
        long,
        env = "REMOTE_PROXY_TUNNEL_LISTEN",
        default_value = "0.0.0.0:3800",
        hide_env_values = true
    )]
    pub tunnel_listen: SocketAddr,
    /// Address of the internal API (keep it on loopback or a private network).
    #[arg(
        long,
        env = "REMOTE_PROXY_INTERNAL_LISTEN",
        default_value = "127.0.0.1:3801",
        hide_env_values = true
    )]
    pub internal_listen: SocketAddr,
    /// Also serve the internal API on a Unix-domain socket at this path
    /// (mode 0600), for an api-server on the same host
    /// (`--relay-url unix:<path>`; ADR 041). Unset: TCP only.
    #[arg(long, env = "REMOTE_PROXY_INTERNAL_SOCKET", hide_env_values = true)]
    pub internal_socket: Option<std::path::PathBuf>,
    /// Address of the Prometheus endpoint (`GET /metrics`), or `off`.
    /// Loopback by default: it is for the scraper, not the internet.
    #[arg(
        long,
        env = "REMOTE_PROXY_METRICS_LISTEN",
        default_value = "127.0.0.1:3802",
        hide_env_values = true
    )]
    pub metrics_listen: edge_core::metrics::MetricsListen,
    /// URL under which api-servers reach this node's internal API
    /// (default: http://<internal-listen>).
    #[arg(long, env = "REMOTE_PROXY_NODE_URL", hide_env_values = true)]
    pub node_url: Option<String>,
    /// Redis URL: turns on multi-node mode (a lease per tunnel, node
    /// announcements, newest connection wins across nodes). Unset: this
    /// node alone holds every tunnel.
    #[arg(long, env = "REMOTE_PROXY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Lifetime of a tunnel's lease in Redis, in seconds (refreshed every
    /// 5 s; a node that dies loses its leases within it).
    #[arg(
        long,
        env = "REMOTE_PROXY_LEASE_TTL_SECS",
        default_value_t = 15,
        hide_env_values = true
    )]
    pub lease_ttl_secs: u64,
    /// Bound on each Redis call, in milliseconds.
    #[arg(
        long,
        env = "REMOTE_PROXY_REDIS_TIMEOUT_MS",
        default_value_t = 1000,
        hide_env_values = true
    )]
    pub redis_timeout_ms: u64,
    /// Directory for embedded-default state (SQLite file, internal secret).
    #[arg(
        long,
        env = "EDGE_DATA_DIR",
        default_value = "data",
        hide_env_values = true
    )]
    pub data_dir: PathBuf,
    /// Database URL (sqlite:// or postgres://); default: SQLite in the data dir.
    #[arg(long, env = "EDGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the internal-API shared secret; created (0600) if missing.
    /// Default: <data-dir>/internal-secret. EDGE_INTERNAL_SECRET overrides it.
    #[arg(long, env = "EDGE_INTERNAL_SECRET_FILE", hide_env_values = true)]
    pub internal_secret_file: Option<PathBuf>,
    /// Most concurrent streams one device session may carry.
    #[arg(
        long,
        env = "REMOTE_PROXY_MAX_STREAMS",
        default_value_t = 256,
        hide_env_values = true
    )]
    pub max_streams_per_session: usize,
    /// Time a device has to complete the HTTP upgrade, in seconds.
    #[arg(
        long,
        env = "REMOTE_PROXY_HANDSHAKE_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub handshake_timeout_secs: u64,
    /// A tunnel with no inbound bytes for this long is dead, in seconds: the
    /// device shows offline and requests to it get 503 `device_offline`.
    /// Keep it a few ping intervals long.
    #[arg(
        long,
        env = "REMOTE_PROXY_IDLE_TIMEOUT_SECS",
        default_value_t = 15,
        hide_env_values = true
    )]
    pub idle_timeout_secs: u64,
    /// The relay pings each device this often, in seconds (devices answer
    /// whatever the interval; the contract's 30 s is the slowest a relay
    /// may use). The cost: 12 bytes each way per tunnel per ping; shorter
    /// finds frozen devices sooner.
    #[arg(
        long,
        env = "REMOTE_PROXY_PING_INTERVAL_SECS",
        default_value_t = 5,
        hide_env_values = true
    )]
    pub ping_interval_secs: u64,
    /// Time a device has to answer a ping (and any write to complete), in seconds.
    #[arg(
        long,
        env = "REMOTE_PROXY_PING_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub ping_timeout_secs: u64,
    /// Connection attempts one device may make in a burst before 429.
    #[arg(
        long,
        env = "REMOTE_PROXY_RECONNECT_BURST",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub reconnect_burst: u32,
    /// Most tunnel connections held at once.
    #[arg(
        long,
        env = "REMOTE_PROXY_MAX_TUNNELS",
        default_value_t = 50_000,
        hide_env_values = true
    )]
    pub max_tunnels: usize,
    /// How often each live tunnel's credential is checked again in the
    /// store, in seconds (1 to 60): a device revoked while this relay could
    /// not be told is closed within this time. Costs one indexed query per
    /// tunnel per interval.
    #[arg(long, env = "REMOTE_PROXY_CREDENTIAL_RECHECK_SECS", default_value_t = directory::DEFAULT_CREDENTIAL_RECHECK_SECS, hide_env_values = true)]
    pub credential_recheck_secs: u64,
    /// Threads that serve tunnels and the internal port, each a
    /// single-threaded runtime (ADR 042); accepted connections go to each
    /// in turn. Default: one per CPU. 0: the main multi-threaded runtime
    /// serves them instead.
    #[arg(long, env = "REMOTE_PROXY_SHARDS", hide_env_values = true)]
    pub shards: Option<usize>,
    /// PEM certificate chain for the tunnel port: with --tls-key, the relay
    /// terminates TLS itself (devices dial wss://). Reloaded on SIGHUP or
    /// when the file changes, without dropping tunnels.
    #[arg(
        long,
        env = "REMOTE_PROXY_TLS_CERT",
        requires = "tls_key",
        hide_env_values = true
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "REMOTE_PROXY_TLS_KEY",
        requires = "tls_cert",
        hide_env_values = true
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate chain for the internal port (api-servers then use
    /// https:// node URLs); reloaded like --tls-cert.
    #[arg(
        long,
        env = "REMOTE_PROXY_INTERNAL_TLS_CERT",
        requires = "internal_tls_key",
        hide_env_values = true
    )]
    pub internal_tls_cert: Option<PathBuf>,
    /// PEM private key for --internal-tls-cert.
    #[arg(
        long,
        env = "REMOTE_PROXY_INTERNAL_TLS_KEY",
        requires = "internal_tls_cert",
        hide_env_values = true
    )]
    pub internal_tls_key: Option<PathBuf>,
    /// Tunnel connections one client address (IPv6: one /64) may hold at
    /// once; a site's boxes share its address, so keep it generous. 0: no
    /// cap. Trusted proxies are exempt.
    #[arg(
        long,
        env = "REMOTE_PROXY_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 1024,
        hide_env_values = true
    )]
    pub max_connections_per_client: usize,
    /// Tunnels one owner's devices may hold on this relay at once; beyond
    /// it a connect gets 429.
    #[arg(
        long,
        env = "REMOTE_PROXY_MAX_TUNNELS_PER_OWNER",
        default_value_t = 1000,
        hide_env_values = true
    )]
    pub max_tunnels_per_owner: usize,
    /// Load balancers (CIDRs, comma-separated) whose X-Forwarded-For names
    /// the device's address.
    #[arg(
        long,
        env = "REMOTE_PROXY_TRUSTED_PROXIES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub trusted_proxies: Vec<String>,
    /// Seconds in-flight work gets to finish on shutdown.
    #[arg(
        long,
        env = "EDGE_DRAIN_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub drain_timeout_secs: u64,
    /// How often each device's metrics are scraped through its tunnel, in
    /// seconds; 0 turns telemetry off. Each device has its own phase within
    /// the interval, so scrapes spread evenly.
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_INTERVAL_SECS",
        default_value_t = crate::scrape::DEFAULT_INTERVAL.as_secs(),
        hide_env_values = true
    )]
    pub telemetry_interval_secs: u64,
    /// The path of the box's metrics on its local API (Prometheus text).
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_PATH",
        default_value = crate::scrape::DEFAULT_PATH,
        hide_env_values = true
    )]
    pub telemetry_path: String,
    /// Metrics outside the telemetry contract to keep too (comma-separated
    /// names; `prefix_*` for a family of names). Everything else a box
    /// exposes is dropped.
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_ALLOW",
        default_value = "",
        hide_env_values = true
    )]
    pub telemetry_allow: String,
    /// Scrapes this relay runs at once.
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_CONCURRENCY",
        default_value_t = crate::scrape::DEFAULT_CONCURRENCY,
        hide_env_values = true
    )]
    pub telemetry_concurrency: usize,
    /// How long one scrape may take, in seconds (at most the interval).
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_TIMEOUT_SECS",
        default_value_t = crate::scrape::DEFAULT_TIMEOUT.as_secs(),
        hide_env_values = true
    )]
    pub telemetry_timeout_secs: u64,
    /// How often each device's open hour of samples (and its rollups) and
    /// its last figures are rewritten, in seconds: what the console shows
    /// lags the box by up to this; a scrape that fails, or works again, is
    /// written at the next pass.
    #[arg(
        long,
        env = "REMOTE_PROXY_TELEMETRY_WINDOW_WRITE_SECS",
        default_value_t = crate::scrape::DEFAULT_WINDOW_EVERY.as_secs(),
        hide_env_values = true
    )]
    pub telemetry_window_write_secs: u64,
    /// Log format: human or json.
    #[arg(
        long,
        env = "EDGE_LOG_FORMAT",
        default_value = "human",
        hide_env_values = true
    )]
    pub log_format: LogFormat,
}

/// Relay limits derived from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_connections_per_client: usize,
    pub max_tunnels_per_owner: usize,
    pub trusted_proxies: edge_core::client_addr::TrustedProxies,
    pub max_streams_per_session: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub reconnect_burst: u32,
    pub max_tunnels: usize,
    pub drain_timeout: Duration,
    pub open_stream_timeout: Duration,
    pub credential_recheck: Duration,
    /// The telemetry scraper's settings.
    pub telemetry: crate::scrape::TelemetrySettings,
    /// Shards serving the tunnel and internal ports (ADR 042); 0: the
    /// main runtime serves them.
    pub shards: usize,
}

impl Config {
    pub fn limits(&self) -> Result<Limits, String> {
        Ok(Limits {
            ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
            ping_timeout: Duration::from_secs(self.ping_timeout_secs.max(1)),
            max_connections_per_client: self.max_connections_per_client,
            max_tunnels_per_owner: self.max_tunnels_per_owner.max(1),
            trusted_proxies: edge_core::client_addr::TrustedProxies::parse(&self.trusted_proxies)
                .map_err(|e| format!("--trusted-proxies: {e}"))?,
            max_streams_per_session: self.max_streams_per_session.max(1),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            reconnect_burst: self.reconnect_burst.max(1),
            max_tunnels: self.max_tunnels.max(1),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            open_stream_timeout: Duration::from_secs(5),
            credential_recheck: Duration::from_secs(self.credential_recheck_secs.clamp(1, 60)),
            telemetry: self.telemetry(),
            shards: edge_core::shard::count(self.shards),
        })
    }

    fn telemetry(&self) -> crate::scrape::TelemetrySettings {
        let interval = (self.telemetry_interval_secs > 0)
            .then(|| Duration::from_secs(self.telemetry_interval_secs.min(3600)));
        let timeout = Duration::from_secs(self.telemetry_timeout_secs.max(1));
        crate::scrape::TelemetrySettings {
            interval,
            path: self.telemetry_path.clone(),
            allow: box_metrics::AllowList::parse(&self.telemetry_allow),
            concurrency: self.telemetry_concurrency.max(1),
            timeout: interval.map_or(timeout, |i| timeout.min(i)),
            window_every: Duration::from_secs(self.telemetry_window_write_secs.clamp(1, 3600)),
            ..Default::default()
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("edge.db").display()))
    }

    pub fn internal_secret_path(&self) -> PathBuf {
        self.internal_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("internal-secret"))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ping_interval: tunnel::contract::RELAY_PING_INTERVAL,
            ping_timeout: tunnel::contract::PING_TIMEOUT,
            max_connections_per_client: 1024,
            max_tunnels_per_owner: 1000,
            trusted_proxies: edge_core::client_addr::TrustedProxies::default(),
            max_streams_per_session: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: tunnel::contract::RELAY_IDLE_TIMEOUT,
            reconnect_burst: 10,
            max_tunnels: 50_000,
            drain_timeout: Duration::from_secs(10),
            open_stream_timeout: Duration::from_secs(5),
            credential_recheck: Duration::from_secs(directory::DEFAULT_CREDENTIAL_RECHECK_SECS),
            telemetry: crate::scrape::TelemetrySettings::default(),
            shards: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn telemetry_flags_reach_the_scraper_settings() {
        let d = Config::parse_from(["remote-proxy"])
            .limits()
            .unwrap()
            .telemetry;
        assert_eq!(d.interval, Some(Duration::from_secs(15)));
        assert_eq!((d.path.as_str(), d.concurrency), ("/metrics", 64));
        let t = Config::parse_from([
            "remote-proxy",
            "--telemetry-interval-secs",
            "5",
            "--telemetry-timeout-secs",
            "30",
            "--telemetry-path",
            "/prom",
            "--telemetry-allow",
            "acme_*,x",
            "--telemetry-concurrency",
            "3",
        ])
        .limits()
        .unwrap()
        .telemetry;
        assert_eq!(t.interval, Some(Duration::from_secs(5)));
        assert_eq!(t.timeout, Duration::from_secs(5), "at most the interval");
        assert_eq!(d.window_every, Duration::from_secs(60));
        assert_eq!((t.path.as_str(), t.concurrency), ("/prom", 3));
        assert!(t.allow.allows("acme_queue") && t.allow.allows("x") && !t.allow.allows("y"));
        let off = Config::parse_from(["remote-proxy", "--telemetry-interval-secs", "0"]);
        assert_eq!(off.limits().unwrap().telemetry.interval, None);
    }
}
