//! Structured logging through `tracing`: human-readable by default, JSON
//! lines when asked. The filter comes from `RUST_LOG` (default `info`).
//! Every line written while a request is served ends with its id
//! ([`RequestIdFormat`]).

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format `{other}` (human|json)")),
        }
    }
}

/// The layer that times store statements from sqlx's own events whatever
/// the log level says (`edge_core::metrics::statement_seconds`). Its
/// filter decides per callsite, so every other event stays disabled where
/// it is written instead of asking the subscriber each time.
pub fn statement_timer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    crate::metrics::StatementTimer(crate::metrics::statement_seconds()).with_filter(
        tracing_subscriber::filter::Targets::new().with_target("sqlx::query", LevelFilter::TRACE),
    )
}

/// Install the global subscriber; call once from `main`.
///
/// Records of the `log` facade (tokio-yamux logs through it) are forwarded
/// only up to the level the output shows. Without that cap the statement
/// timer's interest in every level raised `log`'s own maximum to TRACE,
/// and each `log::trace!` on the tunnel's hot path became a dispatch
/// through the subscriber: about a tenth of the relay's and the agent's
/// CPU per proxied request.
pub fn init(format: LogFormat) {
    install(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        format,
    );
}

fn install(filter: EnvFilter, format: LogFormat) {
    let shown = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Human => fmt
            .map_event_format(|f| RequestIdFormat::human(f.with_ansi(ansi)))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .map_event_format(RequestIdFormat::json)
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(statement_timer());
    if let Err(err) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("logging already initialised: {err}");
        return;
    }
    let forwarded = tracing_log::LogTracer::builder()
        .with_max_level(tracing_log::AsLog::as_log(&shown))
        .init();
    if let Err(err) = forwarded {
        eprintln!("log records not forwarded: {err}");
    }
}

/// An event format that ends each line written inside a request's scope
/// ([`crate::request_id::scope`]) with the request's id: ` request_id=…`
/// on a human line, a `"request_id"` member in a JSON object. The id is
/// read from the task-local the request runs in, not from a span: no
/// span is made per request (ADR 036). Lines outside a request are the
/// inner format's, untouched.
pub struct RequestIdFormat<F> {
    inner: F,
    json: bool,
}

impl<F> RequestIdFormat<F> {
    /// Around a human format. It must set its own ANSI choice
    /// (`Format::with_ansi`): a line with an id is formatted into a
    /// buffer first, whose writer knows nothing of the terminal.
    pub fn human(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// Around a JSON format that writes one object per line.
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for RequestIdFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = crate::request_id::current() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        // Ids are `A-Z a-z 0-9 - _ . :` only: nothing to escape.
        match line.strip_suffix('}') {
            Some(open) if self.json => {
                writeln!(writer, "{open},\"request_id\":\"{id}\"}}")
            }
            _ => writeln!(writer, "{line} request_id={id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_records_above_the_shown_level_are_cut_by_log_itself() {
        install(EnvFilter::new("warn"), LogFormat::Human);
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
        assert!(!log::log_enabled!(log::Level::Trace));
        assert!(log::log_enabled!(log::Level::Warn));
    }

    /// What a layer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Written {
        type Writer = Written;
        fn make_writer(&'a self) -> Written {
            self.clone()
        }
    }

    /// The lines logged, one outside a request and one inside.
    async fn logged(json: bool) -> Vec<String> {
        let out = Written::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_ansi(false);
        let layer = if json {
            layer
                .json()
                .flatten_event(true)
                .map_event_format(RequestIdFormat::json)
                .boxed()
        } else {
            layer
                .map_event_format(|f| RequestIdFormat::human(f.with_ansi(false)))
                .boxed()
        };
        let _on = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        tracing::info!(n = 1, "outside");
        let id = crate::request_id::RequestId::parse("req-7").unwrap();
        crate::request_id::scope(id, async { tracing::info!(n = 2, "inside") }).await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn a_human_line_inside_a_request_ends_with_its_id() {
        let lines = logged(false).await;
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].ends_with("outside n=1"), "{}", lines[0]);
        assert!(!lines[0].contains("request_id"), "{}", lines[0]);
        assert!(
            lines[1].ends_with("inside n=2 request_id=req-7"),
            "{}",
            lines[1]
        );
    }

    #[tokio::test]
    async fn a_json_line_inside_a_request_has_its_id() {
        let lines = logged(true).await;
        assert_eq!(lines.len(), 2, "{lines:#?}");
        let outside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let inside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("request_id").is_none(), "{outside}");
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["n"], 2);
        assert_eq!(inside["request_id"], "req-7", "{inside}");
    }
}
