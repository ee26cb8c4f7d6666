//! `api-server` binary: parse configuration, set up logging, run.

use clap::Parser;

/// mimalloc: less time in malloc/free on the request path than glibc's
/// allocator (ADR 016).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = api_server::config::Config::parse();
    edge_core::telemetry::init(config.log_format);
    let shutdown = edge_core::shutdown::on_signal();
    match api_server::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "api-server failed");
            std::process::ExitCode::FAILURE
        }
    }
}
