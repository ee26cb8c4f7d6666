//! The relay under bad input and churn: credentials checked before the
//! upgrade, protocol violations ending one session only, newest connection
//! winning, graceful shutdown with GoAway, the internal port's secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use edge_core::DeviceToken;
use futures_util::{SinkExt, StreamExt};
use testkit::{checks, within, Stack};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tunnel::dial::DialError;

/// Read until the relay closes; returns the close code and any binary bytes
/// received before it.
async fn read_until_close(ws: &mut tunnel::dial::DialedWs) -> (Option<CloseCode>, Vec<u8>) {
    let mut bytes = Vec::new();
    loop {
        match within("relay close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => return (frame.map(|f| f.code), bytes),
            Some(Ok(Message::Binary(b))) => bytes.extend_from_slice(&b),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (None, bytes),
        }
    }
}

/// A raw device, connected and registered, to send bad input from.
async fn raw_device(stack: &Stack) -> (testkit::TestDevice, tunnel::dial::DialedWs) {
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    let ws = stack.dial_raw(&dev.token).await.unwrap();
    stack.wait_online(dev.id).await;
    (dev, ws)
}

/// A healthy device, used to show that other sessions keep working.
async fn healthy_neighbour(
    stack: &Stack,
) -> (testkit::TestUser, testkit::TestDevice, testkit::AgentHandle) {
    let user = stack.user("neighbour").await;
    let (dev, agent) = stack.online_device(user.id).await;
    (user, dev, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_one_401_body_before_the_upgrade() {
    let stack = Stack::start().await;
    let owner = stack.user("owner").await;
    let revoked = stack.device(owner.id).await;
    stack.store.revoke_credentials(revoked.id).await.unwrap();

    let mut bodies = Vec::new();
    // Wrong token, revoked token.
    for token in [DeviceToken::generate(), revoked.token.clone()] {
        match stack.dial_raw(&token).await {
            Err(DialError::Refused { status: 401, .. }) => {}
            other => panic!("expected 401, got {:?}", other.map(|_| "upgrade")),
        }
        let res = stack
            .http
            .get(format!(
                "http://{}/tunnel",
                stack
                    .tunnel_url()
                    .trim_start_matches("ws://")
                    .trim_end_matches("/tunnel")
            ))
            .header("authorization", format!("Bearer {}", token.expose()))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        bodies.push(testkit::checks::error_shape(&res.bytes().await.unwrap()));
    }
    let tunnel_http = stack.tunnel_url().replacen("ws://", "http://", 1);
    // Missing, malformed, and a token in the query string.
    let valid = stack.device(owner.id).await;
    for req in [
        stack.http.get(&tunnel_http),
        stack
            .http
            .get(&tunnel_http)
            .header("authorization", "Basic abc"),
        stack
            .http
            .get(format!("{tunnel_http}?token={}", valid.token.expose())),
    ] {
        let res = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        bodies.push(testkit::checks::error_shape(&res.bytes().await.unwrap()));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "bodies differ: {bodies:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(!bodies[0].contains(valid.token.expose()));
    assert!(stack.relay().directory.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_message_closes_1003_and_ends_only_that_session() {
    let stack = Stack::start().await;
    let (user, good, _agent) = healthy_neighbour(&stack).await;
    let (bad, mut ws) = raw_device(&stack).await;

    ws.send(Message::Text("hello".into())).await.unwrap();
    let (code, _) = read_until_close(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Unsupported));
    stack.wait_offline(bad.id).await;
    assert_eq!(checks::info(&stack, &user, good.id).await["model"], "SIM-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_yamux_header_gets_goaway_protocol_error_and_ends_only_that_session() {
    let stack = Stack::start().await;
    let (user, good, _agent) = healthy_neighbour(&stack).await;
    let (bad, mut ws) = raw_device(&stack).await;

    ws.send(Message::Binary(vec![0xEE; 12].into()))
        .await
        .unwrap();
    let (code, bytes) = read_until_close(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Protocol));
    assert!(
        bytes.ends_with(&tunnel::contract::GO_AWAY_PROTOCOL_ERROR),
        "got {bytes:?}"
    );
    stack.wait_offline(bad.id).await;
    assert_eq!(checks::info(&stack, &user, good.id).await["model"], "SIM-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_1009_and_ends_only_that_session() {
    let stack = Stack::start().await;
    let (user, good, _agent) = healthy_neighbour(&stack).await;
    let (bad, mut ws) = raw_device(&stack).await;

    let big = vec![0u8; tunnel::contract::MAX_MESSAGE_SIZE + 1];
    // The relay may close mid-send; only its close code matters.
    let _ = ws.send(Message::Binary(big.into())).await;
    let (code, _) = read_until_close(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Size));
    stack.wait_offline(bad.id).await;
    assert_eq!(checks::info(&stack, &user, good.id).await["model"], "SIM-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_wins_and_the_first_gets_goaway() {
    let stack = Stack::start().await;
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    let mut first = stack.dial_raw(&dev.token).await.unwrap();
    stack.wait_online(dev.id).await;
    let first_conn = stack.relay().directory.connection_of(dev.id).unwrap();

    // The second connection is a real agent, so the proxy works through it.
    let _agent = stack.agent(&dev);
    let dir = stack.relay().directory.clone();
    within(
        "replacement",
        dir.wait_until(|d| d.connection_of(dev.id).is_some_and(|c| c != first_conn)),
    )
    .await;

    let (code, bytes) = read_until_close(&mut first).await;
    assert_eq!(code, Some(CloseCode::Normal));
    // GoAway(0): type 3, code 0.
    assert!(
        bytes
            .windows(12)
            .any(|w| w == [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        "no GoAway(0) in {bytes:?}"
    );
    assert_eq!(stack.relay().directory.len(), 1);
    let sessions: serde_json::Value = testkit::checks::json_answer(
        stack
            .http
            .get(stack.internal_url("/internal/v1/sessions"))
            .bearer_auth(stack.internal_secret().expose()),
    )
    .await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1));
    assert_eq!(sessions[0]["device_id"], dev.id.to_string());
    assert_eq!(sessions[0]["owner_id"], owner.id.to_string());
    assert_eq!(owned_ids(&stack, owner.id).await, vec![dev.id.to_string()]);
    assert!(sessions[0]["agent_version"]
        .as_str()
        .unwrap()
        .starts_with("edge-agent/"));
    assert_eq!(checks::info(&stack, &owner, dev.id).await["model"], "SIM-1");
}

/// `GET /internal/v1/sessions?owner=` on the internal port.
async fn owned_sessions(stack: &Stack, owner: &str) -> reqwest::Response {
    stack
        .http
        .get(stack.internal_url(&format!("/internal/v1/sessions?owner={owner}")))
        .bearer_auth(stack.internal_secret().expose())
        .send()
        .await
        .unwrap()
}

async fn owned_ids(stack: &Stack, owner: edge_core::UserId) -> Vec<String> {
    let res = owned_sessions(stack, &owner.to_string()).await;
    assert_eq!(res.status(), 200);
    let list: Vec<serde_json::Value> = res.json().await.unwrap();
    let mut ids: Vec<String> = list
        .iter()
        .map(|s| {
            assert_eq!(s["owner_id"], owner.to_string());
            s["device_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_per_owner_and_leave_the_list_on_disconnect() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (a1, agent_a1) = stack.online_device(alice.id).await;
    let (a2, agent_a2) = stack.online_device(alice.id).await;
    let (b1, agent_b1) = stack.online_device(bob.id).await;
    assert_eq!(stack.relay().directory.indexed_owners(), 2);
    let mut alices = vec![a1.id.to_string(), a2.id.to_string()];
    alices.sort();
    assert_eq!(owned_ids(&stack, alice.id).await, alices);
    assert_eq!(owned_ids(&stack, bob.id).await, vec![b1.id.to_string()]);
    let nobody = edge_core::UserId::new();
    assert!(owned_ids(&stack, nobody).await.is_empty());
    assert_eq!(owned_sessions(&stack, "not-a-uuid").await.status(), 400);

    agent_a1.stop().await;
    stack.wait_offline(a1.id).await;
    assert_eq!(owned_ids(&stack, alice.id).await, vec![a2.id.to_string()]);
    agent_a2.stop().await;
    agent_b1.stop().await;
    stack.wait_offline(a2.id).await;
    stack.wait_offline(b1.id).await;
    assert!(owned_ids(&stack, bob.id).await.is_empty());
    assert_eq!(stack.relay().directory.indexed_owners(), 0, "index emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_then_close_1000() {
    let mut stack = Stack::start().await;
    let (_dev, mut ws) = raw_device(&stack).await;
    let ((), (code, bytes)) = tokio::join!(stack.stop_relay(), read_until_close(&mut ws));
    assert_eq!(code, Some(CloseCode::Normal));
    assert!(
        bytes.ends_with(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        "got {bytes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_port_requires_the_shared_secret() {
    let stack = Stack::start().await;
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    let paths = [
        "/internal/v1/sessions".to_owned(),
        format!("/internal/v1/sessions/{}", dev.id),
        directory::mux::MUX_PATH.to_owned(),
    ];
    for path in &paths {
        for auth in [None, Some("wrong")] {
            let mut req = stack.http.get(stack.internal_url(path));
            if let Some(a) = auth {
                req = req.bearer_auth(a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 401, "{path} with {auth:?}");
        }
    }
    let ok = stack
        .http
        .get(stack.internal_url(&paths[1]))
        .bearer_auth(stack.internal_secret().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 404);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["error"]["code"], "device_offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_through_the_view_disconnects_the_device() {
    let stack = Stack::start().await;
    let (dev, mut ws) = raw_device(&stack).await;
    assert!(stack
        .state
        .directory
        .lookup(dev.id)
        .await
        .unwrap()
        .is_some());
    assert!(stack.state.directory.close(dev.id).await.unwrap());
    let (code, _) = read_until_close(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Normal));
    stack.wait_offline(dev.id).await;
    assert!(stack
        .state
        .directory
        .lookup(dev.id)
        .await
        .unwrap()
        .is_none());
    assert!(!stack.state.directory.close(dev.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_too_fast_gets_429_with_retry_after() {
    let stack = Stack::start_with(testkit::StackOptions {
        limits: remote_proxy::config::Limits {
            reconnect_burst: 2,
            ..remote_proxy::config::Limits::default()
        },
        ..testkit::StackOptions::default()
    })
    .await;
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    let other = stack.device(owner.id).await;
    let _first = stack.dial_raw(&dev.token).await.unwrap();
    let _second = stack.dial_raw(&dev.token).await.unwrap();
    match stack.dial_raw(&dev.token).await {
        Err(DialError::Refused {
            status: 429,
            retry_after,
        }) => {
            assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}")
        }
        other => panic!("expected 429, got {:?}", other.map(|_| "upgrade")),
    }
    // Another device is not limited by this one's attempts.
    assert!(stack.dial_raw(&other.token).await.is_ok());
}

/// Status and body of a `GET /tunnel` with `token`, sent from the loopback
/// address `from`.
async fn tunnel_attempt(stack: &Stack, from: [u8; 4], token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let mut c = socket
        .connect(stack.relay.as_ref().unwrap().tunnel_addr)
        .await
        .unwrap();
    let req = format!(
        "GET /tunnel HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {token}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = within("relay answer", c.read(&mut chunk)).await.unwrap();
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        let head_done = text.contains("\r\n\r\n");
        if n == 0 || head_done && (text.starts_with("HTTP/1.1 101") || text.ends_with('}')) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_spraying_bad_tokens_is_held_off_before_the_store_is_asked() {
    let stack = Stack::start().await;
    let bad = || DeviceToken::generate().expose().to_owned();
    for _ in 0..remote_proxy::BAD_CREDENTIAL_BURST {
        assert_eq!(tunnel_attempt(&stack, [127, 0, 0, 1], &bad()).await.0, 401);
    }
    let mark = testkit::statements::mark();
    let (status, answer) = tunnel_attempt(&stack, [127, 0, 0, 1], &bad()).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer.contains("too_many_bad_credentials"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    let looked_up: Vec<_> = testkit::statements::since(mark)
        .into_iter()
        .filter(|s| s.contains("device_credentials"))
        .collect();
    assert!(looked_up.is_empty(), "the store was asked: {looked_up:?}");
    // Another address still has its own bucket, and a good device there
    // connects.
    assert_eq!(tunnel_attempt(&stack, [127, 0, 0, 2], &bad()).await.0, 401);
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    let (status, answer) = tunnel_attempt(&stack, [127, 0, 0, 2], dev.token.expose()).await;
    assert_eq!(status, 101, "{answer}");
}
