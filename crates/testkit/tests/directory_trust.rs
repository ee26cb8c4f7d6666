//! The multi-node directory when its parts misbehave: a relay node that
//! answers nothing must not delay requests to the healthy ones; lease
//! refreshes keep 20,000 leases alive through a Redis 1 ms away and go on
//! past a batch Redis refuses; and whoever can write to Redis cannot point
//! the api-server (and the internal secret it presents) at a host of their
//! own: forged leases and node entries are ignored and counted, and
//! plaintext to a node off loopback is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use directory::leases::{Lease, LeaseKey, RedisConn, RelayLeases, REFRESH_BATCH};
use directory::{DirectoryError, NodeId, NodeLocator, RelayDirectory, SessionView, StaticNode};
use edge_core::{DeviceId, Secret};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::redis::RedisServer;
use testkit::{within, Stack, StackOptions};
use tokio::net::TcpListener;

/// One device on a node that answers nothing, the rest on a real relay.
struct TwoNodes {
    dead: NodeId,
    dead_device: DeviceId,
    alive: NodeId,
}

#[async_trait]
impl NodeLocator for TwoNodes {
    async fn locate(&self, device: DeviceId) -> Result<Option<NodeId>, DirectoryError> {
        Ok(Some(if device == self.dead_device {
            self.dead.clone()
        } else {
            self.alive.clone()
        }))
    }

    async fn nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        Ok(vec![self.alive.clone()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_answers_nothing_does_not_delay_requests_to_the_others() {
    const NODE_TIMEOUT: Duration = Duration::from_secs(3);
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    // The "dead" node takes connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = NodeId(format!("http://{}", silent.local_addr().unwrap()));
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            let _ = held_tx.send(conn);
        }
    });
    let dead_device = DeviceId::new();
    let client = RelayDirectory::new(
        Arc::new(TwoNodes {
            dead,
            dead_device,
            alive: stack.relay.as_ref().unwrap().node(),
        }),
        stack.internal_secret().clone(),
        NODE_TIMEOUT,
        NODE_TIMEOUT,
    );
    // Warm the healthy node's channel, as a busy api-server has it.
    client.open_stream(dev.id).await.unwrap();

    // Requests for the dead node's device begin and wait on it...
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let res = c.open_stream(dead_device).await.map(|_| ());
                (res.is_err(), started.elapsed())
            })
        })
        .collect();
    // ...connected to it (the signal that they hold whatever they hold)...
    let _held = within("the dead node is connected to", held_rx.recv())
        .await
        .unwrap();
    // ...while requests for the healthy node's device keep their latency.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        client.open_stream(dev.id).await.unwrap();
        worst = worst.max(asked.elapsed());
    }
    let mut dead_waits = Vec::new();
    for s in stuck {
        let (failed, waited) = s.await.unwrap();
        assert!(failed, "the dead node answered");
        dead_waits.push(waited);
    }
    println!(
        "with a node that answers nothing: 20 streams to a healthy node's device, slowest {worst:?}; requests to the dead node failed after {dead_waits:?} (timeout {NODE_TIMEOUT:?})"
    );
    assert!(worst < Duration::from_millis(500), "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_node_off_loopback_is_refused_in_multi_node_mode() {
    let client = RelayDirectory::new(
        Arc::new(StaticNode(NodeId("http://relay-b.invalid:3801".into()))),
        Secret::random(32),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .requiring_tls_off_loopback();
    let started = Instant::now();
    let err = client.open_stream(DeviceId::new()).await.err().unwrap();
    assert!(err.to_string().contains("refusing plaintext"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it tried to connect"
    );
}

/// `GET /api/info` on `device` through the api-server, as `user`.
async fn proxied_info(
    stack: &Stack,
    user: &testkit::TestUser,
    device: DeviceId,
) -> reqwest::Response {
    stack
        .get(user, &stack.proxy_url(device, "/api/info"))
        .send()
        .await
        .unwrap()
}

fn leases_for(n: usize, node: &NodeId) -> Vec<(DeviceId, Lease)> {
    let since = edge_core::time::now_ms();
    (0..n)
        .map(|i| {
            (
                DeviceId::new(),
                Lease {
                    node: node.clone(),
                    holder: format!("bench-{i}"),
                    connected_since: since,
                },
            )
        })
        .collect()
}

async fn key_count(redis: &RedisServer) -> i64 {
    redis::cmd("DBSIZE")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_leases_stay_alive_through_a_redis_one_millisecond_away() {
    const TUNNELS: usize = 20_000;
    const TTL: Duration = Duration::from_secs(3);
    const REFRESH: Duration = Duration::from_secs(1);
    let redis = RedisServer::start().await;
    let upstream = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let slow = testkit::delay_proxy::start(upstream, Duration::from_millis(1)).await;
    let conn = RedisConn::connect(&format!("redis://{slow}/"), Duration::from_secs(5))
        .await
        .unwrap();
    let node = NodeId("http://127.0.0.1:3801".into());
    let leases = RelayLeases::new(
        conn,
        node.clone(),
        LeaseKey::derive(&Secret::random(32)),
        TTL,
    );
    let all = leases_for(TUNNELS, &node);

    // Passes at the refresh period, as the relay runs them; before each
    // one (the moment a lease is oldest) every lease must still be there.
    let mut passes = Vec::new();
    for pass in 0..4 {
        if pass > 0 {
            assert_eq!(
                key_count(&redis).await,
                TUNNELS as i64,
                "a lease expired before pass {pass}"
            );
        }
        let started = Instant::now();
        let report = leases.refresh_all(&all).await;
        let took = started.elapsed();
        assert!(report.lost.is_empty() && report.failed == 0, "{report:?}");
        passes.push(took);
        tokio::time::sleep(REFRESH.saturating_sub(took)).await;
    }
    println!(
        "{TUNNELS} leases through a Redis 1 ms away: refresh passes took {passes:?} ({REFRESH_BATCH} per round trip; one round trip each would be over {} s)",
        TUNNELS / 1000
    );
    assert!(passes.iter().all(|p| *p < REFRESH), "{passes:?}");

    // A batch Redis refuses (its first key is not a string) does not stop
    // the pass: the others are refreshed.
    let _: () = redis::cmd("DEL")
        .arg(directory::leases::lease_key(all[0].0))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let _: i64 = redis::cmd("LPUSH")
        .arg(directory::leases::lease_key(all[0].0))
        .arg("not a lease")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let last = directory::leases::lease_key(all[TUNNELS - 1].0);
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&last)
        .arg(500)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let report = leases.refresh_all(&all).await;
    assert_eq!(report.failed, REFRESH_BATCH, "{report:?}");
    assert!(report.first_error.is_some());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&last)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert!(
        pttl > 1_000,
        "the last batch was not refreshed: PTTL {pttl}"
    );
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_leases_and_node_entries_are_ignored_and_counted() {
    let redis = RedisServer::start().await;
    let stack = Stack::start_with(StackOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let other = stack.device(alice.id).await;
    // The attacker's "relay": it would receive the internal secret.
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let (hit_tx, mut hit_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = trap.accept().await {
            let _ = hit_tx.send(conn);
        }
    });
    let mut c = redis.conn().await;
    let forged_before = stack.state.metrics.forged_directory_entries.get();

    // 1. A lease written by hand, pointing at the trap.
    let _: () = redis::cmd("SET")
        .arg(directory::leases::lease_key(other.id))
        .arg(format!("{trap_url} h 1 {}", "ab".repeat(32)))
        .query_async(&mut c)
        .await
        .unwrap();
    let res = proxied_info(&stack, &alice, other.id).await;
    assert_eq!(res.status(), 503, "a forged lease is no lease: offline");
    // 2. A real, signed lease copied from one device to another.
    let real: String = redis::cmd("GET")
        .arg(directory::leases::lease_key(dev.id))
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(directory::leases::lease_key(other.id))
        .arg(&real)
        .query_async(&mut c)
        .await
        .unwrap();
    let res = proxied_info(&stack, &alice, other.id).await;
    assert_eq!(
        res.status(),
        503,
        "a lease moved to another device is no lease"
    );
    // 3. A node entry written by hand: listings never ask it.
    let _: i64 = redis::cmd("ZADD")
        .arg(directory::leases::NODES_KEY)
        .arg(edge_core::time::now_ms())
        .arg(&trap_url)
        .query_async(&mut c)
        .await
        .unwrap();
    let ready = stack.get_json(&alice, "/api/ready").await;
    assert_eq!(ready["relay_nodes"], 1, "{ready}");
    let devices = stack.get_json(&alice, "/api/devices").await;
    assert!(
        devices.to_string().contains(&dev.id.to_string()),
        "{devices}"
    );

    // The real device still works; the trap heard nothing; all counted.
    let res = proxied_info(&stack, &alice, dev.id).await;
    assert_eq!(res.status(), 200);
    assert!(
        hit_rx.try_recv().is_err(),
        "the api-server connected to the forged node"
    );
    let forged = stack.state.metrics.forged_directory_entries.get() - forged_before;
    println!("forged directory entries ignored and counted: {forged}");
    assert!(forged >= 3, "{forged}");
}
