//! Target 6: the relay's tunnel side under a control-frame flood from a
//! device that never reads. The input is a template of frames (pings,
//! forged ACKs, SYNs, window updates, garbage): its first byte picks how
//! many times it is repeated (up to about 1 MiB in all), and the device
//! writes the lot as fast as the relay takes it, reading nothing back. The
//! session must end by itself within its write deadline (it may not keep
//! queueing answers), and nothing may panic.
#![no_main]

use edge_fuzz::{runtime, websocket_pair};
use futures_util::SinkExt;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tunnel::session;

/// The relay's write (and ping) deadline in this target.
const DEADLINE: Duration = Duration::from_millis(50);
/// Longest the session may outlive the flood's end: the deadline, and the
/// flush of what the relay holds.
const ENDS_WITHIN: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let Some((&reps, template)) = data.split_first() else {
        return;
    };
    if template.is_empty() {
        return;
    }
    let repeat = (usize::from(reps) + 1) * 64;
    let message: Vec<u8> = template
        .iter()
        .copied()
        .cycle()
        .take((template.len() * repeat).min(1 << 20))
        .collect();
    runtime().block_on(async {
        let (ours, mut device) =
            websocket_pair(true, Some(tunnel::upgrade::relay_ws_config())).await;
        let (io, pump_task, activity) = edge_fuzz::pumped(ours);
        let cancel = CancellationToken::new();
        let (_control, driver) = session::client(
            io,
            // With burst windows (ADR 044), as an agent that offered them.
            session::relay_config(8, Duration::from_secs(30), DEADLINE, true),
            cancel.clone(),
            activity,
        );
        let driver = tokio::spawn(driver);
        // The flood, in 16 KiB messages, until the relay stops taking it.
        let mut blocked = false;
        for chunk in message.chunks(16 * 1024) {
            let sent = tokio::time::timeout(
                Duration::from_millis(100),
                device.send(Message::Binary(chunk.to_vec().into())),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
        }
        // Still reading nothing: whatever the relay owes stays unread.
        if tokio::time::timeout(ENDS_WITHIN, driver).await.is_err() {
            // A relay that stopped reading a flood of pings it must answer
            // did so because its answers cannot be written: its write
            // deadline must end the session. Anything else the input left
            // idle is ended here.
            if blocked && owed_answers(template) {
                panic!("the session outlived its write deadline under a ping flood");
            }
            cancel.cancel();
        }
        let _ = tokio::time::timeout(ENDS_WITHIN, pump_task).await;
        drop(device);
    });
});

/// Whether the template holds a frame the relay must answer (a ping SYN
/// or a stream SYN), so that the flood fills its unread write side. Read
/// from 12-byte aligned headers only: a conservative test (misaligned or
/// garbage input may end the session anyway, as a protocol error).
fn owed_answers(template: &[u8]) -> bool {
    template.len() % 12 == 0
        && template.chunks(12).all(|h| {
            let (ty, flags) = (h[1], u16::from_be_bytes([h[2], h[3]]));
            h[0] == 0 && ty == 2 && flags == 1
        })
}
