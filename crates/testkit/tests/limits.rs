//! Per-session limits and liveness: a silent device is declared dead after
//! the idle timeout, a client that never finishes its handshake is cut off,
//! and a session carries at most its configured number of streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use directory::SessionView;
use remote_proxy::config::Limits;
use std::time::Duration;
use testkit::{within, Stack, StackOptions};
use tokio::io::AsyncReadExt;

fn tight() -> StackOptions {
    StackOptions {
        limits: Limits {
            idle_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_millis(500),
            max_streams_per_session: 2,
            drain_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_device_is_removed_after_the_idle_timeout() {
    let stack = Stack::start_with(tight()).await;
    let owner = stack.user("owner").await;
    let dev = stack.device(owner.id).await;
    // Connected but never reads or answers anything.
    let _ws = stack.dial_raw(&dev.token).await.unwrap();
    stack.wait_online(dev.id).await;
    stack.wait_offline(dev.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_request_is_disconnected() {
    let stack = Stack::start_with(tight()).await;
    let addr = stack
        .tunnel_url()
        .trim_start_matches("ws://")
        .trim_end_matches("/tunnel")
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 256];
    // The relay closes the connection (EOF or reset) instead of waiting
    // forever; without the timeout this read would hang and `within` fails.
    within("handshake timeout", async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_at_most_its_stream_limit() {
    // Pings every 100 ms keep the agent's tunnel alive under the 500 ms idle
    // timeout for as long as the test takes.
    let mut opts = tight();
    opts.limits.ping_interval = Duration::from_millis(100);
    let stack = Stack::start_with(opts).await;
    let owner = stack.user("owner").await;
    let (dev, _agent) = stack.online_device(owner.id).await;
    let dir = stack.relay().directory.clone();
    let a = dir.open_stream(dev.id).await.unwrap();
    let b = dir.open_stream(dev.id).await.unwrap();
    match dir.open_stream(dev.id).await {
        Err(directory::DirectoryError::Stream(why)) => {
            assert_eq!(why, "too many concurrent streams")
        }
        Err(other) => panic!("third stream refused for another reason: {other}"),
        Ok(_) => panic!("third stream must be refused"),
    }
    drop(a);
    assert!(
        dir.open_stream(dev.id).await.is_ok(),
        "a freed slot is reusable"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_box_connections_give_their_streams_to_a_new_request() {
    idle_connections_give_way(false).await;
}

/// As above, with requests that carry a body: the pooled client keeps
/// their connections, which are idle only once their answers ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_box_connections_give_their_streams_to_a_new_request() {
    idle_connections_give_way(true).await;
}

/// Two requests at once leave two kept connections, the session's every
/// stream; a new one that needs a stream of its own still gets one. With
/// `with_body`, the two carry a body (the pooled client), else none (the
/// streams `box_wire` keeps).
async fn idle_connections_give_way(with_body: bool) {
    let mut opts = tight();
    opts.limits.ping_interval = Duration::from_millis(100);
    // Kept connections stay for the whole test unless told to end.
    opts.settings_hook = |s| s.box_idle = Duration::from_secs(60);
    let stack = Stack::start_with(opts).await;
    let owner = stack.user("owner").await;
    let (dev, _agent) = stack.online_device(owner.id).await;
    // Two requests at once leave two kept connections: both of the
    // session's streams.
    // A POST to the delay is answered once its body was read, so its
    // connection is kept (a box that answers before reading the body closes
    // it); the delay makes the two overlap, so neither reuses the other's.
    let (slow, upload) = (
        stack.proxy_url(dev.id, "/test/delay?ms=300"),
        format!("/api/devices/{}/proxy/test/delay?ms=300", dev.id),
    );
    let ask = || {
        if with_body {
            stack
                .send_as(reqwest::Method::POST, &owner, &upload)
                .body("x")
                .send()
        } else {
            stack.get(&owner, &slow).send()
        }
    };
    let (a, b) = tokio::join!(ask(), ask());
    assert_eq!(
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16()),
        (200, 200)
    );
    assert_eq!(stack.state.boxes.streams_opened(), 2);
    let dir = stack.relay().directory.clone();
    assert!(
        matches!(
            dir.open_stream(dev.id).await,
            Err(directory::DirectoryError::Stream(_))
        ),
        "the kept connections hold the session's every stream"
    );
    // A service account's requests never share the person's connections:
    // its request needs a stream of its own, and gets one.
    let (id, secret) = stack
        .service_account(&owner, &["devices:remote"], &[])
        .await;
    let token = stack.service_token(&id, &secret).await;
    let res = stack
        .http
        .get(stack.proxy_url(dev.id, "/api/info"))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "a new request is not starved by kept ones"
    );
    assert_eq!(stack.state.boxes.streams_opened(), 3);
}
