//! The log lines of the platform's own crates (info and above), as the
//! human format prints them with their request ids, kept in memory so a
//! test can follow a request id through the api-server's and the relay's
//! lines. Installed by [`crate::init_logs`].

use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::Layer;

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Appends to the in-memory log.
#[derive(Clone, Copy)]
pub struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = LINES.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        Capture
    }
}

/// The layer that captures.
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Capture)
        .map_event_format(|f| edge_core::telemetry::RequestIdFormat::human(f.with_ansi(false)))
        .with_filter(
            Targets::new()
                .with_target("api_server", tracing::Level::INFO)
                .with_target("remote_proxy", tracing::Level::INFO)
                .with_target("directory", tracing::Level::INFO)
                .with_target("edge_core", tracing::Level::INFO),
        )
}

/// Every captured line that contains `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    let lines = LINES.lock().map(|l| l.clone()).unwrap_or_default();
    String::from_utf8_lossy(&lines)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
