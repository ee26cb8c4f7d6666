//! Structured logging through `tracing`: human-readable by default, JSON
//! lines when asked. The filter comes from `RUST_LOG` (default `info`).

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
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
/// the log level says (`edge_core::metrics::statement_seconds`).
pub fn statement_timer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    crate::metrics::StatementTimer(crate::metrics::statement_seconds())
        .with_filter(filter_fn(|meta| meta.target() == "sqlx::query"))
}

/// Install the global subscriber; call once from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(statement_timer())
        .try_init();
    if let Err(err) = result {
        eprintln!("logging already initialised: {err}");
    }
}
