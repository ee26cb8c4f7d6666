//! `edge-agent` binary: parse the command line, set up logging, run.

use clap::Parser;

/// mimalloc: less time in malloc/free on the request path than glibc's
/// allocator (ADR 016).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread: the agent drives a single tunnel and pipes its streams, so
/// tasks never wake one another across threads (ADR 020).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = edge_agent::config::Cli::parse();
    edge_core::telemetry::init(cli.log_format);
    let shutdown = edge_core::shutdown::on_signal();
    match edge_agent::main_command(cli, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "edge-agent failed");
            eprintln!("edge-agent: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
