//! Paired devices that attack the relay over their own tunnel, against the
//! real `remote-proxy` binary: a device that floods pings without reading
//! the answers, and one that forges ping ACKs instead of answering. Each
//! must end only its own session, within the relay's write and ping
//! deadlines, with the relay's memory bounded, while another device keeps
//! working. Each prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::procs::{rss_kib, Args, Binaries, ProcStack};
use testkit::within_for;
use tokio_tungstenite::tungstenite::Message;

const DEVSTACK: &str = env!("CARGO_BIN_EXE_devstack");

fn bins() -> Binaries {
    Binaries::next_to(Path::new(DEVSTACK))
}

/// A yamux ping header (type 2) with `flags` and `id` (contract §3).
fn ping(flags: u16, id: u32) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[1] = 2;
    f[2..4].copy_from_slice(&flags.to_be_bytes());
    f[8..12].copy_from_slice(&id.to_be_bytes());
    f
}
const SYN: u16 = 1;
const ACK: u16 = 2;

/// What the flood may add to the relay's resident memory: socket and
/// WebSocket buffers and the bounded control queue of one session, in a
/// debug build (without the bound: about 4 GiB for 1 GiB of pings).
const FLOOD_RSS_BOUND_KIB: u64 = 64 * 1024;
const PING_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flooding_pings_without_reading_is_cut_off_by_the_write_deadline() {
    testkit::init_logs();
    let stack = ProcStack::start(
        bins(),
        None,
        Args {
            relay: &["--ping-timeout-secs", "3"],
            ..Args::default()
        },
    )
    .await;
    let (good, _agent) = stack.online_device("good").await;
    let (_flooder, token) = stack.device("flooder").await;
    let ws = testkit::dial_raw_at(&stack.tunnel_url(), &token).await;
    within_for(
        Duration::from_secs(10),
        "the flooder is registered",
        async {
            while stack.relay_metric("edge_relay_tunnels_online").await < 2.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let before = rss_kib(stack.relay_pid());

    // 1 GiB of ping SYNs in 64 KiB messages; the answers are never read.
    const TOTAL: u64 = 1 << 30;
    let message: Vec<u8> = (0..64 * 1024 / 12).flat_map(|i| ping(SYN, i)).collect();
    let (mut sink, unread) = ws.split();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < TOTAL {
            if sink
                .send(Message::Binary(message.clone().into()))
                .await
                .is_err()
            {
                break;
            }
            sent += message.len() as u64;
        }
        (sent, started.elapsed(), unread)
    });

    // Meanwhile: the relay's memory, and the other device answering.
    let mut peak = before;
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    let (sent, elapsed, _unread) = within_for(Duration::from_secs(60), "the flood ends", async {
        loop {
            peak = peak.max(rss_kib(stack.relay_pid()));
            let asked = Instant::now();
            assert_eq!(stack.info_status(good).await, 200, "the other device");
            worst = worst.max(asked.elapsed());
            answered += 1;
            if flood.is_finished() {
                return flood.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within_for(Duration::from_secs(5), "the flooder is gone", async {
        while stack.relay_metric("edge_relay_tunnels_online").await > 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    println!(
        "ping flood without reading: {} MiB accepted of 1024 MiB, session ended {elapsed:?} after the flood began (write deadline {PING_TIMEOUT:?}); relay RSS {before} -> peak {peak} KiB (+{} KiB, bound {FLOOD_RSS_BOUND_KIB} KiB); the other device answered {answered} requests, slowest {worst:?}",
        sent >> 20,
        peak - before
    );
    assert!(sent < TOTAL, "the relay read the whole flood");
    assert!(
        peak - before <= FLOOD_RSS_BOUND_KIB,
        "relay grew {} KiB",
        peak - before
    );
    assert!(
        elapsed <= PING_TIMEOUT + Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(stack.info_status(good).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_ping_acks_do_not_keep_a_silent_device_alive() {
    testkit::init_logs();
    let stack = ProcStack::start(
        bins(),
        None,
        Args {
            relay: &["--ping-interval-secs", "1", "--ping-timeout-secs", "2"],
            ..Args::default()
        },
    )
    .await;
    let (good, _agent) = stack.online_device("good").await;
    let (_forger, token) = stack.device("forger").await;
    let ws = testkit::dial_raw_at(&stack.tunnel_url(), &token).await;
    let connected = Instant::now();
    let (mut sink, mut stream) = ws.split();
    // It reads everything (so no write stalls), answers no ping, and sends
    // an ACK for a ping the relay never sent every 200 ms (so it is never
    // silent either).
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let forger = tokio::spawn(async move {
        loop {
            let forged = ping(ACK, u32::MAX).to_vec();
            if sink.send(Message::Binary(forged.into())).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    within_for(Duration::from_secs(5), "the forger is registered", async {
        while stack.relay_metric("edge_relay_tunnels_online").await < 2.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Bound: the first unanswered ping goes out after one interval, is
    // found late at the first tick past the timeout: 1 + 2 + 1 s.
    within_for(Duration::from_secs(10), "the forger is dropped", async {
        while stack.relay_metric("edge_relay_tunnels_online").await > 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let dropped = connected.elapsed();
    println!(
        "a device answering no ping but forging ACKs for ping u32::MAX: dropped {dropped:?} after connecting (bound: ping interval 1 s + ping timeout 2 s + one tick)"
    );
    assert!(
        dropped <= Duration::from_secs(4) + Duration::from_secs(2),
        "{dropped:?}"
    );
    assert_eq!(stack.info_status(good).await, 200);
    forger.abort();
    reader.abort();
}
