//! Login through the development OpenID Provider, end to end over HTTP:
//! the happy path, every rejection case on its own, session fixation, CSRF
//! and session management.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dev_idp::Fault;
use edge_core::time::now_ms;
use testkit::browser::Browser;
use testkit::{Idp, Stack, StackOptions};

const SESSION: &str = "edge_session";
const PENDING: &str = "edge_login";

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

/// Assert a failed callback: 400 `login_failed`, and no session cookie.
async fn assert_login_failed(b: &Browser, res: reqwest::Response) {
    assert_eq!(res.status(), 400);
    let body = json(res).await;
    assert_eq!(body["error"]["code"], "login_failed", "{body}");
    assert!(!b.jar.contains_key(SESSION));
}

async fn me_status(stack: &Stack, b: &mut Browser) -> u16 {
    b.get(&stack.api("/api/auth/me")).await.status().as_u16()
}

/// `GET /api/auth/status` (public, never 401): the console's first call.
async fn signed_in(stack: &Stack, b: &mut Browser) -> serde_json::Value {
    let res = b.get(&stack.api("/api/auth/status")).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

#[tokio::test]
async fn full_login_me_logout_cycle() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    assert_eq!(me_status(&stack, &mut b).await, 401);
    assert_eq!(
        signed_in(&stack, &mut b).await,
        serde_json::json!({ "signed_in": false })
    );

    let callback = stack
        .dev_login_until_callback(&mut b, "alice", "/devices?tab=1")
        .await;
    assert!(b.jar.contains_key(PENDING));
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/devices?tab=1");
    assert!(b.jar.contains_key(SESSION));
    assert!(
        !b.jar.contains_key(PENDING),
        "pending-login cookie is cleared"
    );
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(SESSION))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");

    let me = b.get(&stack.api("/api/auth/me")).await;
    assert_eq!(me.status(), 200);
    let me = json(me).await;
    assert_eq!(me["email"], "alice@example.test");
    assert_eq!(me["name"], "Alice Example");
    let status = signed_in(&stack, &mut b).await;
    assert_eq!(
        (status["signed_in"].clone(), status["user"].clone()),
        (true.into(), me)
    );

    let out = b.post(&stack.api("/api/auth/logout")).await;
    assert_eq!(out.status(), 200);
    let out = json(out).await;
    let end = out["end_session_url"].as_str().unwrap();
    assert!(
        end.starts_with(stack.dev_idp.as_ref().unwrap().issuer())
            && end.contains("/end-session")
            && end.contains("client_id=edge-console"),
        "{end}"
    );
    assert!(!b.jar.contains_key(SESSION));
    assert_eq!(me_status(&stack, &mut b).await, 401);
    assert_eq!(signed_in(&stack, &mut b).await["signed_in"], false);
}

#[tokio::test]
async fn confidential_client_logs_in_too() {
    let stack = Stack::start_with(StackOptions {
        idp: Idp::Dev { confidential: true },
        ..StackOptions::default()
    })
    .await;
    let mut b = stack.browser();
    assert_eq!(stack.dev_login(&mut b, "bob").await.status(), 302);
    assert_eq!(
        json(b.get(&stack.api("/api/auth/me")).await).await["email"],
        "bob@example.test"
    );
}

#[tokio::test]
async fn state_mismatch_is_rejected() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    let mut url = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "forged".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let res = b.get(url.as_str()).await;
    assert_login_failed(&b, res).await;
}

#[tokio::test]
async fn missing_pending_login_cookie_is_rejected() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    b.jar.remove(PENDING);
    let res = b.get(&callback).await;
    assert_login_failed(&b, res).await;
}

#[tokio::test]
async fn replayed_callback_is_rejected() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    let pending = b.jar[PENDING].clone();
    assert_eq!(b.get(&callback).await.status(), 302);
    // An attacker replays the same callback with the same login cookie.
    let mut attacker = stack.browser();
    attacker.jar.insert(PENDING.into(), pending);
    let res = attacker.get(&callback).await;
    assert_login_failed(&attacker, res).await;
}

/// A login that must fail because of `fault`, counted under `reason`.
async fn login_with_fault(fault: Fault, reason: &'static str) {
    let stack = Stack::start().await;
    stack.dev_idp.as_ref().unwrap().set_fault(fault);
    let mut b = stack.browser();
    let res = stack.dev_login(&mut b, "alice").await;
    assert_login_failed(&b, res).await;
    let counted = |outcome, reason| {
        stack
            .state
            .metrics
            .logins
            .get_or_create(&[("outcome", outcome), ("reason", reason)])
            .get()
    };
    assert_eq!(
        counted("failed", reason),
        1,
        "{fault:?} counted as {reason}"
    );
    // The provider itself is fine: the next, clean login works.
    let mut b = stack.browser();
    assert_eq!(
        stack.dev_login(&mut b, "alice").await.status(),
        302,
        "after {fault:?}"
    );
    assert_eq!(counted("ok", "none"), 1);
}

#[tokio::test]
async fn nonce_mismatch_is_rejected() {
    login_with_fault(Fault::WrongNonce, "nonce").await;
}

#[tokio::test]
async fn id_token_signed_by_an_unknown_key_is_rejected() {
    login_with_fault(Fault::UnknownKey, "signature").await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    login_with_fault(Fault::AlgNone, "signature").await;
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    login_with_fault(Fault::WrongAudience, "audience").await;
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    login_with_fault(Fault::WrongIssuer, "issuer").await;
}

#[tokio::test]
async fn expired_id_token_is_rejected() {
    login_with_fault(Fault::Expired, "expiry").await;
}

#[tokio::test]
async fn provider_error_is_a_clear_json_error() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let _ = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    let res = b
        .get(&stack.api("/api/auth/callback?error=access_denied&error_description=nope&state=x"))
        .await;
    assert_eq!(res.status(), 400);
    let body = json(res).await;
    assert_eq!(body["error"]["code"], "login_failed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("access_denied"));
}

async fn logged_in(stack: &Stack, user: &str) -> Browser {
    let mut b = stack.browser();
    assert_eq!(stack.dev_login(&mut b, user).await.status(), 302);
    b
}

#[tokio::test]
async fn tampered_session_cookie_is_rejected() {
    let stack = Stack::start().await;
    let mut b = logged_in(&stack, "alice").await;
    let cookie = b.jar.get_mut(SESSION).unwrap();
    let mut bytes = cookie.value.clone().into_bytes();
    bytes[3] = if bytes[3] == b'a' { b'b' } else { b'a' };
    cookie.value = String::from_utf8(bytes).unwrap();
    assert_eq!(me_status(&stack, &mut b).await, 401);
}

#[tokio::test]
async fn pending_login_cookie_presented_as_session_cookie_is_rejected() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let _ = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    let pending = b.jar.remove(PENDING).unwrap();
    b.jar.insert(SESSION.into(), pending);
    assert_eq!(me_status(&stack, &mut b).await, 401);
}

#[tokio::test]
async fn cookie_signed_with_a_retired_key_is_rejected() {
    let stack = Stack::start().await;
    let user = stack.user("alice").await;
    // A real session id, but signed with a key this server no longer has.
    let id = auth::SessionId::generate();
    stack
        .store
        .create_session(
            &id.hash(),
            "p",
            user.id,
            now_ms(),
            now_ms() + 3_600_000,
            None,
        )
        .await
        .unwrap();
    let retired = auth::CookieKeys::new(
        auth::CookieKey::new(edge_core::Secret::random(32)).unwrap(),
        vec![],
    );
    let value = retired.sign(
        SESSION,
        api_server::session::SESSION_PURPOSE,
        id.expose(),
        now_ms() + 3_600_000,
    );
    let res = stack
        .http
        .get(stack.api("/api/auth/me"))
        .header("cookie", format!("{SESSION}={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn return_to_must_be_a_local_path() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    for evil in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
    ] {
        let res = b
            .get(&stack.api(&format!(
                "/api/auth/login?return_to={}",
                testkit::browser::urlencode(evil)
            )))
            .await;
        assert_eq!(res.status(), 400, "{evil}");
        assert!(res.headers().get("location").is_none());
        assert!(!b.jar.contains_key(PENDING));
    }
}

#[tokio::test]
async fn logged_out_cookie_cannot_be_reused() {
    let stack = Stack::start().await;
    let mut b = logged_in(&stack, "alice").await;
    let old = b.jar[SESSION].clone();
    assert_eq!(b.post(&stack.api("/api/auth/logout")).await.status(), 200);
    b.jar.insert(SESSION.into(), old);
    assert_eq!(me_status(&stack, &mut b).await, 401);
}

#[tokio::test]
async fn session_past_its_idle_timeout_is_rejected() {
    let stack = Stack::start().await;
    let user = stack.user("alice").await;
    let idle = stack.state.settings.session_idle.as_millis() as i64;
    let now = now_ms();
    let stale = stack
        .session_cookie_at(user.id, now - idle - 1_000, now + 3_600_000)
        .await;
    let fresh = stack
        .session_cookie_at(user.id, now - idle + 60_000, now + 3_600_000)
        .await;
    let get = |c: String| {
        stack
            .http
            .get(stack.api("/api/auth/me"))
            .header("cookie", c)
            .send()
    };
    assert_eq!(get(fresh).await.unwrap().status(), 200);
    assert_eq!(get(stale).await.unwrap().status(), 401);
}

#[tokio::test]
async fn session_past_its_absolute_lifetime_is_rejected() {
    let stack = Stack::start().await;
    let user = stack.user("alice").await;
    let now = now_ms();
    // Used a second ago, but its lifetime ended a millisecond ago.
    let ended = stack.session_cookie_at(user.id, now - 1_000, now - 1).await;
    let res = stack
        .http
        .get(stack.api("/api/auth/me"))
        .header("cookie", ended)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn login_replaces_any_session_the_browser_held() {
    let stack = Stack::start().await;
    // A session cookie planted in the browser before login.
    let planted = logged_in(&stack, "bob").await.jar[SESSION].clone();
    let mut b = stack.browser();
    b.jar.insert(SESSION.into(), planted.clone());
    assert_eq!(stack.dev_login(&mut b, "alice").await.status(), 302);
    let after = b.jar[SESSION].clone();
    assert_ne!(after.value, planted.value);
    assert_eq!(
        json(b.get(&stack.api("/api/auth/me")).await).await["email"],
        "alice@example.test"
    );
    let mut old = stack.browser();
    old.jar.insert(SESSION.into(), planted);
    assert_eq!(
        me_status(&stack, &mut old).await,
        401,
        "the pre-login session is dead"
    );
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_header_and_our_origin() {
    let stack = Stack::start().await;
    let mut b = logged_in(&stack, "alice").await;
    let url = stack.api("/api/auth/logout");
    let plain = b.client().post(&url);
    let res = b.send(plain, &url).await;
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"]["code"], "forbidden");
    let foreign = b
        .client()
        .post(&url)
        .header("x-csrf", "1")
        .header("origin", "https://evil.example");
    assert_eq!(b.send(foreign, &url).await.status(), 403);
    assert_eq!(me_status(&stack, &mut b).await, 200, "still logged in");
    let ours = b
        .client()
        .post(&url)
        .header("x-csrf", "1")
        .header("origin", stack.state.settings.public_origin.clone());
    assert_eq!(b.send(ours, &url).await.status(), 200);
}

#[tokio::test]
async fn users_list_and_end_their_own_sessions_only() {
    let stack = Stack::start().await;
    let mut laptop = logged_in(&stack, "alice").await;
    let mut phone = logged_in(&stack, "alice").await;
    let mut bob = logged_in(&stack, "bob").await;

    let list = json(laptop.get(&stack.api("/api/auth/sessions")).await).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    let other = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let bobs = json(bob.get(&stack.api("/api/auth/sessions")).await).await;
    let bobs_id = bobs[0]["id"].as_str().unwrap().to_owned();
    let url = stack.api(&format!("/api/auth/sessions/{bobs_id}"));
    let req = laptop.client().delete(&url).header("x-csrf", "1");
    let res = laptop.send(req, &url).await;
    assert_eq!(res.status(), 404, "another user's session is not found");
    assert_eq!(me_status(&stack, &mut bob).await, 200);

    let url = stack.api(&format!("/api/auth/sessions/{other}"));
    let req = laptop.client().delete(&url).header("x-csrf", "1");
    assert_eq!(laptop.send(req, &url).await.status(), 204);
    assert_eq!(me_status(&stack, &mut phone).await, 401);
    assert_eq!(me_status(&stack, &mut laptop).await, 200);
}

#[tokio::test]
async fn provider_key_rotation_is_picked_up_by_refetching_the_jwks_at_most_once_per_interval() {
    let stack = Stack::start().await;
    let idp = stack.dev_idp.clone().unwrap();
    let mut b = stack.browser();
    assert_eq!(stack.dev_login(&mut b, "alice").await.status(), 302);
    let after_discovery = idp.jwks_fetches();

    // The provider rotates its key: the next token names an unknown kid,
    // the client refetches the JWKS once and accepts it.
    idp.rotate_key();
    let mut b = stack.browser();
    assert_eq!(stack.dev_login(&mut b, "bob").await.status(), 302);
    assert_eq!(idp.jwks_fetches(), after_discovery + 1);

    // A token from a key nobody publishes, right after: no second refetch.
    idp.set_fault(Fault::UnknownKey);
    let mut b = stack.browser();
    let res = stack.dev_login(&mut b, "carol").await;
    assert_login_failed(&b, res).await;
    assert_eq!(
        idp.jwks_fetches(),
        after_discovery + 1,
        "refetch is rate-limited"
    );
}

#[tokio::test]
async fn the_issuer_must_match_exactly() {
    let stack = Stack::start().await;
    let issuer = stack.dev_idp.as_ref().unwrap().issuer().to_owned();
    let mut settings = stack.state.oidc.settings().clone();
    settings.issuer = format!("{issuer}/");
    let client = auth::oidc::OidcClient::new(settings.clone()).unwrap();
    assert!(
        client.warm_up().await.is_err(),
        "a trailing slash is another issuer"
    );
    settings.issuer = issuer;
    assert!(auth::oidc::OidcClient::new(settings)
        .unwrap()
        .warm_up()
        .await
        .is_ok());
}

#[tokio::test]
async fn development_provider_enforces_pkce_and_single_use_codes() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let callback = stack.dev_login_until_callback(&mut b, "alice", "/").await;
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let token_url = format!("{}/token", stack.dev_idp.as_ref().unwrap().issuer());
    let redirect = stack.api("/api/auth/callback");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", testkit::DEV_CLIENT_ID),
        (
            "code_verifier",
            "not-the-verifier-not-the-verifier-not-the-verifier",
        ),
    ];
    let res = stack
        .http
        .post(&token_url)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_grant");
    // The code was burnt by that attempt: the real callback fails too.
    let res = b.get(&callback).await;
    assert_login_failed(&b, res).await;
}
