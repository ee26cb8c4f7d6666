//! Target 2: the agent's side (pump + yamux server with the device's
//! settings, piping accepted streams as the agent does) fed arbitrary
//! yamux frames from a hostile relay. Nothing may panic or hang.
#![no_main]

use edge_fuzz::{messages, runtime, send_all, websocket_pair, PER_INPUT};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tunnel::session;

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (ours, mut relay) = websocket_pair(false, None).await;
        let (io, pump_task, activity) = edge_fuzz::pumped(ours);
        let cancel = CancellationToken::new();
        let serving = tokio::spawn(session::serve(
            io,
            session::device_config(),
            cancel.clone(),
            activity,
            |mut stream| {
                // What the agent does with a stream, minus the local TCP
                // connect: read what arrives and answer.
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if let Ok(n) = stream.read(&mut buf).await {
                        let _ = stream.write_all(&buf[..n]).await;
                    }
                });
            },
        ));
        send_all(&mut relay, messages(data)).await;
        if tokio::time::timeout(PER_INPUT, serving).await.is_err() {
            cancel.cancel();
        }
        let _ = tokio::time::timeout(PER_INPUT, pump_task).await;
    });
});
