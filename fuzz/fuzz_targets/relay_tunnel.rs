//! Target 1: the relay's tunnel side (pump + yamux client with the relay's
//! settings) fed arbitrary WebSocket messages as a device: window updates,
//! pings, GoAway, data on unknown streams, zero and huge lengths. The
//! relay also opens a stream, as it does for a request. Nothing may panic
//! or hang; the session must end.
#![no_main]

use edge_fuzz::{messages, runtime, send_all, websocket_pair, PER_INPUT};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tunnel::session;

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (ours, mut device) =
            websocket_pair(true, Some(tunnel::upgrade::relay_ws_config())).await;
        let (io, pump_task, activity) = edge_fuzz::pumped(ours);
        let cancel = CancellationToken::new();
        let (mut control, driver) = session::client(
            io,
            // With burst windows (an agent that offered `burst/1`, ADR
            // 044): the more permissive bound on queued bytes.
            session::relay_config(8, Duration::from_secs(30), Duration::from_secs(1), true),
            cancel.clone(),
            activity,
        );
        let driver = tokio::spawn(driver);
        let opener = tokio::spawn(async move {
            if let Ok(mut s) = control.open_stream().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            }
        });
        send_all(&mut device, messages(data)).await;
        if tokio::time::timeout(PER_INPUT, driver).await.is_err() {
            cancel.cancel();
        }
        opener.abort();
        let _ = tokio::time::timeout(PER_INPUT, pump_task).await;
    });
});
