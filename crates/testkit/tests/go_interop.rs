//! Interop with the devices in the field: a Go device built on Debian's
//! hashicorp/yamux and gorilla/websocket (serving HTTP on accepted streams,
//! as the proof of concept does) connects to the relay, and the same request
//! battery succeeds through the api-server. Skips without Go unless
//! `REQUIRE_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testkit::{checks, go_device, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
async fn go_device_is_replaced_by_a_newer_connection_and_sees_goaway() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut first = go_device::spawn(&bin, &stack.tunnel_url(), &dev.token);
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
    // The replaced Go session ends: its process exits after GoAway + close.
    let status = testkit::within("first Go device exits", first.wait())
        .await
        .unwrap();
    assert!(status.code().is_some());
    assert_eq!(stack.relay().directory.len(), 1);
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");
}
