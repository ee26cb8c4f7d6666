//! The devices API with live status, and strict tenant isolation: for every
//! route in the route table that takes an object id, another user's object
//! is a 404 byte-identical to a missing one, and the object is unchanged,
//! whether the caller comes with the console's cookie, a terminal's bearer
//! or a service account's token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api_server::router::route_table;
use testkit::Stack;

async fn body(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_live_status_and_edits_stick() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let on = stack.device(alice.id).await;
    let off = stack.device(alice.id).await;
    let _agent = stack.agent(&on);
    stack.wait_online(on.id).await;

    let list = stack.get_json(&alice, "/api/devices").await;
    let status = |id: edge_core::DeviceId| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.to_string())
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(on.id), "online");
    assert_eq!(status(off.id), "offline");
    let page = stack
        .get_json(&alice, "/api/devices?limit=1&offset=1")
        .await;
    assert_eq!(page.as_array().map(Vec::len), Some(1));

    let path = format!("/api/devices/{}", on.id);
    let patched = stack
        .send_as(reqwest::Method::PATCH, &alice, &path)
        .json(&serde_json::json!({ "name": "front door", "labels": ["site-a", "door"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let got = stack.get_json(&alice, &path).await;
    assert_eq!(
        (
            got["name"].clone(),
            got["labels"].clone(),
            got["status"].clone()
        ),
        (
            "front door".into(),
            serde_json::json!(["site-a", "door"]),
            "online".into()
        )
    );
    let bad = stack
        .send_as(reqwest::Method::PATCH, &alice, &path)
        .json(&serde_json::json!({ "name": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn an_offline_device_shows_when_it_was_last_seen() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let path = format!("/api/devices/{}", dev.id);
    let get = || stack.get_json(&alice, &path);
    let never = get().await;
    assert_eq!(
        (never["status"].clone(), never["last_seen_at"].clone()),
        ("offline".into(), serde_json::Value::Null),
        "never connected"
    );
    let before = edge_core::time::now_ms();
    let agent = stack.agent(&dev);
    stack.wait_online(dev.id).await;
    let online = get().await;
    assert_eq!(online["last_seen_at"], online["last_heard_from"]);
    agent.stop().await;
    stack.wait_offline(dev.id).await;
    // The relay writes last-seen times in batches, a few times a second.
    testkit::within("last-seen times written", stack.relay().seen.settled()).await;
    let offline = get().await;
    assert_eq!(offline["status"], "offline");
    let seen = offline["last_seen_at"].as_i64().expect("last_seen_at set");
    assert!(seen >= before, "{seen} < {before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_the_tunnel_within_a_second_and_refuses_the_credential() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let mut ws = stack.dial_raw(&dev.token).await.unwrap();
    stack.wait_online(dev.id).await;
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &alice,
            &format!("/api/devices/{}", dev.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // The API answers only once the relay has dropped the session.
    assert!(stack.relay().directory.connection_of(dev.id).is_none());
    // The device's socket sees GoAway and close within 1 s of the answer.
    let answered = std::time::Instant::now();
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "tunnel open {:?} after the delete",
        answered.elapsed()
    );
    assert!(matches!(
        stack.dial_raw(&dev.token).await,
        Err(tunnel::dial::DialError::Refused { status: 401, .. })
    ));
    let list = stack.get_json(&alice, "/api/devices").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revokes_the_old_credential_and_the_new_one_works() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let _ws = stack.dial_raw(&dev.token).await.unwrap();
    stack.wait_online(dev.id).await;
    let res = stack
        .send_as(
            reqwest::Method::POST,
            &alice,
            &format!("/api/devices/{}/credential", dev.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let new = edge_core::DeviceToken::from_secret(edge_core::Secret::new(
        body(res).await["credential"].as_str().unwrap(),
    ));
    stack.wait_offline(dev.id).await;
    assert!(matches!(
        stack.dial_raw(&dev.token).await,
        Err(tunnel::dial::DialError::Refused { status: 401, .. })
    ));
    let _ws2 = stack.dial_raw(&new).await.unwrap();
    stack.wait_online(dev.id).await;
    let res = stack
        .send_as(
            reqwest::Method::POST,
            &alice,
            &format!("/api/devices/{}/disconnect", dev.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body(res).await["disconnected"], true);
    stack.wait_offline(dev.id).await;
}

/// Concrete URL for `pattern`, with `{id}` replaced and `{*path}` filled.
fn fill(pattern: &str, id: &str) -> String {
    pattern.replace("{id}", id).replace("{*path}", "api/info")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_objects_are_indistinguishable_from_missing_ones() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let code = body(
        stack
            .send_as(reqwest::Method::POST, &alice, "/api/pairing/codes")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let code_id = code["id"].as_str().unwrap().to_owned();
    let hook = body(
        stack
            .send_as(reqwest::Method::POST, &alice, "/api/webhooks")
            .json(&serde_json::json!({"url": "https://8.8.8.8/hook"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let sessions = stack.get_json(&alice, "/api/auth/sessions").await;
    let session_id = sessions[0]["id"].as_str().unwrap().to_owned();
    let (account_id, _) = stack.service_account(&alice, &["devices:read"], &[]).await;
    let secret_id = stack
        .get_json(&alice, &format!("/api/service-accounts/{account_id}"))
        .await["secrets"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Which of alice's objects each id-taking route names.
    let object_for = |path: &str| -> (String, String) {
        if path.starts_with("/api/devices/") {
            (dev.id.to_string(), edge_core::DeviceId::new().to_string())
        } else if path.starts_with("/api/pairing/codes/") {
            (code_id.clone(), "0123456789abcdef0123456789abcdef".into())
        } else if path.starts_with("/api/webhooks/") {
            (hook_id.clone(), "0123456789abcdef0123456789abcdef".into())
        } else if path.starts_with("/api/auth/sessions/") {
            (session_id.clone(), "0123456789abcdef01234567".into())
        } else if path.starts_with("/api/service-accounts/") {
            (account_id.clone(), "sa-0123456789abcdef01234567".into())
        } else {
            panic!("route {path} takes an id but the matrix does not know its object: add it");
        }
    };

    // Bob with the console's cookie, Bob from a terminal (a bearer
    // session, ADR 028), and Bob's service account with every scope (ADR
    // 029): the same answers, but that a service account is refused (403
    // `insufficient_scope`, just as for a missing object) on the routes
    // that are people's only.
    let bob_bearer = format!("Bearer {}", stack.bearer(bob.id).await.expose());
    let (bob_sa, bob_secret) = stack
        .service_account(
            &bob,
            &["devices:read", "devices:manage", "devices:remote"],
            &[],
        )
        .await;
    let bob_service = format!(
        "Bearer {}",
        stack.service_token(&bob_sa, &bob_secret).await.expose()
    );
    let mut checked = 0;
    for (door, route) in ["cookie", "bearer", "service"]
        .into_iter()
        .flat_map(|b| route_table().into_iter().map(move |r| (b, r)))
    {
        if !route.path.contains("{id}") || route.public {
            continue;
        }
        let (theirs, missing) = object_for(&route.path);
        let people_only = !(route.path.starts_with("/api/devices/")
            || route.path.starts_with("/api/pairing/codes/"))
            || route.path.ends_with("/ui-ticket");
        let expected = if door == "service" && people_only {
            403
        } else {
            404
        };
        for method in &route.methods {
            let send = |id: &str| {
                let url = fill(&route.path, id).replace("{secret_id}", &secret_id);
                let req = match door {
                    "cookie" => stack.send_as(method.clone(), &bob, &url),
                    token => reqwest::Client::new()
                        .request(method.clone(), stack.api(&url))
                        .header(
                            "authorization",
                            if token == "bearer" {
                                &bob_bearer
                            } else {
                                &bob_service
                            },
                        ),
                };
                req.json(&serde_json::json!({ "name": "pwned", "labels": ["x"] }))
                    .send()
            };
            let a = send(&theirs).await.unwrap();
            let b = send(&missing).await.unwrap();
            assert_eq!(
                a.status(),
                expected,
                "{method} {} on alice's object ({door})",
                route.path
            );
            assert_eq!(
                b.status(),
                expected,
                "{method} {} on a missing object ({door})",
                route.path
            );
            assert_eq!(
                testkit::checks::error_shape(&a.bytes().await.unwrap()),
                testkit::checks::error_shape(&b.bytes().await.unwrap()),
                "{method} {}",
                route.path
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} route/method pairs checked");

    // Alice's objects are unchanged.
    let d = stack.store.device(alice.id, dev.id).await.unwrap().unwrap();
    assert_eq!((d.name.as_str(), d.labels.len()), ("box", 0));
    assert!(
        stack.relay().directory.connection_of(dev.id).is_some(),
        "still connected"
    );
    let pending = stack.get_json(&alice, "/api/pairing/codes").await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1));
    assert_eq!(
        stack
            .send_as(reqwest::Method::GET, &alice, "/api/auth/me")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let alice_audit = stack.get_json(&alice, "/api/audit").await;
    assert!(alice_audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] != "device_renamed"));
    // Bob's log holds his service account and its token, nothing else.
    let bob_audit = stack.get_json(&bob, "/api/audit").await;
    let bob_actions: Vec<&str> = bob_audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        bob_actions,
        ["service_token_issued", "service_account_created"],
        "{bob_audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_searches_filters_sorts_and_pages() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let mut ids = Vec::new();
    for (name, serial) in [
        ("Zeta cam", "SN-100"),
        ("alpha gate", "SN-200"),
        ("Mid_dock", "X-300"),
    ] {
        let d = stack
            .store
            .create_device(
                alice.id,
                &store::NewDevice {
                    name: name.into(),
                    serial: Some(serial.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        ids.push(d.id);
    }
    stack
        .store
        .update_device(alice.id, ids[2], None, Some(&["lab-7".to_owned()]))
        .await
        .unwrap();
    stack
        .store
        .create_device(
            bob.id,
            &store::NewDevice {
                name: "alpha of bob".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (online, _agent) = stack.online_device(alice.id).await;
    let names = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (stack, alice) = (&stack, &alice);
    let list = |q: &str| {
        let path = format!("/api/devices?{q}");
        async move { names(stack.get_json(alice, &path).await) }
    };
    assert_eq!(
        list("sort=name").await,
        ["alpha gate", "box", "Mid_dock", "Zeta cam"]
    );
    assert_eq!(list("sort=-name&limit=2").await, ["Zeta cam", "Mid_dock"]);
    assert_eq!(
        list("sort=-name&limit=2&offset=2").await,
        ["box", "alpha gate"]
    );
    assert_eq!(
        list("q=ALPHA").await,
        ["alpha gate"],
        "any case, and never another owner's"
    );
    assert_eq!(
        list("q=sn-&sort=name").await,
        ["alpha gate", "Zeta cam"],
        "by serial"
    );
    assert_eq!(list("q=lab-7").await, ["Mid_dock"], "by label");
    assert_eq!(
        list("q=_").await,
        ["Mid_dock"],
        "LIKE wildcards are literal"
    );
    assert_eq!(list("q=%25").await, Vec::<String>::new());
    assert_eq!(list("status=online").await, ["box"]);
    assert_eq!(
        list("status=offline&sort=name").await,
        ["alpha gate", "Mid_dock", "Zeta cam"]
    );
    assert_eq!(
        list("health=unknown").await.len(),
        4,
        "never judged is unknown"
    );
    assert_eq!(list("health=critical").await, Vec::<String>::new());
    let _ = online;
    for bad in ["sort=size", "status=maybe", "health=fine"] {
        let res = stack
            .get(alice, &stack.api(&format!("/api/devices?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
}
