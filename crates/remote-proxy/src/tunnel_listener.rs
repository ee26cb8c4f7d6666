//! The device-facing listener (`:3800`, `GET /tunnel`): checks the bearer
//! credential against the store before upgrading (401 JSON otherwise), then
//! runs the session — pump, yamux client, directory registration — in its own
//! task under the handshake timeout. Nothing slow runs on the accept path.

use crate::error::RelayError;
use crate::registry::LiveSession;
use crate::Relay;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use directory::{SessionRegistry, SessionSummary};
use edge_core::client_addr::{rate_key, ClientIp};
use edge_core::time::now_ms;
use edge_core::{DeviceId, DeviceToken, Secret};
use http::header;
use hyper::upgrade::OnUpgrade;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use store::DeviceAuth;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel::pump::{self, Activity, PumpConfig};
use tunnel::{contract, session, upgrade};

/// Routes of the tunnel port.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route(contract::TUNNEL_PATH, get(accept_tunnel))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(edge_core::request_id::middleware))
        .with_state(relay)
}

fn bearer(req: &Request) -> Option<DeviceToken> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    if token.is_empty() || token.len() > 512 {
        return None;
    }
    Some(DeviceToken::from_secret(Secret::new(token)))
}

/// `name/version` from the User-Agent, bounded in length.
fn agent_version(req: &Request) -> Option<String> {
    let ua = req.headers().get(header::USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(64).collect())
}

async fn accept_tunnel(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    client: Option<axum::Extension<ClientIp>>,
    mut req: Request,
) -> Response {
    let client = client.map_or(rate_key(remote.ip()), |c| c.0.rate_key());
    let started = std::time::Instant::now();
    // Tokens in the query string are refused: query strings end up in logs.
    let token = if req.uri().query().is_some() {
        None
    } else {
        bearer(&req)
    };
    let token_hash = token.as_ref().map(DeviceToken::hash).unwrap_or_default();
    match admit(&relay, token, client).await {
        Ok((auth, permit)) => {
            let accept = match upgrade::accept_key(req.headers()) {
                Ok(a) => a,
                Err(e) => {
                    relay.metrics.connect("bad_request");
                    return RelayError::BadRequest(e.to_string()).into_response();
                }
            };
            let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
                relay.metrics.connect("bad_request");
                return RelayError::BadRequest("connection cannot be upgraded".into())
                    .into_response();
            };
            let agent = agent_version(&req);
            let offered = req
                .headers()
                .get(tunnel::preamble::CAPABILITIES_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let preamble = tunnel::preamble::offers(offered, tunnel::preamble::PREAMBLE_V1);
            let burst = tunnel::preamble::offers(offered, tunnel::preamble::BURST_V1);
            let task_relay = relay.clone();
            relay.tunnels.spawn(async move {
                let admitted = Admitted {
                    auth,
                    token_hash,
                    remote,
                    agent_version: agent,
                    preamble,
                    burst,
                    started,
                };
                run_tunnel(task_relay, on_upgrade, admitted, permit).await;
            });
            let mut res: Response = upgrade::switching_protocols(&accept);
            // The answer names exactly what this relay took of the offer.
            let accepted: Vec<&str> = [
                (preamble, tunnel::preamble::PREAMBLE_V1),
                (burst, tunnel::preamble::BURST_V1),
            ]
            .into_iter()
            .filter_map(|(taken, cap)| taken.then_some(cap))
            .collect();
            let value = http::HeaderValue::from_str(&accepted.join(", "));
            if let (false, Ok(value)) = (accepted.is_empty(), value) {
                res.headers_mut()
                    .insert(tunnel::preamble::CAPABILITIES_HEADER, value);
            }
            res
        }
        Err(err) => {
            if matches!(err, RelayError::Unauthorized) {
                tracing::info!(%remote, "tunnel refused: bad credential");
            }
            relay.metrics.connect(match err {
                RelayError::Unauthorized => "bad_token",
                RelayError::TooFast { .. } | RelayError::TooManyBadCredentials { .. } => {
                    "rate_limited"
                }
                RelayError::AtCapacity => "over_capacity",
                RelayError::OwnerQuota => "owner_quota",
                RelayError::Draining => "draining",
                RelayError::BadRequest(_) => "bad_request",
                _ => "error",
            });
            err.into_response()
        }
    }
}

async fn admit(
    relay: &Relay,
    token: Option<DeviceToken>,
    client: IpAddr,
) -> Result<(DeviceAuth, OwnedSemaphorePermit), RelayError> {
    if relay.is_draining() {
        return Err(RelayError::Draining);
    }
    if let Some(retry_after_secs) = relay.bad_credentials.retry_after(&client) {
        return Err(RelayError::TooManyBadCredentials { retry_after_secs });
    }
    let bad = || {
        // Counted only when it was bad: devices behind one address that
        // reconnect together are not held off.
        let _ = relay.bad_credentials.check(client);
        RelayError::Unauthorized
    };
    let token = token.ok_or_else(bad)?;
    let auth = relay
        .store
        .authenticate_device(&token.hash())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "credential check failed");
            RelayError::Internal
        })?
        .ok_or_else(bad)?;
    relay
        .limiter
        .check(auth.device_id)
        .await
        .map_err(|retry_after_secs| RelayError::TooFast { retry_after_secs })?;
    if !relay.directory.owner_has_room(
        auth.owner_id,
        auth.device_id,
        relay.limits.max_tunnels_per_owner,
    ) {
        return Err(RelayError::OwnerQuota);
    }
    let permit = Arc::clone(&relay.tunnel_slots)
        .try_acquire_owned()
        .map_err(|_| RelayError::AtCapacity)?;
    Ok((auth, permit))
}

/// A connection that passed the credential check.
struct Admitted {
    auth: DeviceAuth,
    /// Hash of the credential it presented, checked again periodically.
    token_hash: String,
    remote: SocketAddr,
    agent_version: Option<String>,
    /// The agent asked for stream preambles and was told yes (ADR 026).
    preamble: bool,
    /// The agent offered burst windows and was told yes (ADR 044).
    burst: bool,
    /// When the tunnel request arrived.
    started: std::time::Instant,
}

/// One tunnel's life in four named phases: upgrade the connection,
/// register the session (directory, lease), supervise it until it ends
/// (byte tallies, credential re-checks), then tear it down.
async fn run_tunnel(
    relay: Arc<Relay>,
    on_upgrade: OnUpgrade,
    admitted: Admitted,
    _permit: OwnedSemaphorePermit,
) {
    let Some(ws) = upgrade_connection(&relay, on_upgrade, &admitted).await else {
        return;
    };
    // Registering and tearing down wait on the store and Redis; boxed,
    // their state lives only while they run instead of sizing every idle
    // tunnel's task for it (as the handshake's, below).
    let (tunnel, driver) = Box::pin(register(&relay, ws, admitted)).await;
    let session_end = supervise(&relay, &tunnel, driver).await;
    Box::pin(teardown(&relay, tunnel, session_end)).await;
}

/// The WebSocket of an admitted connection, within the handshake timeout;
/// `None` (counted) when the upgrade failed or timed out.
async fn upgrade_connection(
    relay: &Relay,
    on_upgrade: OnUpgrade,
    admitted: &Admitted,
) -> Option<upgrade::UpgradedWs> {
    let (device, remote) = (admitted.auth.device_id, admitted.remote);
    // Boxed: the handshake's state is freed once it is done instead of
    // sizing every idle tunnel's task for it.
    match tokio::time::timeout(
        relay.limits.handshake_timeout,
        Box::pin(upgrade::websocket(on_upgrade, upgrade::relay_ws_config())),
    )
    .await
    {
        Ok(Ok(ws)) => {
            relay.metrics.connect("accepted");
            Some(ws)
        }
        Ok(Err(err)) => {
            tracing::info!(%device, %remote, error = %err, "tunnel upgrade failed");
            relay.metrics.connect("handshake_failed");
            None
        }
        Err(_) => {
            tracing::info!(%device, %remote, "tunnel upgrade timed out");
            relay.metrics.connect("handshake_timeout");
            None
        }
    }
}

/// A registered tunnel: what supervising and tearing it down need.
struct Tunnel {
    device: DeviceId,
    remote: SocketAddr,
    token_hash: String,
    conn: directory::ConnectionId,
    lease: directory::leases::Lease,
    activity: Arc<Activity>,
    cancel: tokio_util::sync::CancellationToken,
    closed_for: Arc<std::sync::OnceLock<&'static str>>,
    metrics_path: Arc<std::sync::RwLock<Option<String>>>,
    pump_task: pump::Ended,
}

/// The future that drives a tunnel's yamux session, on the heap once: the
/// session is most of an idle tunnel's memory, and a future moved through
/// the `async fn`s above it would be held in each one's state twice (as
/// passed and as bound).
type Driver<D> = std::pin::Pin<Box<D>>;

/// A yamux session running over a tunnel's WebSocket.
struct Started<D> {
    control: tunnel::Control,
    driver: Driver<D>,
    activity: Arc<Activity>,
    cancel: tokio_util::sync::CancellationToken,
    pump_task: pump::Ended,
}

/// Start the pump and the yamux session (the relay's side: it opens the
/// streams) over `ws`, within the relay's limits.
fn start_session(
    relay: &Relay,
    ws: upgrade::UpgradedWs,
    burst: bool,
) -> Started<impl std::future::Future<Output = session::SessionEnd> + Send> {
    let limits = &relay.limits;
    let activity = Activity::new();
    let (io, pump_task) = pump::spawn(
        ws,
        PumpConfig {
            idle_timeout: limits.idle_timeout,
        },
        activity.clone(),
    );
    let cancel = relay.shutdown.child_token();
    let (control, driver) = session::client(
        io,
        session::relay_config(
            limits.max_streams_per_session,
            limits.ping_interval,
            limits.ping_timeout,
            burst,
        ),
        cancel.clone(),
        activity.clone(),
    );
    Started {
        control,
        driver: Box::pin(driver),
        activity,
        cancel,
        pump_task,
    }
}

/// Start the session over `ws`, register it in the directory and take
/// the device's lease; the tunnel and the session's driver, which runs
/// until the session ends.
async fn register(
    relay: &Relay,
    ws: upgrade::UpgradedWs,
    admitted: Admitted,
) -> (
    Tunnel,
    Driver<impl std::future::Future<Output = session::SessionEnd>>,
) {
    let Admitted {
        auth,
        token_hash,
        remote,
        agent_version,
        preamble,
        burst,
        started,
    } = admitted;
    let device = auth.device_id;
    let metrics_path = Arc::new(std::sync::RwLock::new(auth.metrics_path.clone()));
    let limits = &relay.limits;
    let Started {
        control,
        driver,
        activity,
        cancel,
        pump_task,
    } = start_session(relay, ws, burst);
    let now = now_ms();
    let summary = SessionSummary {
        device_id: device,
        owner_id: auth.owner_id,
        connected_since: now,
        last_heard_from: now,
        remote_addr: remote.to_string(),
        agent_version,
        node: relay.directory.node().clone(),
        bytes_in: 0,
        bytes_out: 0,
    };
    let closed_for: Arc<std::sync::OnceLock<&'static str>> = Arc::default();
    let live = LiveSession {
        control,
        cancel: cancel.clone(),
        closed_for: closed_for.clone(),
        activity: activity.clone(),
        streams: Arc::new(Semaphore::new(limits.max_streams_per_session)),
        max_streams: limits.max_streams_per_session,
        released: Arc::default(),
        preamble,
        burst,
        metrics_path: metrics_path.clone(),
        // The session's driver runs on the task registering it.
        shard: edge_core::shard::current(),
    };
    let conn = relay.directory.register(summary, live).await;
    relay
        .metrics
        .connect_to_registered
        .observe(started.elapsed().as_secs_f64());
    let lease = relay.lease(conn, now);
    if let Some(leases) = relay.leases() {
        // Redis down: the tunnel works on this node; the lease keeper
        // writes the lease when Redis answers again.
        if let Err(err) = leases.acquire(device, &lease).await {
            tracing::warn!(%device, error = %err, "cannot take the device's lease");
        }
    }
    tracing::info!(%device, %remote, "tunnel up");
    relay.seen.note(device, now_ms());
    let tunnel = Tunnel {
        device,
        remote,
        token_hash,
        conn,
        lease,
        activity,
        cancel,
        closed_for,
        metrics_path,
        pump_task,
    };
    (tunnel, driver)
}

/// Drive the session until it ends, moving its byte counts into the
/// relay's metrics and closing it when its credential is revoked.
async fn supervise(
    relay: &Relay,
    tunnel: &Tunnel,
    mut driver: Driver<impl std::future::Future<Output = session::SessionEnd>>,
) -> session::SessionEnd {
    let limits = &relay.limits;
    // The session's bytes reach the relay's counters this often (liveness
    // is the session's own activity; leases have their keeper).
    let mut tally = tokio::time::interval(limits.idle_timeout / 4);
    let mut recheck = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.credential_recheck,
        limits.credential_recheck,
    );
    let mut counted = (0, 0);
    let end = loop {
        tokio::select! {
            end = &mut driver => break end,
            _ = tally.tick() => counted = count_bytes(relay, &tunnel.activity, counted),
            _ = recheck.tick() => {
                // Boxed for the same reason: a store read, now and then.
                let check = credential_revoked(relay, &tunnel.token_hash, &tunnel.metrics_path);
                if Box::pin(check).await {
                    let (device, remote) = (tunnel.device, tunnel.remote);
                    tracing::info!(%device, %remote, "credential revoked; closing the tunnel");
                    let _ = tunnel.closed_for.set("revoked");
                    tunnel.cancel.cancel();
                }
            }
        }
    };
    count_bytes(relay, &tunnel.activity, counted);
    end
}

/// Leave the directory, release the lease, stop the pump and record why
/// the tunnel ended.
async fn teardown(relay: &Relay, tunnel: Tunnel, session_end: session::SessionEnd) {
    let (device, remote) = (tunnel.device, tunnel.remote);
    relay.directory.cleanup(device, tunnel.conn).await;
    if let Some(leases) = relay.leases() {
        if let Err(err) = leases.release(device, &tunnel.lease).await {
            tracing::warn!(%device, error = %err, "cannot release the device's lease");
        }
    }
    relay.seen.note(device, now_ms());
    tunnel.cancel.cancel();
    let transport_end = tunnel.pump_task.await;
    relay.metrics.ended(end_reason(
        &session_end,
        transport_end.as_ref().ok(),
        tunnel.closed_for.get().copied(),
        tunnel.activity.protocol_error(),
    ));
    let transport_end = match transport_end {
        Ok(end) => end.to_string(),
        Err(err) => format!("pump task failed: {err}"),
    };
    tracing::info!(%device, %remote, session = %session_end, transport = %transport_end, "tunnel closed");
}

/// Add the session's bytes since `counted` to the relay's counters.
fn count_bytes(relay: &Relay, activity: &Activity, counted: (u64, u64)) -> (u64, u64) {
    let now = (activity.bytes_out(), activity.bytes_in());
    relay.metrics.add_bytes(
        now.0.saturating_sub(counted.0),
        now.1.saturating_sub(counted.1),
    );
    now
}

/// The `sessions_ended` label of a session that ended so.
fn end_reason(
    session: &session::SessionEnd,
    transport: Option<&pump::PumpEnd>,
    closed_for: Option<&'static str>,
    protocol_error: bool,
) -> &'static str {
    if let Some(reason) = closed_for {
        return reason;
    }
    if protocol_error {
        return "protocol_error";
    }
    match (session, transport) {
        (session::SessionEnd::Closed, _) => "shutdown",
        (_, Some(pump::PumpEnd::IdleTimeout)) => "idle",
        (_, Some(pump::PumpEnd::TextMessage | pump::PumpEnd::MessageTooBig)) => "protocol_error",
        (session::SessionEnd::PeerGone, _) => "peer_closed",
        (session::SessionEnd::Error(_), _) => "error",
    }
}

/// Whether the store now says no to this credential (a store that cannot
/// answer keeps the tunnel: devices already authorized keep relaying);
/// the device's metrics path is brought up to date on the way.
async fn credential_revoked(
    relay: &Relay,
    token_hash: &str,
    metrics_path: &std::sync::RwLock<Option<String>>,
) -> bool {
    match relay.store.authenticate_device(token_hash).await {
        Ok(Some(auth)) => {
            if let Ok(mut path) = metrics_path.write() {
                *path = auth.metrics_path;
            }
            false
        }
        Ok(None) => true,
        Err(err) => {
            tracing::warn!(error = %err, "cannot re-check a tunnel's credential");
            false
        }
    }
}
