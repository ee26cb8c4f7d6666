//! Helpers shared by the tunnel's integration tests.

#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A far end: reads the stream's whole request, then answers it reversed.
pub async fn answer_reversed(mut stream: tunnel::StreamHandle) {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    got.reverse();
    stream.write_all(&got).await.unwrap();
    stream.shutdown().await.unwrap();
}
