//! `devstack` (development only): one command that runs the development
//! OpenID Provider, remote-proxy, api-server, a simulated edge box and an
//! edge-agent on loopback with embedded defaults (SQLite and secrets under
//! `data/`), and stops them all on Ctrl-C. On first start it registers a
//! demo device for the simulated box, owned by the provider's demo user
//! `alice`, and keeps its credential in `data/agent/credential` (0600);
//! later starts reuse both.

use anyhow::{Context, Result};
use clap::Parser;
use edge_core::DeviceToken;
use std::path::Path;
use store::{NewDevice, Store};

/// devstack: the whole edge platform on this machine, for development.
#[derive(Debug, Parser)]
#[command(name = "devstack", version)]
struct Cli {
    /// Directory for all local state.
    #[arg(long, env = "EDGE_DATA_DIR", default_value = "data")]
    data_dir: std::path::PathBuf,
}

const IDP: &str = "127.0.0.1:3790";
const API: &str = "127.0.0.1:3721";
const ORIGIN: &str = "http://localhost:3721";

async fn demo_device(
    store: &Store,
    issuer: &str,
    credential: &Path,
) -> Result<edge_core::DeviceId> {
    let (sub, name, email) = dev_idp::DEMO_USERS[0];
    let user = store
        .upsert_user(issuer, sub, Some(email), Some(name))
        .await?;
    if let Some(dev) = store.devices(user.id).await?.into_iter().next() {
        if credential.is_file() {
            return Ok(dev.id);
        }
        store.revoke_credentials(dev.id).await?;
        return write_credential(store, dev.id, credential)
            .await
            .map(|()| dev.id);
    }
    let dev = store
        .create_device(
            user.id,
            &NewDevice {
                name: "simulated box".into(),
                model: Some("SIM-1".into()),
                ..Default::default()
            },
        )
        .await?;
    write_credential(store, dev.id, credential).await?;
    Ok(dev.id)
}

async fn write_credential(
    store: &Store,
    device: edge_core::DeviceId,
    credential: &Path,
) -> Result<()> {
    let token = DeviceToken::generate();
    store.add_credential(device, &token.hash()).await?;
    edge_core::secret::write_file_atomic(credential, token.expose())?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    edge_core::telemetry::init(edge_core::telemetry::LogFormat::Human);
    let shutdown = edge_core::shutdown::on_signal();
    let data = cli
        .data_dir
        .to_str()
        .context("data dir must be UTF-8")?
        .to_owned();
    let store = Store::connect(&format!("sqlite://{data}/edge.db")).await?;
    let issuer = format!("http://{IDP}");
    let credential = cli.data_dir.join("agent/credential");
    let device = demo_device(&store, &issuer, &credential).await?;

    let idp_listener = tokio::net::TcpListener::bind(IDP)
        .await
        .context("bind dev-idp")?;
    let idp = dev_idp::DevIdp::new(
        issuer.clone(),
        vec![dev_idp::Client::public(
            "edge-console",
            format!("{ORIGIN}/api/auth/callback"),
        )],
    );
    let relay_cfg = remote_proxy::config::Config::parse_from([
        "remote-proxy",
        "--data-dir",
        &data,
        "--tunnel-listen",
        "127.0.0.1:3800",
        "--internal-listen",
        "127.0.0.1:3801",
    ]);
    let api_cfg = api_server::config::Config::parse_from([
        "api-server",
        "--data-dir",
        &data,
        "--listen",
        API,
        "--public-origin",
        ORIGIN,
        "--cookie-insecure",
        "--oidc-issuer",
        &issuer,
        "--oidc-client-id",
        "edge-console",
    ]);
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim.local_addr()?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(dev_idp::serve(idp_listener, idp, shutdown.clone()));
    tasks.spawn({
        let s = shutdown.clone();
        async move {
            if let Err(e) = remote_proxy::run(relay_cfg, s.clone()).await {
                eprintln!("remote-proxy failed: {e}");
                s.cancel();
            }
        }
    });
    tasks.spawn({
        let s = shutdown.clone();
        async move {
            if let Err(e) = api_server::run(api_cfg, s.clone()).await {
                eprintln!("api-server failed: {e}");
                s.cancel();
            }
        }
    });
    tasks.spawn(sim_box::serve(
        sim,
        "simulated box".into(),
        shutdown.clone(),
    ));
    let token = edge_agent::load_credential(&credential)?;
    let settings =
        edge_agent::config::AgentSettings::new("ws://127.0.0.1:3800/tunnel", sim_addr.to_string());
    tasks.spawn(edge_agent::run(settings, token, shutdown.clone()));

    println!("\n  edge platform (development) on loopback; Ctrl-C stops everything");
    println!("    sign in:   {ORIGIN}/api/auth/login?return_to=/api/auth/me   (demo users: alice, bob, carol)");
    println!("    box UI:    {ORIGIN}/api/devices/{device}/proxy/   (alice's simulated box, after signing in as alice)");
    println!(
        "    relay:     ws://127.0.0.1:3800/tunnel (devices), http://127.0.0.1:3801 (internal)"
    );
    println!("    provider:  {issuer} (development OpenID Provider)\n");
    while tasks.join_next().await.is_some() {}
    Ok(())
}
