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
    #[arg(long, env = "API_SERVER_LISTEN", default_value = "0.0.0.0:3721")]
    pub listen: SocketAddr,
    /// Origin browsers use to reach this server (scheme://host[:port]).
    #[arg(
        long,
        env = "API_SERVER_PUBLIC_ORIGIN",
        default_value = "http://localhost:3721"
    )]
    pub public_origin: String,
    /// Origin template for box content, one origin per device, e.g.
    /// `https://{device}.devices.example.net` (use a registrable domain of
    /// its own, with a wildcard DNS record and certificate). Default, for a
    /// loopback public origin only: `http://{device}.localhost:<port>`.
    #[arg(long, env = "API_SERVER_DEVICE_ORIGIN_TEMPLATE")]
    pub device_origin_template: Option<String>,
    /// Directory for embedded-default state (SQLite file, keys, secrets).
    #[arg(long, env = "EDGE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Database URL (sqlite:// or postgres://); default: SQLite in the data dir.
    #[arg(long, env = "EDGE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Internal URL of the relay node (one node; multi-node lookup comes later).
    #[arg(
        long,
        env = "API_SERVER_RELAY_URL",
        default_value = "http://127.0.0.1:3801"
    )]
    pub relay_url: String,
    /// PEM file with a private CA for https:// relay node URLs (besides the
    /// web PKI roots).
    #[arg(long, env = "API_SERVER_RELAY_CA_FILE")]
    pub relay_ca_file: Option<PathBuf>,
    /// File holding the relay's internal-API secret; created (0600) if
    /// missing. Default: <data-dir>/internal-secret. EDGE_INTERNAL_SECRET
    /// overrides it.
    #[arg(long, env = "EDGE_INTERNAL_SECRET_FILE")]
    pub internal_secret_file: Option<PathBuf>,
    /// File with the cookie signing key (≥ 32 bytes); created if missing.
    /// Default: <data-dir>/session-key.
    #[arg(long, env = "API_SERVER_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// Files with retired keys that still verify cookies (comma-separated).
    #[arg(
        long,
        env = "API_SERVER_RETIRED_SESSION_KEY_FILES",
        value_delimiter = ','
    )]
    pub retired_session_key_files: Vec<PathBuf>,
    /// Drop `Secure` (and the `__Host-` prefix) from cookies: plain-http
    /// local development only.
    #[arg(long, env = "API_SERVER_COOKIE_INSECURE", default_value_t = false)]
    pub cookie_insecure: bool,
    /// A session unused for this long ends, in seconds.
    #[arg(long, env = "API_SERVER_SESSION_IDLE_SECS", default_value_t = 1800)]
    pub session_idle_secs: u64,
    /// A session ends this long after login whatever its use, in seconds.
    #[arg(
        long,
        env = "API_SERVER_SESSION_LIFETIME_SECS",
        default_value_t = 43_200
    )]
    pub session_lifetime_secs: u64,
    /// Time to get a stream to the device through the relay, in seconds.
    #[arg(
        long,
        env = "API_SERVER_PROXY_CONNECT_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub proxy_connect_timeout_secs: u64,
    /// Time the device has to start answering a forwarded request, in seconds.
    #[arg(
        long,
        env = "API_SERVER_PROXY_FIRST_BYTE_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub proxy_first_byte_timeout_secs: u64,
    /// OpenID Provider (Member Center) issuer URL; exact string match with
    /// the discovered `issuer`. Required.
    #[arg(long, env = "API_SERVER_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC client id of this backend.
    #[arg(
        long,
        env = "API_SERVER_OIDC_CLIENT_ID",
        default_value = "edge-console"
    )]
    pub oidc_client_id: String,
    /// File with the OIDC client secret. Without a secret (this flag and
    /// API_SERVER_OIDC_CLIENT_SECRET both unset) the backend is a public
    /// PKCE-only client.
    #[arg(long, env = "API_SERVER_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Scopes requested at login (comma-separated; openid is always sent).
    #[arg(
        long,
        env = "API_SERVER_OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "openid,email,profile"
    )]
    pub oidc_scopes: Vec<String>,
    /// Redirect URI registered with the provider (default:
    /// <public-origin>/api/auth/callback).
    #[arg(long, env = "API_SERVER_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,
    /// PEM file with a private CA to trust for the OpenID Provider (besides
    /// the web PKI roots).
    #[arg(long, env = "API_SERVER_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,
    /// Clock skew tolerated on ID-token expiry, in seconds.
    #[arg(long, env = "API_SERVER_OIDC_CLOCK_SKEW_SECS", default_value_t = 60)]
    pub oidc_clock_skew_secs: u64,
    /// RESERVED (not used yet): client id for a future service-to-service
    /// client (client_credentials grant). Needs a secret when set.
    #[arg(long, env = "API_SERVER_SERVICE_CLIENT_ID")]
    pub service_client_id: Option<String>,
    /// RESERVED (not used yet): file with the service client's secret
    /// (API_SERVER_SERVICE_CLIENT_SECRET also works).
    #[arg(long, env = "API_SERVER_SERVICE_CLIENT_SECRET_FILE")]
    pub service_client_secret_file: Option<PathBuf>,
    /// RESERVED (not used yet): scopes of the service client (comma-separated).
    #[arg(long, env = "API_SERVER_SERVICE_CLIENT_SCOPES", value_delimiter = ',')]
    pub service_client_scopes: Vec<String>,
    /// Lifetime of a pairing code, in seconds.
    #[arg(long, env = "API_SERVER_PAIRING_CODE_SECS", default_value_t = 600)]
    pub pairing_code_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, env = "EDGE_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Log format: human or json.
    #[arg(long, env = "EDGE_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}

/// Checked settings the handlers use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_origin: String,
    pub public_scheme: String,
    pub cookie_secure: bool,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    pub proxy_connect_timeout: Duration,
    pub proxy_first_byte_timeout: Duration,
    pub pairing_code_lifetime: Duration,
    /// Where box content is served: one origin per device.
    pub device_origins: DeviceOrigins,
    /// Lifetime of a device-origin entry ticket.
    pub device_ticket_lifetime: Duration,
    /// How often an open connection on a device origin (a WebSocket, say)
    /// re-checks the user's session and ownership.
    pub device_access_recheck: Duration,
    /// Attempts to close a revoked device's live tunnel before failing.
    pub tunnel_close_attempts: u32,
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
            tunnel_close_attempts: 3,
            public_origin: public_origin.to_owned(),
            public_scheme: scheme.to_owned(),
            cookie_secure,
            session_idle: Duration::from_secs(1800),
            session_lifetime: Duration::from_secs(43_200),
            proxy_connect_timeout: Duration::from_secs(5),
            proxy_first_byte_timeout: Duration::from_secs(30),
            pairing_code_lifetime: Duration::from_secs(600),
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
        s.proxy_connect_timeout = Duration::from_secs(self.proxy_connect_timeout_secs.max(1));
        s.proxy_first_byte_timeout = Duration::from_secs(self.proxy_first_byte_timeout_secs.max(1));
        s.pairing_code_lifetime = Duration::from_secs(self.pairing_code_secs.clamp(60, 86_400));
        Ok(s)
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
