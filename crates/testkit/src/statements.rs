//! Every SQL statement the test process runs, in order, read from sqlx's
//! own per-statement events (target `sqlx::query`), so a test can count
//! what one request costs the store without a counter in product code.
//! Installed by [`crate::init_logs`]; under nextest each test is its own
//! process, so the log holds only that test's statements.

use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{filter_fn, Filtered};
use tracing_subscriber::layer::{Context, Layer};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How many statements have run so far (a mark for [`since`]).
pub fn mark() -> usize {
    LOG.lock().map(|l| l.len()).unwrap_or(0)
}

/// The statements run since `mark`, as SQL text.
pub fn since(mark: usize) -> Vec<String> {
    LOG.lock()
        .map(|l| l.get(mark..).unwrap_or_default().to_vec())
        .unwrap_or_default()
}

/// The layer that records statements.
pub fn layer<S>() -> Filtered<Recorder, impl tracing_subscriber::layer::Filter<S>, S>
where
    S: tracing::Subscriber,
{
    Recorder.with_filter(filter_fn(|meta| meta.target() == "sqlx::query"))
}

/// Appends each statement event to the log.
pub struct Recorder;

#[derive(Default)]
struct Sql {
    summary: String,
    statement: String,
}

impl Visit for Sql {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.trim().to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "summary" => self.summary = format!("{value:?}"),
            "db.statement" => self.statement = format!("{value:?}").trim().to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut sql = Sql::default();
        event.record(&mut sql);
        let text = if sql.statement.is_empty() {
            sql.summary
        } else {
            sql.statement
        };
        if let Ok(mut log) = LOG.lock() {
            log.push(text);
        }
    }
}
