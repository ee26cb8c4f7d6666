//! `dev-idp` binary — DEVELOPMENT ONLY. Serves a tiny OpenID Provider with
//! demo users on a loopback address; refuses any other address.

use clap::Parser;

/// dev-idp: development OpenID Provider (loopback only, demo users).
#[derive(Debug, Parser)]
#[command(name = "dev-idp", version)]
struct Cli {
    /// Loopback address to listen on.
    #[arg(long, env = "DEV_IDP_LISTEN", default_value = "127.0.0.1:3790")]
    listen: std::net::SocketAddr,
    /// Issuer URL (default: http://<listen>).
    #[arg(long, env = "DEV_IDP_ISSUER")]
    issuer: Option<String>,
    /// Client id to register.
    #[arg(long, env = "DEV_IDP_CLIENT_ID", default_value = "edge-console")]
    client_id: String,
    /// Redirect URI to register for the client.
    #[arg(
        long,
        env = "DEV_IDP_REDIRECT_URI",
        default_value = "http://localhost:3721/api/auth/callback"
    )]
    redirect_uri: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    edge_core::telemetry::init(edge_core::telemetry::LogFormat::Human);
    if !cli.listen.ip().is_loopback() {
        eprintln!(
            "dev-idp: refusing to bind {}: development provider listens on loopback only",
            cli.listen
        );
        return std::process::ExitCode::FAILURE;
    }
    let listener = match edge_core::listen::bind(cli.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dev-idp: cannot bind {}: {e}", cli.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let issuer = cli
        .issuer
        .unwrap_or_else(|| format!("http://{}", cli.listen));
    let idp = dev_idp::DevIdp::new(
        issuer.clone(),
        vec![dev_idp::Client::public(cli.client_id, cli.redirect_uri)],
    );
    tracing::warn!(%issuer, "DEVELOPMENT OpenID Provider: demo users only, never use in production");
    dev_idp::serve(listener, idp, edge_core::shutdown::on_signal()).await;
    std::process::ExitCode::SUCCESS
}
