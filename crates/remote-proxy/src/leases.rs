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
        refresh_pass(&relay, &leases).await;
    }
    if let Err(err) = leases.withdraw().await {
        tracing::warn!(error = %err, "cannot withdraw this relay node");
    }
}

/// Refresh every live tunnel's lease in batches (one round trip per
/// [`directory::leases::REFRESH_BATCH`], a few at once), going on past a
/// batch Redis did not take; close the sessions another node holds now.
async fn refresh_pass(relay: &Relay, leases: &RelayLeases) {
    let started = std::time::Instant::now();
    let live = relay.directory.live();
    let batch: Vec<_> = live
        .iter()
        .map(|(device, conn, since)| (*device, relay.lease(*conn, *since)))
        .collect();
    let report = leases.refresh_all(&batch).await;
    let lost: std::collections::HashSet<_> = report.lost.iter().collect();
    for (device, conn, _) in &live {
        if lost.contains(device) {
            tracing::info!(%device, "another node holds the device now; closing");
            relay.directory.close_conn(*device, *conn, "replaced");
        }
    }
    relay
        .metrics
        .lease_refresh_failures
        .inc_by(report.failed as u64);
    if let Some(err) = &report.first_error {
        tracing::warn!(error = %err, failed = report.failed, of = batch.len(), "cannot refresh some tunnel leases");
    }
    relay
        .metrics
        .lease_refresh_seconds
        .set(started.elapsed().as_secs_f64());
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
