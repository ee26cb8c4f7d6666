//! `devstack` (development only): one command that runs remote-proxy,
//! api-server, a simulated edge box and an edge-agent on loopback with
//! embedded defaults (SQLite and secrets under `data/`), and stops them all
//! on Ctrl-C. On first start it registers a demo device for the simulated
//! box and keeps its credential in `data/agent/credential` (0600); later
//! starts reuse both. Until the login issue lands there is no way for a
//! browser to sign in, so it proves the path with a self-check instead.

use anyhow::{Context, Result};
use clap::Parser;
use edge_core::{DeviceToken, Secret};
use std::path::Path;
use std::time::Duration;
use store::{NewDevice, Store};

/// devstack: the whole edge platform on this machine, for development.
#[derive(Debug, Parser)]
#[command(name = "devstack", version)]
struct Cli {
    /// Directory for all local state.
    #[arg(long, env = "EDGE_DATA_DIR", default_value = "data")]
    data_dir: std::path::PathBuf,
}

const DEMO_ISSUER: &str = "urn:edge:devstack";

async fn demo_device(store: &Store, credential: &Path) -> Result<edge_core::DeviceId> {
    let user = store
        .upsert_user(DEMO_ISSUER, "demo", None, Some("Demo user"))
        .await?;
    if let Some(dev) = store.devices(user.id).await?.into_iter().next() {
        if credential.is_file() {
            return Ok(dev.id);
        }
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
    let token = DeviceToken::generate();
    store.add_credential(dev.id, &token.hash()).await?;
    if let Some(dir) = credential.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = credential.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(token.expose().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, credential)?;
    Ok(dev.id)
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
    let db_url = format!("sqlite://{}/edge.db", data);
    let store = Store::connect(&db_url).await?;
    let credential = cli.data_dir.join("agent/credential");
    let device = demo_device(&store, &credential).await?;

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
        "127.0.0.1:3721",
        "--cookie-insecure",
    ]);
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim.local_addr()?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let s = shutdown.clone();
        async move {
            remote_proxy::run(relay_cfg, s)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    tasks.spawn({
        let s = shutdown.clone();
        async move {
            api_server::run(api_cfg, s)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    tasks.spawn({
        let s = shutdown.clone();
        async move {
            sim_box::serve(sim, "simulated box".into(), s).await;
            Ok(())
        }
    });
    tasks.spawn({
        let s = shutdown.clone();
        let token = edge_agent::load_credential(&credential)?;
        let settings = edge_agent::config::AgentSettings::new(
            "ws://127.0.0.1:3800/tunnel",
            sim_addr.to_string(),
        );
        async move {
            edge_agent::run(settings, token, s).await;
            Ok(())
        }
    });

    let check = self_check(&store, &data, device);
    tokio::select! {
        r = check => match r {
            Ok(body) => {
                println!("\n  edge platform running on loopback (Ctrl-C stops everything)");
                println!("    api-server   http://127.0.0.1:3721   (GET /api/health)");
                println!("    remote-proxy ws://127.0.0.1:3800/tunnel, internal http://127.0.0.1:3801");
                println!("    simulated box http://{sim_addr}/ behind an edge-agent, device {device}");
                println!("  self-check through api-server → relay → agent → box: {body}\n");
            }
            Err(err) => eprintln!("self-check failed: {err:#}"),
        },
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancelled().await;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(err)) = done {
            eprintln!("component failed: {err:#}");
        }
    }
    Ok(())
}

/// Request the box's `/api/info` through the api-server's proxy route with a
/// session minted for the demo user (held in memory, never printed).
async fn self_check(store: &Store, data: &str, device: edge_core::DeviceId) -> Result<String> {
    let user = store
        .upsert_user(DEMO_ISSUER, "demo", None, Some("Demo user"))
        .await?;
    let key = edge_core::secret::load_or_create_file(&Path::new(data).join("session-key"))?;
    let keys = auth_keys(key)?;
    let sid = Secret::random(32);
    let now = edge_core::time::now_ms();
    store
        .create_session(
            &edge_core::secret::sha256_hex(sid.expose().as_bytes()),
            user.id,
            now,
            now + 60_000,
        )
        .await?;
    let name = api_server::session::cookie_name(false);
    let cookie = format!(
        "{name}={}",
        keys.sign(
            name,
            api_server::session::SESSION_PURPOSE,
            sid.expose(),
            now + 60_000
        )
    );
    for _ in 0..100 {
        if let Ok(body) = http_get(&format!("/api/devices/{device}/proxy/api/info"), &cookie).await
        {
            return Ok(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the simulated box did not answer through the proxy within 10 s")
}

fn auth_keys(key: Secret) -> Result<auth::CookieKeys> {
    let key = auth::CookieKey::new(key).context("session key too short")?;
    Ok(auth::CookieKeys::new(key, vec![]))
}

/// Minimal HTTP/1.1 GET on 127.0.0.1:3721 that returns the body of a 200.
async fn http_get(path: &str, cookie: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:3721").await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let (head, body) = buf.split_once("\r\n\r\n").context("bad response")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "not ready");
    Ok(body.trim().to_owned())
}
