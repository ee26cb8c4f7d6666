//! End to end through the real routers: api-server → relay → agent → sim box.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testkit::{checks, within, Stack};

const MIB64: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_box_and_come_back() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, agent) = stack.online_device(alice.id).await;

    let info = checks::info(&stack, &alice, dev.id).await;
    assert_eq!(info["model"], "SIM-1");

    // The box's page comes through the root route too.
    let page = stack
        .get(&alice, &stack.proxy_url(dev.id, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Simulated edge box"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_and_upload_keep_their_sha256() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let expected = sim_box::pattern_sha256(MIB64);

    assert_eq!(
        checks::download(&stack, &alice, dev.id, MIB64).await,
        (MIB64, expected.clone())
    );
    assert_eq!(
        checks::upload(&stack, &alice, dev.id, MIB64).await,
        (MIB64, expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_passes_through() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    checks::ws_echo(&stack, &alice, dev.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_all_succeed() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    assert_eq!(checks::concurrent(&stack, &alice, dev.id, 100).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_credentials_never_reach_the_box() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;

    let res = stack
        .http
        .get(stack.proxy_url(dev.id, "/test/headers?x=1"))
        .header("cookie", format!("{}; other=1", alice.cookie))
        .header("authorization", "Bearer user-token")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("x-forwarded-for", "6.6.6.6")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen: serde_json::Value = res.json().await.unwrap();
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(seen["uri"], "/test/headers?x=1");
    for gone in ["cookie", "authorization", "x-hop"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} was forwarded: {headers:?}"
        );
    }
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-prefix"],
        format!("/api/devices/{}/proxy", dev.id)
    );
    assert_eq!(headers["accept"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_needs_a_session_and_hides_other_tenants_devices() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let url = stack.proxy_url(dev.id, "/api/info");

    let anon = stack.http.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let body: serde_json::Value = anon.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    let forged = stack
        .http
        .get(&url)
        .header("cookie", "edge_session=abc.123.def")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let theirs = stack.get(&bob, &url).send().await.unwrap();
    let missing = stack
        .get(
            &bob,
            &stack.proxy_url(edge_core::DeviceId::new(), "/api/info"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    assert_eq!(missing.status(), 404);
    assert_eq!(
        testkit::checks::error_shape(&theirs.bytes().await.unwrap()),
        testkit::checks::error_shape(&missing.bytes().await.unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_is_503_and_dead_relay_is_502_promptly() {
    let mut stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let url = stack.proxy_url(dev.id, "/api/info");

    let offline = within("offline answer", stack.get(&alice, &url).send())
        .await
        .unwrap();
    assert_eq!(offline.status(), 503);
    let body: serde_json::Value = offline.json().await.unwrap();
    assert_eq!(body["error"]["code"], "device_offline");

    let agent = stack.agent(&dev);
    stack.wait_online(dev.id).await;
    assert_eq!(stack.get(&alice, &url).send().await.unwrap().status(), 200);

    stack.stop_relay().await;
    let started = std::time::Instant::now();
    let down = within("relay-down answer", stack.get(&alice, &url).send())
        .await
        .unwrap();
    assert_eq!(down.status(), 502);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["error"]["code"], "relay_unavailable");
    // Within the connect timeout, never a hang (a refused connection is
    // usually answered in milliseconds).
    assert!(
        started.elapsed() < stack.state.settings.proxy_connect_timeout,
        "took {:?}",
        started.elapsed()
    );

    // The agent reconnects by itself once the relay is back.
    stack.restart_relay().await;
    stack.wait_online(dev.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;

    // A second api-server instance on its own port, so only it shuts down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(edge_core::serve::serve(
        listener,
        api_server::build_app(stack.state.clone()),
        Default::default(),
        shutdown.clone(),
    ));
    let url = format!(
        "http://{addr}/api/devices/{}/proxy/test/delay?ms=300",
        dev.id
    );
    let in_flight = tokio::spawn(stack.get(&alice, &url).send());
    // Wait until the request is being served: the box has an open stream.
    let dir = stack.relay().directory.clone();
    within("request in flight", async {
        loop {
            let s = directory::SessionView::lookup(&*dir, dev.id)
                .await
                .unwrap()
                .unwrap();
            if s.bytes_out > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    shutdown.cancel();
    let res = within("in-flight request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "done");
    within("server drained", server).await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// The hot path's design budget: after warm-up, a proxied request costs at
/// most one store statement (session and ownership together; none while a
/// recent grant is reused), no TCP connection to the relay, and no new
/// stream to the box (keep-alive connections are reused; the pool opens a
/// bounded few, not one per request). Counted, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_warm_up_a_proxied_request_costs_one_statement_and_no_new_connection() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let cold = testkit::statements::mark();
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    let first = testkit::statements::since(cold);
    assert!(
        first.iter().any(|s| s.contains("FROM user_sessions")),
        "the first request checked the store, and the log saw it: {first:#?}"
    );
    let warm = stack.relay_client.connections_opened();
    assert!(warm >= 1, "the warm-up opened the channel");
    let streams = stack.state.boxes.streams_opened();
    assert_eq!(streams, 1, "the warm-up opened one stream to the box");
    // The warm-up's audit row is written off the request path; let it land
    // in the statement log (on PostgreSQL the row can be visible to another
    // connection before the writer's log has it).
    within("audit row of the warm-up", async {
        while !testkit::statements::since(cold)
            .iter()
            .any(|s| s.contains("INTO audit_events"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    let mark = testkit::statements::mark();
    const N: usize = 20;
    for _ in 0..N {
        assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    }
    let ran = testkit::statements::since(mark);
    // hyper's pool may race a new connection against one on its way back
    // to the pool (then keeps both): a bounded few, never one per request.
    let new_streams = stack.state.boxes.streams_opened() - streams;
    assert!(
        new_streams <= 2,
        "{new_streams} new box streams for {N} sequential requests"
    );
    // The audit writer's transaction ends may still be logging (PostgreSQL
    // logs BEGIN and COMMIT; they are the writer's, not the requests').
    let (audit, checks): (Vec<_>, Vec<_>) = ran
        .iter()
        .filter(|s| !matches!(s.trim(), "BEGIN" | "COMMIT"))
        .partition(|s| s.contains("INTO audit_events"));
    assert!(
        audit.len() as u64 <= new_streams,
        "audit rows only for new box connections: {ran:#?}"
    );
    assert!(
        checks.len() <= N,
        "at most one statement per request (a grant is reused for under a second): {ran:#?}"
    );
    assert!(
        checks.iter().all(|s| s.contains("FROM user_sessions")),
        "{ran:#?}"
    );
    assert_eq!(checks::concurrent(&stack, &alice, dev.id, 50).await, 50);
    checks::ws_echo(&stack, &alice, dev.id).await;
    assert_eq!(
        stack.relay_client.connections_opened(),
        warm,
        "proxied requests opened TCP connections to the relay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_is_reopened_after_the_relay_restarts() {
    let mut stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    let before = stack.relay_client.connections_opened();
    stack.stop_relay().await;
    stack.restart_relay().await;
    stack.wait_online(dev.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    assert_eq!(
        stack.relay_client.connections_opened(),
        before + 1,
        "one new channel, then reuse"
    );
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    assert_eq!(stack.relay_client.connections_opened(), before + 1);
}

/// ADR 034: a sharded api-server serves each connection on one shard, and
/// each shard reaches the relay on a channel of its own, which its later
/// requests reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_reaches_the_relay_on_a_channel_of_its_own() {
    let shards = edge_core::shard::Shards::start(2, "test").unwrap();
    let stack = Stack::start_with(testkit::StackOptions {
        api_serve: edge_core::serve::ServeOptions {
            shards: Some(std::sync::Arc::new(shards)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let before = stack.relay_client.connections_opened();
    // Two clients, two connections: the listener hands them to the two
    // shards in turn.
    let clients: Vec<reqwest::Client> = (0..2)
        .map(|_| reqwest::Client::builder().no_proxy().build().unwrap())
        .collect();
    let url = stack.proxy_url(dev.id, "/api/info");
    for _ in 0..5 {
        for client in &clients {
            let res = within(
                "info",
                client.get(&url).header("cookie", &alice.cookie).send(),
            )
            .await
            .unwrap();
            assert_eq!(res.status(), 200);
            let info: serde_json::Value = res.json().await.unwrap();
            assert_eq!(info["model"], "SIM-1");
        }
    }
    assert_eq!(
        stack.relay_client.connections_opened(),
        before + 2,
        "one channel per shard, reused by its later requests"
    );
    // Many connections at once, over both shards: the same two channels.
    assert_eq!(checks::concurrent(&stack, &alice, dev.id, 50).await, 50);
    assert_eq!(stack.relay_client.connections_opened(), before + 2);
}

/// ADR 043: with the relay on shards, once a device's relay shard is
/// known its streams travel on a channel that shard serves, so a request
/// crosses none of the relay's threads; kept streams go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_travel_on_a_channel_of_the_devices_relay_shard() {
    let mut opts = testkit::StackOptions::default();
    opts.limits.shards = 2;
    let stack = Stack::start_with(opts).await;
    let alice = stack.user("alice").await;
    // Devices until both relay shards hold one (the relay hands its
    // connections to its shards in turn).
    let mut devices = Vec::new();
    let mut shards = std::collections::BTreeSet::new();
    while shards.len() < 2 {
        assert!(devices.len() < 8, "eight devices, all on one relay shard");
        let (dev, agent) = stack.online_device(alice.id).await;
        let probe = stack.relay().directory.open_device_stream(dev.id).await;
        shards.insert(probe.unwrap().shard());
        devices.push((dev, agent));
    }
    assert!(!shards.contains(&0), "every session runs on a shard");
    let across = || stack.relay().metrics.channel_streams_across_shards.get();
    let opened = || stack.state.boxes.streams_opened();
    // The first requests learn where each device is; the streams that went
    // on another shard's channel serve their request and end.
    within("every kept stream on its device's relay shard", async {
        loop {
            let before = opened();
            for (dev, _) in &devices {
                assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
            }
            if opened() == before && across() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let channels = stack.relay_client.connections_opened();
    assert!(channels >= 2, "a channel for each relay shard: {channels}");
    let before = opened();
    for _ in 0..10 {
        for (dev, _) in &devices {
            assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
        }
    }
    assert_eq!(opened(), before, "the placed streams are kept and reused");
    assert_eq!(across(), 0, "no stream crosses the relay's shards");
    assert_eq!(stack.relay_client.connections_opened(), channels);
}

/// One request id, from the caller to the error body, the response header,
/// and the log lines of both the api-server and the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_runs_from_the_error_body_to_both_servers_logs() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await; // never connected: offline
    let res = stack
        .get(&alice, &stack.proxy_url(dev.id, "/api/info"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "trace-me-42", "{body}");
    let lines = testkit::logs::lines_with("trace-me-42");
    assert!(
        lines.iter().any(|l| l.contains("api_server")),
        "an api-server line: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("remote_proxy")),
        "a relay line: {lines:#?}"
    );

    // Without one (or with a malformed one) the server makes one.
    let res = stack
        .get(&alice, &stack.proxy_url(dev.id, "/api/info"))
        .header("x-request-id", "no spaces allowed")
        .send()
        .await
        .unwrap();
    let made = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(made, "no spaces allowed");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], made.as_str());
}

/// Write `request` (head and, after it, `body`) on a fresh connection to
/// the api-server; its answer, lower-cased.
async fn raw_answer(stack: &Stack, request: &str, body: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(stack.api_addr)
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    within("the answer", checks::read_response(&mut tcp))
        .await
        .to_ascii_lowercase()
}

/// An error answered before the request body was read closes the
/// connection and says so (`Connection: close`), so a keep-alive client
/// never sends its next request into a connection the server is closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_the_body_was_read_says_connection_close() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;

    // 1 MiB announced, 1 KiB sent: the offline device is refused first.
    let upload = format!(
        "POST /api/devices/{}/proxy/test/upload HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nX-CSRF: 1\r\nContent-Length: 1048576\r\n\r\n",
        dev.id, stack.api_addr, alice.cookie
    );
    let text = raw_answer(&stack, &upload, &[7u8; 1024]).await;
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");

    // An error given after the body was read keeps the connection.
    let body = r#"{"code":"NOPE-NOPE","name":"x"}"#;
    let exchange = format!(
        "POST /api/pairing/exchange HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        stack.api_addr,
        body.len()
    );
    let text = raw_answer(&stack, &exchange, body.as_bytes()).await;
    assert!(text.starts_with("http/1.1 4"), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
}
