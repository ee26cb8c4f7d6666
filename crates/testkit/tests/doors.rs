//! Limits on every door of the api-server, against the real router and
//! serve loop: body limits (413), a stalled body (408) and stalled headers
//! while a normal client keeps working, the per-client connection cap (429
//! JSON), client addresses through trusted proxies (IPv6 by /64), the
//! pairing limiter taking its token before the store and keeping one
//! source from starving the others, and per-tenant quotas (409, and 429 at
//! the relay).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use edge_core::serve::ServeOptions;
use http::Method;
use std::time::Duration;
use testkit::checks::read_response;
use testkit::{within, Stack, StackOptions, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

async fn new_code(stack: &Stack, user: &TestUser) -> reqwest::Response {
    stack
        .send_as(Method::POST, user, "/api/pairing/codes")
        .send()
        .await
        .unwrap()
}

async fn code_of(stack: &Stack, user: &TestUser) -> String {
    let res = new_code(stack, user).await;
    assert_eq!(res.status(), 201);
    json(res).await["code"].as_str().unwrap().to_owned()
}

/// A pairing exchange as a box behind the trusted proxy at `from`.
async fn exchange_from(stack: &Stack, from: &str, code: &str) -> u16 {
    stack
        .http
        .post(stack.api("/api/pairing/exchange"))
        .header("x-forwarded-for", from)
        .json(&serde_json::json!({ "code": code, "name": "box" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn behind_proxy() -> StackOptions {
    StackOptions {
        api_serve: ServeOptions {
            trusted_proxies: edge_core::client_addr::TrustedProxies::parse(
                &["127.0.0.1/32".into()],
            )
            .unwrap(),
            ..ServeOptions::default()
        },
        ..StackOptions::default()
    }
}

/// A pairing exchange with a raw `body` of `content_type`.
async fn post_exchange(stack: &Stack, content_type: &str, body: String) -> reqwest::Response {
    stack
        .http
        .post(stack.api("/api/pairing/exchange"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_json() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let big_name = "x".repeat(70 * 1024);
    let res = stack
        .send_as(Method::PATCH, &alice, &format!("/api/devices/{}", dev.id))
        .json(&serde_json::json!({ "name": big_name }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(json(res).await["error"]["code"], "payload_too_large");

    // The public exchange takes a few KiB at most.
    let too_big = serde_json::json!({ "code": "ABCDE-FGHJK", "name": "x".repeat(5000) });
    let res = post_exchange(&stack, "application/json", too_big.to_string()).await;
    assert_eq!(res.status(), 413);
    assert_eq!(json(res).await["error"]["code"], "payload_too_large");

    // Not JSON at all, or the wrong content type: JSON errors too.
    let res = post_exchange(&stack, "application/json", "{not json".into()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"]["code"], "bad_request");
    let res = post_exchange(&stack, "text/plain", "{}".into()).await;
    assert_eq!(res.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_stalled_headers_are_cut_while_others_are_served() {
    let stack = Stack::start_with(StackOptions {
        settings_hook: |s| s.body_idle_timeout = Duration::from_millis(300),
        api_serve: ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;

    // Slow body: the head promises 100 bytes, 10 arrive, then nothing.
    let mut slow_body = TcpStream::connect(stack.api_addr).await.unwrap();
    let head = format!(
        "PATCH /api/devices/{} HTTP/1.1\r\nhost: x\r\ncookie: {}\r\nx-csrf: 1\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":\"",
        dev.id, alice.cookie
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    // Slow head: a request line and one header, then nothing.
    let mut slow_head = TcpStream::connect(stack.api_addr).await.unwrap();
    slow_head
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();

    // Meanwhile a normal client is served.
    let ok = stack
        .get(&alice, &stack.api("/api/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let answer = within("408 for the stalled body", read_response(&mut slow_body)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // The server ends the connection (EOF or reset) well within the step
    // bound, without answering the incomplete request.
    let mut rest = Vec::new();
    let _ended = within("stalled head cut", slow_head.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "an incomplete head was answered"
    );
    // And the device was not renamed by the half body.
    let d = stack.store.device(alice.id, dev.id).await.unwrap().unwrap();
    assert_eq!(d.name, "box");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_connections() {
    let stack = Stack::start_with(StackOptions {
        api_serve: ServeOptions {
            max_connections_per_client: 3,
            ..ServeOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(stack.api_addr).await.unwrap();
        c.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut fourth = TcpStream::connect(stack.api_addr).await.unwrap();
    fourth
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("\"too_many_connections\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"));

    // A held connection still works; closing one frees a place.
    held[0]
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut held[0])
        .await
        .starts_with("HTTP/1.1 200"));
    drop(held.pop());
    let again = within("a freed place", async {
        loop {
            let mut c = TcpStream::connect(stack.api_addr).await.unwrap();
            c.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let answer = read_response(&mut c).await;
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(again.contains("\"ok\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_spends_only_its_own_pairing_allowance() {
    let stack = Stack::start_with(behind_proxy()).await;
    let alice = stack.user("alice").await;

    // 40 wrong codes at once from one client: the limiter's tokens are taken
    // before the store lookup, so exactly its burst (10) reach the store.
    let attempts = (0..40).map(|_| exchange_from(&stack, "6.6.6.6, 198.51.100.1", "ZZZZZ-ZZZZZ"));
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        30,
        "{statuses:?}"
    );
    // The spoofed first hop did not decide the address: 6.6.6.6 is fresh.
    assert_eq!(exchange_from(&stack, "6.6.6.6", "ZZZZZ-ZZZZZ").await, 400);

    // Another client pairs normally: the first never reached the global bucket.
    let code = code_of(&stack, &alice).await;
    assert_eq!(exchange_from(&stack, "198.51.100.2", &code).await, 201);

    // IPv6 clients count per /64.
    for i in 0..10 {
        let from = format!("2001:db8:1:2::{}", i + 1);
        assert_eq!(exchange_from(&stack, &from, "ZZZZZ-ZZZZZ").await, 400);
    }
    assert_eq!(
        exchange_from(&stack, "2001:db8:1:2:ffff::1", "ZZZZZ-ZZZZZ").await,
        429
    );
    assert_eq!(
        exchange_from(&stack, "2001:db8:1:3::1", "ZZZZZ-ZZZZZ").await,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_sees_the_client_address_the_trusted_proxy_names() {
    let stack = Stack::start_with(behind_proxy()).await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let seen = stack
        .get(&alice, &stack.proxy_url(dev.id, "/test/headers"))
        .header("x-forwarded-for", "203.0.113.50")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(seen).await["headers"]["x-forwarded-for"],
        "203.0.113.50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_on_codes_and_devices_answer_409_and_keep_the_code() {
    let stack = Stack::start_with(StackOptions {
        settings_hook: |s| {
            s.max_pending_codes_per_user = 3;
            s.max_devices_per_user = 2;
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let codes = [
        code_of(&stack, &alice).await,
        code_of(&stack, &alice).await,
        code_of(&stack, &alice).await,
    ];
    let res = new_code(&stack, &alice).await;
    assert_eq!(res.status(), 409);
    assert_eq!(json(res).await["error"]["code"], "quota_exceeded");

    assert_eq!(exchange_from(&stack, "127.0.0.1", &codes[0]).await, 201);
    assert_eq!(exchange_from(&stack, "127.0.0.1", &codes[1]).await, 201);
    let res = stack
        .http
        .post(stack.api("/api/pairing/exchange"))
        .json(&serde_json::json!({ "code": codes[2], "name": "third" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(json(res).await["error"]["code"], "quota_exceeded");
    assert_eq!(stack.store.devices(alice.id).await.unwrap().len(), 2);
    // The refused code was not spent: after a delete it pairs.
    let first = stack.store.devices(alice.id).await.unwrap()[0].id;
    let del = stack
        .send_as(Method::DELETE, &alice, &format!("/api/devices/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(exchange_from(&stack, "127.0.0.1", &codes[2]).await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_holds_at_most_its_tunnel_quota_on_a_relay() {
    let stack = Stack::start_with(StackOptions {
        limits: remote_proxy::config::Limits {
            max_tunnels_per_owner: 2,
            ..StackOptions::default().limits
        },
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (a1, _g1) = stack.online_device(alice.id).await;
    let (_a2, _g2) = stack.online_device(alice.id).await;
    let a3 = stack.device(alice.id).await;
    match stack.dial_raw(&a3.token).await {
        Err(tunnel::dial::DialError::Refused {
            status: 429,
            retry_after: Some(60),
        }) => {}
        other => panic!("third tunnel: {:?}", other.map(|_| "connected")),
    }
    // A device already connected may reconnect (it replaces itself), and
    // another owner is unaffected.
    let again = stack.dial_raw(&a1.token).await;
    assert!(again.is_ok(), "a reconnect was refused");
    let (_b1, _gb) = stack.online_device(bob.id).await;
}

#[test]
fn help_never_prints_values_from_the_environment() {
    use clap::CommandFactory;
    // Each nextest test runs in its own process; only this one sets these.
    std::env::set_var(
        "API_SERVER_OIDC_CLIENT_SECRET_FILE",
        "/run/secrets/very-secret-path",
    );
    std::env::set_var("API_SERVER_OIDC_CLIENT_ID", "client-id-from-env");
    let help = api_server::config::Config::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("API_SERVER_OIDC_CLIENT_SECRET_FILE"));
    assert!(!help.contains("very-secret-path"), "{help}");
    assert!(!help.contains("client-id-from-env"));
    let help = remote_proxy::config::Config::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("REMOTE_PROXY_TLS_KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_ends_expired_sessions_with_the_servers_settings() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let now = edge_core::time::now_ms();
    let expired = TestUser {
        id: alice.id,
        cookie: stack
            .session_cookie_at(alice.id, now - 10_000, now - 1)
            .await,
    };
    let _ = expired;
    let (swept, _) = api_server::housekeeping::sweep_once(&stack.state)
        .await
        .unwrap();
    assert_eq!(swept.sessions, 1, "{swept:?}");
    // The live session is untouched.
    let me = stack
        .get(&alice, &stack.api("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let stack = Stack::start_with(StackOptions {
        api_serve: ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let mut c = TcpStream::connect(stack.api_addr).await.unwrap();
    c.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
    // Then silence: the server closes the idle connection by itself.
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let _ = within("idle connection closed", c.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    println!(
        "idle keep-alive connection closed after {:?}",
        started.elapsed()
    );
}
