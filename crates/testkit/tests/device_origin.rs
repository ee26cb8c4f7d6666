//! Box content on device origins, over HTTP against the real routers: the
//! single-use ticket and the host-only cookie it becomes, every refusal on
//! a device origin (no cookie, another device's cookie or ticket, a used or
//! expired ticket, a foreign poster, service workers, cross-site
//! subrequests), the console-origin proxy route refusing browsers, the box
//! header rules, and the security headers of the API and the console.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testkit::{Stack, StackOptions};

/// A device of a new user, its agent serving the hostile box, entered on
/// its origin: the device, the agent and the device cookie.
async fn hostile_device(stack: &Stack) -> (testkit::TestDevice, testkit::AgentHandle, String) {
    let alice = stack.user("alice").await;
    let hostile_box = stack.extra_box(sim_box::Mode::Hostile).await;
    let dev = stack.device(alice.id).await;
    let agent = stack.agent_to(&dev, hostile_box);
    stack.wait_online(dev.id).await;
    let cookie = stack.enter_device(&alice, dev.id).await;
    (dev, agent, cookie)
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_enters_one_device_origin_once_and_becomes_a_host_only_cookie() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;

    let ticket_res = stack
        .send_as(
            http::Method::POST,
            &alice,
            &format!("/api/devices/{}/ui-ticket", dev.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ticket_res.status(), 200);
    assert_eq!(ticket_res.headers()["cache-control"], "no-store");
    let t = json(ticket_res).await;
    let (action, ticket) = (
        t["action"].as_str().unwrap().to_owned(),
        t["ticket"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        action,
        format!(
            "http://{}.localhost:{}/__edge/enter",
            dev.id,
            stack.api_addr.port()
        )
    );
    assert!(!action.contains(&ticket), "the ticket is never in a URL");
    assert!(ticket.len() >= 43, "256-bit ticket");
    let ttl = t["expires_at"].as_i64().unwrap() - edge_core::time::now_ms();
    assert!(
        (1..=30_000).contains(&ttl),
        "ticket lives at most 30 s: {ttl}"
    );

    // Only the console's page may post it: no Origin, or another one, is
    // refused without spending the ticket.
    let client = stack.device_client(dev.id);
    let no_origin = client
        .post(&action)
        .form(&[("ticket", &ticket)])
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);
    let foreign = client
        .post(&action)
        .header("origin", stack.device_origin(dev.id))
        .form(&[("ticket", &ticket)])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    let entered = stack.post_ticket(dev.id, &action, &ticket).await;
    assert_eq!(entered.status(), 303);
    assert_eq!(entered.headers()["location"], "/");
    assert_eq!(entered.headers()["cache-control"], "no-store");
    let set_cookie = entered.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("edge_device="), "{set_cookie}");
    for attr in ["; Path=/", "; HttpOnly", "; SameSite=Lax"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain"),
        "host-only"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // Single use.
    let again = stack.post_ticket(dev.id, &action, &ticket).await;
    assert_eq!(again.status(), 403);
    assert!(again.headers().get("set-cookie").is_none());

    // The cookie reaches the box's page and API on its origin.
    let page = client
        .get(stack.device_url(dev.id, "/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Simulated edge box"));
    let info = client
        .get(stack.device_url(dev.id, "/api/info"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(json(info).await["model"], "SIM-1");

    // The audit log says who opened which device UI.
    let actions: Vec<String> = stack.audit_actions(alice.id).await;
    assert!(
        actions.iter().any(|a| a == "device_ui_opened"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_origin_refuses_everyone_without_its_own_cookie() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (a, _agent_a) = stack.online_device(alice.id).await;
    let (b, _agent_b) = stack.online_device(alice.id).await;
    let cookie_a = stack.enter_device(&alice, a.id).await;
    let client_b = stack.device_client(b.id);
    let url_b = stack.device_url(b.id, "/api/info");

    // No cookie: JSON for scripts, a page for people.
    let none = client_b.get(&url_b).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(json(none).await["error"]["code"], "device_access_required");
    let page = client_b
        .get(stack.device_url(b.id, "/"))
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "none")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Open this device from the console"));

    // Device A's cookie is worth nothing on device B's origin.
    let cross = client_b
        .get(&url_b)
        .header("cookie", cookie_a.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 401);

    // A ticket for A posted to B's origin does not enter B, and is not spent.
    let (action_a, ticket_a) = stack.device_ticket(&alice, a.id).await;
    let action_b = action_a.replace(&a.id.to_string(), &b.id.to_string());
    assert_eq!(
        stack.post_ticket(b.id, &action_b, &ticket_a).await.status(),
        403
    );
    assert_eq!(
        stack.post_ticket(a.id, &action_a, &ticket_a).await.status(),
        303
    );

    // The console's session cookie is not a device cookie.
    let console_cookie = client_b
        .get(&url_b)
        .header("cookie", &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(console_cookie.status(), 401);

    // Another user cannot get a ticket for alice's device: 404 as missing.
    let theirs = stack
        .send_as(
            http::Method::POST,
            &bob,
            &format!("/api/devices/{}/ui-ticket", a.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_enters_nothing() {
    let stack = Stack::start_with(StackOptions {
        settings_hook: |s| s.device_ticket_lifetime = std::time::Duration::ZERO,
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let (action, ticket) = stack.device_ticket(&alice, dev.id).await;
    let res = stack.post_ticket(dev.id, &action, &ticket).await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_dies_with_the_session_it_was_issued_to() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let (action, ticket) = stack.device_ticket(&alice, dev.id).await;
    let out = stack
        .send_as(http::Method::POST, &alice, "/api/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(
        stack.post_ticket(dev.id, &action, &ticket).await.status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxs_websocket_upgrade_answer_plants_no_cookie_beyond_its_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stack = Stack::start().await;
    let (dev, _agent, cookie) = hostile_device(&stack).await;

    let url = stack
        .device_url(dev.id, "/hostile/ws-cookies")
        .replacen("http", "ws", 1);
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("origin", stack.device_origin(dev.id).parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(stack.api_addr)
        .await
        .unwrap();
    let (_ws, res) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(res.status(), 101);
    let cookies: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    // The same rule as on any other answer: no Domain, none of our names.
    assert_eq!(cookies, ["box_pref=kept; Path=/"]);
    for gone in ["clear-site-data", "service-worker-allowed"] {
        assert!(
            !res.headers().contains_key(gone),
            "{gone} reached the browser"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fetch_metadata_a_sibling_origin_cannot_post_or_upgrade() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let sibling = stack.device(alice.id).await;
    let cookie = stack.enter_device(&alice, dev.id).await;
    let client = stack.device_client(dev.id);
    let url = stack.device_url(dev.id, "/test/upload");
    // A browser that sends no Sec-Fetch-* headers, on the sibling's page.
    let res = client
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", stack.device_origin(sibling.id))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"]["code"], "cross_site");
    // No Origin at all is no better.
    let res = client
        .post(&url)
        .header("cookie", &cookie)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // An upgrade from the sibling is refused too.
    let res = client
        .get(stack.device_url(dev.id, "/test/ws-echo"))
        .header("cookie", &cookie)
        .header("origin", stack.device_origin(sibling.id))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // The device's own page may; and anyone may read.
    let res = client
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", stack.device_origin(dev.id))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(stack.device_url(dev.id, "/api/info"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn box_headers_that_reach_beyond_the_device_origin_are_removed() {
    let stack = Stack::start().await;
    let (dev, _agent, cookie) = hostile_device(&stack).await;
    let client = stack.device_client(dev.id);

    let res = client
        .get(stack.device_url(dev.id, "/hostile/plant-cookies"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    let cookies: Vec<&str> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["box_pref=kept; Path=/"]);
    for gone in ["clear-site-data", "service-worker-allowed"] {
        assert!(!h.contains_key(gone), "{gone} reached the browser");
    }
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "private");

    // The box sees its own cookies, never ours.
    let seen = client
        .get(stack.device_url(dev.id, "/test/headers"))
        .header("cookie", format!("{cookie}; box_pref=kept"))
        .send()
        .await
        .unwrap();
    let seen = json(seen).await;
    assert_eq!(seen["headers"]["cookie"], "box_pref=kept");

    // No service worker, whatever the box serves.
    let sw = client
        .get(stack.device_url(dev.id, "/sw.js"))
        .header("cookie", &cookie)
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(sw.status(), 403);
    assert_eq!(json(sw).await["error"]["code"], "service_worker_refused");

    // Another site's page (another device's origin included) cannot send
    // credentialed subrequests or posts here; top-level links still work.
    for (method, site, mode, want) in [
        ("GET", "same-site", "cors", 403),
        ("GET", "cross-site", "no-cors", 403),
        ("POST", "cross-site", "navigate", 403),
        ("GET", "cross-site", "navigate", 200),
        ("POST", "same-origin", "cors", 405),
    ] {
        let res = client
            .request(
                method.parse().unwrap(),
                stack.device_url(dev.id, "/api/info"),
            )
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .header("sec-fetch-mode", mode)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), want, "{method} {site} {mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_origin_proxy_route_refuses_browsers_and_answers_inertly() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let url = stack.proxy_url(dev.id, "/");
    let browser = stack
        .get(&alice, &url)
        .header("sec-fetch-site", "none")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 403);
    assert_eq!(json(browser).await["error"]["code"], "use_device_origin");
    let program = stack.get(&alice, &url).send().await.unwrap();
    assert_eq!(program.status(), 200);
    let h = program.headers();
    assert_eq!(h["content-security-policy"], "sandbox; default-src 'none'");
    assert_eq!(h["content-disposition"], "attachment");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_and_unsafe_methods_without_the_header_are_refused() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;

    let cross = stack
        .get(&alice, &stack.api("/api/devices"))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(json(cross).await["error"]["code"], "cross_site");
    let linked = stack
        .http
        .get(stack.api("/"))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 200, "a link to the console still opens it");
    let same = stack
        .get(&alice, &stack.api("/api/devices"))
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);

    // Any method but GET, HEAD and OPTIONS needs X-CSRF: 1.
    let purge = stack
        .http
        .request(
            "PURGE".parse().unwrap(),
            stack.proxy_url(dev.id, "/api/info"),
        )
        .header("cookie", &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 403);
    assert_eq!(json(purge).await["error"]["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_stored_and_the_console_is_isolated() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let post = |path: String| stack.send_as(http::Method::POST, &alice, &path);
    for res in [
        post("/api/pairing/codes".into()).send().await.unwrap(),
        post(format!("/api/devices/{}/credential", dev.id))
            .send()
            .await
            .unwrap(),
        stack
            .get(&alice, &stack.api("/api/devices"))
            .send()
            .await
            .unwrap(),
        stack.http.get(stack.api("/api/nope")).send().await.unwrap(),
    ] {
        assert_eq!(res.headers()["cache-control"], "no-store", "{}", res.url());
        assert_eq!(res.headers()["cross-origin-resource-policy"], "same-origin");
        assert!(res.headers().get("strict-transport-security").is_none());
    }
    let page = stack.http.get(stack.api("/")).send().await.unwrap();
    let h = page.headers();
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!(
            "form-action 'self' http://*.localhost:{};",
            stack.api_addr.port()
        )),
        "{csp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_bring_hsts_on_every_response() {
    let stack = Stack::start_with(StackOptions {
        settings_hook: |s| s.cookie_secure = true,
        ..StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    for res in [
        stack.http.get(stack.api("/")).send().await.unwrap(),
        stack
            .http
            .get(stack.api("/api/health"))
            .send()
            .await
            .unwrap(),
        stack
            .device_client(dev.id)
            .get(stack.device_url(dev.id, "/"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=31536000",
            "{}",
            res.url()
        );
    }
}
