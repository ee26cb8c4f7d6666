//! `devstack` (development only): one command that runs the development
//! OpenID Provider, remote-proxy, api-server (with the web console), and a
//! simulated edge box on loopback with embedded defaults (SQLite and
//! secrets under `data/`), and stops them all on Ctrl-C.
//!
//! The simulated box is paired the way a real one is: its agent waits for a
//! credential file (`data/agent/credential`, `edge-agent pair`'s default),
//! which the owner creates by running the `edge-agent pair` command the
//! console shows. When the file appears, or is replaced by a new pairing,
//! the box's agent (re)connects with it. A later run reuses the data, so a
//! paired box comes back online by itself.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// devstack: the whole edge platform on this machine, for development.
#[derive(Debug, Parser)]
#[command(name = "devstack", version)]
pub struct Cli {
    /// Directory for all local state (SQLite database, secrets, the
    /// simulated box's credential).
    #[arg(
        long,
        env = "EDGE_DATA_DIR",
        default_value = "data",
        hide_env_values = true
    )]
    pub data_dir: PathBuf,
    /// api-server and web console (loopback only; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:3721")]
    pub api_listen: SocketAddr,
    /// remote-proxy tunnel port for devices.
    #[arg(long, default_value = "127.0.0.1:3800")]
    pub tunnel_listen: SocketAddr,
    /// remote-proxy internal port for the api-server.
    #[arg(long, default_value = "127.0.0.1:3801")]
    pub internal_listen: SocketAddr,
    /// Development OpenID Provider.
    #[arg(long, default_value = "127.0.0.1:3790")]
    pub idp_listen: SocketAddr,
    /// How often the relay scrapes each box's metrics, in seconds (the
    /// product's default is 15; a development stack shows live charts
    /// sooner). Device health is judged, and time series written, at the
    /// same interval.
    #[arg(long, default_value_t = 5)]
    pub telemetry_interval_secs: u64,
}

const CLIENT_ID: &str = "edge-console";
/// How often the simulated box looks for a new credential file.
const CREDENTIAL_POLL: Duration = Duration::from_millis(500);

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    if !addr.ip().is_loopback() {
        bail!("{what}: devstack listens on loopback addresses only, not {addr}");
    }
    edge_core::listen::bind(addr)
        .with_context(|| format!("{what}: cannot listen on {addr} (is another devstack running?)"))
}

fn port(l: &TcpListener) -> Result<u16> {
    Ok(l.local_addr()?.port())
}

/// Run the whole stack until `shutdown` (Ctrl-C in the binary).
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<()> {
    let data = cli
        .data_dir
        .to_str()
        .context("data dir must be UTF-8")?
        .to_owned();

    let idp_listener = bind(cli.idp_listen, "development provider").await?;
    let api_listener = bind(cli.api_listen, "api-server").await?;
    let tunnel_listener = bind(cli.tunnel_listen, "relay tunnel port").await?;
    let internal_listener = bind(cli.internal_listen, "relay internal port").await?;
    let issuer = format!("http://127.0.0.1:{}", port(&idp_listener)?);
    let origin = format!("http://localhost:{}", port(&api_listener)?);
    let relay_tunnel = format!("ws://127.0.0.1:{}/tunnel", port(&tunnel_listener)?);
    let relay_internal = format!("http://127.0.0.1:{}", port(&internal_listener)?);

    let idp = dev_idp::DevIdp::new(
        issuer.clone(),
        vec![dev_idp::Client::public(
            CLIENT_ID,
            format!("{origin}/api/auth/callback"),
        )],
    );
    let (relay_cfg, api_cfg) = configs(
        &data,
        cli.telemetry_interval_secs,
        &issuer,
        &origin,
        &relay_internal,
    );
    let sim = TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim.local_addr()?;
    let credential = cli.data_dir.join("agent/credential");

    let (s1, s2, s3, s4) = (
        shutdown.clone(),
        shutdown.clone(),
        shutdown.clone(),
        shutdown.clone(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        dev_idp::serve(idp_listener, idp, s1).await;
        Ok(())
    });
    tasks.spawn(async move {
        remote_proxy::run_on(relay_cfg, tunnel_listener, internal_listener, s2)
            .await
            .context("remote-proxy")
    });
    tasks.spawn(async move {
        api_server::run_on(api_cfg, api_listener, s3)
            .await
            .context("api-server")
    });
    tasks.spawn(async move {
        sim_box::serve(sim, "simulated box".into(), s4).await;
        Ok(())
    });

    let addresses = Addresses {
        origin,
        issuer,
        relay_tunnel,
        relay_internal,
    };
    print_banner(&addresses, &credential, &cli.data_dir);
    let settings =
        edge_agent::config::AgentSettings::new(addresses.relay_tunnel, sim_addr.to_string());
    tasks.spawn(simulated_box_agent(credential, settings, shutdown.clone()));
    until_first_failure(tasks, &shutdown).await
}

/// The relay's and the api-server's configuration for this stack.
fn configs(
    data: &str,
    telemetry_interval_secs: u64,
    issuer: &str,
    origin: &str,
    relay_internal: &str,
) -> (remote_proxy::config::Config, api_server::config::Config) {
    // Metrics on ephemeral loopback ports (logged): several devstacks may
    // run side by side.
    let interval = telemetry_interval_secs.to_string();
    let relay_cfg = remote_proxy::config::Config::parse_from([
        "remote-proxy",
        "--data-dir",
        data,
        "--metrics-listen",
        "127.0.0.1:0",
        "--telemetry-interval-secs",
        &interval,
        "--telemetry-window-write-secs",
        &interval,
    ]);
    let api_cfg = api_server::config::Config::parse_from([
        "api-server",
        "--data-dir",
        data,
        "--relay-url",
        relay_internal,
        "--public-origin",
        origin,
        "--cookie-insecure",
        "--oidc-issuer",
        issuer,
        "--oidc-client-id",
        CLIENT_ID,
        "--health-interval-secs",
        &interval,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    (relay_cfg, api_cfg)
}

/// Wait for every task; the first to fail stops the others, and its error
/// is the result.
async fn until_first_failure(
    mut tasks: tokio::task::JoinSet<Result<()>>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = result {
            eprintln!("devstack: {err:#}; stopping everything");
            shutdown.cancel();
            failure.get_or_insert(err);
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Where the stack's parts listen.
struct Addresses {
    origin: String,
    issuer: String,
    relay_tunnel: String,
    relay_internal: String,
}

/// Tell the newcomer what runs where and how to pair the simulated box.
fn print_banner(a: &Addresses, credential: &Path, data_dir: &Path) {
    let Addresses {
        origin,
        issuer,
        relay_tunnel,
        relay_internal,
    } = a;
    let pair_hint = if credential == Path::new("data/agent/credential") {
        String::new()
    } else {
        format!(" --credential-file {}", credential.display())
    };
    println!("\n  Edge platform (development) is running on loopback. Ctrl-C stops everything.\n");
    println!("    console:   {origin}/");
    println!("    sign in as a demo user of the development provider: alice, bob or carol\n");
    if credential.is_file() {
        println!(
            "    simulated box: paired earlier (credential in {}); connecting",
            credential.display()
        );
    } else {
        println!(
            "    simulated box: waiting to be paired. In the console choose \"Pair a device\","
        );
        println!("    then run, from this directory, the command the console shows:");
        println!(
            "      cargo run -p edge-agent -- pair --server {origin}{pair_hint} --code XXXXX-XXXXX"
        );
    }
    println!("\n    relay:     {relay_tunnel} (devices), {relay_internal} (internal)");
    println!("    provider:  {issuer} (development OpenID Provider)");
    println!(
        "    data:      {} (kept for the next run)\n",
        data_dir.display()
    );
}

/// The simulated box's agent: runs with the credential in `path` and
/// restarts whenever a new pairing replaces it (the file is read again only
/// when its modification time or size changes).
async fn simulated_box_agent(
    path: PathBuf,
    settings: edge_agent::config::AgentSettings,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut seen_file = None;
    let mut running: Option<(String, CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let mut poll = tokio::time::interval(CREDENTIAL_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {}
        }
        let stamp = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| (m.modified().ok(), m.len()));
        if stamp.is_none() || stamp == seen_file {
            continue;
        }
        seen_file = stamp;
        let token = match edge_agent::load_credential(&path) {
            Ok(token) => token,
            Err(err) => {
                eprintln!("  simulated box: {err}");
                continue;
            }
        };
        let fingerprint = token.hash();
        if running.as_ref().is_some_and(|(f, _, _)| *f == fingerprint) {
            continue;
        }
        if let Some((_, stop, task)) = running.take() {
            stop.cancel();
            let _ = task.await;
            println!("  simulated box: new credential; reconnecting");
        } else {
            println!(
                "  simulated box: credential found in {}; connecting",
                path.display()
            );
        }
        let stop = shutdown.child_token();
        let task = tokio::spawn(edge_agent::run(settings.clone(), token, stop.clone()));
        running = Some((fingerprint, stop, task));
    }
    if let Some((_, _, task)) = running {
        let _ = task.await;
    }
    Ok(())
}
