//! Process signals: binaries turn SIGINT/SIGTERM into a cancelled token
//! (libraries only ever see the token), and a file-size limit (SIGXFSZ)
//! makes writes fail with an error instead of killing the process.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. Also takes SIGXFSZ
/// over, so that a write past the process's file-size limit fails with
/// EFBIG (and the database reports itself unavailable) instead of the
/// signal's default action ending the process.
pub fn on_signal() -> CancellationToken {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // tokio keeps a signal's handler installed for the rest of the
        // process once registered; the stream itself is not needed.
        if let Err(err) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            tracing::warn!(error = %err, "cannot take over SIGXFSZ");
        }
    }
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
