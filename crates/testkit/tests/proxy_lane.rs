//! The proxy's lane (ADR 032) against a box that answers in every framing
//! HTTP/1.1 allows and in several it does not: what the caller gets, which
//! streams are kept, and that the lane's answers are the router's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use testkit::{within, AgentHandle, Stack, TestDevice, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted box answers to each path; it closes the connection
/// after `/to-end`, `/short` and `/bad-chunk`.
fn scripted_answer(path: &str) -> &'static [u8] {
    match path {
        "/plain" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-box: plain\r\ncontent-length: 5\r\n\r\nplain",
        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-box: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
        "/to-end" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
        "/interim" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "/empty" => b"HTTP/1.1 204 No Content\r\nx-box: empty\r\n\r\n",
        "/ambiguous" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "/conflict" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        "/short" => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        "/bad-chunk" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        "/extra" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
        // Fields every header rule acts on, in mixed case.
        "/rules" => b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: a=b\r\nStrict-Transport-Security: max-age=1\r\nConnection: X-Hop\r\nX-Hop: 1\r\nCache-Control: no-cache\r\nContent-Security-Policy: default-src *\r\nContent-Disposition: inline\r\nX-Request-Id: from-the-box\r\nCross-Origin-Resource-Policy: cross-origin\r\nKeep-Alive: timeout=5\r\nX-Box: 1\r\nx-box: 2\r\nContent-Length: 2\r\n\r\nok",
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    }
}

/// A box that answers from [`scripted_answer`]; counts its connections.
async fn scripted_box() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    // `/echo` answers with the head the box was sent.
                    let answer = if path.starts_with("/echo") {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                            head.len()
                        )
                        .into_bytes()
                    } else {
                        scripted_answer(&path).to_vec()
                    };
                    if tcp.write_all(&answer).await.is_err() {
                        return;
                    }
                    if matches!(path.as_str(), "/to-end" | "/short" | "/bad-chunk") {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn scripted_stack() -> (Stack, TestUser, TestDevice, Arc<AtomicUsize>, AgentHandle) {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (addr, accepted) = scripted_box().await;
    let dev = stack.device(alice.id).await;
    let agent = stack.agent_to(&dev, addr);
    stack.wait_online(dev.id).await;
    (stack, alice, dev, accepted, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_reads_every_framing_a_box_may_use_and_refuses_ambiguous_ones() {
    let (stack, alice, dev, _, _agent) = scripted_stack().await;
    let before = stack.state.metrics.lane_requests.get();
    let get = |path: &str| stack.get(&alice, &stack.proxy_url(dev.id, path)).send();

    let chunked = get("/chunked").await.unwrap();
    assert_eq!(chunked.status(), 200);
    assert_eq!(chunked.headers()["x-box"], "chunked");
    assert!(chunked.headers().get("x-trailer").is_none());
    assert_eq!(chunked.text().await.unwrap(), "hello, world");

    let to_end = get("/to-end").await.unwrap();
    assert_eq!(to_end.status(), 200);
    assert_eq!(to_end.text().await.unwrap(), "until the end");

    let interim = get("/interim").await.unwrap();
    assert_eq!(interim.status(), 200, "an early hint is passed over");
    assert_eq!(interim.text().await.unwrap(), "ok");

    let empty = get("/empty").await.unwrap();
    assert_eq!(empty.status(), 204);
    assert_eq!(empty.headers()["x-box"], "empty");

    for ambiguous in ["/ambiguous", "/conflict"] {
        let res = get(ambiguous).await.unwrap();
        assert_eq!(res.status(), 502, "{ambiguous}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "device_unreachable", "{ambiguous}");
    }
    for cut in ["/short", "/bad-chunk"] {
        let res = get(cut).await.unwrap();
        assert_eq!(res.status(), 200, "{cut}: the head was fine");
        assert!(
            res.bytes().await.is_err(),
            "{cut}: the body must not pass as whole"
        );
    }

    // None of that cost more than its own stream.
    let plain = get("/plain").await.unwrap();
    assert_eq!(plain.headers()["x-box"], "plain");
    assert_eq!(plain.text().await.unwrap(), "plain");
    assert!(
        stack.state.metrics.lane_requests.get() >= before + 9,
        "the lane answered these"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_streams_whose_answer_ended_cleanly_are_kept() {
    let (stack, alice, dev, accepted, _agent) = scripted_stack().await;
    let get = |path: &str| stack.get(&alice, &stack.proxy_url(dev.id, path)).send();
    for _ in 0..5 {
        assert_eq!(get("/plain").await.unwrap().text().await.unwrap(), "plain");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one stream served all five"
    );
    let opened = stack.state.boxes.streams_opened();

    // A box that sends more than its answer loses its stream.
    assert_eq!(get("/extra").await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(get("/plain").await.unwrap().text().await.unwrap(), "plain");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // So does one whose answer runs to the stream's end.
    assert_eq!(
        get("/to-end").await.unwrap().text().await.unwrap(),
        "until the end"
    );
    assert_eq!(get("/plain").await.unwrap().text().await.unwrap(), "plain");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(stack.state.boxes.streams_opened(), opened + 2);
}

/// Send `requests` on one connection and read until it closes.
async fn exchange_on_one_connection(stack: &Stack, requests: &[String]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(stack.api_addr)
        .await
        .unwrap();
    tcp.write_all(requests.concat().as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within("the answers", tcp.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The answers' heads, each as its sorted header lines without the ones
/// that differ between any two answers (date, request id).
fn heads(raw: &str) -> Vec<Vec<String>> {
    raw.split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| {
            let head = answer.split("\r\n\r\n").next().unwrap();
            let mut lines: Vec<String> = head
                .lines()
                .map(str::to_ascii_lowercase)
                .filter(|l| !l.starts_with("date:") && !l.starts_with("x-request-id:"))
                .collect();
            lines.sort();
            lines
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_answers_as_the_router_does() {
    let (stack, alice, dev, _, _agent) = scripted_stack().await;
    let host = stack.api_addr;
    // Fields the header rules keep from the box, in mixed case, and
    // fields it may see.
    let request = |path: &str, close: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {}\r\nConnection: X-Secret{}\r\nX-Secret: 1\r\nTE: trailers\r\nX-CSRF: 1\r\nForwarded: for=192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nAccept: */*\r\nX-Mixed-Case: v\r\nx-mixed-case: w\r\n\r\n",
            alice.cookie,
            if close { ", close" } else { "" }
        )
    };
    let proxied = |p: &str| format!("/api/devices/{}/proxy{p}", dev.id);
    for path in [
        "/plain",
        "/chunked",
        "/empty",
        "/conflict",
        "/rules",
        "/echo?q=1&r=%2F",
    ] {
        // Pipelined on one connection: both answered by the lane.
        let lane = exchange_on_one_connection(
            &stack,
            &[
                request(&proxied(path), false),
                request(&proxied(path), true),
            ],
        )
        .await;
        // A router request first hands the connection to the router.
        let router = exchange_on_one_connection(
            &stack,
            &[
                request("/api/devices", false),
                request(&proxied(path), true),
            ],
        )
        .await;
        let (lane_raw, router_raw) = (lane, router);
        let (lane, router) = (heads(&lane_raw), heads(&router_raw));
        assert_eq!(lane.len(), 2, "{path}: two answers on the lane");
        assert_eq!(router.len(), 2, "{path}: two answers from the router");
        assert_eq!(
            lane[1], router[1],
            "{path}: the same answer either way: {lane_raw} {router_raw}"
        );
        assert!(
            lane[1].contains(&"connection: close".to_owned()),
            "{path}: {:?}",
            lane[1]
        );
        assert!(!lane[0].contains(&"connection: close".to_owned()));
        if path.starts_with("/echo") {
            // What the box was sent, either way.
            let (lane_sent, router_sent) = (sent_heads(&lane_raw), sent_heads(&router_raw));
            assert_eq!(lane_sent.len(), 2, "{lane_raw}");
            assert_eq!(
                lane_sent[1], router_sent[1],
                "the box is sent the same head"
            );
            assert_eq!(lane_sent[0], lane_sent[1]);
            let sent = &lane_sent[1];
            assert!(
                sent[0].starts_with("get /echo?q=1&r=%2f http/1.1"),
                "{sent:?}"
            );
            for kept in [
                "accept: */*",
                "x-mixed-case: v",
                "x-mixed-case: w",
                "host: localhost",
            ] {
                assert!(sent.contains(&kept.to_owned()), "{kept} in {sent:?}");
            }
            for gone in [
                "cookie",
                "x-secret",
                "te:",
                "x-csrf",
                "forwarded",
                "x-forwarded-for: 192.0.2.2",
            ] {
                assert!(
                    !sent.iter().any(|l| l.starts_with(gone)),
                    "{gone} in {sent:?}"
                );
            }
        }
        if path == "/rules" {
            let answer = &lane[1];
            for kept in [
                "x-box: 1",
                "x-box: 2",
                "cache-control: no-cache",
                "content-disposition: attachment",
                "cross-origin-resource-policy: same-origin",
            ] {
                assert!(answer.contains(&kept.to_owned()), "{kept} in {answer:?}");
            }
            for gone in [
                "set-cookie",
                "strict-transport-security",
                "x-hop",
                "keep-alive",
                "content-security-policy: default-src *",
                "x-request-id: from-the-box",
            ] {
                assert!(
                    !answer.iter().any(|l| l.starts_with(gone)),
                    "{gone} in {answer:?}"
                );
            }
        }
    }
}

/// The request heads that `/echo` answered with, each as its sorted lines
/// (lowercased), the request line first.
fn sent_heads(raw: &str) -> Vec<Vec<String>> {
    raw.split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|answer| answer.split_once("\r\n\r\n").map(|(_, body)| body))
        .map(|body| {
            let body = body.to_ascii_lowercase();
            let mut lines = body.split("\r\n");
            let first = lines.next().unwrap_or_default().to_owned();
            let mut rest: Vec<String> = lines
                .filter(|l| !l.is_empty() && !l.starts_with("get ") && !l.starts_with("http/1.1"))
                .map(str::to_owned)
                .collect();
            rest.sort();
            std::iter::once(first).chain(rest).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_a_body_an_upgrade_or_from_a_browser_are_the_routers() {
    let (stack, alice, dev, _, _agent) = scripted_stack().await;
    let target = format!("/api/devices/{}/proxy/plain", dev.id);
    let host = stack.api_addr;
    let cookie = &alice.cookie;
    let cases = [
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\ncontent-length: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nconnection: upgrade, close\r\nupgrade: websocket\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nsec-fetch-site: none\r\nconnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\norigin: http://{host}\r\nconnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.0\r\nhost: {host}\r\ncookie: {cookie}\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"),
        format!("GET /api/devices/{}%2D/proxy/plain HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n", dev.id),
    ];
    let before = stack.state.metrics.lane_requests.get();
    for case in &cases {
        let answer = exchange_on_one_connection(&stack, std::slice::from_ref(case)).await;
        assert!(answer.starts_with("HTTP/1."), "{case:?} got {answer:?}");
    }
    assert_eq!(
        stack.state.metrics.lane_requests.get(),
        before,
        "the router answered every one"
    );
    // A head the lane read whole before it saw it was a browser's goes to
    // the router whole, and so do the bytes after it: the router answers
    // both requests, in order.
    let pair = [
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nsec-fetch-mode: cors\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"),
    ];
    let answer = exchange_on_one_connection(&stack, &pair).await;
    let statuses: Vec<&str> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|a| a.get(..3).unwrap_or(a))
        .collect();
    assert_eq!(statuses, ["403", "200"], "{answer:?}");
    assert!(answer.contains("use_device_origin"), "{answer:?}");
    assert!(answer.ends_with("plain"), "{answer:?}");
    assert_eq!(stack.state.metrics.lane_requests.get(), before);
    // And the lane does take the plain request.
    let plain = format!(
        "GET {target} HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"
    );
    let answer = exchange_on_one_connection(&stack, &[plain]).await;
    assert!(answer.ends_with("plain"), "{answer:?}");
    assert_eq!(stack.state.metrics.lane_requests.get(), before + 1);
}

/// The header timeout runs from the end of each answer, not from the
/// connection's start: requests that come within it, each later than the
/// timeout after the first, are all served by the lane; then silence ends
/// the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lanes_header_timeout_runs_from_each_answer() {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
    let stack = Stack::start_with(testkit::StackOptions {
        api_serve: edge_core::serve::ServeOptions {
            header_read_timeout: TIMEOUT,
            ..edge_core::serve::ServeOptions::default()
        },
        ..testkit::StackOptions::default()
    })
    .await;
    let alice = stack.user("alice").await;
    let (addr, _) = scripted_box().await;
    let dev = stack.device(alice.id).await;
    let _agent = stack.agent_to(&dev, addr);
    stack.wait_online(dev.id).await;
    let request = format!(
        "GET /api/devices/{}/proxy/plain HTTP/1.1\r\nhost: {}\r\ncookie: {}\r\n\r\n",
        dev.id, stack.api_addr, alice.cookie
    );
    let before = stack.state.metrics.lane_requests.get();
    let mut tcp = tokio::net::TcpStream::connect(stack.api_addr)
        .await
        .unwrap();
    let opened = std::time::Instant::now();
    for n in 0..3 {
        if n > 0 {
            // The time passing is what is tested: 0.6 of the timeout
            // between answers, so the third request comes after the
            // timeout counted from the connection's start.
            tokio::time::sleep(TIMEOUT.mul_f32(0.6)).await;
        }
        tcp.write_all(request.as_bytes()).await.unwrap();
        let answer = within("an answer", testkit::checks::read_response(&mut tcp)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "request {n}: {answer:?}"
        );
        assert!(answer.ends_with("plain"), "request {n}: {answer:?}");
    }
    assert!(
        opened.elapsed() > TIMEOUT,
        "the last request came late enough"
    );
    assert_eq!(stack.state.metrics.lane_requests.get(), before + 3);
    // Silence: the lane ends the connection by itself.
    let mut rest = Vec::new();
    within("the idle connection closed", tcp.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
