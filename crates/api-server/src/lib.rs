//! The api-server: a stateless backend-for-frontend. It resolves the caller
//! from the session cookie, checks device ownership in the store, and
//! forwards requests to devices through the relay's internal port. `run` is
//! what the binary calls; tests build the same router with [`build_app`].

pub mod app;
pub mod audit_writer;
pub mod auth_routes;
pub mod box_client;
pub mod box_wire;
pub mod cli_login;
pub mod config;
pub mod console;
pub mod device_host;
pub mod device_origin;
pub mod devices;
pub mod error;
pub mod extract;
pub mod forward;
pub mod health;
pub mod housekeeping;
pub mod hygiene;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod pairing;
pub mod proxy;
pub mod proxy_lane;
pub mod router;
pub mod service_accounts;
pub mod session;
pub mod state;
pub mod system;
pub mod telemetry;
pub mod verified_credentials;
pub mod webhooks;

/// The map for tables looked up on every proxied request: foldhash,
/// randomly seeded per map, in place of SipHash (ADR 035). Their keys are
/// ours (device ids, session hashes) or credentials already verified.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use router::build_app;
pub use state::{AppParts, AppState};

use auth::{CookieKey, CookieKeys};
use config::Config;
use directory::NodeId;
use edge_core::serve::serve;
use error::ApiError;
use store::Store;
use tokio_util::sync::CancellationToken;

/// A server key from `explicit`, else `<data_dir>/<name>` (created, 256
/// random bits, 0600, when missing); at least 32 bytes.
fn key_file(
    explicit: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    name: &str,
) -> Result<edge_core::Secret, ApiError> {
    let path = explicit.map_or_else(|| data_dir.join(name), std::path::Path::to_path_buf);
    edge_core::secret::load_or_create_file(&path)
        .ok()
        .filter(|k| k.expose().len() >= 32)
        .ok_or_else(|| {
            ApiError::Config(format!(
                "{} missing, unreadable or shorter than 32 bytes",
                path.display()
            ))
        })
}

/// Start the api-server from configuration and run it until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ApiError> {
    let listener = edge_core::listen::bind(config.listen)
        .map_err(|e| ApiError::Config(format!("bind {}: {e}", config.listen)))?;
    run_on(config, listener, shutdown).await
}

/// [`run`] on a listener the caller already bound (`config.listen` is not
/// used), for launchers that pick ephemeral ports.
pub async fn run_on(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let app = assemble(&config).await?;
    if let Some(addr) = config.metrics_listen.0 {
        edge_core::metrics::spawn(addr, app.state.exposition(), shutdown.clone())
            .await
            .map_err(|e| ApiError::Config(format!("metrics listener {addr}: {e}")))?;
    }
    let listen = listener
        .local_addr()
        .map_err(|e| ApiError::Config(format!("listener: {e}")))?;
    let mut opts = config.serve_options()?;
    if !config.no_proxy_lane {
        opts.lane = Some(proxy_lane::handle(app.state.clone()));
    }
    let shards = config.shard_count();
    if shards > 0 {
        let started = edge_core::shard::Shards::start(shards, "api")
            .map_err(|e| ApiError::Config(format!("shard threads: {e}")))?;
        opts.shards = Some(std::sync::Arc::new(started));
    }
    tracing::info!(%listen, relay = %config.relay_url, shards, "api-server listening");
    let sweeper = tokio::spawn(housekeeping::run(app.state.clone(), shutdown.clone()));
    let [health, deliveries] = app.spawn_tasks(&shutdown);
    serve(listener, build_app(app.state.clone()), opts, shutdown).await;
    let _ = tokio::join!(sweeper, health, deliveries);
    // Every handle is gone with the router: the writer drains and ends.
    if tokio::time::timeout(config.audit_drain_timeout(), app.into_audit_task())
        .await
        .is_err()
    {
        tracing::warn!("audit events still queued after the drain timeout");
    }
    tracing::info!("api-server stopped");
    Ok(())
}

/// The api-server's parts from configuration (store, keys, relays,
/// provider), wired by the same builder the test stack uses.
async fn assemble(config: &Config) -> Result<app::App, ApiError> {
    let settings = config.settings()?;
    let store = Store::connect(&config.database_url())
        .await
        .map_err(|e| ApiError::Config(format!("database: {e}")))?;
    let internal_secret = edge_core::secret::internal_secret(&config.internal_secret_path())
        .map_err(|e| ApiError::Config(format!("internal secret: {e}")))?;
    let pairing_key = key_file(
        config.pairing_key_file.as_deref(),
        &config.data_dir,
        "pairing-key",
    )?;
    let relay_tls = edge_tls::client_config(config.relay_ca_file.as_deref())
        .map_err(|e| ApiError::Config(format!("relay CA: {e}")))?;
    let relays = match &config.redis_url {
        Some(url) => app::RelayNodes::Leases(
            directory::leases::RedisConn::connect(url, config.redis_timeout())
                .await
                .map_err(|e| ApiError::Config(format!("redis: {e}")))?,
        ),
        None => app::RelayNodes::One(NodeId(config.relay_url.clone())),
    };
    let oidc = auth::oidc::OidcClient::new(config.oidc(&settings)?)
        .map_err(|e| ApiError::Config(e.to_string()))?;
    if let Some(service) = config.service_client()? {
        tracing::info!(client_id = %service.client_id, "service client configured (reserved, not used yet)");
    }
    if let Err(err) = oidc.warm_up().await {
        tracing::warn!(error = %err, "OpenID Provider discovery failed; retrying on first login");
    }
    Ok(app::AppBuilder {
        store,
        settings,
        oidc,
        internal_secret,
        cookies: cookie_keys(config)?,
        pairing_key,
        relays,
        relay_tls: Some(relay_tls),
    }
    .build())
}

/// The session cookie's signing key and the retired keys still accepted.
fn cookie_keys(config: &Config) -> Result<CookieKeys, ApiError> {
    let signing = CookieKey::new(key_file(
        config.session_key_file.as_deref(),
        &config.data_dir,
        "session-key",
    )?)
    .ok_or_else(|| ApiError::Config("session key shorter than 32 bytes".into()))?;
    let retired = config
        .retired_session_key_files
        .iter()
        .map(|path| {
            edge_core::secret::read_file(path)
                .ok()
                .and_then(CookieKey::new)
                .ok_or_else(|| ApiError::Config(format!("retired key {} unusable", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CookieKeys::new(signing, retired))
}
