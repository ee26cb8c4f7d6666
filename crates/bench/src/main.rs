//! `edge-bench`: starts the release binaries (remote-proxy, api-server,
//! sim-box, edge-agent) as separate processes on loopback, then prints:
//! bulk throughput through the full path against a direct loopback TCP copy
//! (and a direct HTTP download from the box), requests per second with p50 /
//! p99 latency for small requests at a given concurrency, and the resident
//! memory of remote-proxy with N idle tunnels. Stops by itself.
//!
//! Run: `cargo build --release --bins && target/release/edge-bench`

use anyhow::{bail, Context, Result};
use auth::{CookieKey, CookieKeys, SessionId};
use clap::Parser;
use edge_core::{DeviceToken, Secret};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use store::{NewDevice, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edge-bench",
    about = "Throughput, latency and memory of the edge platform's full path"
)]
struct Cli {
    /// MiB moved in each bulk transfer.
    #[arg(long, default_value_t = 512)]
    bulk_mib: u64,
    /// Small requests in the latency run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent connections in the latency run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Idle tunnels held open for the memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_tunnels: usize,
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: run `cargo build --release --bins` first",
            p.display()
        );
    }
    Ok(p)
}

async fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("port {port} did not open")
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Baseline: copy `n` bytes over one loopback TCP connection.
async fn direct_tcp(n: u64) -> Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let writer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let buf = vec![7u8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..k]).await?;
            left -= k as u64;
        }
        anyhow::Ok(())
    });
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < n {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let d = start.elapsed();
    writer.await??;
    Ok(d)
}

async fn download(client: &reqwest::Client, url: &str, cookie: &str) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let res = client.get(url).header("cookie", cookie).send().await?;
    if !res.status().is_success() {
        bail!("download got {}", res.status());
    }
    let mut body = res.bytes_stream();
    let mut n = 0u64;
    while let Some(c) = body.next().await {
        n += c?.len() as u64;
    }
    Ok((n, start.elapsed()))
}

async fn upload(client: &reqwest::Client, url: &str, cookie: &str, n: u64) -> Result<Duration> {
    let chunk = bytes::Bytes::from(vec![5u8; 256 * 1024]);
    let body = futures_util::stream::unfold(0u64, move |off| {
        let chunk = chunk.clone();
        async move {
            if off >= n {
                return None;
            }
            let k = (n - off).min(chunk.len() as u64);
            Some((Ok::<_, std::io::Error>(chunk.slice(..k as usize)), off + k))
        }
    });
    let start = Instant::now();
    let res = client
        .post(url)
        .header("cookie", cookie)
        .header("x-csrf", "1")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let v: serde_json::Value = res.json().await?;
    if v["bytes"].as_u64() != Some(n) {
        bail!("upload lost bytes: {v}");
    }
    Ok(start.elapsed())
}

async fn latency_run(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    total: usize,
    conc: usize,
) -> Result<(f64, Duration, Duration, usize)> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers = (0..conc).map(|_| {
        let client = client.clone();
        let next = next.clone();
        let url = url.to_owned();
        let cookie = cookie.to_owned();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let ok = match client.get(&url).header("cookie", &cookie).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        })
    });
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for w in futures_util::future::join_all(workers).await {
        let (lat, e) = w?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok((
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        errors,
    ))
}

/// Hold `n` idle tunnels, each its own device, answering pings only.
async fn idle_tunnels(
    tokens: &[DeviceToken],
    relay_url: &str,
    cancel: CancellationToken,
) -> Result<()> {
    for t in tokens {
        let ws = tunnel::dial::dial(relay_url, t, "bench-idle/1", Default::default(), None)
            .await
            .map_err(|e| anyhow::anyhow!("idle tunnel: {e}"))?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let activity = tunnel::pump::Activity::new();
            let (io, _pump) = tunnel::pump::spawn(
                ws,
                tunnel::pump::PumpConfig {
                    idle_timeout: Duration::from_secs(3600),
                },
                activity.clone(),
            );
            tunnel::session::serve(io, tunnel::session::device_config(), cancel, activity, drop)
                .await;
        });
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bindir = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf();
    let data = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}", data.path().join("edge.db").display());
    let store = Store::connect(&db_url).await?;
    let (tunnel_port, internal_port, api_port, box_port) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let relay_url = format!("ws://127.0.0.1:{tunnel_port}/tunnel");

    let user = store
        .upsert_user("https://bench", "bench", None, Some("bench"))
        .await?;
    let key = edge_core::secret::load_or_create_file(&data.path().join("session-key"))?;
    let cookies = CookieKeys::new(CookieKey::new(key).context("key")?, vec![]);
    let sid = SessionId::generate();
    let now = edge_core::time::now_ms();
    store
        .create_session(&sid.hash(), "bench", user.id, now, now + 3_600_000, None)
        .await?;
    let cookie = format!(
        "{}={}",
        api_server::session::cookie_name(false),
        cookies.sign(
            api_server::session::cookie_name(false),
            api_server::session::SESSION_PURPOSE,
            sid.expose(),
            now + 3_600_000
        )
    );
    let dev = store
        .create_device(
            user.id,
            &NewDevice {
                name: "bench-box".into(),
                ..Default::default()
            },
        )
        .await?;
    let token = DeviceToken::generate();
    store.add_credential(dev.id, &token.hash()).await?;

    let env = [
        ("EDGE_DATA_DIR", data.path().to_str().context("path")?),
        ("RUST_LOG", "warn"),
    ];
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(bin(&bindir, "remote-proxy")?)
            .args([
                "--tunnel-listen",
                &format!("127.0.0.1:{tunnel_port}"),
                "--internal-listen",
                &format!("127.0.0.1:{internal_port}"),
            ])
            // Every simulated device is one owner's and dials from loopback.
            .args([
                "--max-tunnels-per-owner",
                &(cli.idle_tunnels + 16).to_string(),
            ])
            .args(["--max-connections-per-client", "0"])
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    );
    let relay_pid = procs.0[0].id().context("relay pid")?;
    wait_port(internal_port).await?;
    procs.0.push(
        Command::new(bin(&bindir, "api-server")?)
            .args([
                "--listen",
                &format!("127.0.0.1:{api_port}"),
                "--relay-url",
                &format!("http://127.0.0.1:{internal_port}"),
                "--cookie-insecure",
                // Discovery is lazy and the bench brings its own session.
                "--oidc-issuer",
                "http://127.0.0.1:9",
            ])
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    );
    procs.0.push(
        Command::new(bin(&bindir, "sim-box")?)
            .args(["--listen", &format!("127.0.0.1:{box_port}")])
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_port(api_port).await?;
    wait_port(box_port).await?;
    let rss_empty = rss_kib(relay_pid)?;
    procs.0.push(
        Command::new(bin(&bindir, "edge-agent")?)
            .args([
                "run",
                "--relay",
                &relay_url,
                "--target",
                &format!("127.0.0.1:{box_port}"),
            ])
            .env("EDGE_AGENT_TOKEN", token.expose())
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    );
    edge_tls::install_default_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(cli.concurrency)
        .build()?;
    let proxy = |path: &str| {
        format!(
            "http://127.0.0.1:{api_port}/api/devices/{}/proxy{path}",
            dev.id
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .get(proxy("/api/info"))
            .header("cookie", &cookie)
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("device never came online");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let n = cli.bulk_mib << 20;
    println!(
        "edge-bench on {} cores; figures from one run, loopback only",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!("bulk transfer, {} MiB each", cli.bulk_mib);
    let tcp = direct_tcp(n).await?;
    println!(
        "  direct loopback TCP copy        {:>9.1} MiB/s",
        mib_per_s(n, tcp)
    );
    let (got, d) = download(
        &client,
        &format!("http://127.0.0.1:{box_port}/test/download?bytes={n}"),
        "",
    )
    .await?;
    println!(
        "  direct HTTP from sim-box        {:>9.1} MiB/s",
        mib_per_s(got, d)
    );
    let (got, d) = download(
        &client,
        &proxy(&format!("/test/download?bytes={n}")),
        &cookie,
    )
    .await?;
    if got != n {
        bail!("full-path download lost bytes: {got} of {n}");
    }
    println!(
        "  full path download (api→relay→agent→box) {:>9.1} MiB/s",
        mib_per_s(got, d)
    );
    let d = upload(&client, &proxy("/test/upload"), &cookie, n).await?;
    println!(
        "  full path upload                {:>9.1} MiB/s",
        mib_per_s(n, d)
    );

    println!();
    println!("small requests: GET /api/info through the full path, {} requests, {} concurrent connections", cli.requests, cli.concurrency);
    let (rps, p50, p99, errors) = latency_run(
        &client,
        &proxy("/api/info"),
        &cookie,
        cli.requests,
        cli.concurrency,
    )
    .await?;
    println!(
        "  {:.0} req/s   p50 {:.2} ms   p99 {:.2} ms   errors {}",
        rps,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        errors
    );

    println!();
    println!("remote-proxy resident memory");
    let mut tokens = Vec::with_capacity(cli.idle_tunnels);
    for i in 0..cli.idle_tunnels {
        let d = store
            .create_device(
                user.id,
                &NewDevice {
                    name: format!("idle-{i}"),
                    ..Default::default()
                },
            )
            .await?;
        let t = DeviceToken::generate();
        store.add_credential(d.id, &t.hash()).await?;
        tokens.push(t);
    }
    let rss_one = rss_kib(relay_pid)?;
    let cancel = CancellationToken::new();
    idle_tunnels(&tokens, &relay_url, cancel.clone()).await?;
    // Let the relay finish registering and settle its allocator.
    let internal = format!("http://127.0.0.1:{internal_port}/internal/v1/sessions");
    let secret = Secret::new(std::fs::read_to_string(data.path().join("internal-secret"))?.trim());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: serde_json::Value = client
            .get(&internal)
            .bearer_auth(secret.expose())
            .send()
            .await?
            .json()
            .await?;
        if list.as_array().map(Vec::len) == Some(cli.idle_tunnels + 1) {
            break;
        }
        if Instant::now() > deadline {
            bail!("idle tunnels did not all register");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_many = rss_kib(relay_pid)?;
    println!("  at start (no tunnels)           {:>7} KiB", rss_empty);
    println!("  after the runs above (1 tunnel) {:>7} KiB", rss_one);
    println!(
        "  with {} idle tunnels          {:>7} KiB  (+{:.1} KiB per tunnel)",
        cli.idle_tunnels,
        rss_many,
        (rss_many.saturating_sub(rss_one)) as f64 / cli.idle_tunnels.max(1) as f64
    );
    cancel.cancel();
    drop(procs);
    Ok(())
}
