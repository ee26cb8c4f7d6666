//! Health and webhooks end to end: a box's scraped figures move its health
//! by the owner's rules; each change into or out of a problem is in the
//! audit log and reaches the owner's webhook as a signed `POST` that a
//! local receiver verifies (HMAC-SHA256 over time and body, fresh
//! timestamp), retried after the receiver fails, with every attempt in the
//! delivery log; another user sees none of it; URLs on private or loopback
//! addresses are refused unless the operator allows them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use remote_proxy::config::Limits;
use remote_proxy::scrape::TelemetrySettings;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{Stack, StackOptions, TestUser};

fn options(allow_private: bool) -> StackOptions {
    StackOptions {
        limits: Limits {
            drain_timeout: Duration::from_secs(5),
            telemetry: TelemetrySettings {
                interval: Some(Duration::from_millis(200)),
                write_every: Duration::from_millis(50),
                window_every: Duration::from_millis(50),
                timeout: Duration::from_secs(2),
                ..Default::default()
            },
            ..Limits::default()
        },
        settings_hook: if allow_private {
            |s| {
                s.health_interval = Duration::from_millis(100);
                s.webhook_allow_private = true;
                s.webhook_poll = Duration::from_millis(50);
                s.webhook_retry_base = Duration::from_millis(100);
                s.webhook_timeout = Duration::from_secs(2);
            }
        } else {
            |_| {}
        },
        ..StackOptions::default()
    }
}

/// What the receiver got: headers of interest and the body.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    signature: String,
    body: String,
}

/// A local webhook receiver that answers 500 to its first request and 200
/// after, recording each.
async fn receiver(
    stack: &Stack,
) -> (
    String,
    Arc<Mutex<Vec<Received>>>,
    tokio::sync::watch::Receiver<usize>,
) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let tx = Arc::new(tx);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: http::HeaderMap, body: String| {
            let (seen, tx, calls) = (seen.clone(), tx.clone(), calls.clone());
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                seen.lock().unwrap().push(Received {
                    id: header("edge-webhook-id"),
                    signature: header("edge-signature"),
                    body,
                });
                tx.send_modify(|n| *n += 1);
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    http::StatusCode::OK
                }
            }
        }),
    );
    let url = format!("http://{}/hook", stack.serve_local(app).await);
    (url, got, rx)
}

/// Check a delivery as a receiver must: the signature over `t.body` with
/// the secret, and a timestamp within five minutes.
fn verify(r: &Received, secret: &str) -> serde_json::Value {
    let (t, v1) = r
        .signature
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?.parse::<i64>().ok()?, v)))
        .unwrap_or_else(|| panic!("bad signature header {:?}", r.signature));
    let now = edge_core::time::now_ms() / 1000;
    assert!((now - t).abs() <= 300, "timestamp {t} is not fresh");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature verifies");
    // A tampered body does not.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}x", r.body).as_bytes());
    assert!(mac.verify_slice(&hex::decode(v1).unwrap()).is_err());
    serde_json::from_str(&r.body).unwrap()
}

/// A box whose `/metrics` serves the accelerator temperature the test sets.
async fn thermometer(stack: &Stack) -> (std::net::SocketAddr, Arc<Mutex<f64>>) {
    let temp = Arc::new(Mutex::new(60.0));
    let t = temp.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let v = *t.lock().unwrap();
            async move { format!("edge_accel_temperature_celsius{{accel=\"npu0\"}} {v}\n") }
        }),
    );
    (stack.serve_local(app).await, temp)
}

/// `POST /api/webhooks` for `url` as `user`.
async fn register(stack: &Stack, user: &TestUser, url: &str) -> reqwest::Response {
    stack
        .send_as(reqwest::Method::POST, user, "/api/webhooks")
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap()
}

async fn health_of(stack: &Stack, user: &TestUser, dev: edge_core::DeviceId) -> serde_json::Value {
    stack.get_json(user, &format!("/api/devices/{dev}")).await["health"].clone()
}

async fn wait_health(stack: &Stack, user: &TestUser, dev: edge_core::DeviceId, want: &str) {
    let mut passes = stack.state.signals.health_passes.subscribe();
    testkit::within(want, async {
        loop {
            if health_of(stack, user, dev).await["state"] == want {
                return;
            }
            passes.changed().await.unwrap();
        }
    })
    .await;
}

async fn wait_received(rx: &mut tokio::sync::watch::Receiver<usize>, n: usize) {
    testkit::within("webhook deliveries", rx.wait_for(|got| *got >= n))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_reach_a_signed_webhook_with_retries_and_a_delivery_log() {
    let stack = Stack::start_with(options(true)).await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let dev = stack.device(alice.id).await;
    let (addr, temp) = thermometer(&stack).await;
    let _agent = stack.agent_to(&dev, addr);
    stack.wait_online(dev.id).await;

    let (url, got, mut rx) = receiver(&stack).await;
    let res = register(&stack, &alice, &url).await;
    assert_eq!(res.status(), 201);
    let hook: serde_json::Value = res.json().await.unwrap();
    let (hook_id, secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(secret.len(), 64, "32 random bytes, hex");
    let listed = stack.get_json(&alice, "/api/webhooks").await;
    assert_eq!(listed[0]["id"], hook_id);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );

    wait_health(&stack, &alice, dev.id, "ok").await;
    assert!(
        got.lock().unwrap().is_empty(),
        "a first good state is no event"
    );

    *temp.lock().unwrap() = 95.0;
    wait_health(&stack, &alice, dev.id, "critical").await;
    let h = health_of(&stack, &alice, dev.id).await;
    assert!(h["reasons"][0].as_str().unwrap().contains("npu0"), "{h}");
    // The first attempt got a 500; the retry got through.
    wait_received(&mut rx, 2).await;
    let received = got.lock().unwrap().clone();
    assert_eq!(
        received[0].id, received[1].id,
        "a retry is the same delivery"
    );
    assert_eq!(received[0].body, received[1].body);
    let event = verify(&received[1], &secret);
    assert_eq!(event["type"], "device.health_changed");
    assert_eq!(event["device"]["id"], dev.id.to_string());
    assert_eq!(
        (event["from"].as_str(), event["to"].as_str()),
        (Some("ok"), Some("critical"))
    );
    assert_eq!(event["delivery_id"], received[1].id);
    assert!(verify(&received[0], &secret)["to"] == "critical");

    let mut attempts = stack.state.signals.delivery_attempts.subscribe();
    testkit::within("the delivery log", async {
        loop {
            let log = stack
                .get_json(&alice, &format!("/api/webhooks/{hook_id}/deliveries"))
                .await;
            if log[0]["state"] == "delivered" {
                assert_eq!(log[0]["attempts"], 2, "{log}");
                assert_eq!(log[0]["last_status"], 200);
                assert_eq!(log[0]["event"]["to"], "critical");
                return;
            }
            attempts.changed().await.unwrap();
        }
    })
    .await;
    let actions = stack.audit_actions(alice.id).await;
    assert!(
        actions.iter().any(|a| a == "device_health_changed"),
        "{actions:?}"
    );

    // Recovery is an event too.
    *temp.lock().unwrap() = 60.0;
    wait_health(&stack, &alice, dev.id, "ok").await;
    wait_received(&mut rx, 3).await;
    let last = got.lock().unwrap().last().cloned().unwrap();
    let event = verify(&last, &secret);
    assert_eq!(
        (event["from"].as_str(), event["to"].as_str()),
        (Some("critical"), Some("ok"))
    );

    // Another user: no webhooks, and alice's answers 404 like a missing one.
    assert_eq!(
        stack.get_json(&bob, "/api/webhooks").await,
        serde_json::json!([])
    );
    for path in [format!("/api/webhooks/{hook_id}/deliveries")] {
        let res = stack.get(&bob, &stack.api(&path)).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &bob,
            &format!("/api/webhooks/{hook_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &alice,
            &format!("/api/webhooks/{hook_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_the_owners_and_private_webhook_urls_are_refused() {
    let stack = Stack::start_with(options(false)).await;
    let alice = stack.user("alice").await;
    let rules = stack.get_json(&alice, "/api/health-rules").await;
    assert_eq!(rules["fps_floor"], 5.0);
    assert_eq!(rules["offline_minutes"], 10);
    let new = serde_json::json!({"fps_floor": 12.5, "accel_temp_ceiling": 80.0, "disk_ceiling": 0.8, "offline_minutes": 3});
    let res = stack
        .send_as(reqwest::Method::PUT, &alice, "/api/health-rules")
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(stack.get_json(&alice, "/api/health-rules").await, new);
    let bob = stack.user("bob").await;
    assert_eq!(
        stack.get_json(&bob, "/api/health-rules").await["fps_floor"],
        5.0
    );
    for bad in [
        serde_json::json!({"fps_floor": -1.0, "accel_temp_ceiling": 80.0, "disk_ceiling": 0.8, "offline_minutes": 3}),
        serde_json::json!({"fps_floor": 1.0, "accel_temp_ceiling": 80.0, "disk_ceiling": 1.5, "offline_minutes": 3}),
        serde_json::json!({"fps_floor": 1.0, "accel_temp_ceiling": 80.0, "disk_ceiling": 0.5, "offline_minutes": 0}),
    ] {
        let res = stack
            .send_as(reqwest::Method::PUT, &alice, "/api/health-rules")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    for (url, code) in [
        ("http://127.0.0.1:9/hook", "webhook_url_refused"),
        ("http://10.0.0.7/hook", "webhook_url_refused"),
        (
            "http://169.254.169.254/latest/meta-data",
            "webhook_url_refused",
        ),
        ("http://[::1]:9/hook", "webhook_url_refused"),
        ("http://localhost:9/hook", "webhook_url_refused"),
        ("ftp://8.8.8.8/hook", "webhook_url_refused"),
        ("https://user:pw@8.8.8.8/hook", "webhook_url_refused"),
        ("not a url", "webhook_url_refused"),
    ] {
        let res = register(&stack, &alice, url).await;
        assert_eq!(res.status(), 400, "{url}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}");
        assert!(
            !body.to_string().contains("pw"),
            "no credential in the error"
        );
    }
    // A public address is accepted, up to the account's limit.
    for _ in 0..store::MAX_WEBHOOKS_PER_OWNER {
        let res = register(&stack, &alice, "https://8.8.8.8/hook").await;
        assert_eq!(res.status(), 201);
    }
    let res = register(&stack, &alice, "https://8.8.8.8/hook").await;
    assert_eq!(res.status(), 409);
}
