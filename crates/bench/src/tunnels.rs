//! Many idle tunnels at once: how fast the relay accepts them (upgrade,
//! credential check, yamux) and what each costs it in resident memory.
//! Every simulated device is a real paired device with its own credential;
//! each holds its tunnel open and answers the relay's pings, nothing more.

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
        tokio::spawn(async move {
            tunnel::dial::dial(&url, &t, agent, Default::default(), None)
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
