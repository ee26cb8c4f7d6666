//! Every route of the api-server's route table (the same table `build_app`
//! uses) that is not on the public list answers 401 JSON to: no cookie, a
//! tampered cookie, an expired session, a logged-out session, and a cookie
//! signed with a wrong key. Adding a route without the `CurrentUser`
//! extractor makes `every_non_public_route_requires_a_session` fail, because
//! that route would answer something other than 401 to these requests. The
//! public list itself is asserted, so growing it is a visible decision.
//! A cookie the api-server remembered as checked (ADR 033) stops working
//! at its signed expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api_server::router::route_table;
use edge_core::time::now_ms;
use testkit::Stack;

/// A concrete URL path for a route pattern (ids get fresh UUIDs).
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with("{*") {
                "some/path".to_owned()
            } else if seg.starts_with('{') {
                uuid_like()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn uuid_like() -> String {
    edge_core::DeviceId::new().to_string()
}

/// The routes whose document entries ask for no credential are exactly
/// these (each guards itself or holds nothing): a route that loses its
/// `security` by mistake fails here.
#[tokio::test]
async fn the_public_list_is_exactly_what_it_should_be() {
    let mut public: Vec<String> = route_table()
        .into_iter()
        .filter(|r| r.public)
        .map(|r| r.path)
        .collect();
    public.sort();
    let mut expected = [
        "/",
        "/console/{file}",
        "/favicon.ico",
        "/api/health",
        "/api/ready",
        "/api/openapi.json",
        "/api/auth/status",
        "/api/auth/login",
        "/api/auth/callback",
        "/api/auth/backchannel-logout",
        "/api/pairing/exchange",
        "/api/cli/login",
        "/api/cli/login/poll",
        "/api/cli/authorize",
        "/api/cli/login/code",
        "/api/oauth/token",
    ];
    expected.sort_unstable();
    assert_eq!(public, expected);
}

#[tokio::test]
async fn every_non_public_route_requires_a_session() {
    let stack = Stack::start().await;
    let user = stack.user("alice").await;
    let name = api_server::session::cookie_name(false);

    // The five bad cookies.
    let tampered = {
        let (n, v) = user.cookie.split_once('=').unwrap();
        let mut v = v.to_owned().into_bytes();
        v[0] = if v[0] == b'a' { b'b' } else { b'a' };
        format!("{n}={}", String::from_utf8(v).unwrap())
    };
    let expired = stack
        .session_cookie_at(user.id, now_ms() - 10_000, now_ms() - 1)
        .await;
    let logged_out = {
        let other = stack.user("alice").await;
        let res = stack
            .http
            .post(stack.api("/api/auth/logout"))
            .header("cookie", &other.cookie)
            .header("x-csrf", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        other.cookie
    };
    let wrong_key = {
        let keys = auth::CookieKeys::new(
            auth::CookieKey::new(edge_core::Secret::random(32)).unwrap(),
            vec![],
        );
        let id = auth::SessionId::generate();
        format!(
            "{name}={}",
            keys.sign(
                name,
                api_server::session::SESSION_PURPOSE,
                id.expose(),
                now_ms() + 60_000
            )
        )
    };
    let cases: [(&str, Option<&str>); 5] = [
        ("no cookie", None),
        ("tampered cookie", Some(&tampered)),
        ("expired session", Some(&expired)),
        ("logged-out session", Some(&logged_out)),
        ("wrong key", Some(&wrong_key)),
    ];

    let mut checked = 0;
    for route in route_table() {
        let public = route.public;
        for method in &route.methods {
            let url = stack.api(&concrete(&route.path));
            for (what, cookie) in &cases {
                let mut req = stack
                    .http
                    .request(method.clone(), &url)
                    .header("x-csrf", "1");
                if let Some(c) = cookie {
                    req = req.header("cookie", *c);
                }
                let res = req.send().await.unwrap();
                if public {
                    assert_ne!(
                        res.status(),
                        401,
                        "public {method} {} gave 401 ({what})",
                        route.path
                    );
                    continue;
                }
                assert_eq!(res.status(), 401, "{method} {} with {what}", route.path);
                let ct = res
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(
                    ct.as_deref(),
                    Some("application/json"),
                    "{method} {}",
                    route.path
                );
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(
                    body["error"]["code"], "unauthenticated",
                    "{method} {} with {what}",
                    route.path
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 5 * 12,
        "walked too few route/method pairs: {checked}"
    );
    // The good cookie still works, so the 401s above were about the cookies.
    let me = stack
        .http
        .get(stack.api("/api/auth/me"))
        .header("cookie", &user.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

/// A cookie that worked (and was remembered, ADR 033) stops working at
/// the expiry it was signed with, though its session lives on; a copy
/// with one byte of its signature changed never works.
#[tokio::test]
async fn a_cookie_that_worked_is_refused_from_its_signed_expiry() {
    let stack = Stack::start().await;
    let user = stack.user("alice").await;
    let signed_until = now_ms() + 1_500;
    let cookie = stack
        .session_cookie_signed_until(user.id, now_ms(), now_ms() + 3_600_000, signed_until)
        .await;
    let status = |cookie: String| {
        let req = stack
            .http
            .get(stack.api("/api/devices"))
            .header("cookie", cookie);
        async move { req.send().await.unwrap().status() }
    };
    let forged = {
        let mut v = cookie.clone().into_bytes();
        let tag = cookie.rfind('.').unwrap() + 1;
        v[tag] = if v[tag] == b'A' { b'B' } else { b'A' };
        String::from_utf8(v).unwrap()
    };
    assert_eq!(status(cookie.clone()).await, 200);
    assert_eq!(status(cookie.clone()).await, 200);
    assert_eq!(status(forged.clone()).await, 401);
    // The only signal is the clock: wait for the signed expiry to pass.
    let left = u64::try_from(signed_until - now_ms()).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_millis(left + 10)).await;
    assert_eq!(status(cookie).await, 401);
    assert_eq!(status(forged).await, 401);
}
