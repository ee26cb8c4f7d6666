//! `remote-proxy` binary: parse configuration, set up logging, bind, run.

use clap::Parser;

/// mimalloc: a download's buffers are reused, not faulted in again as
/// glibc's trimmed heap made them (ADR 039).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = remote_proxy::config::Config::parse();
    edge_core::telemetry::init(config.log_format);
    let shutdown = edge_core::shutdown::on_signal();
    match remote_proxy::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "remote-proxy failed");
            std::process::ExitCode::FAILURE
        }
    }
}
