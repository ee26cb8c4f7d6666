//! Interop with the devices in the field: a Go device built on Debian's
//! hashicorp/yamux and gorilla/websocket (serving HTTP on accepted streams,
//! as the proof of concept does) connects to the relay, and the same request
//! battery succeeds through the api-server; the Go device reports the
//! GoAway and pings it receives, answers the relay's pings, and reconnects
//! after a relay restart. Reported as skipped without Go unless
//! `REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use remote_proxy::config::Limits;
use std::time::Duration;
use testkit::{checks, go_device, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn go_device_serves_requests_through_the_full_path() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut child = go_device::spawn(&bin, &stack.tunnel_url(), &dev.token);
    stack.wait_online(dev.id).await;

    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");
    let n = 64 << 20;
    let expected = sim_box::pattern_sha256(n);
    assert_eq!(
        checks::download(&stack, &alice, dev.id, n).await,
        (n, expected.clone())
    );
    assert_eq!(
        checks::upload(&stack, &alice, dev.id, n).await,
        (n, expected.clone())
    );
    assert_eq!(
        stack.relay().directory.has_burst_windows(dev.id),
        Some(false)
    );
    // Written 8 MiB at a time: hashicorp/yamux sends a frame as large as
    // the relay's window in one WebSocket message, so the relay must not
    // grant a Go device a window beyond its 1 MiB message cap (burst
    // windows are for agents that offer them, ADR 044).
    assert_eq!(
        checks::download_from(
            &stack,
            &alice,
            dev.id,
            &format!("/test/download?bytes={n}&chunk={}", 8 << 20)
        )
        .await,
        (n, expected)
    );
    checks::ws_echo(&stack, &alice, dev.id).await;
    assert_eq!(checks::concurrent(&stack, &alice, dev.id, 100).await, 100);

    let summary = stack.relay().directory.connection_of(dev.id);
    assert!(summary.is_some());
    let _ = child.kill().await;
    stack.wait_offline(dev.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn go_device_is_replaced_by_a_newer_connection_and_sees_goaway() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut first = go_device::spawn_observed(&bin, &stack.tunnel_url(), &dev.token, None, false);
    stack.wait_online(dev.id).await;
    let first_conn = stack.relay().directory.connection_of(dev.id);
    let _second = go_device::spawn(&bin, &stack.tunnel_url(), &dev.token);
    let dir = stack.relay().directory.clone();
    testkit::within(
        "replacement",
        dir.wait_until(|d| {
            d.connection_of(dev.id)
                .is_some_and(|c| Some(c) != first_conn)
        }),
    )
    .await;
    // The replaced Go session received GoAway with the normal code (0),
    // then ended.
    first
        .wait_for("GoAway(0) at the first device", |e| {
            e.iter().any(|l| l == "event: goaway 0")
        })
        .await;
    let status = testkit::within("first Go device exits", first.child.wait())
        .await
        .unwrap();
    assert!(status.code().is_some());
    assert_eq!(stack.relay().directory.len(), 1);
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn go_device_answers_the_relays_pings_and_reconnects_after_a_relay_restart() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    // The relay pings every 100 ms and drops a tunnel silent for 600 ms:
    // only a device that answers pings stays connected.
    let mut stack = Stack::start_with(StackOptions {
        limits: Limits {
            ping_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            drain_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut go = go_device::spawn_observed(&bin, &stack.tunnel_url(), &dev.token, None, true);
    stack.wait_online(dev.id).await;
    let conn = stack.relay().directory.connection_of(dev.id);
    go.wait_for("ten pings", |e| {
        e.iter().filter(|l| *l == "event: ping").count() >= 10
    })
    .await;
    assert_eq!(
        stack.relay().directory.connection_of(dev.id),
        conn,
        "the session survived ten ping intervals on pongs alone"
    );
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");

    // The relay restarts: the device sees GoAway and comes back by itself.
    stack.stop_relay().await;
    go.wait_for("GoAway on relay shutdown", |e| {
        e.iter().any(|l| l == "event: goaway 0")
    })
    .await;
    stack.restart_relay().await;
    stack.wait_online(dev.id).await;
    go.wait_for("the second connect", |e| {
        e.iter().filter(|l| *l == "connected").count() == 2
    })
    .await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn a_frozen_go_device_is_offline_within_fifteen_seconds_by_default() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    // Default relay limits: ping every 5 s, dead after 15 s of silence.
    let stack = Stack::start_with(StackOptions {
        limits: Limits {
            drain_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..StackOptions::default()
    })
    .await;
    assert_eq!(stack.relay().limits.idle_timeout, Duration::from_secs(15));
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut go = go_device::spawn(&bin, &stack.tunnel_url(), &dev.token);
    stack.wait_online(dev.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");

    // Freeze the process: no FIN, no answer, as a box whose power dips or
    // whose network vanishes.
    let pid = go.id().unwrap().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    let frozen = std::time::Instant::now();
    stack.wait_offline(dev.id).await;
    let took = frozen.elapsed();
    println!("frozen Go device offline after {took:?}");
    assert!(
        took <= Duration::from_millis(15_500),
        "offline only after {took:?}"
    );
    let res = stack
        .get(&alice, &stack.proxy_url(dev.id, "/api/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "device_offline");
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let _ = go.kill().await;
}
