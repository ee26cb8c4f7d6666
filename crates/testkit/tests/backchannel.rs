//! OIDC completeness against the development provider, over HTTP:
//! UserInfo (its `sub` must match; `email_verified` is kept), display-safe
//! names, and Back-Channel Logout 1.0: a valid logout token ends the
//! sessions it names (by `sid`, or all of a `sub`) and their device access;
//! every malformed, foreign or replayed token is refused and ends nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dev_idp::{DevIdp, Fault};
use edge_core::time::now_ms;
use serde_json::{json, Value};
use testkit::browser::Browser;
use testkit::{Stack, DEV_CLIENT_ID};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

async fn login(stack: &Stack, user: &str) -> Browser {
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, user, "/").await;
    assert_eq!(b.get(&callback).await.status(), 302);
    b
}

async fn me(stack: &Stack, b: &mut Browser) -> reqwest::Response {
    b.get(&stack.api("/api/auth/me")).await
}

fn idp(stack: &Stack) -> &DevIdp {
    stack.dev_idp.as_ref().unwrap()
}

/// Claims of a valid logout token for `sub`/`sid`.
fn logout_claims(stack: &Stack, sub: Option<&str>, sid: Option<&str>) -> Value {
    let now = now_ms() / 1000;
    let mut c = json!({
        "iss": idp(stack).issuer(),
        "aud": DEV_CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": edge_core::Secret::random(12).expose(),
        "events": { EVENT: {} },
    });
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    c
}

async fn send_logout(stack: &Stack, token: &str) -> reqwest::Response {
    stack
        .http
        .post(stack.api("/api/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_fills_the_profile_and_its_subject_must_match() {
    let stack = Stack::start().await;
    let mut b = login(&stack, "alice").await;
    let me_json: Value = me(&stack, &mut b).await.json().await.unwrap();
    assert_eq!(me_json["email"], "alice@example.test");
    assert_eq!(me_json["email_verified"], true);
    assert_eq!(me_json["name"], "Alice Example");

    // UserInfo answering for somebody else fails the login.
    idp(&stack).set_fault(Fault::UserInfoWrongSubject);
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, "bob", "/").await;
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "login_failed");
    assert_eq!(me(&stack, &mut b).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_with_sid_ends_that_session_and_its_device_access() {
    let stack = Stack::start().await;
    let mut first = login(&stack, "alice").await;
    let first_sid = idp(&stack).sid_of("alice").unwrap();
    let mut second = login(&stack, "alice").await;
    assert_ne!(idp(&stack).sid_of("alice").unwrap(), first_sid);

    // The first browser opened a device UI and holds a WebSocket there.
    let session_cookie = first.jar["edge_session"].value.clone();
    let alice = testkit::TestUser {
        id: stack
            .store
            .upsert_user(idp(&stack).issuer(), "alice", None, None)
            .await
            .unwrap()
            .id,
        cookie: format!("edge_session={session_cookie}"),
    };
    let (dev, _agent) = stack.online_device(alice.id).await;
    let device_cookie = stack.enter_device(&alice, dev.id).await;
    let mut ws = stack
        .device_ws(dev.id, &device_cookie, "/test/ws-echo")
        .await;

    let token = idp(&stack).sign(&logout_claims(&stack, Some("alice"), Some(&first_sid)));
    let res = send_logout(&stack, &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let at = std::time::Instant::now();
    assert_eq!(me(&stack, &mut first).await.status(), 401);
    assert_eq!(
        me(&stack, &mut second).await.status(),
        200,
        "only the named session ends"
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        use futures_util::StreamExt;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "device WebSocket open {:?} after",
        at.elapsed()
    );

    // The same token again is a replay.
    let replay = send_logout(&stack, &token).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_with_only_sub_ends_every_session_of_that_user() {
    let stack = Stack::start().await;
    let mut a1 = login(&stack, "alice").await;
    let mut a2 = login(&stack, "alice").await;
    let mut bob = login(&stack, "bob").await;
    let token = idp(&stack).sign(&logout_claims(&stack, Some("alice"), None));
    assert_eq!(send_logout(&stack, &token).await.status(), 200);
    assert_eq!(me(&stack, &mut a1).await.status(), 401);
    assert_eq!(me(&stack, &mut a2).await.status(), 401);
    assert_eq!(me(&stack, &mut bob).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_session_delete_leaves_the_token_usable_for_the_providers_retry() {
    use std::sync::atomic::Ordering;
    let stack = Stack::start().await;
    let mut b = login(&stack, "alice").await;
    let token = idp(&stack).sign(&logout_claims(&stack, Some("alice"), None));
    let faults = stack.store.faults();
    faults.fail_idp_session_delete.store(true, Ordering::SeqCst);
    let failed = send_logout(&stack, &token).await;
    assert_eq!(
        failed.status(),
        500,
        "the delete failed: the provider retries"
    );
    assert_eq!(me(&stack, &mut b).await.status(), 200, "nothing was ended");
    faults
        .fail_idp_session_delete
        .store(false, Ordering::SeqCst);
    // The provider's retry of the same token is not "already used".
    let retry = send_logout(&stack, &token).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(me(&stack, &mut b).await.status(), 401);
    // Once it worked, the token is used up.
    assert_eq!(send_logout(&stack, &token).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logout_tokens_are_refused_and_end_nothing() {
    let stack = Stack::start().await;
    let mut b = login(&stack, "alice").await;
    let sid = idp(&stack).sid_of("alice").unwrap();
    let good = logout_claims(&stack, Some("alice"), Some(&sid));
    type Spoil = fn(&mut Value);
    let spoiled: &[(&str, Spoil)] = &[
        ("issuer", |c| c["iss"] = json!("https://evil.example")),
        ("audience", |c| c["aud"] = json!("someone-else")),
        ("old iat", |c| {
            c["iat"] = json!(now_ms() / 1000 - 3600);
            c["exp"] = json!(now_ms() / 1000 + 60);
        }),
        ("expired", |c| c["exp"] = json!(now_ms() / 1000 - 3600)),
        ("no events", |c| {
            c.as_object_mut().unwrap().remove("events");
        }),
        ("nonce", |c| c["nonce"] = json!("n")),
        ("no jti", |c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        ("no sub or sid", |c| {
            let o = c.as_object_mut().unwrap();
            o.remove("sub");
            o.remove("sid");
        }),
    ];
    for (what, spoil) in spoiled {
        let mut claims = good.clone();
        spoil(&mut claims);
        let res = send_logout(&stack, &idp(&stack).sign(&claims)).await;
        assert_eq!(res.status(), 400, "{what} accepted");
    }
    // Signed by a key the provider never published, unsigned, or garbage.
    let foreign = DevIdp::sign_with_unknown_key(&good);
    let mut parts: Vec<String> = idp(&stack)
        .sign(&good)
        .split('.')
        .map(str::to_owned)
        .collect();
    parts[0] = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    parts[2] = String::new();
    let unsigned = parts.join(".");
    for (what, token) in [
        ("unknown key", foreign.as_str()),
        ("alg none", unsigned.as_str()),
        ("garbage", "not.a.jwt"),
        ("empty", ""),
    ] {
        let res = send_logout(&stack, token).await;
        assert_eq!(res.status(), 400, "{what} accepted");
        let body = res.text().await.unwrap();
        assert!(body.contains("invalid_request"), "{body}");
    }
    assert_eq!(me(&stack, &mut b).await.status(), 200, "nothing was ended");
    // And the good one still works (it was never spent by the failures).
    let ok = send_logout(&stack, &idp(&stack).sign(&good)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(me(&stack, &mut b).await.status(), 401);
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_users_and_boxes_lose_control_and_bidi_characters() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let res = stack
        .send_as(
            http::Method::PATCH,
            &alice,
            &format!("/api/devices/{}", dev.id),
        )
        .json(&json!({ "name": "Lab\u{202E}exe.txt\u{0007}", "labels": ["a\u{2066}b"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Labexe.txt");
    assert_eq!(body["labels"], json!(["ab"]));
}
