//! Issue 14's metrics proof: a real `prometheus` (Debian's package) scrapes
//! the api-server's and the relay's metrics endpoints; after a login, a
//! pairing, a proxied request and a refused tunnel, its query API shows
//! each matching series moved. `promtool check metrics` accepts both
//! endpoints' output, and `promtool check rules` the shipped alert rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::Method;
use testkit::prometheus::{check_metrics, check_rules, PrometheusServer};
use testkit::{checks, Stack};
use tokio_util::sync::CancellationToken;

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[cfg_attr(
    not(any(has_prometheus, require_interop)),
    ignore = "needs prometheus and promtool (Debian's prometheus package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_logins_pairings_proxied_requests_and_refused_tunnels() {
    testkit::init_logs();
    let stack = Stack::start().await;
    let stop = CancellationToken::new();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let api = edge_core::metrics::spawn(loopback, stack.state.exposition(), stop.clone())
        .await
        .unwrap();
    let relay = edge_core::metrics::spawn(loopback, stack.relay().exposition(), stop.clone())
        .await
        .unwrap();
    let prometheus = PrometheusServer::start(&[api, relay]).await;
    prometheus.wait_at_least("up", 2.0).await;

    // A login, a pairing, a proxied request, a refused tunnel.
    let mut browser = stack.browser();
    assert_eq!(stack.dev_login(&mut browser, "alice").await.status(), 302);
    let alice = stack.user("alice").await;
    let code: serde_json::Value =
        testkit::checks::json_answer(stack.send_as(Method::POST, &alice, "/api/pairing/codes"))
            .await;
    let paired = stack
        .http
        .post(stack.api("/api/pairing/exchange"))
        .json(&serde_json::json!({ "code": code["code"], "name": "box" }))
        .send()
        .await
        .unwrap();
    assert_eq!(paired.status(), 201);
    let (dev, _agent) = stack.online_device(alice.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    let Err(refused) = stack.dial_raw(&edge_core::DeviceToken::generate()).await else {
        panic!("a bad credential was accepted");
    };
    assert!(
        matches!(
            refused,
            tunnel::dial::DialError::Refused { status: 401, .. }
        ),
        "{refused:?}"
    );

    for (query, min) in [
        (r#"edge_api_logins_total{outcome="ok"}"#, 1.0),
        (r#"edge_api_pairing_exchanges_total{outcome="ok"}"#, 1.0),
        (r#"edge_api_proxied_requests_total{outcome="ok"}"#, 1.0),
        (r#"edge_api_proxy_first_byte_seconds_count"#, 1.0),
        (
            r#"edge_api_http_requests_total{route="/api/devices/{id}/proxy/{*path}",method="GET",status="2xx"}"#,
            1.0,
        ),
        (r#"edge_api_store_statement_seconds_count"#, 1.0),
        (
            r#"edge_relay_tunnel_connects_total{result="bad_token"}"#,
            1.0,
        ),
        (
            r#"edge_relay_tunnel_connects_total{result="accepted"}"#,
            1.0,
        ),
        (r#"edge_relay_tunnels_online"#, 1.0),
        (r#"edge_relay_streams_opened_total"#, 1.0),
        (
            r#"edge_relay_tunnel_bytes_total{direction="to_device"}"#,
            1.0,
        ),
        (r#"edge_relay_connect_to_registered_seconds_count"#, 1.0),
    ] {
        let v = prometheus.wait_at_least(query, min).await;
        println!("{query} = {v}");
    }
    // No raw path (device id) ever becomes a label.
    let api_text = metrics_text(api).await;
    assert!(
        !api_text.contains(&dev.id.to_string()),
        "a device id leaked into a label"
    );

    let relay_text = metrics_text(relay).await;
    check_metrics(&api_text)
        .await
        .unwrap_or_else(|e| panic!("promtool rejects the api-server's metrics: {e}"));
    check_metrics(&relay_text)
        .await
        .unwrap_or_else(|e| panic!("promtool rejects the relay's metrics: {e}"));
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml");
    let verdict = check_rules(&rules)
        .await
        .unwrap_or_else(|e| panic!("promtool rejects the alert rules: {e}"));
    println!("{verdict}");
    stop.cancel();
}
