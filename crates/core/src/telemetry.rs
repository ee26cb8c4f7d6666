//! Structured logging through `tracing`: human-readable by default, JSON
//! lines when asked. The filter comes from `RUST_LOG` (default `info`).

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
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
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
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
}
