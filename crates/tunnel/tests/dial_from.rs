//! `dial::dial_from`: a tunnel dialled from a chosen loopback source
//! address arrives from that address, with the credential in the header.

use edge_core::DeviceToken;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

// tungstenite's header callback returns its own (large) error response.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn the_relay_sees_the_chosen_source_address_and_the_bearer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/tunnel", listener.local_addr().unwrap());
    let token = DeviceToken::generate();
    let seen_auth = Arc::new(Mutex::new(None::<String>));
    let server = {
        let seen_auth = seen_auth.clone();
        tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let _ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                *seen_auth.lock().unwrap() = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(resp)
            })
            .await
            .unwrap();
            peer
        })
    };
    let local: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let _ws = tunnel::dial::dial_from(&url, &token, "test/1", Default::default(), local)
        .await
        .unwrap();
    let peer = server.await.unwrap();
    assert_eq!(peer.ip(), local);
    assert_eq!(
        seen_auth.lock().unwrap().as_deref(),
        Some(format!("Bearer {}", token.expose()).as_str())
    );
}

#[tokio::test]
async fn a_wss_url_or_a_query_string_is_refused_before_dialling() {
    let token = DeviceToken::generate();
    let local: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    for url in [
        "wss://127.0.0.1:9/tunnel",
        "ws://127.0.0.1:9/tunnel?token=x",
    ] {
        let err = tunnel::dial::dial_from(url, &token, "test/1", Default::default(), local)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, tunnel::dial::DialError::BadUrl(_)),
            "{url}: {err}"
        );
    }
}
