//! Multi-node mode on a real Redis (Debian's `redis-server`, started on a
//! free port per test): relays keep a lease per tunnel, the api-server
//! routes each device to the node that holds it, the newest connection
//! wins across nodes, a stopped relay leaves no lease behind, and Redis
//! going away costs lookups (503 `directory_unavailable`), never tunnels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use testkit::redis::RedisServer;
use testkit::{checks, within, Stack, StackOptions};

async fn stack_on(redis: &RedisServer) -> Stack {
    let mut opts = StackOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    };
    // The relays serve on shards, as the binary does (ADR 042): a
    // draining relay's tunnels end on them, and must end cleanly.
    opts.limits.shards = 2;
    Stack::start_with(opts).await
}

/// The node named in `device`'s lease, if any.
async fn lease_node(redis: &RedisServer, device: edge_core::DeviceId) -> Option<String> {
    redis.lease_nodes(&[device]).await.pop().flatten()
}

/// Wait until `device` answers 200 through the stack's api-server.
async fn wait_reachable(stack: &Stack, user: &testkit::TestUser, device: edge_core::DeviceId) {
    within("device reachable", async {
        loop {
            let res = stack
                .get(user, &stack.proxy_url(device, "/api/info"))
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn wait_lease(redis: &RedisServer, device: edge_core::DeviceId, want: Option<&str>) {
    within("lease as expected", async {
        while lease_node(redis, device).await.as_deref() != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_moves_relays_is_routed_there_and_its_old_session_closes_within_a_second() {
    let redis = RedisServer::start().await;
    let stack = stack_on(&redis).await;
    let relay_b = stack.extra_relay().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let node_a = stack.relay().directory.node().0.clone();

    // First connection: on relay A, a bare tunnel that never reconnects.
    let _first = testkit::serve_raw(stack.dial_raw(&dev.token).await.unwrap());
    stack.wait_online(dev.id).await;
    wait_lease(&redis, dev.id, Some(&node_a)).await;

    // Second connection: a real agent on relay B takes the device over.
    let _agent = stack.agent_via(&dev, &relay_b.tunnel_url());
    let b_dir = relay_b.relay.directory.clone();
    within(
        "device on relay B",
        b_dir.wait_until(|d| d.connection_of(dev.id).is_some()),
    )
    .await;
    let on_b = Instant::now();
    stack.wait_offline(dev.id).await;
    let closed_after = on_b.elapsed();
    println!(
        "relay A closed its older session {closed_after:?} after relay B registered the device"
    );
    assert!(
        closed_after < Duration::from_secs(1),
        "A's session lived {closed_after:?} after B took the device"
    );
    assert_eq!(lease_node(&redis, dev.id).await, Some(relay_b.node().0));
    assert!(
        b_dir.connection_of(dev.id).is_some(),
        "exactly one session, on B"
    );
    let replaced = stack
        .relay()
        .metrics
        .sessions_ended
        .get_or_create(&[("reason", "replaced")]);
    within("relay A counts the session as replaced", async {
        while replaced.get() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The api-server finds the device on B.
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    // The device list reads the page's leases (one MGET), not the relays:
    // online with its connect time, and no traffic figure (relays have it).
    let list = stack.get_json(&alice, "/api/devices").await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == dev.id.to_string())
        .unwrap()
        .clone();
    assert_eq!(row["status"], "online", "{row}");
    assert!(row["connected_since"].is_i64(), "{row}");
    assert!(row["last_heard_from"].is_null(), "{row}");
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_leaves_no_lease_and_leaves_the_node_set() {
    let redis = RedisServer::start().await;
    let stack = stack_on(&redis).await;
    let relay_b = stack.extra_relay().await;
    let node_b = relay_b.node().0;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let agent = stack.agent_via(&dev, &relay_b.tunnel_url());
    wait_lease(&redis, dev.id, Some(&node_b)).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    within("relay B announced", async {
        while !announced(&redis, &node_b).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let ready = stack.get_json(&alice, "/api/ready").await;
    assert_eq!(ready["relay_nodes"], 2, "{ready}");

    agent.stop().await;
    relay_b.stop().await;
    wait_lease(&redis, dev.id, None).await;
    assert!(
        !announced(&redis, &node_b).await,
        "a stopped relay withdraws from the node set"
    );
    let ready = stack.get_json(&alice, "/api/ready").await;
    assert_eq!(ready["relay_nodes"], 1, "{ready}");
    let res = stack
        .get(&alice, &stack.proxy_url(dev.id, "/api/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_costs_lookups_not_tunnels_and_everything_recovers_by_itself() {
    let mut redis = RedisServer::start().await;
    let stack = stack_on(&redis).await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let (cold, _cold_agent) = stack.online_device(alice.id).await;
    let node_a = stack.relay().directory.node().0.clone();
    wait_lease(&redis, dev.id, Some(&node_a)).await;
    wait_lease(&redis, cold.id, Some(&node_a)).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");

    redis.kill().await;
    // A box connection already open keeps relaying without a lookup.
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    // A device that needs a lookup gets a clear, bounded refusal.
    let asked = Instant::now();
    let res = stack
        .get(&alice, &stack.proxy_url(cold.id, "/api/info"))
        .send()
        .await
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "directory_unavailable", "{body}");
    println!("lookup with Redis down answered in {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "bounded by the Redis timeout: {took:?}"
    );
    assert!(
        stack.relay().directory.connection_of(cold.id).is_some(),
        "the tunnel stays up while Redis is down"
    );
    // Still 200 (get_json checks it): the replica serves all but lookups.
    let ready = stack.get_json(&alice, "/api/ready").await;
    assert_eq!(ready["directory"], "unavailable", "{ready}");

    // Redis returns empty; the relay writes the lease again by itself.
    redis.restart().await;
    wait_reachable(&stack, &alice, cold.id).await;
    assert_eq!(lease_node(&redis, cold.id).await, Some(node_a));
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_several_relays_moves_on_when_its_relay_drains() {
    let redis = RedisServer::start().await;
    let mut stack = stack_on(&redis).await;
    let relay_b = stack.extra_relay().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let relays = vec![stack.tunnel_url(), relay_b.tunnel_url()];
    let _agent = stack.agent_via_any(&dev, relays);
    let a_dir = stack.relay().directory.clone();
    let b_dir = relay_b.relay.directory.clone();
    within("device on a relay", async {
        while a_dir.connection_of(dev.id).is_none() && b_dir.connection_of(dev.id).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");

    // Drain whichever node holds it: the agent must land on the other.
    let drained = Instant::now();
    let survivor = if a_dir.connection_of(dev.id).is_some() {
        stack.stop_relay().await;
        b_dir.clone()
    } else {
        relay_b.stop().await;
        a_dir.clone()
    };
    within(
        "device on the other relay",
        survivor.wait_until(|d| d.connection_of(dev.id).is_some()),
    )
    .await;
    println!(
        "moved to the other relay {:?} after the drain began",
        drained.elapsed()
    );
    wait_reachable(&stack, &alice, dev.id).await;
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_lets_requests_finish_and_its_device_moves_without_a_failed_request() {
    let redis = RedisServer::start().await;
    let mut stack = stack_on(&redis).await;
    let relay_b = stack.extra_relay().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let _agent = stack.agent_via_any(&dev, vec![stack.tunnel_url(), relay_b.tunnel_url()]);
    let a_dir = stack.relay().directory.clone();
    let b_dir = relay_b.relay.directory.clone();
    within("device on a relay", async {
        while a_dir.connection_of(dev.id).is_none() && b_dir.connection_of(dev.id).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (holder, survivor, holder_dir) = if a_dir.connection_of(dev.id).is_some() {
        (stack.take_relay().unwrap(), b_dir.clone(), a_dir.clone())
    } else {
        (relay_b, a_dir.clone(), b_dir.clone())
    };
    wait_lease(&redis, dev.id, Some(&holder.node().0)).await;

    // An upload leaves its connection idle in the api-server's pool: once
    // the holder drains, it must end itself (after 1 s of quiet since its
    // answer ended), not hold the drain until the pool lets it go.
    let upload = stack
        .send_as(
            reqwest::Method::POST,
            &alice,
            &format!("/api/devices/{}/proxy/test/upload", dev.id),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    upload.bytes().await.unwrap();

    // A slow request is in flight on the holder when it is told to stop.
    let slow = stack
        .get(&alice, &stack.proxy_url(dev.id, "/test/delay?ms=1500"))
        .send();
    let slow = tokio::spawn(slow);
    within("the slow request reaches the box", async {
        while holder_dir.open_streams(dev.id) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let holder_relay = holder.relay.clone();
    let drained = Instant::now();
    let stopping = tokio::spawn(holder.stop());
    within("draining begins", async {
        while !holder_dir.is_draining() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Requests after the signal need a new stream: they wait for the
    // device's new node instead of failing.
    for _ in 0..3 {
        let res = stack
            .get(&alice, &stack.proxy_url(dev.id, "/api/info"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "a request during the drain failed");
    }
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200, "the in-flight request was cut");
    within("the holder finished draining", stopping)
        .await
        .unwrap();
    let took = drained.elapsed();
    assert!(
        survivor.connection_of(dev.id).is_some(),
        "device moved over"
    );
    println!("drained and moved in {took:?}, no request failed");
    let ended = |reason| {
        holder_relay
            .metrics
            .sessions_ended
            .get_or_create(&[("reason", reason)])
            .get()
    };
    assert_eq!(ended("drained"), 1, "the session ended as drained");
    // The slow answer (1.5 s) and about a second: well short of the
    // drain's 5 s timeout, which an idle pooled connection would run into.
    assert!(took < Duration::from_millis(3500), "drain took {took:?}");
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_counted_across_replicas_and_fall_back_to_local_when_redis_is_gone() {
    use directory::leases::RedisConn;
    use directory::shared_limits::{Bucket, SharedBuckets};
    let mut redis = RedisServer::start().await;
    // Two replicas' view of the same limit: 4 attempts in all, slow refill.
    let replicas: Vec<Bucket<&str>> = (0..2)
        .map(|_| Bucket::new("test", 4, 1.0 / 3600.0))
        .collect();
    for r in &replicas {
        // Each replica has its own connection, as separate processes do.
        let conn = RedisConn::connect(&redis.url(), testkit::REDIS_TIMEOUT)
            .await
            .unwrap();
        r.share(SharedBuckets::new(conn));
    }
    let mut allowed = 0;
    for i in 0..10 {
        if replicas[i % 2].check("client").await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "two replicas give no more than the one limit");
    let retry = replicas[0].check("client").await.unwrap_err();
    assert!(retry > 60, "the refill is an hour per attempt: {retry} s");
    assert!(replicas[1].check("other").await.is_ok(), "keys are apart");
    // A refund on one replica is an attempt back for the other.
    replicas[0].refund(&"client").await;
    assert!(replicas[1].check("client").await.is_ok());
    assert!(replicas[1].check("client").await.is_err());

    // Redis gone: each replica still limits, on its own count.
    redis.kill().await;
    let local: usize = futures_util::future::join_all((0..6).map(|_| replicas[0].check("x")))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(local, 4, "local fallback keeps the burst");
}

/// Whether `node` is in the node set (members are `<url> <signature>`).
async fn announced(redis: &RedisServer, node: &str) -> bool {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(directory::leases::NODES_KEY)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    members.iter().any(|m| m.split(' ').next() == Some(node))
}
