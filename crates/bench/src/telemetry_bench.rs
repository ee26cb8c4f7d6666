//! `edge-telemetry-bench`: what telemetry costs (ADR 025), on the release
//! binaries over loopback. Three figures:
//!
//! 1. **Scraping a fleet.** The `remote-proxy` holds `--devices` real,
//!    paired tunnels (default 10,000); each simulated device answers the
//!    scrape with a sim-box body (the contract's families, two models).
//!    After one interval to settle, the relay's CPU time over `--window-secs`
//!    is divided by the scrapes it completed: CPU ms per device per
//!    interval, and the share of one core the fleet costs at the interval.
//!    A first run of the same fleet with scraping off gives what the idle
//!    tunnels cost alone, and so scraping's own share (`--no-baseline`
//!    skips it).
//! 2. **Storage.** `--day-devices` devices' full day at 15 s (5,760 scrapes
//!    each, replayed through the real parser, figures and codec) written
//!    (hour windows, five-minute rollups, as the relay's writer keeps them)
//!    with `Store::write_telemetry` into a fresh SQLite file: bytes on disk
//!    per device per day (raw windows and rollups), scaled to 1,000 devices.
//! 3. **API latency.** The real `api-server` over the fleet's database: the
//!    device list with latest figures for 1,000 devices (five pages of
//!    200), and a 7-day series of one device (seven days of rollups).
//!
//! Run: `cargo build --release --bins && target/release/edge-telemetry-bench`

use anyhow::{bail, Context, Result};
use bench::procs::{self, bin, cpu_ms, free_port, wait_port, Procs};
use box_metrics::figures::resolution_exp;
use box_metrics::recorder::Recorder;
use box_metrics::{AllowList, Tracker};
use clap::Parser;
use edge_core::{DeviceId, DeviceToken};
use remote_proxy::telemetry_writer::{closed_rows, BUCKET_MS, WINDOW_MS};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{NewDevice, Store, TelemetryBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edge-telemetry-bench",
    about = "Scrape, storage and API costs of device telemetry"
)]
struct Cli {
    /// Devices the relay scrapes.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Scrape interval, seconds.
    #[arg(long, default_value_t = 15)]
    interval_secs: u64,
    /// How long the relay's CPU is measured, seconds (after one interval;
    /// the default spans a rewrite of every open window, made each minute).
    #[arg(long, default_value_t = 90)]
    window_secs: u64,
    /// Devices whose full day is written for the storage figure.
    #[arg(long, default_value_t = 50)]
    day_devices: usize,
    /// Skip the first relay run with scraping off (the idle tunnels' own
    /// CPU, subtracted to give scraping's share).
    #[arg(long)]
    no_baseline: bool,
    /// Requests per API figure.
    #[arg(long, default_value_t = 40)]
    requests: usize,
}

const DAY_MS: i64 = 86_400_000;

/// One device's scrapes from `start` every `every_ms` for `span_ms`, as
/// the relay's writer stores them: closed windows with their rollups,
/// recorded and turned into rows by the writer's own code.
fn replay(device: DeviceId, start: i64, span_ms: i64, every_ms: i64) -> Result<TelemetryBatch> {
    let sim = sim_box::metrics::SimMetrics::default();
    let mut tracker = Tracker::default();
    let allow = AllowList::default();
    let mut out = TelemetryBatch::default();
    let mut window = Recorder::new(BUCKET_MS);
    let mut hour = start - start.rem_euclid(WINDOW_MS);
    let mut known = std::collections::HashSet::new();
    let mut t = 0;
    while t < span_ms {
        let at = start + t;
        let body = sim.render_at(t as f64 / 1000.0);
        let e = box_metrics::parse(body.as_bytes(), &Default::default())?;
        let f = tracker.figures(&e, at, &allow)?;
        let h = at - at.rem_euclid(WINDOW_MS);
        if h != hour && !window.is_empty() {
            let done = std::mem::replace(&mut window, Recorder::new(BUCKET_MS));
            closed_rows(device, hour, &done, &mut out);
        }
        hour = h;
        let values: Vec<(u32, i8, f64)> = f
            .values
            .iter()
            .map(|(k, v)| {
                let id = k.id();
                if known.insert(id) {
                    out.series.push(store::SeriesRow {
                        device_id: device,
                        series_id: id,
                        metric: k.metric.to_string(),
                        labels: "{}".into(),
                    });
                }
                (id, resolution_exp(&k.metric), *v)
            })
            .collect();
        window.push(at, &values);
        t += every_ms;
    }
    if !window.is_empty() {
        closed_rows(device, hour, &window, &mut out);
    }
    Ok(out)
}

fn file_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// Storage of a day: (raw bytes/device/day, rollup bytes/device/day, file
/// bytes/device/day, CPU µs per scrape of parse + figures + encode).
async fn storage(devices: usize) -> Result<(f64, f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("day.db");
    let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
    let owner = store
        .upsert_user("https://bench", "day", None, None)
        .await?;
    let empty = file_bytes(&path);
    let (mut raw, mut rollups, mut cpu) = (0usize, 0usize, Duration::ZERO);
    let start = edge_core::time::now_ms() - DAY_MS;
    for i in 0..devices {
        let d = store
            .create_device(
                owner.id,
                &NewDevice {
                    name: format!("day-{i}"),
                    ..Default::default()
                },
            )
            .await?;
        let t = Instant::now();
        let batch = replay(d.id, start, DAY_MS, 15_000)?;
        cpu += t.elapsed();
        raw += batch.windows.iter().map(|w| w.data.len()).sum::<usize>();
        rollups += batch.rollups.iter().map(|r| r.data.len()).sum::<usize>();
        store.write_telemetry(&batch).await?;
    }
    store.close().await;
    let on_disk = file_bytes(&path).saturating_sub(empty);
    let n = devices as f64;
    let scrapes = n * (DAY_MS / 15_000) as f64;
    Ok((
        raw as f64 / n,
        rollups as f64 / n,
        on_disk as f64 / n,
        cpu.as_secs_f64() * 1e6 / scrapes,
    ))
}

/// Hold one tunnel per token; each stream answers one scrape with the
/// device's sim-box body.
async fn fleet(tokens: Vec<DeviceToken>, relay: &str, cancel: CancellationToken) -> Result<()> {
    bench::tunnels::hold(tokens, relay, "bench-telemetry/1", cancel, || {
        let sim = Arc::new(sim_box::metrics::SimMetrics::default());
        move |s| {
            tokio::spawn(answer(s, sim.clone()));
        }
    })
    .await?;
    Ok(())
}

async fn answer(mut s: tunnel::StreamHandle, sim: Arc<sim_box::metrics::SimMetrics>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 8192 {
            return;
        }
    }
    let body = sim.render();
    let res = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(res.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// The relay's count of scrapes with outcome `ok`, from its metrics.
async fn scrapes(client: &reqwest::Client, metrics_port: u16) -> Result<(f64, f64)> {
    let text = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |prefix: &str| {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((
        value("edge_relay_telemetry_scrapes_total{outcome=\"ok\"}"),
        value("edge_relay_telemetry_skipped_total"),
    ))
}

/// p50 and p99 (ms) of `n` GETs of `urls` (all of them count as one request).
async fn latency(
    client: &reqwest::Client,
    cookie: &str,
    urls: &[String],
    n: usize,
) -> Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        for url in urls {
            let res = client.get(url).header("cookie", cookie).send().await?;
            if !res.status().is_success() {
                bail!("{url}: {}", res.status());
            }
            res.bytes().await?;
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Ok((at(0.5), at(0.99)))
}

/// A relay holding the fleet's tunnels, kept while this lives.
struct Phase {
    _procs: Procs,
    _fleet: tokio_util::sync::DropGuard,
    internal_port: u16,
    cpu_ms: u64,
    secs: f64,
    done: f64,
    skipped: f64,
}

/// Start a relay scraping every `interval_secs` (0: off), connect the
/// fleet, let one interval settle, then measure the relay's CPU over the
/// window and the scrapes it completed.
async fn relay_phase(
    cli: &Cli,
    data: &std::path::Path,
    tokens: &[DeviceToken],
    interval_secs: u64,
    client: &reqwest::Client,
) -> Result<Phase> {
    let (tunnel_port, internal_port, metrics_port) = (free_port(), free_port(), free_port());
    let mut procs = Procs::default();
    let relay_pid = procs.keep(
        Command::new(bin(&bindir()?, "remote-proxy")?)
            .args(["--tunnel-listen", &format!("127.0.0.1:{tunnel_port}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--max-tunnels-per-owner", &(cli.devices + 16).to_string()])
            .args(["--max-connections-per-client", "0"])
            .args(["--telemetry-interval-secs", &interval_secs.to_string()])
            .env("EDGE_DATA_DIR", data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    wait_port(internal_port).await;
    let cancel = CancellationToken::new();
    let connect = Instant::now();
    fleet(
        tokens.to_vec(),
        &format!("ws://127.0.0.1:{tunnel_port}/tunnel"),
        cancel.clone(),
    )
    .await?;
    let secret = std::fs::read_to_string(data.join("internal-secret"))?;
    bench::tunnels::wait_registered(
        client,
        &format!(
            "http://127.0.0.1:{internal_port}{}",
            directory::internal_api::SESSIONS
        ),
        secret.trim(),
        cli.devices,
    )
    .await?;
    println!(
        "  {} tunnels up in {:.1} s (scraping {})",
        cli.devices,
        connect.elapsed().as_secs_f64(),
        if interval_secs == 0 {
            "off".to_owned()
        } else {
            format!("every {interval_secs} s")
        }
    );
    tokio::time::sleep(Duration::from_secs(cli.interval_secs)).await;
    let (ok0, skipped0) = scrapes(client, metrics_port).await?;
    let cpu0 = cpu_ms(relay_pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.window_secs)).await;
    let cpu = cpu_ms(relay_pid) - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let (ok1, skipped1) = scrapes(client, metrics_port).await?;
    Ok(Phase {
        _procs: procs,
        _fleet: cancel.drop_guard(),
        internal_port,
        cpu_ms: cpu,
        secs,
        done: ok1 - ok0,
        skipped: skipped1 - skipped0,
    })
}

fn bindir() -> Result<std::path::PathBuf> {
    Ok(std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    edge_tls::install_default_provider();
    procs::raise_nofile();
    let bindir = bindir()?;

    println!("== storage: {} devices, one day at 15 s", cli.day_devices);
    let (raw, rollups, disk, cpu_us) = storage(cli.day_devices).await?;
    println!(
        "  packed raw windows      {:>8.1} KB per device per day",
        raw / 1e3
    );
    println!(
        "  packed rollups          {:>8.1} KB per device per day",
        rollups / 1e3
    );
    println!(
        "  SQLite file growth      {:>8.1} KB per device per day = {:.0} MB per day per 1,000 devices (target <= 200)",
        disk / 1e3,
        disk * 1000.0 / 1e6
    );
    println!("  parse + figures + codec {cpu_us:>8.1} us per scrape (one core)");

    let data = tempfile::tempdir()?;
    let db = data.path().join("edge.db");
    let store = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let user = store
        .upsert_user("https://bench", "fleet", None, Some("fleet"))
        .await?;
    println!("== fleet: pairing {} devices", cli.devices);
    let tokens = bench::tunnels::pair_devices(&store, user.id, cli.devices, "box-").await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let idle = if cli.no_baseline {
        None
    } else {
        let phase = relay_phase(&cli, data.path(), &tokens, 0, &client).await?;
        let share = 100.0 * phase.cpu_ms as f64 / (phase.secs * 1e3);
        drop(phase);
        println!("  relay CPU with scraping off (idle tunnels only): {share:.1} % of one core");
        Some(share)
    };
    let phase = relay_phase(&cli, data.path(), &tokens, cli.interval_secs, &client).await?;
    let (cpu, secs, done, skipped) = (phase.cpu_ms, phase.secs, phase.done, phase.skipped);
    let expected = cli.devices as f64 * secs / cli.interval_secs as f64;
    let share = 100.0 * cpu as f64 / (secs * 1e3);
    println!(
        "  {done:.0} scrapes in {secs:.0} s ({:.0} % of the {expected:.0} due), {skipped:.0} skipped",
        100.0 * done / expected,
    );
    println!(
        "  relay CPU {:.3} ms per device per interval (scrape, parse, figures, store); {share:.1} % of one core for {} devices at {} s",
        cpu as f64 / done.max(1.0),
        cli.devices,
        cli.interval_secs
    );
    if let Some(idle) = idle {
        println!(
            "  of which scraping: {:.1} % of one core (target <= 10), {:.3} ms per scrape",
            share - idle,
            (share - idle) * 10.0 * secs / done.max(1.0)
        );
    }

    println!("== API over the fleet's database");
    let extra = store
        .create_device(
            user.id,
            &NewDevice {
                name: "week".into(),
                ..Default::default()
            },
        )
        .await?;
    let week = replay(
        extra.id,
        edge_core::time::now_ms() - 7 * DAY_MS,
        7 * DAY_MS,
        15_000,
    )?;
    let week = TelemetryBatch {
        windows: Vec::new(),
        ..week
    };
    store.write_telemetry(&week).await?;
    let cookie = bench::sign_in(&store, data.path(), user.id).await?;
    let api_port = free_port();
    let mut procs = Procs::default();
    procs.keep(
        Command::new(bin(&bindir, "api-server")?)
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args([
                "--relay-url",
                &format!("http://127.0.0.1:{}", phase.internal_port),
            ])
            .args(["--cookie-insecure", "--oidc-issuer", "http://127.0.0.1:9"])
            .args(["--metrics-listen", "off"])
            .env("EDGE_DATA_DIR", data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    wait_port(api_port).await;
    let base = format!("http://127.0.0.1:{api_port}");
    let pages: Vec<String> = (0..5)
        .map(|p| format!("{base}/api/devices?limit=200&offset={}", p * 200))
        .collect();
    let (p50, p99) = latency(&client, &cookie, &pages, cli.requests).await?;
    println!(
        "  latest figures of 1,000 devices (5 pages of 200): p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    let series = vec![format!(
        "{base}/api/devices/{}/telemetry/series?metric=inference_fps&from={}",
        extra.id,
        edge_core::time::now_ms() - 7 * DAY_MS
    )];
    let (p50, p99) = latency(&client, &cookie, &series, cli.requests).await?;
    println!("  7-day series of one device (2,016 five-minute rollups): p50 {p50:.1} ms, p99 {p99:.1} ms");
    drop(phase);
    Ok(())
}
