//! `devstack` binary: parse the command line, set up logging and Ctrl-C,
//! run the stack (see the library).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = devstack::Cli::parse();
    edge_core::telemetry::init(edge_core::telemetry::LogFormat::Human);
    devstack::run(cli, edge_core::shutdown::on_signal()).await
}
