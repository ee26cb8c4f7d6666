//! `sim-box` binary: a simulated edge box's local service, for demos,
//! tests and benchmarks. Not part of the product.

use clap::Parser;

/// sim-box: serves a fake edge box's local API and page.
#[derive(Debug, Parser)]
#[command(name = "sim-box", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIM_BOX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Name the box reports.
    #[arg(long, env = "SIM_BOX_NAME", default_value = "sim-box")]
    name: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    edge_core::telemetry::init(edge_core::telemetry::LogFormat::Human);
    let listener = match edge_core::listen::bind(cli.listen) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("sim-box: cannot bind {}: {err}", cli.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %cli.listen, "sim-box listening");
    sim_box::serve(listener, cli.name, edge_core::shutdown::on_signal()).await;
    std::process::ExitCode::SUCCESS
}
