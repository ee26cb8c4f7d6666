//! Many idle tunnels at once: how fast the relay accepts them (upgrade,
//! credential check, yamux) and what each costs it in resident memory.
//! Every simulated device is a real paired device with its own credential;
//! each holds its tunnel open and answers the relay's pings, nothing more.
//! The tunnels dial from several loopback addresses, a few thousand each.

use anyhow::{bail, Result};
use edge_core::DeviceToken;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Pair one device of `owner` named `name` with a fresh credential: its
/// id and credential.
pub async fn pair_device(
    store: &store::Store,
    owner: edge_core::UserId,
    name: String,
) -> Result<(edge_core::DeviceId, DeviceToken)> {
    let d = store
        .create_device(
            owner,
            &store::NewDevice {
                name,
                ..Default::default()
            },
        )
        .await?;
    let t = DeviceToken::generate();
    store.add_credential(d.id, &t.hash()).await?;
    Ok((d.id, t))
}

/// Pair `n` devices of `owner` named `<prefix><i>`, each with a fresh
/// credential; returns the credentials.
pub async fn pair_devices(
    store: &store::Store,
    owner: edge_core::UserId,
    n: usize,
    prefix: &str,
) -> Result<Vec<DeviceToken>> {
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let (_, t) = pair_device(store, owner, format!("{prefix}{i:05}")).await?;
        tokens.push(t);
    }
    Ok(tokens)
}

/// Dials in flight at once.
const DIALS_IN_FLIGHT: usize = 256;

/// Tunnels dialled from one loopback source address before the next
/// (127.0.0.2, 127.0.0.3, …) takes over: well under the 14,000 even ports
/// the kernel tries first for a connection, past which every further
/// connection from that address scans the taken ones.
const TUNNELS_PER_SOURCE: usize = 5_000;

/// Tunnels dialled so far by this process, across calls: which source
/// address the next one takes.
static DIALLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The loopback source address of this process's `i`th tunnel.
fn source(i: usize) -> std::net::IpAddr {
    let n = u32::try_from(2 + i / TUNNELS_PER_SOURCE).unwrap_or(u32::MAX);
    std::net::Ipv4Addr::from(0x7f00_0000 | n.min(0x00ff_fffe)).into()
}

/// Connect one tunnel per token (with `DIALS_IN_FLIGHT` at once) and keep
/// them open until `cancel`; returns how long connecting all took.
pub async fn connect_all(
    tokens: Vec<DeviceToken>,
    relay_url: &str,
    cancel: CancellationToken,
) -> Result<Duration> {
    hold(tokens, relay_url, "bench-idle/1", cancel, || drop).await
}

/// Connect one tunnel per token as agent `agent` (with `DIALS_IN_FLIGHT`
/// at once) and keep them open until `cancel`, each session handing the
/// streams the relay opens to a handler from `handler`; returns how long
/// connecting all took.
pub async fn hold<H>(
    tokens: Vec<DeviceToken>,
    relay_url: &str,
    agent: &'static str,
    cancel: CancellationToken,
    handler: impl Fn() -> H,
) -> Result<Duration>
where
    H: FnMut(tunnel::StreamHandle) + Send + 'static,
{
    let start = Instant::now();
    let url = relay_url.to_owned();
    // Each dial is its own task, so the handshakes of this load generator
    // run on every core rather than all inside the one task that waits.
    let mut dials = futures_util::stream::iter(tokens.into_iter().map(|t| {
        let url = url.clone();
        let i = DIALLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            tunnel::dial::dial_from(&url, &t, agent, Default::default(), source(i))
                .await
                .map_err(|e| anyhow::anyhow!("tunnel: {e}"))
        })
    }))
    .buffer_unordered(DIALS_IN_FLIGHT);
    while let Some(ws) = dials.next().await {
        let ws = ws??;
        let (cancel, on_stream) = (cancel.clone(), handler());
        tokio::spawn(async move {
            let activity = tunnel::pump::Activity::new();
            let (io, _pump) = tunnel::pump::spawn(
                ws,
                tunnel::pump::PumpConfig {
                    idle_timeout: Duration::from_secs(3600),
                },
                activity.clone(),
            );
            tunnel::session::serve(
                io,
                tunnel::session::device_config(),
                cancel,
                activity,
                on_stream,
            )
            .await;
        });
    }
    Ok(start.elapsed())
}

/// Wait until the relay lists `want` sessions; returns when it did.
pub async fn wait_registered(
    client: &reqwest::Client,
    internal_url: &str,
    secret: &str,
    want: usize,
) -> Result<Instant> {
    wait_for(
        client,
        internal_url,
        secret,
        &format!("at least {want}"),
        |n| n >= want,
    )
    .await
}

/// Wait until the relay lists at most `at_most` sessions (closed tunnels
/// gone).
pub async fn wait_drained(
    client: &reqwest::Client,
    internal_url: &str,
    secret: &str,
    at_most: usize,
) -> Result<()> {
    wait_for(
        client,
        internal_url,
        secret,
        &format!("at most {at_most}"),
        |n| n <= at_most,
    )
    .await?;
    Ok(())
}

/// Poll the relay's session list (two minutes at most) until its length
/// is `done`; returns when it was.
async fn wait_for(
    client: &reqwest::Client,
    internal_url: &str,
    secret: &str,
    what: &str,
    done: impl Fn(usize) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list: serde_json::Value = client
            .get(internal_url)
            .bearer_auth(secret)
            .send()
            .await?
            .json()
            .await?;
        if done(list.as_array().map_or(0, Vec::len)) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the relay never listed {what} sessions");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loopback_source_takes_a_few_thousand_tunnels() {
        assert_eq!(source(0).to_string(), "127.0.0.2");
        assert_eq!(source(TUNNELS_PER_SOURCE - 1).to_string(), "127.0.0.2");
        assert_eq!(source(TUNNELS_PER_SOURCE).to_string(), "127.0.0.3");
        // 100,000 tunnels take 20 addresses, all loopback.
        assert_eq!(source(99_999).to_string(), "127.0.0.21");
        assert!(source(usize::MAX).is_loopback());
    }
}
