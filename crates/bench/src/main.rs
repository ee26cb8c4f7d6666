//! `edge-bench`: starts the release binaries (remote-proxy, api-server,
//! sim-box, edge-agent) as separate processes on loopback and, when rathole
//! is found (`--rathole PATH` or on `PATH`; `cargo install rathole`),
//! rathole 0.5 with its tcp and websocket transports forwarding to the same
//! box, in the same run, and the `edge` CLI forwarding a local port to the
//! box through the whole path. It prints, for each path, bulk throughput and
//! small-request rate with p50/p99, our ratios to rathole, CPU per 1,000
//! proxied requests, small requests by box (sim-box, a Go `net/http` box)
//! and by client (its own, wrk), and how fast and how cheaply the relay
//! holds N idle tunnels; with `--syscalls`, each process's system calls per
//! small request (perf). Stops by itself (about 4 minutes on 2 cores).
//!
//! Run: `cargo build --release --bins && target/release/edge-bench`

use bench::{clients, load, procs, rathole, scaling, storm, syscalls, tunnels, wrk};

use anyhow::{Context, Result};
use auth::SessionId;
use clap::Parser;
use directory::SessionView;
use edge_core::Secret;
use load::{ms, Latency};
use procs::{bin, cpu_ms, free_port, rss_kib, wait_port, Procs};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edge-bench",
    about = "Throughput, latency, CPU and memory of the edge platform's full path, beside rathole"
)]
struct Cli {
    /// MiB moved in each bulk transfer.
    #[arg(long, default_value_t = 512)]
    bulk_mib: u64,
    /// Small requests per path in the latency runs.
    #[arg(long, default_value_t = 40_000)]
    requests: usize,
    /// Concurrent connections in the latency runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Idle tunnels held open for the connect-rate and memory figures.
    #[arg(long, default_value_t = 10_000)]
    idle_tunnels: usize,
    /// Rounds over all paths; each figure is the median of its rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The rathole binary (default: `rathole` on PATH).
    #[arg(long)]
    rathole: Option<PathBuf>,
    /// Also print how the figures grow: requests at 1, 64 and 512
    /// connections, idle tunnels at 1,000, 10,000 and 100,000.
    #[arg(long)]
    scaling: bool,
    /// Seconds each wrk run lasts in the by-box-and-client table.
    #[arg(long, default_value_t = 3)]
    wrk_secs: u64,
    /// Last, a connect storm: this many agents (the agent's own reconnect
    /// loop) hold tunnels, the relay is killed and started again, and the
    /// time until it holds them all again is printed, with proxied
    /// requests' latency meanwhile. 0: no storm.
    #[arg(long, default_value_t = 0)]
    storm: usize,
    /// Only the bulk transfers, with each tunnel's CPU per GiB moved: a
    /// short run for profiling the byte path (the other figures are not
    /// measured).
    #[arg(long)]
    bulk_only: bool,
    /// Also count each process's system calls per small request (`perf
    /// stat` attached to it; Debian's linux-perf): whether a process's CPU
    /// per request is its own work or the kernel's price per call. Off by
    /// default, since the counting itself costs a little.
    #[arg(long)]
    syscalls: bool,
    /// How the api-server (and the relay-alone client) reach the relay:
    /// `tcp`, its internal port on loopback; `unix`, its internal Unix
    /// socket, the one-host option of ADR 041.
    #[arg(long, value_enum, default_value_t = InternalHop::Tcp)]
    internal_hop: InternalHop,
}

/// The api-server ⇄ relay hop [`Cli::internal_hop`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InternalHop {
    Unix,
    Tcp,
}

/// Start the Go `net/http` box (`go/device -listen`) with its own device
/// and edge-agent, and rathole's tcp transport to it: the box's base URLs
/// through rathole and through our proxy route. `None` (with the reason
/// printed) when Go or Debian's Go packages are missing.
#[allow(clippy::too_many_arguments)]
async fn start_go_box(
    bindir: &std::path::Path,
    store: &Store,
    user: edge_core::UserId,
    relay_url: &str,
    data: &std::path::Path,
    rathole: &std::path::Path,
    api_port: u16,
    procs: &mut Procs,
) -> Result<Option<(String, String)>> {
    let go = match testkit::go_device::build() {
        Ok(go) => go,
        Err(why) => {
            println!("Go box: skipped ({why})");
            return Ok(None);
        }
    };
    let port = free_port();
    procs.keep(
        Command::new(go)
            .args(["-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    wait_port(port).await;
    let (dev, token) = tunnels::pair_device(store, user, "bench-go-box".into()).await?;
    procs.keep(
        Command::new(bin(bindir, "edge-agent")?)
            .args(["run", "--relay", relay_url])
            .args(["--target", &format!("127.0.0.1:{port}")])
            .env("EDGE_AGENT_TOKEN", token.expose())
            .env("EDGE_DATA_DIR", data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    let through_rathole = rathole::start(rathole, "tcp", "go", port, data, procs)
        .await?
        .port;
    Ok(Some((
        format!("http://127.0.0.1:{through_rathole}"),
        format!("http://127.0.0.1:{api_port}/api/devices/{dev}/proxy"),
    )))
}

/// Wait (up to 20 s) until `base/api/info` answers 2xx.
async fn until_answers(
    client: &reqwest::Client,
    name: &str,
    base: &str,
    cookie: Option<&str>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut req = client.get(format!("{base}/api/info"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if req.send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} never answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start `edge forward` (the real CLI, with a bearer session of `user`)
/// from an ephemeral local port to the box: its pid and local address.
#[allow(clippy::too_many_arguments)]
async fn start_edge_forward(
    bindir: &std::path::Path,
    store: &Store,
    user: edge_core::UserId,
    data: &std::path::Path,
    server: &str,
    device: &str,
    box_port: u16,
    procs: &mut Procs,
) -> Result<(u32, std::net::SocketAddr)> {
    use tokio::io::AsyncBufReadExt;
    let sid = SessionId::generate();
    let now = edge_core::time::now_ms();
    store
        .create_bearer_session(
            &api_server::session::bearer_hash(&sid),
            "bench-cli",
            user,
            (now, now + 3_600_000),
            None,
            "edge-bench",
        )
        .await?;
    let config = data.join("edge-cli");
    let global = edge_cli::Global {
        server: None,
        config_dir: Some(config.clone()),
        ca_file: None,
        insecure_plaintext: false,
        client_id: None,
    };
    edge_cli::credentials::save(
        &global,
        &edge_cli::credentials::Credential {
            server: server.to_owned(),
            token: Secret::new(format!(
                "{}{}",
                api_server::session::BEARER_PREFIX,
                sid.expose()
            )),
            expires_at: now + 3_600_000,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut child = Command::new(bin(bindir, "edge")?)
        .args(["forward", device, &format!("0:127.0.0.1:{box_port}")])
        .env("EDGE_CONFIG_DIR", &config)
        .env("EDGE_SERVER", server)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let pid = procs.keep(child)?;
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("edge forward did not start")??
    .context("edge forward printed nothing")?;
    let addr = line
        .strip_prefix("Forwarding ")
        .and_then(|l| l.split(" -> ").next())
        .context("unexpected first line of edge forward")?
        .parse()?;
    Ok((pid, addr))
}

/// What one path measured.
struct Row {
    name: &'static str,
    bulk: f64,
    small: Latency,
}

/// System calls over the small requests, per path: the full path's
/// api-server, relay, agent and box; the box answering directly;
/// rathole-tcp's server, client and box.
#[derive(Default)]
struct SyscallSums {
    full: [u64; 4],
    direct: [u64; 1],
    rathole_tcp: [u64; 3],
}

/// [`syscalls::Counting::start`] off the runtime's threads.
async fn start_counting(pids: Vec<u32>) -> Result<syscalls::Counting> {
    tokio::task::spawn_blocking(move || syscalls::Counting::start(&pids)).await?
}

/// The median of `v` (sorted in place).
fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ratio(ours: f64, theirs: Option<f64>) -> String {
    theirs.map_or_else(
        || "(skipped: no rathole)".into(),
        |t| format!("{:.2}×", ours / t),
    )
}

/// Download `n` bytes from the box through the relay alone: a raw stream
/// on the api-server's channel to the relay, HTTP/1 written by hand.
async fn relay_only_download(
    directory: &directory::RelayDirectory,
    device: edge_core::DeviceId,
    n: u64,
) -> Result<f64> {
    let start = Instant::now();
    let mut s = directory.open_stream(device).await?;
    s.write_all(
        format!(
            "GET /test/download?bytes={n} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut head = Vec::new();
    let mut header_len = None;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        total += k as u64;
        if header_len.is_none() {
            head.extend_from_slice(&buf[..k.min(4096)]);
            header_len = head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p as u64 + 4);
        }
    }
    let body = total - header_len.context("no response header")?;
    if body < n {
        anyhow::bail!("relay-only download lost bytes: {body} of {n}");
    }
    Ok(load::mib_per_s(n, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    edge_tls::install_default_provider();
    let nofile = procs::raise_nofile();
    let bindir = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf();
    let data = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}", data.path().join("edge.db").display());
    let store = Store::connect(&db_url).await?;
    let (tunnel_port, internal_port, api_port, box_port) =
        (free_port(), free_port(), free_port(), free_port());
    let relay_url = format!("ws://127.0.0.1:{tunnel_port}/tunnel");
    let internal_socket = data.path().join("relay-internal.sock");
    // The relay's internal URL as the api-server and the relay-alone
    // client use it.
    let relay_node = match cli.internal_hop {
        InternalHop::Unix => directory::client::unix_node_url(&internal_socket),
        InternalHop::Tcp => format!("http://127.0.0.1:{internal_port}"),
    };

    let user = store
        .upsert_user("https://bench", "bench", None, Some("bench"))
        .await?;
    let cookie = bench::sign_in(&store, data.path(), user.id).await?;
    let (dev, token) = tunnels::pair_device(&store, user.id, "bench-box".into()).await?;

    let env = [
        ("EDGE_DATA_DIR", data.path().to_str().context("path")?),
        ("RUST_LOG", "warn"),
    ];
    let mut procs = Procs::default();
    let relay_metrics_port = free_port();
    // Every simulated device is one owner's and dials from loopback.
    let most_tunnels = cli
        .idle_tunnels
        .max(if cli.scaling { 100_000 } else { 0 })
        .max(cli.storm)
        + 16;
    // The same relay each time it starts (the storm starts it again).
    let relay_command = || -> Result<Command> {
        let mut cmd = Command::new(bin(&bindir, "remote-proxy")?);
        cmd.args([
            "--tunnel-listen",
            &format!("127.0.0.1:{tunnel_port}"),
            "--internal-listen",
            &format!("127.0.0.1:{internal_port}"),
        ])
        .arg("--internal-socket")
        .arg(&internal_socket)
        .args(["--max-tunnels-per-owner", &most_tunnels.to_string()])
        .args(["--max-tunnels", &most_tunnels.max(50_000).to_string()])
        .args(["--max-connections-per-client", "0"])
        // The scaling steps' 512 connections go to one device, beyond
        // the default cap of its concurrent streams (256).
        .args(["--max-streams-per-session", "1024"])
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{relay_metrics_port}"),
        ])
        .envs(env)
        .stdout(Stdio::null());
        Ok(cmd)
    };
    let relay_pid = procs.keep(relay_command()?.spawn()?)?;
    wait_port(internal_port).await;
    let api_pid = procs.keep(
        Command::new(bin(&bindir, "api-server")?)
            .args([
                "--listen",
                &format!("127.0.0.1:{api_port}"),
                "--relay-url",
                &relay_node,
                "--cookie-insecure",
                // Discovery is lazy and the bench brings its own session.
                "--oidc-issuer",
                "http://127.0.0.1:9",
                "--metrics-listen",
                "127.0.0.1:0",
                // The load comes from one address.
                "--max-connections-per-client",
                "0",
                // The scaling step's 512 connections all stay kept.
                "--box-idle-per-device",
                "512",
            ])
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    let box_pid = procs.keep(
        Command::new(bin(&bindir, "sim-box")?)
            .args(["--listen", &format!("127.0.0.1:{box_port}")])
            .envs(env)
            .stdout(Stdio::null())
            .spawn()?,
    )?;
    wait_port(api_port).await;
    wait_port(box_port).await;
    let rss_empty = rss_kib(relay_pid);
    let agent_pid = procs.keep(
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
    )?;
    let rathole_bin = rathole::find(cli.rathole.as_deref());
    let mut rathole_ports = Vec::new();
    // rathole-tcp's server and client, whose CPU is set beside ours.
    let mut rathole_tcp_pids = None;
    let mut rathole_ws_pids = None;
    if let Some(rh) = &rathole_bin {
        for transport in ["tcp", "websocket"] {
            let started =
                rathole::start(rh, transport, "sim", box_port, data.path(), &mut procs).await?;
            if transport == "tcp" {
                rathole_tcp_pids = Some(started.pids);
            } else {
                rathole_ws_pids = Some(started.pids);
            }
            rathole_ports.push((transport, started.port));
        }
    }

    let (forward_pid, forward_addr) = start_edge_forward(
        &bindir,
        &store,
        user.id,
        data.path(),
        &format!("http://127.0.0.1:{api_port}"),
        &dev.to_string(),
        box_port,
        &mut procs,
    )
    .await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let ours = format!("http://127.0.0.1:{api_port}/api/devices/{dev}/proxy");
    let direct = format!("http://127.0.0.1:{box_port}");
    // Every path answers before anything is measured.
    let mut paths: Vec<(&'static str, String, Option<&str>)> =
        vec![("direct to the box", direct, None)];
    for (transport, port) in &rathole_ports {
        let name = if *transport == "tcp" {
            "rathole 0.5, tcp"
        } else {
            "rathole 0.5, websocket"
        };
        paths.push((name, format!("http://127.0.0.1:{port}"), None));
    }
    paths.push(("ours, full path", ours.clone(), Some(cookie.as_str())));
    paths.push(("ours, edge forward", format!("http://{forward_addr}"), None));
    for (name, base, cookie) in &paths {
        until_answers(&client, name, base, *cookie).await?;
    }
    let go_box = match &rathole_bin {
        Some(rh) => {
            let go = start_go_box(
                &bindir,
                &store,
                user.id,
                &relay_url,
                data.path(),
                rh,
                api_port,
                &mut procs,
            )
            .await?;
            if let Some((rathole, ours)) = &go {
                until_answers(&client, "Go box through rathole", rathole, None).await?;
                until_answers(&client, "Go box, full path", ours, Some(&cookie)).await?;
            }
            go
        }
        None => None,
    };

    println!(
        "edge-bench on {} cores, open-file limit {nofile}; one run, loopback only",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    // BBR without the fq qdisc paces every sending TCP socket with a timer
    // of its own, a cost that on some virtual machines outweighs the copies
    // (docs/performance.md): say which this machine runs.
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/{name}"))
            .map_or_else(|_| "unknown".to_owned(), |v| v.trim().to_owned())
    };
    println!(
        "TCP congestion control {}, default qdisc {}",
        sysctl("ipv4/tcp_congestion_control"),
        sysctl("core/default_qdisc")
    );
    println!(
        "api-server to relay: {}",
        match cli.internal_hop {
            InternalHop::Tcp =>
                "the relay's internal TCP port on loopback (--internal-hop unix: its Unix socket)",
            InternalHop::Unix => "the relay's internal Unix socket (ADR 041)",
        }
    );
    match &rathole_bin {
        Some(p) => println!("rathole: {}", p.display()),
        None => println!(
            "rathole: not found (`cargo install rathole` or --rathole PATH); ratios skipped"
        ),
    }
    let n = cli.bulk_mib << 20;
    let secret = Secret::new(std::fs::read_to_string(data.path().join("internal-secret"))?.trim());
    let relay_client = directory::RelayDirectory::new(
        Arc::new(directory::StaticNode(directory::NodeId(relay_node.clone()))),
        secret.clone(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    // Rounds go through every path in turn, so a slow minute on the
    // machine hits all of them; each figure is the median of its rounds.
    let mut bulk: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut small: Vec<Vec<Latency>> = vec![Vec::new(); paths.len()];
    let (mut relay_only, mut upload) = (Vec::new(), Vec::new());
    let mut cpu = (0u64, 0u64, 0u64);
    let mut rathole_cpu = (0u64, 0u64);
    // The sim-box's CPU (ms) over the small requests sent to it directly,
    // and over those of the full path: what an HTTP server that only
    // answers costs, beside the relay and the api-server.
    let mut box_cpu = (0u64, 0u64);
    // CPU (ms) over the bulk downloads: ours (api-server, relay, agent),
    // rathole-websocket (server, client).
    let mut bulk_cpu = ([0u64; 3], [0u64; 2]);
    // System calls over the small requests (`--syscalls`); `None` when not
    // asked for, or once perf could not count.
    let mut sys = (cli.syscalls && !cli.bulk_only).then(SyscallSums::default);
    for _ in 0..cli.rounds.max(1) {
        for (i, (name, base, cookie)) in paths.iter().enumerate() {
            let url = format!("{base}/test/download?bytes={n}");
            let ours_before = [api_pid, relay_pid, agent_pid].map(cpu_ms);
            let ws_before = rathole_ws_pids.map_or([0, 0], |p| p.map(cpu_ms));
            bulk[i].push(load::download(&client, &url, *cookie, n).await?);
            if *name == "ours, full path" {
                let after = [api_pid, relay_pid, agent_pid].map(cpu_ms);
                for k in 0..3 {
                    bulk_cpu.0[k] += after[k] - ours_before[k];
                }
            }
            if *name == "rathole 0.5, websocket" {
                let after = rathole_ws_pids.map_or([0, 0], |p| p.map(cpu_ms));
                for k in 0..2 {
                    bulk_cpu.1[k] += after[k] - ws_before[k];
                }
            }
            if cli.bulk_only {
                continue;
            }
            // Whose system calls this path's requests cost, and where
            // their counts add up (unused when no one is counted).
            type Slot = fn(&mut SyscallSums) -> &mut [u64];
            let (counted, slot): (Vec<u32>, Slot) = match *name {
                "ours, full path" => (vec![api_pid, relay_pid, agent_pid, box_pid], |s| {
                    &mut s.full[..]
                }),
                "direct to the box" => (vec![box_pid], |s| &mut s.direct[..]),
                "rathole 0.5, tcp" => (
                    rathole_tcp_pids.map_or_else(Vec::new, |[s, c]| vec![s, c, box_pid]),
                    |s| &mut s.rathole_tcp[..],
                ),
                _ => (Vec::new(), |s| &mut s.full[..]),
            };
            let mut counting = None;
            if sys.is_some() && !counted.is_empty() {
                match start_counting(counted).await {
                    Ok(c) => counting = Some(c),
                    Err(e) => {
                        println!("system calls not counted: {e:#}");
                        sys = None;
                    }
                }
            }
            let before = (cpu_ms(api_pid), cpu_ms(relay_pid), cpu_ms(agent_pid));
            let box_before = cpu_ms(box_pid);
            let rathole_before = rathole_tcp_pids.map_or([0, 0], |p| p.map(cpu_ms));
            small[i].push(
                load::small_requests(
                    &format!("{base}/api/info"),
                    *cookie,
                    cli.requests,
                    cli.concurrency,
                )
                .await?,
            );
            if let Some(c) = counting {
                match tokio::task::spawn_blocking(move || c.finish()).await? {
                    Ok(counts) => {
                        if let Some(sums) = sys.as_mut() {
                            for (sum, n) in slot(sums).iter_mut().zip(counts) {
                                *sum += n;
                            }
                        }
                    }
                    Err(e) => {
                        println!("system calls not counted: {e:#}");
                        sys = None;
                    }
                }
            }
            if paths[i].0 == "ours, full path" {
                let after = (cpu_ms(api_pid), cpu_ms(relay_pid), cpu_ms(agent_pid));
                cpu.0 += after.0 - before.0;
                cpu.1 += after.1 - before.1;
                cpu.2 += after.2 - before.2;
                box_cpu.1 += cpu_ms(box_pid) - box_before;
            }
            if paths[i].0 == "direct to the box" {
                box_cpu.0 += cpu_ms(box_pid) - box_before;
            }
            if paths[i].0 == "rathole 0.5, tcp" {
                if let Some(pids) = rathole_tcp_pids {
                    let after = pids.map(cpu_ms);
                    rathole_cpu.0 += after[0] - rathole_before[0];
                    rathole_cpu.1 += after[1] - rathole_before[1];
                }
            }
        }
        relay_only.push(relay_only_download(&relay_client, dev, n).await?);
        upload.push(load::upload(&client, &format!("{ours}/test/upload"), &cookie, n).await?);
    }
    if cli.bulk_only {
        println!(
            "\nbulk: one {} MiB download per path, median of {} rounds",
            cli.bulk_mib,
            cli.rounds.max(1)
        );
        for ((name, _, _), b) in paths.iter().zip(bulk.iter_mut()) {
            println!("  {name:<26} {:>9.1} MiB/s", median_f(b));
        }
        println!(
            "  {:<26} {:>9.1} MiB/s",
            "ours, relay alone",
            median_f(&mut relay_only)
        );
        println!(
            "  {:<26} {:>9.1} MiB/s",
            "ours, full path upload",
            median_f(&mut upload)
        );
        let gib = (n * cli.rounds.max(1) as u64) as f64 / f64::from(1u32 << 30);
        let per_gib = |ms: u64| ms as f64 / gib;
        let [api, relay, agent] = bulk_cpu.0;
        println!(
            "CPU per GiB downloaded (user + system): full path: api-server {:.0} ms, remote-proxy {:.0} ms, edge-agent {:.0} ms; rathole-websocket: server {:.0} ms, client {:.0} ms",
            per_gib(api),
            per_gib(relay),
            per_gib(agent),
            per_gib(bulk_cpu.1[0]),
            per_gib(bulk_cpu.1[1])
        );
        return Ok(());
    }
    let rows: Vec<Row> = paths
        .iter()
        .zip(bulk.iter_mut().zip(small.iter_mut()))
        .map(|((name, _, _), (b, s))| Row {
            name,
            bulk: median_f(b),
            small: load::median(s),
        })
        .collect();
    let relay_only = median_f(&mut relay_only);
    let upload = median_f(&mut upload);
    let proxied = cli.requests as f64 * cli.rounds.max(1) as f64;
    let cpu = Some((cpu.0, cpu.1, cpu.2));

    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let rh_tcp = find("rathole 0.5, tcp");
    let rh_ws = find("rathole 0.5, websocket");
    let full = find("ours, full path").context("no full-path row")?;
    println!();
    println!(
        "small requests: GET /api/info, {} requests, {} connections; bulk: one {} MiB download; median of {} rounds",
        cli.requests, cli.concurrency, cli.bulk_mib, cli.rounds.max(1)
    );
    println!(
        "  {:<26} {:>10} {:>9} {:>9} {:>7} {:>11}",
        "path", "req/s", "p50 ms", "p99 ms", "errors", "bulk MiB/s"
    );
    for r in &rows {
        println!(
            "  {:<26} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>11.1}",
            r.name,
            r.small.rps,
            ms(r.small.p50),
            ms(r.small.p99),
            r.small.errors,
            r.bulk
        );
    }
    println!("  {:<26} {:>60.1}", "ours, relay alone", relay_only);
    println!("  {:<26} {:>60.1}", "ours, full path upload", upload);
    println!();
    println!("against rathole:");
    println!(
        "  small requests, full path / rathole-tcp  {}  (target ≥ 0.8×)",
        ratio(full.small.rps, rh_tcp.map(|r| r.small.rps)),
    );
    println!(
        "  p99, full path / rathole-tcp             {}  (target ≤ 1.5×)",
        ratio(
            full.small.p99.as_secs_f64(),
            rh_tcp.map(|r| r.small.p99.as_secs_f64())
        ),
    );
    println!(
        "  bulk, full path / rathole-websocket      {}  (target ≥ 1.0×)",
        ratio(full.bulk, rh_ws.map(|r| r.bulk))
    );
    println!(
        "  bulk, relay alone / rathole-websocket    {}  (target ≥ 1.0×)",
        ratio(relay_only, rh_ws.map(|r| r.bulk))
    );
    let fwd = find("ours, edge forward").context("no forward row")?;
    println!(
        "  bulk, edge forward / rathole-tcp         {}  (within 1.25× of rathole: ≥ 0.8×)",
        ratio(fwd.bulk, rh_tcp.map(|r| r.bulk))
    );
    println!(
        "  bulk, edge forward / rathole-websocket   {}",
        ratio(fwd.bulk, rh_ws.map(|r| r.bulk))
    );
    println!(
        "  edge forward's own CPU over the runs      {} ms",
        cpu_ms(forward_pid)
    );
    if let Some((api, relay, agent)) = cpu {
        let per_k = |ms: u64| ms as f64 * 1000.0 / proxied;
        println!();
        println!(
            "CPU per 1,000 proxied small requests (user + system): api-server {:.1} ms, remote-proxy {:.1} ms, edge-agent {:.1} ms",
            per_k(api),
            per_k(relay),
            per_k(agent)
        );
        if relay > 0 {
            println!(
                "  api-server / remote-proxy               {:.2}×  (target ≤ 1.5×)",
                api as f64 / relay as f64
            );
            // The floor of any process that reads each request from the
            // client's own connection and writes its answer there: the
            // sim-box (axum on hyper) answering by itself.
            println!(
                "  the sim-box answering by itself: {:.1} ms direct, {:.1} ms on the full path; sim-box (full path) / remote-proxy {:.2}×, api-server / sim-box {:.2}×",
                per_k(box_cpu.0),
                per_k(box_cpu.1),
                box_cpu.1 as f64 / relay as f64,
                api as f64 / box_cpu.1.max(1) as f64
            );
        }
        // The box and the client cost the same on both paths; the
        // tunnel's own processes are what a request's rate shares the
        // machine's cores with.
        let theirs = rathole_cpu.0 + rathole_cpu.1;
        if rathole_tcp_pids.is_some() && theirs > 0 {
            let ours = api + relay + agent;
            println!(
                "  the tunnel's processes: ours {:.1} ms (the three above), rathole-tcp {:.1} ms (server {:.1} + client {:.1}): {:.2}×",
                per_k(ours),
                per_k(theirs),
                per_k(rathole_cpu.0),
                per_k(rathole_cpu.1),
                ours as f64 / theirs as f64
            );
            if rathole_cpu.0 > 0 {
                // The two that read each request from the client's own
                // connection and write its answer there.
                println!(
                    "  api-server / rathole-tcp's server        {:.2}×",
                    api as f64 / rathole_cpu.0 as f64
                );
            }
        }
    }

    if let Some(sums) = &sys {
        let per_req = |n: u64| n as f64 / proxied;
        let [api, relay, agent, sim] = sums.full;
        println!(
            "System calls per small request (perf stat): api-server {:.2}, remote-proxy {:.2}, edge-agent {:.2}; the sim-box {:.2} on the full path, {:.2} direct",
            per_req(api),
            per_req(relay),
            per_req(agent),
            per_req(sim),
            per_req(sums.direct[0])
        );
        if rathole_tcp_pids.is_some() {
            let [server, client, sim] = sums.rathole_tcp;
            println!(
                "  rathole-tcp: server {:.2}, client {:.2}; the sim-box {:.2}",
                per_req(server),
                per_req(client),
                per_req(sim)
            );
        }
    }

    if let Some((_, rathole_sim)) = rathole_ports.iter().find(|(t, _)| *t == "tcp") {
        let mut boxes = vec![clients::BoxPaths {
            name: "sim-box",
            rathole_tcp: format!("http://127.0.0.1:{rathole_sim}"),
            ours: ours.clone(),
            cookie: &cookie,
        }];
        if let Some((rathole, ours)) = &go_box {
            boxes.push(clients::BoxPaths {
                name: "Go box",
                rathole_tcp: rathole.clone(),
                ours: ours.clone(),
                cookie: &cookie,
            });
        }
        let wrk = wrk::find();
        let drive = clients::Drive {
            wrk: wrk.as_deref(),
            requests: cli.requests,
            wrk_for: Duration::from_secs(cli.wrk_secs),
            connections: cli.concurrency,
            rounds: cli.rounds,
        };
        clients::compare(&boxes, &drive).await?;
    }

    let internal = format!("http://127.0.0.1:{internal_port}/internal/v1/sessions");
    // The boxes' own tunnels, up before the idle ones.
    let already = 1 + usize::from(go_box.is_some());
    if cli.scaling {
        let mut steps: Vec<scaling::Path<'_>> = paths
            .iter()
            .filter(|(name, _, _)| *name == "rathole 0.5, tcp" || *name == "ours, full path")
            .map(|(name, base, cookie)| scaling::Path {
                name,
                base,
                cookie: *cookie,
            })
            .collect();
        steps.sort_by_key(|p| p.name != "rathole 0.5, tcp");
        scaling::requests(&steps, cli.requests).await?;
        let relay = scaling::Relay {
            pid: relay_pid,
            tunnel_url: &relay_url,
            sessions_url: &internal,
            secret: secret.expose(),
            already,
        };
        scaling::tunnels(&store, user.id, &relay, nofile).await?;
    } else {
        idle_tunnels(
            &cli,
            &store,
            user.id,
            (relay_pid, rss_empty, already),
            &relay_url,
            &internal,
            &secret,
        )
        .await?;
    }
    if cli.storm > 0 {
        // The steps before closed their tunnels; the storm counts its own.
        let client = reqwest::Client::builder().no_proxy().build()?;
        tunnels::wait_drained(&client, &internal, secret.expose(), already).await?;
        let storm = storm::Storm {
            agents: cli.storm,
            relay_pid,
            relay_url: &relay_url,
            tunnel_port,
            metrics_url: &format!("http://127.0.0.1:{relay_metrics_port}/metrics"),
            already,
            // No service behind the storm's agents: the relay's telemetry
            // scrapes of them (each device every 15 s) end at once at the
            // agent, instead of 1,000 a second loading the one sim-box
            // that also answers the timed requests.
            target: &format!("127.0.0.1:{}", free_port()),
            proxied_url: &format!("{ours}/api/info"),
            cookie: &cookie,
        };
        let restart = async {
            procs.kill(relay_pid).await?;
            procs.keep(relay_command()?.spawn()?)
        };
        storm::run(&storm, &store, user.id, nofile, restart).await?;
    }
    drop(procs);
    Ok(())
}

/// The relay with `cli.idle_tunnels` idle tunnels: connect time and memory.
async fn idle_tunnels(
    cli: &Cli,
    store: &Store,
    owner: edge_core::UserId,
    (relay_pid, rss_empty, already): (u32, u64, usize),
    relay_url: &str,
    internal: &str,
    secret: &Secret,
) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    println!();
    println!("remote-proxy with {} idle tunnels", cli.idle_tunnels);
    let made = Instant::now();
    let tokens = tunnels::pair_devices(store, owner, cli.idle_tunnels, "idle-").await?;
    let made = made.elapsed();
    let rss_one = rss_kib(relay_pid);
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let dialled = tunnels::connect_all(tokens, relay_url, cancel.clone()).await?;
    let registered = tunnels::wait_registered(
        &client,
        internal,
        secret.expose(),
        cli.idle_tunnels + already,
    )
    .await?;
    let connect_all = registered - start;
    // Let the relay's allocator settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_many = rss_kib(relay_pid);
    println!(
        "  devices paired for it             {:>9.1} s (store writes, not measured below)",
        made.as_secs_f64()
    );
    println!(
        "  all connected and registered      {:>9.2} s  ({:.0} tunnels/s; dials done in {:.2} s; target ≤ 5 s for 10,000)",
        connect_all.as_secs_f64(),
        cli.idle_tunnels as f64 / connect_all.as_secs_f64(),
        dialled.as_secs_f64()
    );
    println!("  RSS at start (no tunnels)         {:>9} KiB", rss_empty);
    println!(
        "  RSS after the runs ({already} tunnels)    {:>9} KiB",
        rss_one
    );
    println!(
        "  RSS with the idle tunnels         {:>9} KiB  (+{:.1} KiB per tunnel; target ≤ 12 KiB)",
        rss_many,
        rss_many.saturating_sub(rss_one) as f64 / cli.idle_tunnels.max(1) as f64
    );
    cancel.cancel();
    Ok(())
}
