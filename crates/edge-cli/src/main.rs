//! `edge` binary: parse the command line and run it; errors go to stderr
//! with the server's error code and request id.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = edge_cli::Cli::parse();
    match edge_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge: {err}");
            std::process::ExitCode::from(err.exit_code())
        }
    }
}
