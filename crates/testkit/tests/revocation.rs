//! Revocation that bites. Device access on a device origin (a plain request
//! and an open WebSocket) ends within 1 s of each event that ends it:
//! logout, "end this session" from elsewhere, the session's expiry, the
//! device deleted, its credential rotated. Rotate and delete fail loudly
//! when the relay cannot close the tunnel, and the relay closes a tunnel
//! whose credential was revoked behind its back on its next re-check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use http::Method;
use std::time::{Duration, Instant};
use testkit::{within, Stack, StackOptions, TestDevice, TestUser};
use tokio_tungstenite::tungstenite::Message;

/// The bound the issue sets for ending device access.
const BOUND: Duration = Duration::from_secs(1);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An echo WebSocket on `dev`'s origin that works now.
async fn open_ws(stack: &Stack, dev: &TestDevice, cookie: &str) -> Ws {
    let mut ws = stack.device_ws(dev.id, cookie, "/test/ws-echo").await;
    ws.send(Message::Text("ping".into())).await.unwrap();
    let back = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back, Message::Text("ping".into()));
    ws
}

/// The WebSocket ends (close, error or EOF) within `BOUND` of `since`.
async fn assert_ends(ws: Ws, since: Instant, what: &str) {
    assert!(
        ends_within(ws, BOUND).await,
        "{what}: WebSocket still open {:?} after",
        since.elapsed()
    );
    println!("{what}: WebSocket closed {:?} after", since.elapsed());
}

async fn info_status(stack: &Stack, dev: &TestDevice, cookie: &str) -> u16 {
    stack
        .device_client(dev.id)
        .get(stack.device_url(dev.id, "/api/info"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A user with an online device, entered on its origin, with an open WebSocket.
async fn entered(stack: &Stack, user: &TestUser) -> (TestDevice, testkit::AgentHandle, String, Ws) {
    let (dev, agent) = stack.online_device(user.id).await;
    let cookie = stack.enter_device(user, dev.id).await;
    assert_eq!(info_status(stack, &dev, &cookie).await, 200);
    let ws = open_ws(stack, &dev, &cookie).await;
    (dev, agent, cookie, ws)
}

fn post(stack: &Stack, user: &TestUser, path: &str) -> reqwest::RequestBuilder {
    stack.send_as(Method::POST, user, path)
}

/// Right after the revoking call answered: plain requests are refused
/// (`status`) and the open WebSocket ends within `BOUND`.
async fn assert_access_ends(
    stack: &Stack,
    dev: &TestDevice,
    cookie: &str,
    ws: Ws,
    status: u16,
    what: &str,
) {
    let at = Instant::now();
    assert_eq!(info_status(stack, dev, cookie).await, status, "{what}");
    assert_ends(ws, at, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_device_access_within_a_second() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent, cookie, ws) = entered(&stack, &alice).await;
    let res = post(&stack, &alice, "/api/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_access_ends(&stack, &dev, &cookie, ws, 401, "logout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_the_session_elsewhere_ends_device_access_within_a_second() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let laptop = stack.user("alice").await;
    let (dev, _agent, cookie, ws) = entered(&stack, &alice).await;
    let sessions: serde_json::Value = stack.get_json(&laptop, "/api/auth/sessions").await;
    let other = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = stack
        .send_as(
            Method::DELETE,
            &laptop,
            &format!("/api/auth/sessions/{other}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_access_ends(&stack, &dev, &cookie, ws, 401, "end this session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_ends_device_access_within_a_second() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let now = edge_core::time::now_ms();
    let expires = now + 1_500;
    let short = TestUser {
        id: alice.id,
        cookie: stack.session_cookie_at(alice.id, now, expires).await,
    };
    let (dev, _agent, cookie, ws) = entered(&stack, &short).await;
    // Wait for the expiry instant itself (a clock, not a stand-in for a signal).
    let wait = u64::try_from(expires - edge_core::time::now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let at = Instant::now();
    assert_ends(ws, at, "absolute expiry").await;
    assert_eq!(info_status(&stack, &dev, &cookie).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_does_not_keep_an_idle_session_alive() {
    const IDLE: Duration = Duration::from_secs(2);
    let stack = Stack::start_with(StackOptions {
        settings_hook: |s| {
            s.session_idle = IDLE;
            // Every check that counts as activity writes last-seen, and
            // every re-check reads the store.
            s.session_touch_every = Duration::ZERO;
            s.access_cache_ttl = Duration::ZERO;
            s.device_access_recheck = Duration::from_millis(100);
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let (dev, _agent, cookie, ws) = entered(&stack, &alice).await;
    let opened = Instant::now();
    // The tab is forgotten: nothing but the connection's own re-checks,
    // twenty of them per idle period. The session idles out and the
    // WebSocket ends with it.
    assert_ends_within(ws, IDLE + Duration::from_secs(3), "forgotten tab").await;
    let idle_for = opened.elapsed();
    assert!(
        idle_for >= IDLE - Duration::from_millis(200),
        "{idle_for:?}"
    );
    assert_eq!(info_status(&stack, &dev, &cookie).await, 401);
    let me = stack
        .get(&alice, &stack.api("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

/// The WebSocket ends within `bound`.
async fn assert_ends_within(ws: Ws, bound: Duration, what: &str) {
    assert!(
        ends_within(ws, bound).await,
        "{what}: WebSocket still open after {bound:?}"
    );
}

/// Whether the WebSocket ends (close, error or EOF) within `bound`.
async fn ends_within(mut ws: Ws, bound: Duration) -> bool {
    tokio::time::timeout(bound, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_or_rotating_the_device_ends_access_within_a_second() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;

    let (dev, _agent, cookie, ws) = entered(&stack, &alice).await;
    let res = post(
        &stack,
        &alice,
        &format!("/api/devices/{}/credential", dev.id),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // The device is still alice's, but its tunnel is gone with the old
    // credential: requests answer 503 until the box has the new one.
    assert_access_ends(&stack, &dev, &cookie, ws, 503, "credential rotated").await;

    let (dev, _agent, cookie, ws) = entered(&stack, &alice).await;
    let res = stack
        .send_as(Method::DELETE, &alice, &format!("/api/devices/{}", dev.id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_access_ends(&stack, &dev, &cookie, ws, 401, "device deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_and_delete_fail_loudly_when_the_relay_cannot_close_the_tunnel() {
    let mut stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let rotated = stack.device(alice.id).await;
    let deleted = stack.device(alice.id).await;
    stack.stop_relay().await;

    let res = post(
        &stack,
        &alice,
        &format!("/api/devices/{}/credential", rotated.id),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 502);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tunnel_not_closed");
    assert!(
        !body.to_string().contains("edt_"),
        "no credential in an error"
    );
    let res = stack
        .send_as(
            Method::DELETE,
            &alice,
            &format!("/api/devices/{}", deleted.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    // The revocation itself stands: neither old credential opens a tunnel.
    for dev in [&rotated, &deleted] {
        assert!(stack
            .store
            .authenticate_device(&dev.token.hash())
            .await
            .unwrap()
            .is_none());
    }
    let actions: Vec<String> = stack.audit_actions(alice.id).await;
    assert_eq!(actions[..2], ["device_deleted", "credential_rotated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_closes_a_tunnel_whose_credential_was_revoked_behind_its_back() {
    let stack = Stack::start_with(StackOptions {
        limits: remote_proxy::config::Limits {
            credential_recheck: Duration::from_millis(200),
            ..StackOptions::default().limits
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let (dev, agent) = stack.online_device(alice.id).await;
    let (still, _agent2) = stack.online_device(alice.id).await;
    // Revoked in the store only, as when the relay could not be told.
    assert_eq!(stack.store.revoke_credentials(dev.id).await.unwrap(), 1);
    stack.wait_offline(dev.id).await;
    assert!(
        stack.relay().directory.connection_of(still.id).is_some(),
        "a device with a valid credential keeps its tunnel"
    );
    agent.stop().await;
}
