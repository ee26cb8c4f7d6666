//! The agent on the box: dial the relay with the device credential, serve the
//! yamux streams the relay opens by piping each to the local target, and
//! reconnect with backoff whenever the tunnel ends. Every disconnect is
//! logged with its reason. The agent offers stream preambles (ADR 026); a
//! relay that accepts may also reach the agent's own endpoint (host
//! metrics) and the TCP services its `--allow` list names (ADR 027) on
//! its streams ([`endpoint`]).

pub mod backoff;
pub mod config;
pub mod endpoint;
pub mod host;
pub mod pair;

use backoff::Backoff;
use config::{AgentSettings, Cli, Command};
use edge_core::{DeviceToken, Secret};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tunnel::dial::{dial_offering, DialError};
use tunnel::pump::{self, Activity, PumpConfig};
use tunnel::{session, StreamHandle};

const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's one error type.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("credential: {0}")]
    Credential(String),
    #[error("pairing failed: {0}")]
    Pairing(String),
}

/// Dispatch a parsed command line.
pub async fn main_command(cli: Cli, shutdown: CancellationToken) -> Result<(), AgentError> {
    match cli.command {
        Command::Run(args) => {
            let settings = args.settings()?;
            let token = load_credential(&args.credential_file)?;
            run(settings, token, shutdown).await;
            Ok(())
        }
        Command::Pair(args) => {
            let device = pair::pair(&args).await?;
            println!(
                "paired: this box is device {device}; credential saved to {}",
                args.credential_file.display()
            );
            Ok(())
        }
    }
}

/// The credential from `EDGE_AGENT_TOKEN` or from `path`.
pub fn load_credential(path: &std::path::Path) -> Result<DeviceToken, AgentError> {
    if let Ok(token) = std::env::var("EDGE_AGENT_TOKEN") {
        if !token.trim().is_empty() {
            return Ok(DeviceToken::from_secret(Secret::new(token.trim())));
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "credential file is readable by others; use chmod 600");
            }
        }
    }
    edge_core::secret::read_file(path)
        .map(DeviceToken::from_secret)
        .map_err(|e| {
            AgentError::Credential(format!(
                "cannot read {} ({e}); pair the box first or set EDGE_AGENT_TOKEN",
                path.display()
            ))
        })
}

fn user_agent() -> String {
    format!(
        "{}/{}",
        tunnel::contract::AGENT_NAME,
        env!("CARGO_PKG_VERSION")
    )
}

/// Keep the tunnel up until `shutdown`. With several relays the agent
/// starts at a random one (spreading a fleet over the nodes) and moves to
/// the next after a failed connect (unreachable, refused, draining) or
/// after its tunnel ended (the node closed it: draining, or going down),
/// with jittered backoff.
pub async fn run(settings: AgentSettings, token: DeviceToken, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    let agent = user_agent();
    let figures = Arc::new(endpoint::AgentFigures::default());
    let relays = &settings.relays;
    let mut at = if relays.len() > 1 {
        rand::Rng::gen_range(&mut rand::thread_rng(), 0..relays.len())
    } else {
        0
    };
    tracing::info!(relays = ?relays, target = %settings.target, "edge-agent starting");
    while !shutdown.is_cancelled() {
        let Some(relay) = relays.get(at % relays.len().max(1)) else {
            tracing::error!("no relay configured");
            break;
        };
        if settings.insecure_plaintext && relay.starts_with("ws://") {
            tracing::warn!(%relay, "connecting without TLS (--insecure-plaintext): the credential crosses the network in clear text");
        }
        let started = Instant::now();
        let mut floor = Duration::ZERO;
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = dial_offering(relay, &token, &agent, tunnel::upgrade::agent_ws_config(), settings.tls.clone(), Some(tunnel::preamble::AGENT_OFFER)) => r,
        };
        match attempt {
            Ok((ws, accepted)) => {
                let preamble = accepted
                    .is_some_and(|a| tunnel::preamble::offers(&a, tunnel::preamble::PREAMBLE_V1));
                tracing::info!(%relay, preamble, "tunnel connected");
                figures.connected();
                let reason =
                    serve_tunnel(ws, &settings, preamble, figures.clone(), shutdown.clone()).await;
                tracing::info!(%reason, "tunnel connection ended");
                if started.elapsed() >= settings.stable_after {
                    backoff.reset();
                }
            }
            Err(DialError::Refused { status: 401, .. }) => {
                tracing::warn!("relay rejected the device credential (401); re-pair the box or rotate its credential");
            }
            Err(DialError::Refused {
                status,
                retry_after,
            }) => {
                floor = Duration::from_secs(retry_after.unwrap_or(0));
                tracing::warn!(%relay, status, "relay refused the tunnel");
            }
            Err(err) => tracing::warn!(%relay, error = %err, "cannot connect to relay"),
        }
        at = at.wrapping_add(1);
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.next_delay().max(floor);
        tracing::debug!(?delay, "reconnecting after delay");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("edge-agent stopped");
}

/// Serve one connected tunnel; returns why it ended.
async fn serve_tunnel(
    ws: tunnel::dial::DialedWs,
    settings: &AgentSettings,
    preamble: bool,
    figures: Arc<endpoint::AgentFigures>,
    shutdown: CancellationToken,
) -> String {
    let activity = Activity::new();
    let (io, pump_task) = pump::spawn(
        ws,
        PumpConfig {
            idle_timeout: settings.idle_timeout,
        },
        activity.clone(),
    );
    let targets = Arc::new(endpoint::Targets::new(settings));
    let session_end = session::serve(
        io,
        session::device_config(),
        shutdown,
        activity,
        move |stream| {
            if preamble {
                tokio::spawn(endpoint::dispatch(stream, targets.clone(), figures.clone()));
            } else {
                tokio::spawn(pipe(stream, targets.service.clone(), Vec::new()));
            }
        },
    )
    .await;
    let transport_end = match pump_task.await {
        Ok(end) => end.to_string(),
        Err(err) => format!("pump task failed: {err}"),
    };
    format!("{session_end}; {transport_end}")
}

/// Pipe one relay stream to the local target, `first` (bytes already read
/// from the stream) before the rest; a failed connect resets it.
async fn pipe(stream: StreamHandle, target: String, first: Vec<u8>) {
    if let Some(local) = connect_local(&target).await {
        pipe_connected(stream, local, first).await;
    }
}

/// A connection to the local `target`, or `None` (logged) when it does
/// not answer within [`TARGET_CONNECT_TIMEOUT`].
async fn connect_local(target: &str) -> Option<tokio::net::TcpStream> {
    let local = tokio::time::timeout(
        TARGET_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(target),
    )
    .await;
    match local {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(err)) => {
            tracing::warn!(%target, error = %err, "cannot reach local service");
            None
        }
        Err(_) => {
            tracing::warn!(%target, "local service connect timed out");
            None
        }
    }
}

/// Pipe `stream` and the connected `local`, `first` written to `local`
/// before the rest.
async fn pipe_connected(
    mut stream: StreamHandle,
    mut local: tokio::net::TcpStream,
    first: Vec<u8>,
) {
    if !first.is_empty() {
        use tokio::io::AsyncWriteExt;
        if let Err(err) = local.write_all(&first).await {
            tracing::debug!(error = %err, "stream ended with error");
            return;
        }
    }
    let mut local = tunnel::splice::Plain::new(local);
    if let Err(err) = tunnel::splice::splice(&mut stream, &mut local).await {
        tracing::debug!(error = %err, "stream ended with error");
    }
}
