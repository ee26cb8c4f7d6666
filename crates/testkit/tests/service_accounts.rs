//! Service accounts (ADR 029) through the real routers: the token
//! endpoint's two client authentications (`client_secret_basic`,
//! `private_key_jwt` with single-use assertions), scopes, the label
//! selector, rotation with overlap, revocation, expiry, deletion, and the
//! audit rows made under the account and its owner.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use edge_core::Secret;
use testkit::{checks, within, Stack};

async fn status_and_body(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// `method path` with a bearer token: status and JSON body.
async fn as_token(
    stack: &Stack,
    token: &Secret,
    method: reqwest::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    let res = stack
        .http
        .request(method, stack.api(path))
        .bearer_auth(token.expose())
        .json(&serde_json::json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    status_and_body(res).await
}

/// A device of `owner`'s carrying `labels`, online.
async fn labelled_device(
    stack: &Stack,
    owner: edge_core::UserId,
    labels: &[&str],
) -> (testkit::TestDevice, testkit::AgentHandle) {
    let (dev, agent) = stack.online_device(owner).await;
    let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    stack
        .store
        .update_device(owner, dev.id, None, Some(&labels))
        .await
        .unwrap()
        .unwrap();
    (dev, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sees_only_its_selector_and_does_only_what_its_scopes_allow() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (berlin, _a1) = labelled_device(&stack, alice.id, &["site=berlin"]).await;
    let (paris, _a2) = labelled_device(&stack, alice.id, &["site=paris"]).await;
    let (bobs, _a3) = stack.online_device(bob.id).await;

    let (reader, secret) = stack
        .service_account(&alice, &["devices:read"], &["site=berlin"])
        .await;
    let token = stack.service_token(&reader, &secret).await;

    // The list and the reads show the selector's devices only; the others
    // (alice's outside it, bob's) are as missing as a made-up id.
    let (s, list) = as_token(&stack, &token, reqwest::Method::GET, "/api/devices").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [berlin.id.to_string()]);
    let get = |id: String| {
        let (stack, token) = (&stack, &token);
        async move {
            as_token(
                stack,
                token,
                reqwest::Method::GET,
                &format!("/api/devices/{id}"),
            )
            .await
        }
    };
    assert_eq!(get(berlin.id.to_string()).await.0, 200);
    let missing = get(edge_core::DeviceId::new().to_string()).await;
    assert_eq!(missing.0, 404);
    let shape = |(status, body): &(u16, serde_json::Value)| {
        (*status, checks::error_shape(body.to_string().as_bytes()))
    };
    for hidden in [paris.id, bobs.id] {
        assert_eq!(
            shape(&get(hidden.to_string()).await),
            shape(&missing),
            "{hidden}"
        );
        let (s, _) = as_token(
            &stack,
            &token,
            reqwest::Method::GET,
            &format!("/api/devices/{hidden}/telemetry"),
        )
        .await;
        assert_eq!(s, 404);
    }

    // Beyond its scopes: 403 insufficient_scope, and nothing changes.
    for (method, path) in [
        (
            reqwest::Method::PATCH,
            format!("/api/devices/{}", berlin.id),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/devices/{}", berlin.id),
        ),
        (reqwest::Method::POST, "/api/pairing/codes".to_owned()),
        (
            reqwest::Method::GET,
            format!("/api/devices/{}/proxy/api/info", berlin.id),
        ),
        (reqwest::Method::GET, "/api/webhooks".to_owned()),
        (reqwest::Method::GET, "/api/service-accounts".to_owned()),
        (reqwest::Method::GET, "/api/auth/sessions".to_owned()),
        (reqwest::Method::GET, "/api/audit".to_owned()),
        (
            reqwest::Method::POST,
            format!("/api/devices/{}/ui-ticket", berlin.id),
        ),
    ] {
        let (s, body) = as_token(&stack, &token, method.clone(), &path).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (403, Some("insufficient_scope")),
            "{method} {path}"
        );
    }
    let d = stack
        .store
        .device(alice.id, berlin.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.name, "box");

    // A narrower scope can be asked for; a wider one cannot.
    let (s, body) = status_and_body(
        stack
            .token_request(&reader, secret.expose(), &[("scope", "devices:manage")])
            .await,
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_scope")));

    // Remote access with the scope, within the selector only; audited
    // under the account and its owner.
    let (remote, rsecret) = stack
        .service_account(
            &alice,
            &["devices:read", "devices:remote", "devices:manage"],
            &["site=berlin"],
        )
        .await;
    let narrow = stack
        .token_request(&remote, rsecret.expose(), &[("scope", "devices:remote")])
        .await;
    let (s, body) = status_and_body(narrow).await;
    assert_eq!((s, body["scope"].as_str()), (200, Some("devices:remote")));
    let rtoken = Secret::new(body["access_token"].as_str().unwrap());
    let (s, info) = as_token(
        &stack,
        &rtoken,
        reqwest::Method::GET,
        &format!("/api/devices/{}/proxy/api/info", berlin.id),
    )
    .await;
    assert_eq!((s, info["model"].as_str()), (200, Some("SIM-1")));
    let (s, _) = as_token(
        &stack,
        &rtoken,
        reqwest::Method::GET,
        &format!("/api/devices/{}/proxy/api/info", paris.id),
    )
    .await;
    assert_eq!(s, 404, "outside the selector");
    // This token asked for remote access only: no reads.
    assert_eq!(get_with(&stack, &rtoken, "/api/devices").await, 403);

    let events = stack
        .audit_events_until(alice.id, "the remote access audit row", |events| {
            events.iter().any(|e| {
                e.action == "remote_access_opened"
                    && e.service_account.as_deref() == Some(remote.as_str())
            })
        })
        .await;
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e.action == "service_token_issued")
        .collect();
    assert_eq!(issued.len(), 2, "two tokens issued");
    assert!(issued
        .iter()
        .all(|e| e.detail["auth"] == "client_secret_basic"));
    assert!(events
        .iter()
        .any(|e| e.action == "service_account_created" && e.service_account.is_none()));
    // The owner's own browser access is still audited as the owner's.
    let _ = checks::info(&stack, &alice, berlin.id).await;
    assert!(
        stack.audit_actions(bob.id).await.is_empty(),
        "bob saw nothing"
    );
}

async fn get_with(stack: &Stack, token: &Secret, path: &str) -> u16 {
    as_token(stack, token, reqwest::Method::GET, path).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_with_overlap_revoke_at_once_and_accounts_expire() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (id, first) = stack.service_account(&alice, &["devices:read"], &[]).await;

    // Wrong or unknown credentials: one answer, with a Basic challenge.
    for (cid, sec) in [
        (id.as_str(), "edge_sk_wrong"),
        ("sa-nobody", first.expose()),
    ] {
        let res = stack.token_request(cid, sec, &[]).await;
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        assert_eq!(res.headers()["cache-control"], "no-store");
        let (s, body) = status_and_body(res).await;
        assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));
        assert!(!body.to_string().contains(first.expose()));
    }
    let old_token = stack.service_token(&id, &first).await;

    // Rotation with an hour's overlap: both secrets work.
    let rotated = stack
        .send_as(
            reqwest::Method::POST,
            &alice,
            &format!("/api/service-accounts/{id}/secrets"),
        )
        .json(&serde_json::json!({"overlap_secs": 3600}))
        .send()
        .await
        .unwrap();
    let (s, r) = status_and_body(rotated).await;
    assert_eq!(s, 201);
    let second = Secret::new(r["client_secret"].as_str().unwrap());
    stack.service_token(&id, &first).await;
    stack.service_token(&id, &second).await;
    let account = stack
        .get_json(&alice, &format!("/api/service-accounts/{id}"))
        .await;
    let secrets = account["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(
        !account.to_string().contains(first.expose()),
        "no secret in reads"
    );
    let first_id = secrets.iter().find(|s| !s["expires_at"].is_null()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Revoking the first secret ends it and the tokens issued with it.
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &alice,
            &format!("/api/service-accounts/{id}/secrets/{first_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        stack.token_request(&id, first.expose(), &[]).await.status(),
        401
    );
    assert_eq!(get_with(&stack, &old_token, "/api/devices").await, 401);
    let new_token = stack.service_token(&id, &second).await;
    assert_eq!(get_with(&stack, &new_token, "/api/devices").await, 200);

    // A rotation without overlap stops the older secret at once.
    let res = stack
        .send_as(
            reqwest::Method::POST,
            &alice,
            &format!("/api/service-accounts/{id}/secrets"),
        )
        .json(&serde_json::json!({"overlap_secs": 0}))
        .send()
        .await
        .unwrap();
    let (_, r) = status_and_body(res).await;
    let third = Secret::new(r["client_secret"].as_str().unwrap());
    assert_eq!(
        stack
            .token_request(&id, second.expose(), &[])
            .await
            .status(),
        401
    );
    stack.service_token(&id, &third).await;

    // Deleting the account ends its tokens.
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &alice,
            &format!("/api/service-accounts/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(get_with(&stack, &new_token, "/api/devices").await, 401);
    assert_eq!(
        stack.token_request(&id, third.expose(), &[]).await.status(),
        401
    );

    // An account that expires: tokens no longer than its life, none after.
    let expires_at = edge_core::time::now_ms() + 1500;
    let res = stack
        .send_as(reqwest::Method::POST, &alice, "/api/service-accounts")
        .json(&serde_json::json!({"name": "short", "scopes": ["devices:read"], "expires_at": expires_at}))
        .send()
        .await
        .unwrap();
    let (s, made) = status_and_body(res).await;
    assert_eq!(s, 201);
    let (sid, ssecret) = (
        made["client_id"].as_str().unwrap().to_owned(),
        made["client_secret"].as_str().unwrap().to_owned(),
    );
    let (s, body) = status_and_body(stack.token_request(&sid, &ssecret, &[]).await).await;
    assert_eq!(s, 200);
    assert!(body["expires_in"].as_i64().unwrap() <= 2, "{body}");
    let token = Secret::new(body["access_token"].as_str().unwrap());
    within("the account's expiry", async {
        while edge_core::time::now_ms() <= expires_at {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(stack.token_request(&sid, &ssecret, &[]).await.status(), 401);
    assert_eq!(get_with(&stack, &token, "/api/devices").await, 401);

    let actions = stack.audit_actions(alice.id).await;
    for a in [
        "service_account_created",
        "service_secret_rotated",
        "service_secret_revoked",
        "service_account_deleted",
        "service_token_issued",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

/// A P-256 key pair: the signing key and its public JWK.
fn key_pair() -> (p256::ecdsa::SigningKey, serde_json::Value) {
    let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = sk.verifying_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "ci-1",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    });
    (sk, jwk)
}

/// A client assertion (RFC 7523) signed with `sk`.
fn assertion(sk: &p256::ecdsa::SigningKey, client: &str, aud: &str, jti: &str) -> String {
    use p256::ecdsa::signature::Signer;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = edge_core::time::now_ms() / 1000;
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "ci-1"});
    let claims = serde_json::json!({
        "iss": client, "sub": client, "aud": aud, "jti": jti, "iat": now, "exp": now + 60,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

async fn with_assertion(stack: &Stack, jwt: &str) -> (u16, serde_json::Value) {
    let res = stack
        .http
        .post(stack.api("/api/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt),
        ])
        .send()
        .await
        .unwrap();
    status_and_body(res).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_assertions_work_once_for_the_registered_key() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (id, _) = stack.service_account(&alice, &["devices:read"], &[]).await;
    let (sk, jwk) = key_pair();
    let aud = stack.api("/api/oauth/token");

    // No key registered yet: refused.
    let (s, body) = with_assertion(&stack, &assertion(&sk, &id, &aud, "j-0")).await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));

    // A private key is refused at registration.
    let mut private = jwk.clone();
    private["d"] = serde_json::json!("c2VjcmV0");
    let res = stack
        .send_as(
            reqwest::Method::PUT,
            &alice,
            &format!("/api/service-accounts/{id}/key"),
        )
        .json(&serde_json::json!({ "public_jwk": private }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = stack
        .send_as(
            reqwest::Method::PUT,
            &alice,
            &format!("/api/service-accounts/{id}/key"),
        )
        .json(&serde_json::json!({ "public_jwk": jwk }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let jwt = assertion(&sk, &id, &aud, "j-1");
    let (s, body) = with_assertion(&stack, &jwt).await;
    assert_eq!(s, 200, "{body}");
    let token = Secret::new(body["access_token"].as_str().unwrap());
    assert_eq!(get_with(&stack, &token, "/api/devices").await, 200);
    // The same assertion again is a replay.
    assert_eq!(with_assertion(&stack, &jwt).await.0, 401);
    // Another audience, or another key: refused.
    assert_eq!(
        with_assertion(
            &stack,
            &assertion(&sk, &id, "https://elsewhere/token", "j-2")
        )
        .await
        .0,
        401
    );
    let (other, _) = key_pair();
    assert_eq!(
        with_assertion(&stack, &assertion(&other, &id, &aud, "j-3"))
            .await
            .0,
        401
    );
    // A fresh assertion from the right key works again.
    assert_eq!(
        with_assertion(&stack, &assertion(&sk, &id, &aud, "j-4"))
            .await
            .0,
        200
    );
    let events = stack.store.audit_events(alice.id, 50, 0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "service_token_issued" && e.detail["auth"] == "private_key_jwt")
            .count(),
        2
    );
}
