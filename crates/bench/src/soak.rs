//! `edge-soak`: 1,000 boxes, nothing lost. Starts the `remote-proxy`,
//! `api-server` and `sim-box` binaries beside this one, pairs every device
//! through the real pairing exchange, runs one agent per device (in
//! process; a few as `edge-agent` processes so they can be frozen), and for
//! `--duration-secs` drives 10 concurrent workers per 100 devices through
//! the full authenticated path: downloads and uploads checked by SHA-256
//! end to end, WebSocket echo, small requests. Meanwhile it kills random
//! agents (they come back), freezes agent processes with SIGSTOP past the
//! relay's ping timeout and thaws them, and SIGKILLs the relay once (it is
//! restarted on its ports). At the end it stops the api-server with
//! SIGTERM (open sessions close, the audit writer flushes) and prints
//! requests, bytes, corrupted transfers, failures outside the fault
//! windows, time for killed agents to be routable again, RSS of both
//! servers at start, after warm-up, at peak and at the end (growth after
//! warm-up over 5 % fails a run of 5 minutes or more), descriptors at
//! start and end, and the audit rows
//! against the remote-access sessions the api-server opened (each must
//! have its opened and its closed row). Exits 1 when something was lost.
//!
//! Run: `cargo build --release --bins && target/release/edge-soak`
//! (CI: `target/debug/edge-soak --duration-secs 60`).

use anyhow::{bail, Context, Result};
use bench::load::percentile;
use bench::procs::{bin, free_port, rss_kib, wait_port, Procs};
use clap::Parser;
use edge_core::{DeviceId, DeviceToken, Secret};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edge-soak",
    about = "1,000 boxes under load and faults through the real binaries; prints what was lost"
)]
struct Cli {
    /// Paired devices, each with its own agent.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// Concurrent workers per 100 devices.
    #[arg(long, default_value_t = 10)]
    workers_per_100: usize,
    /// Devices whose agent is an `edge-agent` process (frozen in turn).
    #[arg(long, default_value_t = 3)]
    process_agents: usize,
    /// Bytes in each checked download and upload.
    #[arg(long, default_value_t = 256 * 1024)]
    transfer_bytes: usize,
    /// Log filter of the servers and agent processes (their log lines go
    /// to this program's stderr); `error,api_server::box_client=debug`
    /// says why each box request failed.
    #[arg(long, default_value = "error")]
    server_log: String,
}

/// Extra time after a fault ends (the device answered again) during which
/// a failure still counts as the fault's.
const GRACE: Duration = Duration::from_secs(2);

/// A fault on one device (or, for `None`, the relay): from, until.
type Window = (Option<usize>, Instant, Option<Instant>);

/// When something was wrong with a device or the relay.
#[derive(Default)]
struct Faults {
    windows: Mutex<Vec<Window>>,
}

impl Faults {
    fn open(&self, device: Option<usize>) -> usize {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.push((device, Instant::now(), None));
        w.len() - 1
    }

    fn close(&self, id: usize) {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(win) = w.get_mut(id) {
            win.2 = Some(Instant::now());
        }
    }

    /// Whether a request to `device` over `[from, to]` overlapped a fault.
    fn excuses(&self, device: usize, from: Instant, to: Instant) -> bool {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.iter().any(|(d, start, end)| {
            (d.is_none() || *d == Some(device))
                && *start <= to
                && end.is_none_or(|e| e + GRACE >= from)
        })
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    bytes: AtomicU64,
    corrupted: AtomicU64,
    failed_in_faults: AtomicU64,
    failed_outside: AtomicU64,
    ok: AtomicU64,
}

/// One paired device and its agent.
struct Device {
    id: DeviceId,
    token: DeviceToken,
}

struct Shared {
    http: reqwest::Client,
    api: String,
    cookie: String,
    devices: Vec<Device>,
    faults: Faults,
    tally: Tally,
    transfer: usize,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn proxy(&self, d: usize, path: &str) -> String {
        format!(
            "{}/api/devices/{}/proxy{path}",
            self.api, self.devices[d].id
        )
    }

    async fn status(&self, d: usize) -> u16 {
        self.try_status(d).await.unwrap_or(0)
    }

    /// The status of a small request to device `d`, or why there was none
    /// (the error and its causes).
    async fn try_status(&self, d: usize) -> Result<u16, String> {
        self.http
            .get(self.proxy(d, "/api/info"))
            .header("cookie", &self.cookie)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(causes)
    }

    /// Wait until device `d` answers 200; how long that took.
    async fn routable(&self, d: usize, bound: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if self.status(d).await == 200 {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// One checked operation on device `d`; `Ok(bytes)` or why it failed.
/// `Err((true, _))` is corruption: an answer that arrived wrong.
async fn operation(s: &Shared, d: usize, kind: u32) -> Result<u64, (bool, String)> {
    let fail = |e: String| (false, e);
    match kind {
        // Download: the box's deterministic pattern, hashed on arrival.
        0 => {
            let n = s.transfer as u64;
            let res = s
                .http
                .get(s.proxy(d, &format!("/test/download?bytes={n}")))
                .header("cookie", &s.cookie)
                .send()
                .await
                .map_err(|e| fail(format!("download: {}", causes(e))))?;
            if !res.status().is_success() {
                return Err(fail(format!("download: {}", res.status())));
            }
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            let mut body = res.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| fail(format!("download body: {}", causes(e))))?;
                got += chunk.len() as u64;
                hasher.update(&chunk);
            }
            if got != n || hex::encode(hasher.finalize()) != sim_box::pattern_sha256(n) {
                return Err((
                    true,
                    format!("download of {n} bytes arrived as {got} bytes or with another hash"),
                ));
            }
            Ok(n)
        }
        // Upload: random bytes; the box answers their length and hash.
        1 => {
            let mut body = vec![0u8; s.transfer];
            rand::thread_rng().fill(&mut body[..]);
            let want = hex::encode(Sha256::digest(&body));
            let res = s
                .http
                .post(s.proxy(d, "/test/upload"))
                .header("cookie", &s.cookie)
                .header("x-csrf", "1")
                .body(body)
                .send()
                .await
                .map_err(|e| fail(format!("upload: {}", causes(e))))?;
            if !res.status().is_success() {
                return Err(fail(format!("upload: {}", res.status())));
            }
            let v: serde_json::Value = res
                .json()
                .await
                .map_err(|e| fail(format!("upload answer: {}", causes(e))))?;
            if v["sha256"] != want.as_str() || v["bytes"] != s.transfer {
                return Err((true, format!("upload arrived as {v}")));
            }
            Ok(s.transfer as u64)
        }
        // WebSocket echo: five messages, each must come back unchanged.
        2 => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let url = s.proxy(d, "/test/ws-echo").replacen("http", "ws", 1);
            let mut req = url
                .into_client_request()
                .map_err(|e| fail(format!("ws request: {e}")))?;
            let cookie = s.cookie.parse().map_err(|_| fail("cookie".into()))?;
            req.headers_mut().insert("cookie", cookie);
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .map_err(|e| fail(format!("ws upgrade: {e}")))?;
            let mut moved = 0u64;
            for i in 0..5u32 {
                let mut msg = vec![0u8; 1024 + i as usize];
                rand::thread_rng().fill(&mut msg[..]);
                ws.send(Message::binary(msg.clone()))
                    .await
                    .map_err(|e| fail(format!("ws send: {e}")))?;
                match ws.next().await {
                    Some(Ok(Message::Binary(back))) if back[..] == msg[..] => {
                        moved += msg.len() as u64;
                    }
                    Some(Ok(other)) => {
                        return Err((true, format!("ws echo came back as {} bytes", other.len())))
                    }
                    Some(Err(e)) => return Err(fail(format!("ws echo: {e}"))),
                    None => return Err(fail("ws closed early".into())),
                }
            }
            let _ = ws.close(None).await;
            Ok(moved)
        }
        // A small request.
        _ => match s.try_status(d).await {
            Ok(200) => Ok(0),
            Ok(other) => Err(fail(format!("small request: {other}"))),
            Err(e) => Err(fail(format!("small request: {e}"))),
        },
    }
}

/// An HTTP client error with every cause it carries (reqwest's own text
/// names only the step that failed).
fn causes(e: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

async fn worker(s: Arc<Shared>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let (d, kind) = {
            let mut rng = rand::thread_rng();
            let kind = match rng.gen_range(0..10) {
                0..=1 => 0,
                2..=3 => 1,
                4 => 2,
                _ => 3,
            };
            (rng.gen_range(0..s.devices.len()), kind)
        };
        let from = Instant::now();
        let result = operation(&s, d, kind).await;
        let to = Instant::now();
        s.tally.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(n) => {
                s.tally.ok.fetch_add(1, Ordering::Relaxed);
                s.tally.bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err((true, why)) => {
                s.tally.corrupted.fetch_add(1, Ordering::Relaxed);
                s.failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("CORRUPT device {d}: {why}"));
            }
            Err((false, why)) => {
                if s.faults.excuses(d, from, to) {
                    s.tally.failed_in_faults.fetch_add(1, Ordering::Relaxed);
                } else {
                    s.tally.failed_outside.fetch_add(1, Ordering::Relaxed);
                    s.failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!(
                            "device {d}, {:?} into the request: {why}",
                            to - from
                        ));
                }
            }
        }
    }
}

/// The agent of one device: a task in this process, or a child process.
enum Agent {
    Task(JoinHandle<()>),
    Process(Child),
}

fn start_task_agent(relay: &str, target: &str, token: &DeviceToken) -> Agent {
    let mut settings = edge_agent::config::AgentSettings::new(relay, target);
    settings.backoff_max = Duration::from_secs(5);
    let token = DeviceToken::from_secret(Secret::new(token.expose()));
    Agent::Task(tokio::spawn(edge_agent::run(
        settings,
        token,
        CancellationToken::new(),
    )))
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// An unlabelled sample from a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

async fn scrape(http: &reqwest::Client, port: u16) -> Result<String> {
    Ok(http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    edge_tls::install_default_provider();
    let nofile = bench::procs::raise_nofile();
    let bindir = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf();
    let data = tempfile::tempdir()?;
    let db_path = data.path().join("edge.db");
    let db_url = format!("sqlite://{}", db_path.display());
    let store = store::Store::connect(&db_url).await?;
    let (tunnel_port, internal_port, relay_metrics) = (free_port(), free_port(), free_port());
    let (api_port, api_metrics, box_port) = (free_port(), free_port(), free_port());
    let relay_url = format!("ws://127.0.0.1:{tunnel_port}/tunnel");
    let target = format!("127.0.0.1:{box_port}");
    let env = [
        ("EDGE_DATA_DIR", data.path().to_str().context("path")?),
        ("RUST_LOG", cli.server_log.as_str()),
    ];
    let mut procs = Procs::default();
    let relay_cmd = || -> Result<Child> {
        Ok(Command::new(bin(&bindir, "remote-proxy")?)
            .args(["--tunnel-listen", &format!("127.0.0.1:{tunnel_port}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{relay_metrics}")])
            .args(["--max-connections-per-client", "0"])
            .args(["--max-tunnels-per-owner", &(cli.devices + 16).to_string()])
            .envs(env)
            .stdout(Stdio::from(std::io::stderr()))
            .kill_on_drop(true)
            .spawn()?)
    };
    let mut relay = relay_cmd()?;
    wait_port(internal_port).await;
    let mut api = Command::new(bin(&bindir, "api-server")?)
        .args(["--listen", &format!("127.0.0.1:{api_port}")])
        .args(["--relay-url", &format!("http://127.0.0.1:{internal_port}")])
        .args(["--cookie-insecure", "--oidc-issuer", "http://127.0.0.1:9"])
        .args(["--metrics-listen", &format!("127.0.0.1:{api_metrics}")])
        .args(["--max-connections-per-client", "0"])
        .args(["--max-devices-per-user", &(cli.devices + 16).to_string()])
        .envs(env)
        .stdout(Stdio::from(std::io::stderr()))
        .kill_on_drop(true)
        .spawn()?;
    procs.keep(
        Command::new(bin(&bindir, "sim-box")?)
            .args(["--listen", &target])
            .envs(env)
            .stdout(Stdio::from(std::io::stderr()))
            .spawn()?,
    )?;
    wait_port(api_port).await;
    wait_port(box_port).await;
    // Idle keep-alive connections are dropped before the api-server's own
    // 10 s idle limit, so a request never races the server's close.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let api_url = format!("http://127.0.0.1:{api_port}");
    let user = store
        .upsert_user("https://soak", "soak", None, Some("soak"))
        .await?;
    let cookie = api_server::session::sign_in_over_data_dir(
        &store,
        data.path(),
        user.id,
        "soak",
        24 * 3_600_000,
    )
    .await?;

    // Pair every device through the real exchange (a few codes at a time:
    // a user may hold only so many pending codes).
    let paired_at = Instant::now();
    let pair_one = |i: usize| {
        let (http, api_url, cookie) = (http.clone(), api_url.clone(), cookie.clone());
        async move {
            let code: serde_json::Value = http
                .post(format!("{api_url}/api/pairing/codes"))
                .header("cookie", &cookie)
                .header("x-csrf", "1")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let paired: serde_json::Value = http
                .post(format!("{api_url}/api/pairing/exchange"))
                .json(&serde_json::json!({ "code": code["code"], "name": format!("soak-{i}") }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id: DeviceId = paired["device_id"]
                .as_str()
                .context("device_id")?
                .parse()
                .map_err(|_| anyhow::anyhow!("bad device id"))?;
            let token = DeviceToken::from_secret(Secret::new(
                paired["credential"].as_str().context("credential")?,
            ));
            anyhow::Ok(Device { id, token })
        }
    };
    let devices: Vec<Device> = futures_util::stream::iter((0..cli.devices).map(pair_one))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let paired_in = paired_at.elapsed();

    // Agents: the first few as processes (they are frozen in turn).
    let process_agents = cli.process_agents.min(devices.len());
    let mut agents: Vec<Agent> = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        agents.push(if i < process_agents {
            Agent::Process(
                Command::new(bin(&bindir, "edge-agent")?)
                    .args(["run", "--relay", &relay_url, "--target", &target])
                    .args(["--backoff-max-ms", "5000"])
                    .env("EDGE_AGENT_TOKEN", d.token.expose())
                    .envs(env)
                    .stdout(Stdio::from(std::io::stderr()))
                    .kill_on_drop(true)
                    .spawn()?,
            )
        } else {
            start_task_agent(&relay_url, &target, &d.token)
        });
    }
    let shared = Arc::new(Shared {
        http: http.clone(),
        api: api_url.clone(),
        cookie,
        devices,
        faults: Faults::default(),
        tally: Tally::default(),
        transfer: cli.transfer_bytes,
        failures: Mutex::default(),
    });
    let online_at = Instant::now();
    futures_util::stream::iter(0..shared.devices.len())
        .for_each_concurrent(64, |d| {
            let s = shared.clone();
            async move {
                let _ = s.routable(d, Duration::from_secs(120)).await;
            }
        })
        .await;
    let online_in = online_at.elapsed();
    let relay_pid = relay.id().context("relay pid")?;
    let api_pid = api.id().context("api pid")?;
    println!(
        "edge-soak: {} devices paired through the exchange in {:.1} s, all online in {:.1} s; {} workers for {} s; open-file limit {nofile}",
        shared.devices.len(),
        paired_in.as_secs_f64(),
        online_in.as_secs_f64(),
        cli.devices.div_ceil(100) * cli.workers_per_100,
        cli.duration_secs
    );

    // The load.
    let stop = CancellationToken::new();
    let workers: Vec<JoinHandle<()>> = (0..cli.devices.div_ceil(100) * cli.workers_per_100)
        .map(|_| tokio::spawn(worker(shared.clone(), stop.clone())))
        .collect();

    // The faults, on a schedule scaled to the run.
    let duration = Duration::from_secs(cli.duration_secs.max(30));
    let began = Instant::now();
    let at = |f: f64| began + duration.mul_f64(f);
    let mut routable_again: Vec<Duration> = Vec::new();
    let mut killed_agents = 0usize;
    let mut frozen = 0usize;
    let sleep_until = |t: Instant| tokio::time::sleep_until(t.into());

    // 1. The relay, SIGKILLed once at 10 % and restarted on its ports.
    sleep_until(at(0.10)).await;
    let window = shared.faults.open(None);
    relay.start_kill()?;
    let _ = relay.wait().await;
    relay = relay_cmd()?;
    wait_port(internal_port).await;
    let relay_back = Instant::now();
    let all_back = futures_util::stream::iter(0..shared.devices.len())
        .map(|d| {
            let s = shared.clone();
            async move { s.routable(d, Duration::from_secs(60)).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    shared.faults.close(window);
    let relay_recovery = relay_back.elapsed();
    if all_back.iter().any(Option::is_none) {
        bail!("not every device came back after the relay restart");
    }
    let relay_pid_now = relay.id().context("relay pid")?;
    let _ = relay_pid;

    // Start figures once the restarted relay carries everything again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_rss = (rss_kib(relay_pid_now), rss_kib(api_pid));
    // Memory every 5 s until the workers stop: growth is judged from the
    // end of warm-up (a third of the measured time) to the end, so the
    // restarted relay filling its allocator is not taken for a trend.
    let measured_from = Instant::now();
    let rss_samples = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.is_cancelled() {
                if let (r @ 1.., a @ 1..) = (rss_kib(relay_pid_now), rss_kib(api_pid)) {
                    samples.push((measured_from.elapsed(), r, a));
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            samples
        })
    };
    let relay_page = scrape(&http, relay_metrics).await?;
    let start_tunnels = sample(&relay_page, "edge_relay_tunnels_online").unwrap_or(0.0) as i64;
    let start_fds = (
        fds(relay_pid_now) as i64 - start_tunnels,
        fds(api_pid) as i64,
    );

    // 2. Agents killed and restarted, and agent processes frozen past the
    // relay's ping timeout, until 90 % of the run.
    let mut next_freeze = 0usize;
    while Instant::now() < at(0.90) {
        // A frozen agent process (about 20 s: past the 15 s bound).
        if process_agents > 0 && Instant::now() + Duration::from_secs(25) < at(0.90) {
            let d = next_freeze % process_agents;
            next_freeze += 1;
            if let Agent::Process(child) = &agents[d] {
                let pid = child.id().context("agent pid")?;
                let window = shared.faults.open(Some(d));
                bench::procs::signal(pid, "STOP");
                // Meanwhile: kill and restart a few agents.
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until {
                    let k = rand::thread_rng().gen_range(process_agents..shared.devices.len());
                    let w = shared.faults.open(Some(k));
                    if let Agent::Task(t) = &agents[k] {
                        t.abort();
                    }
                    killed_agents += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    agents[k] = start_task_agent(&relay_url, &target, &shared.devices[k].token);
                    match shared.routable(k, Duration::from_secs(30)).await {
                        Some(t) => routable_again.push(t),
                        None => bail!("killed agent {k} did not come back in 30 s"),
                    }
                    shared.faults.close(w);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                bench::procs::signal(pid, "CONT");
                frozen += 1;
                if shared.routable(d, Duration::from_secs(60)).await.is_none() {
                    bail!("thawed agent {d} did not come back");
                }
                shared.faults.close(window);
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sleep_until(at(1.0)).await;
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }

    // End figures, at rest with every agent back.
    for d in 0..shared.devices.len() {
        if shared.routable(d, Duration::from_secs(60)).await.is_none() {
            bail!("device {d} not routable at the end");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end_rss = (rss_kib(relay_pid_now), rss_kib(api_pid));
    let samples = rss_samples.await.unwrap_or_default();
    let warm_at = samples.last().map_or(Duration::ZERO, |l| l.0) / 3;
    let warm_rss = samples
        .iter()
        .find(|(at, _, _)| *at >= warm_at)
        .map_or(start_rss, |&(_, r, a)| (r, a));
    let peak_rss = samples
        .iter()
        .fold(end_rss, |(pr, pa), &(_, r, a)| (pr.max(r), pa.max(a)));
    let relay_page = scrape(&http, relay_metrics).await?;
    let end_tunnels = sample(&relay_page, "edge_relay_tunnels_online").unwrap_or(0.0) as i64;
    let end_fds = (fds(relay_pid_now) as i64 - end_tunnels, fds(api_pid) as i64);
    let api_page = scrape(&http, api_metrics).await?;
    let sessions =
        sample(&api_page, "edge_api_remote_access_sessions_opened").unwrap_or(-1.0) as i64;
    let lost = sample(&api_page, "edge_api_audit_events_lost").unwrap_or(-1.0) as i64;
    // SIGTERM: the api-server writes every pending audit event and exits.
    bench::procs::signal(api_pid, "TERM");
    let exited = tokio::time::timeout(Duration::from_secs(30), api.wait()).await;
    if !matches!(exited, Ok(Ok(s)) if s.success()) {
        bail!("the api-server did not exit cleanly after SIGTERM: {exited:?}");
    }
    let counts: HashMap<String, i64> = {
        let mut m = HashMap::new();
        for action in ["remote_access_opened", "remote_access_closed"] {
            m.insert(action.to_owned(), store.audit_count(user.id, action).await?);
        }
        m
    };
    let opened = counts["remote_access_opened"];
    let closed = counts["remote_access_closed"];

    let t = &shared.tally;
    routable_again.sort();
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / a.max(1) as f64 * 100.0;
    println!();
    println!(
        "requests                        {:>10}",
        t.requests.load(Ordering::Relaxed)
    );
    println!(
        "  succeeded                     {:>10}",
        t.ok.load(Ordering::Relaxed)
    );
    println!(
        "  failed inside fault windows   {:>10}",
        t.failed_in_faults.load(Ordering::Relaxed)
    );
    println!(
        "  failed outside fault windows  {:>10}  (must be 0)",
        t.failed_outside.load(Ordering::Relaxed)
    );
    println!(
        "corrupted transfers             {:>10}  (must be 0)",
        t.corrupted.load(Ordering::Relaxed)
    );
    println!(
        "bytes checked end to end        {:>10.1} MiB",
        t.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    );
    println!(
        "relay SIGKILL: every device routable again {:.1} s after the restart",
        relay_recovery.as_secs_f64()
    );
    println!(
        "agents killed {killed_agents}, routable again after restart: p50 {:?}, p99 {:?}; agent processes frozen (SIGSTOP ~20 s) {frozen}",
        percentile(&routable_again, 0.5),
        percentile(&routable_again, 0.99)
    );
    for (i, name) in ["remote-proxy", "api-server"].into_iter().enumerate() {
        let pick = |p: (u64, u64)| if i == 0 { p.0 } else { p.1 };
        println!(
            "RSS {name:<12} start {} KiB, after warm-up ({:.0} s) {} KiB, peak {} KiB, end {} KiB; warm-up -> end {:+.1} %",
            pick(start_rss),
            warm_at.as_secs_f64(),
            pick(warm_rss),
            pick(peak_rss),
            pick(end_rss),
            growth(pick(warm_rss), pick(end_rss))
        );
    }
    println!(
        "descriptors beyond tunnels: remote-proxy {} -> {}; api-server {} -> {} (tunnels {start_tunnels} -> {end_tunnels})",
        start_fds.0, end_fds.0, start_fds.1, end_fds.1
    );
    println!(
        "audit: {sessions} remote-access sessions opened by the api-server; rows: {opened} opened, {closed} closed; {lost} events lost"
    );

    let mut verdict = Vec::new();
    if t.corrupted.load(Ordering::Relaxed) > 0 {
        verdict.push("corrupted transfers".to_owned());
    }
    if t.failed_outside.load(Ordering::Relaxed) > 0 {
        verdict.push("requests failed outside the fault windows".to_owned());
    }
    if opened != sessions || opened != closed || lost != 0 {
        verdict.push("audit rows do not match the remote-access sessions".to_owned());
    }
    // A descriptor leak grows with the work done; allow a little slack for
    // pooled connections.
    if end_fds.0 > start_fds.0 + 16 || end_fds.1 > start_fds.1 + 16 {
        verdict.push("descriptors leaked".to_owned());
    }
    // Memory: a trend needs a long run; short runs are all warm-up.
    if duration >= Duration::from_secs(300)
        && (growth(warm_rss.0, end_rss.0) > 5.0 || growth(warm_rss.1, end_rss.1) > 5.0)
    {
        verdict.push("resident memory grew by more than 5 %".to_owned());
    }
    for f in shared
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .take(20)
    {
        println!("  {f}");
    }
    drop(agents);
    drop(relay);
    drop(procs);
    if verdict.is_empty() {
        println!("\nnothing lost");
        Ok(())
    } else {
        bail!("soak failed: {}", verdict.join("; "))
    }
}
