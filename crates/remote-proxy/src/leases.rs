//! This relay's part in the multi-node directory (ADR 017): it announces
//! itself, keeps a Redis lease for each of its tunnels (refreshed every
//! `DEFAULT_LEASE_REFRESH`, written again if Redis lost it), closes a
//! session another node took over, and takes itself off the node set when
//! it stops. A Redis outage never touches a live tunnel: leases are
//! re-written when Redis answers again.

use crate::Relay;
use directory::leases::{RelayLeases, DEFAULT_LEASE_REFRESH};
use edge_core::DeviceId;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Announce this node and refresh its leases until the relay shuts down
/// (a draining node keeps its sessions' leases but is no longer
/// announced); then withdraw it.
pub async fn keep(relay: Arc<Relay>, leases: RelayLeases) {
    let mut tick = tokio::time::interval(DEFAULT_LEASE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = relay.shutdown.cancelled() => break,
        }
        if !relay.is_draining() {
            if let Err(err) = leases.announce().await {
                tracing::warn!(error = %err, "cannot announce this relay node");
                continue;
            }
        }
        for (device, conn, since) in relay.directory.live() {
            match leases.refresh(device, &relay.lease(conn, since)).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(%device, "another node holds the device now; closing");
                    relay.directory.close_conn(device, conn, "replaced");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot refresh tunnel leases");
                    break;
                }
            }
        }
    }
    if let Err(err) = leases.withdraw().await {
        tracing::warn!(error = %err, "cannot withdraw this relay node");
    }
}

/// Close the local session of every device another node took over.
pub async fn hear_takeovers(relay: Arc<Relay>, leases: RelayLeases) {
    loop {
        match leases.takeovers().await {
            Ok(devices) => {
                tokio::pin!(devices);
                loop {
                    let device = tokio::select! {
                        d = devices.next() => d,
                        () = relay.shutdown.cancelled() => return,
                    };
                    let Some(device) = device else { break };
                    close_if_taken(&relay, &leases, device).await;
                }
                tracing::warn!("takeover subscription ended; subscribing again");
            }
            Err(err) => tracing::warn!(error = %err, "cannot subscribe to takeovers"),
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            () = relay.shutdown.cancelled() => return,
        }
    }
}

/// Close `device`'s session here unless its lease is (again) this node's.
async fn close_if_taken(relay: &Relay, leases: &RelayLeases, device: DeviceId) {
    match leases.current(device).await {
        Ok(Some(lease)) if &lease.node == leases.node() => {}
        Ok(_) => {
            if relay.directory.remove_and_close(device, "replaced") {
                tracing::info!(%device, "device connected to another node; closed here");
            }
        }
        Err(err) => tracing::warn!(%device, error = %err, "cannot check a takeover"),
    }
}
