//! Command-line and environment configuration of the api-server, with the
//! documented defaults, checked once into [`Settings`].

use crate::device_host::DeviceOrigins;
use crate::error::ApiError;
use clap::Parser;
use edge_core::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// api-server: the REST backend-for-frontend of the edge AI platform.
#[derive(Debug, Clone, Parser)]
#[command(name = "api-server", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "API_SERVER_LISTEN",
        default_value = "0.0.0.0:3721",
        hide_env_values = true
    )]
    pub listen: SocketAddr,
    /// Origin browsers use to reach this server (scheme://host[:port]).
    #[arg(
        long,
        env = "API_SERVER_PUBLIC_ORIGIN",
        default_value = "http://localhost:3721",
        hide_env_values = true
    )]
    pub public_origin: String,
    /// Origin template for box content, one origin per device, e.g.
    /// `https://{device}.devices.example.net` (use a registrable domain of
    /// its own, with a wildcard DNS record and certificate). Default, for a
    /// loopback public origin only: `http://{device}.localhost:<port>`.
    #[arg(
        long,
        env = "API_SERVER_DEVICE_ORIGIN_TEMPLATE",
        hide_env_values = true
    )]
    pub device_origin_template: Option<String>,
    /// Directory for embedded-default state (SQLite file, keys, secrets).
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
    /// Internal URL of the one relay node (single-node mode; with
    /// `--redis-url` each device's node is found from its lease instead):
    /// `http://` or `https://`, or `unix:<path>` for a relay on this host
    /// that serves its internal API on that socket (ADR 041).
    #[arg(
        long,
        env = "API_SERVER_RELAY_URL",
        default_value = "http://127.0.0.1:3801",
        hide_env_values = true
    )]
    pub relay_url: String,
    /// Redis URL: find each device's relay node from its lease there
    /// (multi-node mode); `--relay-url` is then not used.
    #[arg(long, env = "API_SERVER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Bound on each Redis call, in milliseconds; past it a lookup answers
    /// 503 `directory_unavailable`.
    #[arg(
        long,
        env = "API_SERVER_REDIS_TIMEOUT_MS",
        default_value_t = 1000,
        hide_env_values = true
    )]
    pub redis_timeout_ms: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`), or `off`.
    /// Loopback by default: it is for the scraper, not the internet.
    #[arg(
        long,
        env = "API_SERVER_METRICS_LISTEN",
        default_value = "127.0.0.1:3722",
        hide_env_values = true
    )]
    pub metrics_listen: edge_core::metrics::MetricsListen,
    /// PEM file with a private CA for https:// relay node URLs (besides the
    /// web PKI roots).
    #[arg(long, env = "API_SERVER_RELAY_CA_FILE", hide_env_values = true)]
    pub relay_ca_file: Option<PathBuf>,
    /// File holding the relay's internal-API secret; created (0600) if
    /// missing. Default: <data-dir>/internal-secret. EDGE_INTERNAL_SECRET
    /// overrides it.
    #[arg(long, env = "EDGE_INTERNAL_SECRET_FILE", hide_env_values = true)]
    pub internal_secret_file: Option<PathBuf>,
    /// File with the cookie signing key (≥ 32 bytes); created if missing.
    /// Default: <data-dir>/session-key.
    #[arg(long, env = "API_SERVER_SESSION_KEY_FILE", hide_env_values = true)]
    pub session_key_file: Option<PathBuf>,
    /// Files with retired keys that still verify cookies (comma-separated).
    #[arg(
        long,
        env = "API_SERVER_RETIRED_SESSION_KEY_FILES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub retired_session_key_files: Vec<PathBuf>,
    /// Drop `Secure` (and the `__Host-` prefix) from cookies: plain-http
    /// local development only.
    #[arg(
        long,
        env = "API_SERVER_COOKIE_INSECURE",
        default_value_t = false,
        hide_env_values = true
    )]
    pub cookie_insecure: bool,
    /// A session unused for this long ends, in seconds.
    #[arg(
        long,
        env = "API_SERVER_SESSION_IDLE_SECS",
        default_value_t = DEFAULT_SESSION_IDLE.as_secs(),
        hide_env_values = true
    )]
    pub session_idle_secs: u64,
    /// A session ends this long after login whatever its use, in seconds.
    #[arg(
        long,
        env = "API_SERVER_SESSION_LIFETIME_SECS",
        default_value_t = DEFAULT_SESSION_LIFETIME.as_secs(),
        hide_env_values = true
    )]
    pub session_lifetime_secs: u64,
    /// A service account's access token lives this long, in seconds (1 to
    /// 86,400).
    #[arg(
        long,
        env = "API_SERVER_SERVICE_TOKEN_LIFETIME_SECS",
        default_value_t = DEFAULT_SERVICE_TOKEN_LIFETIME.as_secs(),
        hide_env_values = true
    )]
    pub service_token_lifetime_secs: u64,
    /// Time to get a stream to the device through the relay, in seconds.
    #[arg(
        long,
        env = "API_SERVER_PROXY_CONNECT_TIMEOUT_SECS",
        default_value_t = DEFAULT_PROXY_CONNECT_TIMEOUT.as_secs(),
        hide_env_values = true
    )]
    pub proxy_connect_timeout_secs: u64,
    /// Time the device has to start answering a forwarded request, in seconds.
    #[arg(
        long,
        env = "API_SERVER_PROXY_FIRST_BYTE_TIMEOUT_SECS",
        default_value_t = DEFAULT_PROXY_FIRST_BYTE_TIMEOUT.as_secs(),
        hide_env_values = true
    )]
    pub proxy_first_byte_timeout_secs: u64,
    /// How long an idle keep-alive connection to a box is kept for reuse,
    /// in seconds (0: one connection per request). Keep it below the box
    /// server's own keep-alive timeout (5 s for Node.js).
    #[arg(
        long,
        env = "API_SERVER_BOX_IDLE_SECS",
        default_value_t = DEFAULT_BOX_IDLE.as_secs(),
        hide_env_values = true
    )]
    pub box_idle_secs: u64,
    /// Idle keep-alive connections kept per user and device. Each holds one
    /// of the device's streams on its relay (`--max-streams-per-session`);
    /// when the device's session refuses a new stream they are told to end,
    /// so they never starve a new request.
    #[arg(
        long,
        env = "API_SERVER_BOX_IDLE_PER_DEVICE",
        default_value_t = DEFAULT_BOX_IDLE_PER_DEVICE,
        hide_env_values = true
    )]
    pub box_idle_per_device: usize,
    /// OpenID Provider (Member Center) issuer URL; exact string match with
    /// the discovered `issuer`. Required.
    #[arg(long, env = "API_SERVER_OIDC_ISSUER", hide_env_values = true)]
    pub oidc_issuer: Option<String>,
    /// OIDC client id of this backend.
    #[arg(
        long,
        env = "API_SERVER_OIDC_CLIENT_ID",
        default_value = "edge-console",
        hide_env_values = true
    )]
    pub oidc_client_id: String,
    /// File with the OIDC client secret. Without a secret (this flag and
    /// API_SERVER_OIDC_CLIENT_SECRET both unset) the backend is a public
    /// PKCE-only client.
    #[arg(
        long,
        env = "API_SERVER_OIDC_CLIENT_SECRET_FILE",
        hide_env_values = true
    )]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Scopes requested at login (comma-separated; openid is always sent).
    #[arg(
        long,
        env = "API_SERVER_OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "openid,email,profile",
        hide_env_values = true
    )]
    pub oidc_scopes: Vec<String>,
    /// Redirect URI registered with the provider (default:
    /// <public-origin>/api/auth/callback).
    #[arg(long, env = "API_SERVER_OIDC_REDIRECT_URL", hide_env_values = true)]
    pub oidc_redirect_url: Option<String>,
    /// PEM file with a private CA to trust for the OpenID Provider (besides
    /// the web PKI roots).
    #[arg(long, env = "API_SERVER_OIDC_CA_FILE", hide_env_values = true)]
    pub oidc_ca_file: Option<PathBuf>,
    /// Clock skew tolerated on ID-token expiry, in seconds.
    #[arg(
        long,
        env = "API_SERVER_OIDC_CLOCK_SKEW_SECS",
        default_value_t = 60,
        hide_env_values = true
    )]
    pub oidc_clock_skew_secs: u64,
    /// RESERVED (not used yet): client id for a future service-to-service
    /// client (client_credentials grant). Needs a secret when set.
    #[arg(long, env = "API_SERVER_SERVICE_CLIENT_ID", hide_env_values = true)]
    pub service_client_id: Option<String>,
    /// RESERVED (not used yet): file with the service client's secret
    /// (API_SERVER_SERVICE_CLIENT_SECRET also works).
    #[arg(
        long,
        env = "API_SERVER_SERVICE_CLIENT_SECRET_FILE",
        hide_env_values = true
    )]
    pub service_client_secret_file: Option<PathBuf>,
    /// RESERVED (not used yet): scopes of the service client (comma-separated).
    #[arg(
        long,
        env = "API_SERVER_SERVICE_CLIENT_SCOPES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub service_client_scopes: Vec<String>,
    /// Lifetime of a pairing code, in seconds.
    #[arg(
        long,
        env = "API_SERVER_PAIRING_CODE_SECS",
        default_value_t = DEFAULT_PAIRING_CODE_LIFETIME.as_secs(),
        hide_env_values = true
    )]
    pub pairing_code_secs: u64,
    /// Load balancers (CIDRs, comma-separated) whose X-Forwarded-For names
    /// the client; without them the TCP peer is the client.
    #[arg(
        long,
        env = "API_SERVER_TRUSTED_PROXIES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub trusted_proxies: Vec<String>,
    /// Connections one client address (IPv6: one /64) may hold at once
    /// (429 beyond); 0: no cap. Trusted proxies are exempt.
    #[arg(
        long,
        env = "API_SERVER_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256,
        hide_env_values = true
    )]
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers), in bytes (431 beyond).
    #[arg(
        long,
        env = "API_SERVER_MAX_HEADER_BYTES",
        default_value_t = 16_384,
        hide_env_values = true
    )]
    pub max_header_bytes: usize,
    /// Largest JSON or form body of an API route, in bytes (413 beyond).
    /// The pairing exchange takes at most 4 KiB; the proxy route streams
    /// without a limit.
    #[arg(
        long,
        env = "API_SERVER_MAX_BODY_BYTES",
        default_value_t = DEFAULT_MAX_BODY_BYTES,
        hide_env_values = true
    )]
    pub max_body_bytes: usize,
    /// A request body that sends nothing for this long fails with 408, in
    /// seconds (the proxy route included).
    #[arg(
        long,
        env = "API_SERVER_BODY_IDLE_TIMEOUT_SECS",
        default_value_t = DEFAULT_BODY_IDLE_TIMEOUT.as_secs(),
        hide_env_values = true
    )]
    pub body_idle_timeout_secs: u64,
    /// Time a client has to send a request head, in seconds (also bounds
    /// idle keep-alive connections).
    #[arg(
        long,
        env = "API_SERVER_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub header_timeout_secs: u64,
    /// Unused pairing codes one user may hold at once (409 beyond).
    #[arg(
        long,
        env = "API_SERVER_MAX_PENDING_CODES_PER_USER",
        default_value_t = DEFAULT_MAX_PENDING_CODES_PER_USER,
        hide_env_values = true
    )]
    pub max_pending_codes_per_user: u32,
    /// Devices one user may own (a pairing beyond it fails with 409).
    #[arg(
        long,
        env = "API_SERVER_MAX_DEVICES_PER_USER",
        default_value_t = DEFAULT_MAX_DEVICES_PER_USER,
        hide_env_values = true
    )]
    pub max_devices_per_user: u32,
    /// Audit events older than this many days are deleted (in batches).
    #[arg(
        long,
        env = "API_SERVER_AUDIT_RETENTION_DAYS",
        default_value_t = DEFAULT_AUDIT_RETENTION_DAYS,
        hide_env_values = true
    )]
    pub audit_retention_days: u32,
    /// Raw telemetry samples older than this many hours are deleted.
    #[arg(
        long,
        env = "API_SERVER_TELEMETRY_RAW_RETENTION_HOURS",
        default_value_t = DEFAULT_TELEMETRY_RAW_RETENTION_HOURS,
        hide_env_values = true
    )]
    pub telemetry_raw_retention_hours: u32,
    /// Five-minute telemetry rollups older than this many days are deleted.
    #[arg(
        long,
        env = "API_SERVER_TELEMETRY_ROLLUP_RETENTION_DAYS",
        default_value_t = DEFAULT_TELEMETRY_ROLLUP_RETENTION_DAYS,
        hide_env_values = true
    )]
    pub telemetry_rollup_retention_days: u32,
    /// How often every device's health is evaluated against its owner's
    /// rules, in seconds.
    #[arg(
        long,
        env = "API_SERVER_HEALTH_INTERVAL_SECS",
        default_value_t = DEFAULT_HEALTH_INTERVAL.as_secs(),
        hide_env_values = true
    )]
    pub health_interval_secs: u64,
    /// Answer every proxied request through the router, none through the
    /// proxy's lane (ADR 032): a switch to compare the two, or to step
    /// around the lane.
    #[arg(long, env = "API_SERVER_NO_PROXY_LANE", hide_env_values = true)]
    pub no_proxy_lane: bool,
    /// Threads that serve connections, each a single-threaded runtime
    /// with its own relay channels (ADR 034); accepted connections go to
    /// each in turn. Default: one per CPU. 0: connections are served by
    /// the main multi-threaded runtime instead.
    #[arg(long, env = "API_SERVER_SHARDS", hide_env_values = true)]
    pub shards: Option<usize>,
    /// Let owners register webhooks on loopback, private and link-local
    /// addresses (a receiver inside your own network). Off: such URLs are
    /// refused, at registration and again at each delivery.
    #[arg(long, env = "API_SERVER_WEBHOOK_ALLOW_PRIVATE", hide_env_values = true)]
    pub webhook_allow_private: bool,
    /// How often expired sessions, codes, tickets and old audit events are
    /// deleted, in seconds.
    #[arg(
        long,
        env = "API_SERVER_HOUSEKEEPING_INTERVAL_SECS",
        default_value_t = DEFAULT_HOUSEKEEPING_INTERVAL.as_secs(),
        hide_env_values = true
    )]
    pub housekeeping_interval_secs: u64,
    /// File with the key that pairing codes are hashed with (HMAC-SHA256,
    /// ≥ 32 bytes, the same on every replica); created if missing.
    /// Default: <data-dir>/pairing-key.
    #[arg(long, env = "API_SERVER_PAIRING_KEY_FILE", hide_env_values = true)]
    pub pairing_key_file: Option<PathBuf>,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(
        long,
        env = "EDGE_DRAIN_TIMEOUT_SECS",
        default_value_t = 10,
        hide_env_values = true
    )]
    pub drain_timeout_secs: u64,
    /// Log format: human or json.
    #[arg(
        long,
        env = "EDGE_LOG_FORMAT",
        default_value = "human",
        hide_env_values = true
    )]
    pub log_format: LogFormat,
}

// One named default per setting: the flags' defaults and `Settings`'
// (what tests and embedders start from) are these, so they cannot drift.

/// How long a session may sit unused.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(1800);
/// How long a session lasts at most.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(43_200);
/// Bound on reaching a box through its relay.
pub const DEFAULT_PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a box's first response byte.
pub const DEFAULT_PROXY_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection to a box is kept.
pub const DEFAULT_BOX_IDLE: Duration = Duration::from_secs(4);
/// Idle keep-alive connections kept per user and device: the relay's
/// default number of streams per device session.
pub const DEFAULT_BOX_IDLE_PER_DEVICE: usize = 256;
/// How long a pairing code is valid.
pub const DEFAULT_PAIRING_CODE_LIFETIME: Duration = Duration::from_secs(600);
/// A request body idle this long fails.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often device health is evaluated.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// How often the scheduled sweep runs.
pub const DEFAULT_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);
/// Largest JSON/form body of an API route.
pub const DEFAULT_MAX_BODY_BYTES: usize = 65_536;
/// Pairing codes one user may hold at once.
pub const DEFAULT_MAX_PENDING_CODES_PER_USER: u32 = 10;
/// Devices one user may own.
pub const DEFAULT_MAX_DEVICES_PER_USER: u32 = 500;
/// How long audit events are kept, days.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 400;
/// How long raw telemetry windows are kept, hours.
pub const DEFAULT_TELEMETRY_RAW_RETENTION_HOURS: u32 = 48;
/// How long telemetry rollups are kept, days.
pub const DEFAULT_TELEMETRY_ROLLUP_RETENTION_DAYS: u32 = 400;

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

fn hours(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 3600)
}

/// How often a session's last-seen time is written, at most.
pub const DEFAULT_SESSION_TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long a service account's access token lives.
pub const DEFAULT_SERVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Checked settings the handlers use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_origin: String,
    pub public_scheme: String,
    pub cookie_secure: bool,
    pub session_idle: Duration,
    /// A session's last-seen time is written at most this often (to spare
    /// the store); the idle limit is therefore exact to within it.
    pub session_touch_every: Duration,
    pub session_lifetime: Duration,
    /// Lifetime of a service account's access token (the token endpoint's).
    pub service_token_lifetime: Duration,
    pub proxy_connect_timeout: Duration,
    pub proxy_first_byte_timeout: Duration,
    /// Idle keep-alive connections to boxes live this long (zero: none kept).
    pub box_idle: Duration,
    /// Idle keep-alive connections kept per user and device.
    pub box_idle_per_device: usize,
    pub pairing_code_lifetime: Duration,
    /// Where box content is served: one origin per device.
    pub device_origins: DeviceOrigins,
    /// Lifetime of a device-origin entry ticket.
    pub device_ticket_lifetime: Duration,
    /// How often an open connection on a device origin (a WebSocket, say)
    /// re-checks the user's session and ownership.
    pub device_access_recheck: Duration,
    /// How long a granted session-and-device check is reused (zero: never).
    /// Under a second, so access ended on another replica ends here within
    /// a second too.
    pub access_cache_ttl: Duration,
    /// Attempts to close a revoked device's live tunnel before failing.
    pub tunnel_close_attempts: u32,
    /// Largest JSON/form body of an API route.
    pub max_body_bytes: usize,
    /// A request body idle this long fails with 408.
    pub body_idle_timeout: Duration,
    pub max_pending_codes_per_user: u32,
    pub max_devices_per_user: u32,
    pub audit_retention: Duration,
    pub housekeeping_interval: Duration,
    /// How long raw telemetry windows are kept (series queries reach back
    /// this far at scrape resolution; beyond it, rollups).
    pub telemetry_raw_retention: Duration,
    pub telemetry_rollup_retention: Duration,
    /// How often device health is evaluated.
    pub health_interval: Duration,
    /// Webhooks may target loopback and private addresses.
    pub webhook_allow_private: bool,
    /// How often the delivery worker looks for due deliveries.
    pub webhook_poll: Duration,
    /// The first retry's delay; each next one is three times longer (at
    /// most six hours), eight attempts in all.
    pub webhook_retry_base: Duration,
    /// Bound on one delivery attempt.
    pub webhook_timeout: Duration,
}

impl Settings {
    /// Settings with the documented defaults for `public_origin`, which
    /// must be loopback here: device origins default to
    /// `{device}.localhost` (see [`Settings::with_device_origins`]).
    pub fn new(public_origin: &str, cookie_secure: bool) -> Result<Self, ApiError> {
        let device_origins =
            DeviceOrigins::for_loopback_console(public_origin).ok_or_else(|| {
                ApiError::Config(
                    "--device-origin-template is required when the public origin is not loopback"
                        .into(),
                )
            })?;
        Self::with_device_origins(public_origin, cookie_secure, device_origins)
    }

    /// Settings with the documented defaults and the operator's device origins.
    pub fn with_device_origins(
        public_origin: &str,
        cookie_secure: bool,
        device_origins: DeviceOrigins,
    ) -> Result<Self, ApiError> {
        let (scheme, rest) = public_origin
            .split_once("://")
            .ok_or_else(|| ApiError::Config("public origin must be scheme://host".into()))?;
        if !(scheme == "http" || scheme == "https") || rest.is_empty() || rest.contains('/') {
            return Err(ApiError::Config(
                "public origin must be http(s)://host[:port] with no path".into(),
            ));
        }
        if device_origins.device_of_host(rest).is_some() {
            return Err(ApiError::Config(
                "the console's origin cannot be a device origin".into(),
            ));
        }
        if cookie_secure && !device_origins.is_https() {
            tracing::warn!(
                "secure cookies with http device origins: browsers will drop the device cookie"
            );
        }
        Ok(Self {
            device_origins,
            device_ticket_lifetime: Duration::from_secs(30),
            device_access_recheck: Duration::from_millis(500),
            access_cache_ttl: Duration::from_millis(500),
            tunnel_close_attempts: 3,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_pending_codes_per_user: DEFAULT_MAX_PENDING_CODES_PER_USER,
            max_devices_per_user: DEFAULT_MAX_DEVICES_PER_USER,
            audit_retention: days(DEFAULT_AUDIT_RETENTION_DAYS),
            housekeeping_interval: DEFAULT_HOUSEKEEPING_INTERVAL,
            telemetry_raw_retention: hours(DEFAULT_TELEMETRY_RAW_RETENTION_HOURS),
            telemetry_rollup_retention: days(DEFAULT_TELEMETRY_ROLLUP_RETENTION_DAYS),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            webhook_allow_private: false,
            webhook_poll: Duration::from_secs(1),
            webhook_retry_base: Duration::from_secs(10),
            webhook_timeout: Duration::from_secs(10),
            public_origin: public_origin.to_owned(),
            public_scheme: scheme.to_owned(),
            cookie_secure,
            session_idle: DEFAULT_SESSION_IDLE,
            session_touch_every: DEFAULT_SESSION_TOUCH_EVERY,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            service_token_lifetime: DEFAULT_SERVICE_TOKEN_LIFETIME,
            proxy_connect_timeout: DEFAULT_PROXY_CONNECT_TIMEOUT,
            proxy_first_byte_timeout: DEFAULT_PROXY_FIRST_BYTE_TIMEOUT,
            box_idle: DEFAULT_BOX_IDLE,
            box_idle_per_device: DEFAULT_BOX_IDLE_PER_DEVICE,
            pairing_code_lifetime: DEFAULT_PAIRING_CODE_LIFETIME,
        })
    }
}

/// The reserved service client (client_credentials), validated but unused.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    pub client_id: String,
    pub client_secret: edge_core::Secret,
    pub scopes: Vec<String>,
}

/// A secret from an environment variable or a file (the variable wins).
fn secret_from(env: &str, file: Option<&PathBuf>) -> Result<Option<edge_core::Secret>, ApiError> {
    if let Ok(v) = std::env::var(env) {
        if !v.trim().is_empty() {
            return Ok(Some(edge_core::Secret::new(v.trim())));
        }
    }
    file.map(|p| {
        edge_core::secret::read_file(p)
            .map_err(|e| ApiError::Config(format!("cannot read {}: {e}", p.display())))
    })
    .transpose()
}

impl Config {
    /// OIDC relying-party settings (the client secret is optional).
    pub fn oidc(&self, settings: &Settings) -> Result<auth::oidc::OidcSettings, ApiError> {
        let issuer = self.oidc_issuer.clone().ok_or_else(|| {
            ApiError::Config("API_SERVER_OIDC_ISSUER (--oidc-issuer) is required".into())
        })?;
        let mut scopes: Vec<String> = self
            .oidc_scopes
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        Ok(auth::oidc::OidcSettings {
            issuer,
            client_id: self.oidc_client_id.clone(),
            client_secret: secret_from(
                "API_SERVER_OIDC_CLIENT_SECRET",
                self.oidc_client_secret_file.as_ref(),
            )?,
            redirect_url: self
                .oidc_redirect_url
                .clone()
                .unwrap_or_else(|| format!("{}/api/auth/callback", settings.public_origin)),
            scopes,
            clock_skew: Duration::from_secs(self.oidc_clock_skew_secs.min(600)),
            jwks_refresh_interval: Duration::from_secs(60),
            ca_file: self.oidc_ca_file.clone(),
        })
    }

    /// The reserved service client: parsed and validated, not used yet.
    pub fn service_client(&self) -> Result<Option<ServiceClient>, ApiError> {
        let secret = secret_from(
            "API_SERVER_SERVICE_CLIENT_SECRET",
            self.service_client_secret_file.as_ref(),
        )?;
        match (&self.service_client_id, secret) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) if !id.trim().is_empty() => Ok(Some(ServiceClient {
                client_id: id.trim().to_owned(),
                client_secret: secret,
                scopes: self.service_client_scopes.clone(),
            })),
            _ => Err(ApiError::Config(
                "the service client needs both an id and a secret".into(),
            )),
        }
    }

    pub fn settings(&self) -> Result<Settings, ApiError> {
        let mut s = match &self.device_origin_template {
            Some(t) => Settings::with_device_origins(
                &self.public_origin,
                !self.cookie_insecure,
                DeviceOrigins::parse(t).map_err(ApiError::Config)?,
            )?,
            None => Settings::new(&self.public_origin, !self.cookie_insecure)?,
        };
        if s.cookie_secure && s.public_scheme != "https" {
            tracing::warn!("secure cookies with an http public origin: browsers will drop them; use --cookie-insecure for local development");
        }
        s.session_idle = Duration::from_secs(self.session_idle_secs.max(1));
        s.session_lifetime = Duration::from_secs(self.session_lifetime_secs.max(1));
        s.service_token_lifetime =
            Duration::from_secs(self.service_token_lifetime_secs.clamp(1, 86_400));
        s.proxy_connect_timeout = Duration::from_secs(self.proxy_connect_timeout_secs.max(1));
        s.proxy_first_byte_timeout = Duration::from_secs(self.proxy_first_byte_timeout_secs.max(1));
        s.box_idle = Duration::from_secs(self.box_idle_secs.min(300));
        s.box_idle_per_device = self.box_idle_per_device.min(65_536);
        s.pairing_code_lifetime = Duration::from_secs(self.pairing_code_secs.clamp(60, 86_400));
        s.max_body_bytes = self.max_body_bytes.max(1024);
        s.body_idle_timeout = Duration::from_secs(self.body_idle_timeout_secs.max(1));
        s.max_pending_codes_per_user = self.max_pending_codes_per_user.max(1);
        s.max_devices_per_user = self.max_devices_per_user.max(1);
        s.audit_retention = days(self.audit_retention_days.max(1));
        s.housekeeping_interval = Duration::from_secs(self.housekeeping_interval_secs.max(10));
        s.telemetry_raw_retention = hours(self.telemetry_raw_retention_hours.max(1));
        s.telemetry_rollup_retention = days(self.telemetry_rollup_retention_days.max(1));
        s.health_interval = Duration::from_secs(self.health_interval_secs.clamp(1, 3600));
        s.webhook_allow_private = self.webhook_allow_private;
        Ok(s)
    }

    /// How the listener serves: connection limits and timeouts, checked.
    pub fn serve_options(&self) -> Result<edge_core::serve::ServeOptions, ApiError> {
        Ok(edge_core::serve::ServeOptions {
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            max_connections_per_client: self.max_connections_per_client,
            max_header_bytes: self.max_header_bytes,
            header_read_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            trusted_proxies: edge_core::client_addr::TrustedProxies::parse(&self.trusted_proxies)
                .map_err(|e| ApiError::Config(format!("--trusted-proxies: {e}")))?,
            ..edge_core::serve::ServeOptions::default()
        })
    }

    /// How many shards serve connections (0: none, the main runtime does).
    pub fn shard_count(&self) -> usize {
        edge_core::shard::count(self.shards)
    }

    /// How long stopping waits for queued audit events (at least a second).
    pub fn audit_drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs.max(1))
    }

    /// Bound on one Redis command (50 ms to 30 s).
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.clamp(50, 30_000))
    }

    pub fn internal_secret_path(&self) -> PathBuf {
        self.internal_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("internal-secret"))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("edge.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn service_client_needs_both_id_and_secret_or_neither() {
        let dir = std::env::temp_dir().join(format!("svc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let none = Config::parse_from(["api-server"]);
        assert!(none.service_client().unwrap().is_none());
        let id_only = Config::parse_from(["api-server", "--service-client-id", "svc"]);
        assert!(id_only.service_client().is_err());
        let secret_arg = secret.to_str().unwrap();
        let secret_only =
            Config::parse_from(["api-server", "--service-client-secret-file", secret_arg]);
        assert!(secret_only.service_client().is_err());
        let both = Config::parse_from([
            "api-server",
            "--service-client-id",
            "svc",
            "--service-client-secret-file",
            secret_arg,
            "--service-client-scopes",
            "a,b",
        ]);
        let svc = both.service_client().unwrap().unwrap();
        assert_eq!(
            (
                svc.client_id.as_str(),
                svc.client_secret.expose(),
                svc.scopes.len()
            ),
            ("svc", "s3cret", 2)
        );
        assert!(!format!("{svc:?}").contains("s3cret"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn telemetry_health_and_webhook_flags_reach_the_settings() {
        let d = Config::parse_from(["api-server"]).settings().unwrap();
        assert_eq!(d.health_interval, Duration::from_secs(30));
        assert!(!d.webhook_allow_private);
        assert_eq!(d.telemetry_raw_retention, Duration::from_secs(48 * 3600));
        let s = Config::parse_from([
            "api-server",
            "--health-interval-secs",
            "7",
            "--webhook-allow-private",
            "--telemetry-raw-retention-hours",
            "2",
            "--telemetry-rollup-retention-days",
            "3",
        ])
        .settings()
        .unwrap();
        assert_eq!(s.health_interval, Duration::from_secs(7));
        assert!(s.webhook_allow_private);
        assert_eq!(s.telemetry_raw_retention, Duration::from_secs(2 * 3600));
        assert_eq!(
            s.telemetry_rollup_retention,
            Duration::from_secs(3 * 86_400)
        );
    }

    #[test]
    fn oidc_needs_an_issuer_and_always_asks_for_openid() {
        let cfg = Config::parse_from(["api-server"]);
        let settings = cfg.settings().unwrap();
        assert!(cfg.oidc(&settings).is_err());
        let cfg = Config::parse_from([
            "api-server",
            "--oidc-issuer",
            "https://idp.example",
            "--oidc-scopes",
            "email",
        ]);
        let oidc = cfg.oidc(&settings).unwrap();
        assert_eq!(oidc.scopes, ["openid", "email"]);
        assert_eq!(oidc.redirect_url, "http://localhost:3721/api/auth/callback");
        assert!(
            oidc.client_secret.is_none(),
            "no secret: public PKCE-only client"
        );
    }
}
