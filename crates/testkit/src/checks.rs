//! The request battery run through the proxy route against any device (the
//! Rust agent with the sim box, or the Go peer): JSON, a large download and
//! upload with SHA-256, a WebSocket echo, and many concurrent requests;
//! and reading one raw HTTP/1.1 response off a socket.

use crate::{within, Stack, TestUser};
use edge_core::DeviceId;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Send `req` (bounded) and read its answer's JSON body, whatever the
/// status.
pub async fn json_answer(req: reqwest::RequestBuilder) -> serde_json::Value {
    within("a JSON answer", async {
        req.send()
            .await
            .expect("the request is answered")
            .json()
            .await
            .expect("the answer is JSON")
    })
    .await
}

/// `GET /api/info` through the proxy.
pub async fn info(stack: &Stack, user: &TestUser, device: DeviceId) -> serde_json::Value {
    let res = within(
        "info",
        stack
            .get(user, &stack.proxy_url(device, "/api/info"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Download `n` pattern bytes through the proxy; returns (length, sha256 hex).
pub async fn download(stack: &Stack, user: &TestUser, device: DeviceId, n: u64) -> (u64, String) {
    download_from(stack, user, device, &format!("/test/download?bytes={n}")).await
}

/// [`download`] of the box's `path` (a download with more parameters).
pub async fn download_from(
    stack: &Stack,
    user: &TestUser,
    device: DeviceId,
    path: &str,
) -> (u64, String) {
    use sha2::Digest;
    let url = stack.proxy_url(device, path);
    let res = within("download head", stack.get(user, &url).send())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    let mut body = res.bytes_stream();
    while let Some(chunk) = within("download chunk", body.next()).await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (total, hex::encode(hasher.finalize()))
}

/// Upload `n` pattern bytes as a streamed body; returns what the box saw.
pub async fn upload(stack: &Stack, user: &TestUser, device: DeviceId, n: u64) -> (u64, String) {
    const CHUNK: u64 = 256 * 1024;
    let chunks = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= n {
            return None;
        }
        let len = (n - off).min(CHUNK) as usize;
        let mut buf = vec![0u8; len];
        sim_box::pattern(off, &mut buf);
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
            off + len as u64,
        ))
    });
    let res = within(
        "upload",
        stack
            .http
            .post(stack.proxy_url(device, "/test/upload"))
            .header("cookie", &user.cookie)
            .header("x-csrf", "1")
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    (
        v["bytes"].as_u64().unwrap(),
        v["sha256"].as_str().unwrap().to_owned(),
    )
}

/// Open a WebSocket through the proxy and check text and binary echoes.
pub async fn ws_echo(stack: &Stack, user: &TestUser, device: DeviceId) {
    let url = stack
        .proxy_url(device, "/test/ws-echo")
        .replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", user.cookie.parse().unwrap());
    let (mut ws, resp) = within("ws connect", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(Message::Text(text.clone().into())).await.unwrap();
        let back = within("ws echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(back, Message::Text(text.into()));
    }
    let blob: Vec<u8> = (0..100_000u32)
        .map(|i| sim_box::pattern_byte(u64::from(i)))
        .collect();
    ws.send(Message::Binary(blob.clone().into())).await.unwrap();
    let back = within("ws binary echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back, Message::Binary(blob.into()));
    ws.close(None).await.unwrap();
}

/// `n` concurrent small requests; returns how many got 200 with the body.
pub async fn concurrent(stack: &Stack, user: &TestUser, device: DeviceId, n: usize) -> usize {
    let url = stack.proxy_url(device, "/api/info");
    let reqs = (0..n).map(|_| {
        let req = stack.get(user, &url);
        async move {
            match req.send().await {
                Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().await.is_ok(),
                _ => false,
            }
        }
    });
    let results = within("concurrent requests", futures_util::future::join_all(reqs)).await;
    results.into_iter().filter(|ok| *ok).count()
}

/// An error body as text without its `request_id` (which differs per
/// request by design), for checks that two refusals are indistinguishable.
pub fn error_shape(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(e) = v.get_mut("error").and_then(|e| e.as_object_mut()) {
                e.remove("request_id");
            }
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Read one HTTP response (head, and body up to its `Content-Length`)
/// from `tcp`; what arrived before EOF or an error if it ends sooner.
pub async fn read_response(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
