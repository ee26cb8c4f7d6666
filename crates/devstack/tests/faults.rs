//! Process-level faults (issue 13), with the real `remote-proxy`,
//! `api-server`, `sim-box` and `edge-agent` binaries: the relay SIGKILLed
//! under 200 agents (fast failures, no reconnect herd, everything back),
//! the api-server SIGKILLed mid-upload (the relay and the agent let the
//! stream go: descriptors and tasks counted), PostgreSQL stopped (503,
//! tunnels kept, recovery without restart), the audit writer held at a
//! file-size limit (reported, nothing lost), and slow or stalled peers
//! (clients that read nothing, a box answering a byte a second, devices
//! that stop reading): memory per connection printed and bounded,
//! timeouts as documented. Each prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::procs::{fd_count, rss_kib, signal, Args, Binaries, ProcStack};
use testkit::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const DEVSTACK: &str = env!("CARGO_BIN_EXE_devstack");

fn bins() -> Binaries {
    Binaries::next_to(Path::new(DEVSTACK))
}

/// Wait (bounded) until `check` holds, polling every 50 ms.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The JSON error code of a response, with its status.
async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

const AGENTS: usize = 200;
const BACKOFF_MIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_fails_fast_and_200_agents_return_without_a_herd() {
    testkit::init_logs();
    let mut stack = ProcStack::start(bins(), None, Args::default()).await;
    let stop = CancellationToken::new();
    let mut devices = Vec::new();
    let mut by_token: HashMap<String, usize> = HashMap::new();
    for i in 0..AGENTS {
        let (dev, token) = stack.device(&format!("box-{i}")).await;
        by_token.insert(token.expose().to_owned(), i);
        let mut settings = stack.agent_settings();
        settings.backoff_min = BACKOFF_MIN;
        settings.backoff_max = Duration::from_secs(8);
        tokio::spawn(edge_agent::run(settings, token, stop.clone()));
        devices.push(dev);
    }
    for d in &devices {
        stack.wait_reachable(*d).await;
    }

    // SIGKILL; the tunnel port is then held by a recorder that notes each
    // agent's first reconnect attempt (by its credential) and refuses it.
    stack.kill_relay().await;
    let killed = Instant::now();
    let recorder = tokio::net::TcpListener::bind(("127.0.0.1", stack.tunnel_port))
        .await
        .expect("the tunnel port is free after the kill");
    let first: Arc<Mutex<HashMap<usize, Duration>>> = Arc::default();
    let record = {
        let first = first.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = recorder.accept().await else {
                    return;
                };
                let at = killed.elapsed();
                let (first, by_token) = (first.clone(), by_token.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let token = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().strip_prefix("Bearer ").map(str::to_owned))
                            .flatten()
                    });
                    if let Some(i) = token.and_then(|t| by_token.get(&t).copied()) {
                        first.lock().unwrap().entry(i).or_insert(at);
                    }
                    let _ = conn
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                })
                .await
                .ok();
            }
        })
    };

    // Meanwhile requests fail fast with a JSON error, never hang.
    let connect_timeout = Duration::from_secs(5);
    let mut slowest = Duration::ZERO;
    for d in devices.iter().take(20) {
        let asked = Instant::now();
        let res = tokio::time::timeout(
            connect_timeout + Duration::from_secs(2),
            stack.get(*d, "/api/info"),
        )
        .await
        .expect("a request during the outage hung")
        .unwrap();
        slowest = slowest.max(asked.elapsed());
        let (status, code) = error_code(res).await;
        assert!(
            matches!(
                (status, code.as_str()),
                (503, "device_offline") | (502, "relay_unavailable")
            ),
            "{status} {code}"
        );
    }
    assert!(slowest <= connect_timeout, "slowest failure {slowest:?}");

    until("every agent tried to reconnect", || async {
        first.lock().unwrap().len() == AGENTS
    })
    .await;
    record.abort();
    let _ = record.await;
    let mut at: Vec<Duration> = first.lock().unwrap().values().copied().collect();
    at.sort();
    let (earliest, latest) = (at[0], at[AGENTS - 1]);
    // Ten slices of the first backoff window [min/2, min]: how many agents
    // made their first attempt in the busiest one.
    let window = BACKOFF_MIN / 2;
    let slice = window / 10;
    let mut slices = [0usize; 12];
    for t in &at {
        let k = (t.saturating_sub(window).as_nanos() / slice.as_nanos()) as usize;
        slices[k.min(11)] += 1;
    }
    let busiest = slices.iter().copied().max().unwrap();
    println!(
        "relay SIGKILL: 20 requests during the outage failed within {slowest:?} (503/502 JSON); {AGENTS} agents' first reconnects from {earliest:?} to {latest:?} after the kill (first backoff window {:?}..{:?}); busiest tenth of the window: {busiest} agents; per tenth: {slices:?}",
        window, BACKOFF_MIN
    );
    assert!(
        earliest >= window.mul_f64(0.9),
        "an agent reconnected before its backoff"
    );
    assert!(
        latest - earliest >= window.mul_f64(0.8),
        "reconnects bunched: {earliest:?}..{latest:?}"
    );
    assert!(
        busiest <= AGENTS / 4,
        "a herd: {busiest} of {AGENTS} agents in one tenth of the window"
    );

    // The relay returns on its ports: every device routable again.
    stack.restart_relay().await;
    let back = Instant::now();
    for d in &devices {
        stack.wait_reachable(*d).await;
    }
    println!(
        "after the relay returned, all {AGENTS} devices routable in {:?}",
        back.elapsed()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_sigkill_mid_upload_releases_the_stream_on_relay_and_agent() {
    testkit::init_logs();
    // One stream per request (no idle keep-alive streams to the box), so
    // the relay's open streams are the requests in flight.
    let mut stack = ProcStack::start(
        bins(),
        None,
        Args {
            api: &["--box-idle-secs", "0"],
            ..Args::default()
        },
    )
    .await;
    let (dev, token) = stack.device("uploader").await;
    let mut agent = stack.agent_process(&token);
    let agent_pid = agent.id().unwrap();
    stack.wait_reachable(dev).await;
    // At rest after one request: the baseline.
    assert_eq!(stack.info_status(dev).await, 200);
    until("the relay at rest", || async {
        stack.relay_metric("edge_relay_streams_open").await == 0.0
    })
    .await;
    let before = counts(&stack, agent_pid).await;

    // An upload that never finishes: 1 MiB sent, then the sender waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(vec![7u8; 1 << 20])).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = {
        let (http, url, cookie) = (
            stack.http.clone(),
            stack.proxy_url(dev, "/test/upload"),
            stack.cookie.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .header("cookie", cookie)
                .header("x-csrf", "1")
                .body(body)
                .send()
                .await
        })
    };
    until("the upload's stream is open on the relay", || async {
        stack.relay_metric("edge_relay_streams_open").await >= 1.0
    })
    .await;
    let during = counts(&stack, agent_pid).await;

    stack.kill_api().await;
    let killed = Instant::now();
    assert!(upload.await.unwrap().is_err(), "the client lost its server");
    until("the relay released the stream", || async {
        stack.relay_metric("edge_relay_streams_open").await == 0.0
    })
    .await;
    let released = killed.elapsed();
    // Descriptors and tasks back to where they were at rest (the api-server's
    // channel to the relay is gone too, so at most the baseline).
    until("relay and agent back to their baseline", || async {
        let now = counts(&stack, agent_pid).await;
        now.0 <= before.0 && now.1 <= before.1 && now.3 <= before.3
    })
    .await;
    let after = counts(&stack, agent_pid).await;
    println!(
        "api-server SIGKILL mid-upload: relay released the stream {released:?} after the kill; relay fds {} at rest, {} during, {} after; relay tasks {} / {} / {}; agent fds {} / {} / {}",
        before.0, during.0, after.0, before.1, during.1, after.1, before.3, during.3, after.3
    );
    drop(tx);

    // A new api-server serves the device again.
    stack.restart_api().await;
    stack.wait_reachable(dev).await;
    let _ = agent.start_kill();
}

/// Relay descriptors, relay tasks, relay streams open, agent descriptors.
async fn counts(stack: &ProcStack, agent_pid: u32) -> (usize, f64, f64, usize) {
    (
        fd_count(stack.relay_pid()),
        stack.relay_metric("edge_relay_tasks_alive").await,
        stack.relay_metric("edge_relay_streams_open").await,
        fd_count(agent_pid),
    )
}

/// A stream over an mpsc receiver (reqwest wants a `Stream` body).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg_attr(
    not(any(has_initdb, require_interop)),
    ignore = "needs PostgreSQL's initdb and pg_ctl (the postgresql package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_answers_503_keeps_tunnels_and_recovers_without_restart() {
    testkit::init_logs();
    let pg_bin = testkit::pg_tls::available().expect("initdb and pg_ctl");
    let ca = testkit::tls::TestCa::new("faults-pg");
    let pg = testkit::pg_tls::PgTls::start(pg_bin, &ca);
    let stack = ProcStack::start(
        bins(),
        Some(pg.url("127.0.0.1", "sslmode=require")),
        Args::default(),
    )
    .await;
    let (dev, stop) = stack.online_device("steady").await;
    let accepted = stack.relay_metric("edge_relay_tunnels_online").await;
    assert_eq!(accepted, 1.0);
    let connects = |page: &str| {
        page.lines()
            .find(|l| l.starts_with("edge_relay_tunnel_connects_total{result=\"accepted\"}"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let connects_before = connects(&stack.relay_metrics().await);

    pg.halt();
    let down = Instant::now();
    // The access cache (under a second) may still grant: then the request
    // is served, or refused with 503 audit_unavailable once the audit writer
    // has found the database gone (remote access that cannot be recorded is
    // not given). After the cache, every request answers 503
    // store_unavailable, in bounded time.
    let mut interim = Vec::new();
    let took = within("a proxied request answers 503 store_unavailable", async {
        loop {
            let asked = Instant::now();
            let res = stack.get(dev, "/api/info").await.unwrap();
            let (status, code) = error_code(res).await;
            match (status, code.as_str()) {
                (503, "store_unavailable") => break asked.elapsed(),
                (200, _) | (503, "audit_unavailable") => interim.push(status),
                other => panic!("while PostgreSQL is down: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let listed = stack
        .http
        .get(stack.api_url("/api/devices"))
        .header("cookie", &stack.cookie)
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(listed).await;
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    let ready = stack
        .http
        .get(stack.api_url("/api/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        took <= store::ACQUIRE_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    // The tunnel stays up while the database is gone.
    assert_eq!(stack.relay_metric("edge_relay_tunnels_online").await, 1.0);
    // The outage is the scenario: a few seconds without the database.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    assert_eq!(stack.relay_metric("edge_relay_tunnels_online").await, 1.0);

    pg.resume();
    let up = Instant::now();
    stack.wait_reachable(dev).await;
    let recovered = up.elapsed();
    let ready = stack
        .http
        .get(stack.api_url("/api/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        connects(&stack.relay_metrics().await),
        connects_before,
        "the device never had to reconnect"
    );
    println!(
        "PostgreSQL stopped: answers while the access cache still granted {interim:?}; then a proxied request answered 503 store_unavailable in {took:?}; the tunnel stayed up for the whole outage; after PostgreSQL returned, the device answered again in {recovered:?} with no restart"
    );
    stop.cancel();
}

/// Audit rows of remote access in the store.
async fn remote_access_rows(stack: &ProcStack) -> usize {
    remote_access_actions(stack).await.len()
}

/// The actions of the user's remote-access audit rows, newest first.
async fn remote_access_actions(stack: &ProcStack) -> Vec<String> {
    stack
        .store
        .audit_events(stack.user, 10_000, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("remote_access_"))
        .map(|e| e.action)
        .collect()
}

/// Wait (bounded) until the user has exactly `want` remote-access rows;
/// past the bound, fail naming the rows there are.
async fn until_rows(stack: &ProcStack, what: &str, want: usize) {
    let deadline = Instant::now() + testkit::STEP;
    loop {
        let actions = remote_access_actions(stack).await;
        if actions.len() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {:?}: {what}: {want} rows wanted, {} there (newest first: {actions:?})",
            testkit::STEP,
            actions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_on_the_audit_writer_is_reported_and_loses_nothing() {
    testkit::init_logs();
    // One connection (one audited remote-access session) per request.
    let stack = ProcStack::start(
        bins(),
        None,
        Args {
            api: &["--box-idle-secs", "0"],
            ..Args::default()
        },
    )
    .await;
    let (dev, stop) = stack.online_device("audited").await;
    let mut served = 1;
    for _ in 0..3 {
        assert_eq!(stack.info_status(dev).await, 200);
        served += 1;
    }
    until_rows(&stack, "the first requests' audit rows written", 2 * served).await;
    let written_before = remote_access_rows(&stack).await;

    // Every write of the api-server now fails with EFBIG (soft limit of one
    // byte; the hard limit stays, so it can be lifted again).
    let pid = stack.api_pid().to_string();
    let limit = |spec: &str| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={spec}")])
            .status()
            .expect("prlimit runs");
        assert!(status.success(), "prlimit --fsize={spec}");
    };
    limit("1:unlimited");
    let limited = Instant::now();
    let refused = within(
        "remote access refused while the audit cannot be written",
        async {
            loop {
                let res = stack.get(dev, "/api/info").await.unwrap();
                match error_code(res).await {
                    (200, _) => served += 1,
                    (503, code) => break code,
                    (other, code) => panic!("{other} {code}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    assert_eq!(refused, "audit_unavailable");
    let res = stack
        .http
        .get(stack.api_url("/api/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await, (503, "audit_unavailable".to_owned()));
    assert!(
        stack
            .http
            .get(stack.api_url("/api/health"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "the api-server is alive"
    );
    let reported = limited.elapsed();

    limit("unlimited:unlimited");
    let lifted = Instant::now();
    until("ready again once the audit can be written", || async {
        stack
            .http
            .get(stack.api_url("/api/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let recovered = lifted.elapsed();
    assert_eq!(stack.info_status(dev).await, 200);
    served += 1;
    until_rows(
        &stack,
        "every served request's audit rows written",
        2 * served,
    )
    .await;
    println!(
        "audit at a file-size limit: refused with 503 audit_unavailable {reported:?} after the limit; ready again {recovered:?} after it was lifted; {written_before} rows before, {} after for {served} served requests (none lost)",
        remote_access_rows(&stack).await
    );
    stop.cancel();
}

/// Sample both servers' RSS every 250 ms until it stops moving (two
/// samples within 256 KiB of each other): what a stalled flow settles at.
async fn settled_rss(stack: &ProcStack) -> (u64, u64) {
    within("memory settles", async {
        let mut last = (rss_kib(stack.api_pid()), rss_kib(stack.relay_pid()));
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = (rss_kib(stack.api_pid()), rss_kib(stack.relay_pid()));
            if now.0.abs_diff(last.0) < 256 && now.1.abs_diff(last.1) < 256 {
                return now;
            }
            last = now;
        }
    })
    .await
}

const STALLED: usize = 20;
/// Per stalled connection, at most: the yamux windows (1 MiB per stream at
/// most on each hop, 8 MiB for the few that hold a burst window, ADR 044),
/// HTTP and socket buffers, in a debug build; far below the 1 GiB asked.
const PER_CONNECTION_KIB: u64 = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_read_nothing_hold_bounded_memory_and_block_no_one_else() {
    testkit::init_logs();
    let stack = ProcStack::start(bins(), None, Args::default()).await;
    let (dev, stop) = stack.online_device("big").await;
    let before = settled_rss(&stack).await;
    // Each asks for 1 GiB and reads none of it.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", stack.api_port))
            .await
            .unwrap();
        let head = format!(
            "GET /api/devices/{dev}/proxy/test/download?bytes={} HTTP/1.1\r\nhost: localhost\r\ncookie: {}\r\n\r\n",
            1u64 << 30,
            stack.cookie
        );
        c.write_all(head.as_bytes()).await.unwrap();
        stalled.push(c);
    }
    until("every stalled download has its stream", || async {
        stack.relay_metric("edge_relay_streams_open").await >= STALLED as f64
    })
    .await;
    let held = settled_rss(&stack).await;
    // Nobody else waits behind them: the same device still answers.
    let asked = Instant::now();
    let res = stack.get(dev, "/api/info").await.unwrap();
    let beside = asked.elapsed();
    assert_eq!(error_code(res).await, (200, String::new()));
    let per = |a: u64, b: u64| b.saturating_sub(a) / STALLED as u64;
    println!(
        "{STALLED} clients reading nothing of a 1 GiB download each: api-server {} -> {} KiB ({} KiB per connection), remote-proxy {} -> {} KiB ({} KiB per connection); a request beside them answered in {beside:?}",
        before.0, held.0, per(before.0, held.0), before.1, held.1, per(before.1, held.1)
    );
    assert!(per(before.0, held.0) <= PER_CONNECTION_KIB);
    assert!(per(before.1, held.1) <= PER_CONNECTION_KIB);
    // When they go, so do their streams to the box (a leak found here:
    // vendor/tokio-yamux/PATCHED.md).
    drop(stalled);
    let gone = Instant::now();
    until("the stalled streams are released", || async {
        stack.relay_metric("edge_relay_streams_open").await <= 1.0
    })
    .await;
    println!(
        "the stalled streams were released {:?} after their clients went",
        gone.elapsed()
    );
    stop.cancel();
}

/// The gap between a trickling box's bytes: longer than the quiet after
/// which the api-server ends a pooled connection that is idle and retired
/// (1 s), so a slow answer that were taken for an idle connection would
/// be cut in the gap.
const TRICKLE: Duration = Duration::from_millis(1250);
/// The body a trickling box sends, a byte per [`TRICKLE`].
const TRICKLED: &[u8] = b"0123";

/// A box on loopback that answers every request a byte per [`TRICKLE`]:
/// its head for `/head`, [`TRICKLED`] after a whole head otherwise. The
/// request's body, if any, is not read.
async fn trickling_box() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let whole = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    TRICKLED.len()
                );
                let (now, slow): (&[u8], &[u8]) = if head.starts_with(b"GET /head ") {
                    (b"", whole.as_bytes())
                } else {
                    (whole.as_bytes(), TRICKLED)
                };
                if conn.write_all(now).await.is_err() {
                    return;
                }
                for b in slow {
                    tokio::time::sleep(TRICKLE).await;
                    if conn.write_all(std::slice::from_ref(b)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Devices named `names` whose agents (to the box at `target`) are started
/// together once every device exists, so that nothing else reaches the
/// relay between their connections and its shards take them in turn;
/// online when this returns.
async fn agents_together(
    stack: &ProcStack,
    names: &[&str],
    target: &str,
    stop: &CancellationToken,
) -> Vec<edge_core::DeviceId> {
    let mut made = Vec::new();
    for name in names {
        made.push(stack.device(name).await);
    }
    for (_, token) in &made {
        let mut settings = stack.agent_settings();
        settings.target = target.to_owned();
        tokio::spawn(edge_agent::run(settings, token.clone(), stop.clone()));
    }
    let devices: Vec<edge_core::DeviceId> = made.into_iter().map(|(dev, _)| dev).collect();
    for dev in &devices {
        stack.wait_online_listed(*dev).await;
    }
    devices
}

/// Read `res`'s body to its end; the body and when each piece came,
/// counted from `asked`.
async fn arrivals(res: reqwest::Response, asked: Instant) -> (Vec<u8>, Vec<Duration>) {
    let mut body = res.bytes_stream();
    let (mut got, mut when) = (Vec::new(), Vec::new());
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.unwrap_or_else(|e| {
            panic!(
                "the body broke off after {got:?} at {:?}: {e:?}",
                asked.elapsed()
            )
        });
        when.push(asked.elapsed());
        got.extend_from_slice(&chunk);
    }
    (got, when)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_answers_a_byte_at_a_time_is_streamed_or_timed_out_as_documented() {
    testkit::init_logs();
    let first_byte = Duration::from_secs(3);
    let stack = ProcStack::start(
        bins(),
        None,
        Args {
            api: &["--proxy-first-byte-timeout-secs", "3", "--shards", "1"],
            relay: &["--shards", "2"],
            ..Args::default()
        },
    )
    .await;
    // Two boxes whose agents connect together: the relay hands them to its
    // two shards in turn, so the api-server's first channel (one, as it
    // runs on one shard) is served on the shard of one of them and not of
    // the other (ADR 043).
    let target = trickling_box().await.to_string();
    let stop = CancellationToken::new();
    let devices = agents_together(&stack, &["trickler-1", "trickler-2"], &target, &stop).await;

    // Each box's first request, one after the other, with a body (so the
    // pooled client carries it), answered a byte at a time. The stream to
    // the box on the other shard crosses the relay's shards and serves
    // only this request; its slow answer must still reach the client
    // whole, not be taken for an idle connection.
    let mut crossed = 0.0_f64;
    let mut pieces = Vec::new();
    for dev in &devices {
        let asked = Instant::now();
        let res = stack
            .http
            .post(stack.proxy_url(*dev, "/body"))
            .header("cookie", &stack.cookie)
            .header("x-csrf", "1")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        crossed = crossed.max(
            stack
                .relay_metric("edge_relay_channel_streams_across_shards")
                .await,
        );
        let (got, when) = arrivals(res, asked).await;
        assert_eq!(got, TRICKLED);
        pieces.push(when.len());
    }
    assert!(
        crossed >= 1.0,
        "no first stream crossed the relay's shards: the boxes are not on two shards"
    );

    // A head a byte at a time: 504 device_timeout at the first-byte bound.
    let dev = devices[0];
    let asked = Instant::now();
    let res = stack.get(dev, "/head").await.unwrap();
    let took = asked.elapsed();
    assert_eq!(error_code(res).await, (504, "device_timeout".to_owned()));
    assert!(
        took >= first_byte && took <= first_byte + Duration::from_secs(2),
        "{took:?}"
    );

    // A body a byte at a time: each byte reaches the client as it comes.
    let asked = Instant::now();
    let res = stack.get(dev, "/body").await.unwrap();
    assert_eq!(res.status(), 200);
    let (got, when) = arrivals(res, asked).await;
    assert_eq!(got, TRICKLED);
    assert!(
        when.len() >= TRICKLED.len() - 1,
        "the body was held back and sent at once: {when:?}"
    );
    println!(
        "a box sending its head a byte per {TRICKLE:?}: 504 device_timeout after {took:?} (first-byte timeout {first_byte:?}); a body a byte per {TRICKLE:?} reached the client in {} pieces, the first after {:?}, the last after {:?}; first requests with a body, one on a stream across the relay's shards: {pieces:?} pieces",
        when.len(),
        when[0],
        when[when.len() - 1]
    );
    stop.cancel();
}

/// Longer than the quiet after which the api-server ends a pooled
/// connection that is idle and retired (1 s).
const QUIET_SPELL: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_outlast_quiet_spells_on_streams_across_the_relays_shards() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    testkit::init_logs();
    // One api-server shard, so one first channel, served on one of the
    // relay's two shards; boxes whose agents connect together, on both
    // relay shards: a box's first stream crosses the relay's shards and
    // serves only its request (ADR 043).
    let stack = ProcStack::start(
        bins(),
        None,
        Args {
            api: &["--shards", "1"],
            relay: &["--shards", "2"],
            ..Args::default()
        },
    )
    .await;
    let stop = CancellationToken::new();
    let names = ["quiet-1", "quiet-2", "quiet-3"];
    let devices = agents_together(&stack, &names, &stack.box_addr(), &stop).await;
    let mut sockets = Vec::new();
    for dev in &devices {
        let url = stack
            .proxy_url(*dev, "/test/ws-echo")
            .replacen("http", "ws", 1);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", stack.cookie.parse().unwrap());
        let (ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(res.status(), 101);
        sockets.push(ws);
    }
    let crossed = stack
        .relay_metric("edge_relay_channel_streams_across_shards")
        .await;
    assert!(
        crossed >= 1.0,
        "no WebSocket's stream crossed the relay's shards: the boxes are not on two shards"
    );
    // A message each way, a quiet spell, and another: the upgraded
    // connection is no pooled connection waiting for its next request.
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(QUIET_SPELL).await;
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            let msg = format!("round {round} on socket {i}");
            ws.send(Message::text(msg.clone())).await.unwrap();
            match within("the echo", ws.next()).await {
                Some(Ok(Message::Text(back))) => assert_eq!(back.as_str(), msg),
                other => panic!("socket {i} after a quiet spell of {QUIET_SPELL:?}: {other:?}"),
            }
        }
    }
    println!(
        "{} WebSockets through the proxy, {crossed} on a stream across the relay's shards: each echoed after a quiet spell of {QUIET_SPELL:?}",
        sockets.len()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_stop_reading_are_dropped_within_the_ping_bound_with_bounded_memory() {
    testkit::init_logs();
    let stack = ProcStack::start(bins(), None, Args::default()).await;
    let before = settled_rss(&stack).await;
    // Devices that connect, then never read their WebSocket again.
    let mut held = Vec::new();
    let mut devices = Vec::new();
    for i in 0..STALLED {
        let (dev, token) = stack.device(&format!("deaf-{i}")).await;
        held.push(testkit::dial_raw_at(&stack.tunnel_url(), &token).await);
        devices.push(dev);
    }
    let connected = Instant::now();
    until("every deaf device is registered", || async {
        stack.relay_metric("edge_relay_tunnels_online").await >= STALLED as f64
    })
    .await;
    // An upload to each: the relay may push only a stream window at it.
    let uploads: Vec<_> = devices
        .iter()
        .map(|d| {
            let (http, url, cookie) = (
                stack.http.clone(),
                stack.proxy_url(*d, "/test/upload"),
                stack.cookie.clone(),
            );
            tokio::spawn(async move {
                http.post(url)
                    .header("cookie", cookie)
                    .header("x-csrf", "1")
                    .body(vec![1u8; 8 << 20])
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut peak = before;
    within("the relay drops every deaf device", async {
        while stack.relay_metric("edge_relay_tunnels_online").await > 0.0 {
            peak.0 = peak.0.max(rss_kib(stack.api_pid()));
            peak.1 = peak.1.max(rss_kib(stack.relay_pid()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let dropped = connected.elapsed();
    let statuses: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let per = |a: u64, b: u64| b.saturating_sub(a) / STALLED as u64;
    println!(
        "{STALLED} devices that stopped reading: dropped {dropped:?} after connecting (bound: ping interval 5 s + ping timeout 10 s); uploads to them answered {statuses:?}; peak remote-proxy {} KiB (+{} KiB per device), api-server {} KiB (+{} KiB per upload)",
        peak.1, per(before.1, peak.1), peak.0, per(before.0, peak.0)
    );
    assert!(
        dropped <= Duration::from_secs(15) + Duration::from_secs(2),
        "{dropped:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 502..=504)),
        "{statuses:?}"
    );
    assert!(per(before.1, peak.1) <= PER_CONNECTION_KIB);
    drop(held);
}

/// ADR 041: the api-server reaches the relay on the relay's Unix socket.
/// Small requests and an 8 MiB download pass byte for byte; SIGKILL
/// leaves the socket file behind, the relay binds over it when it starts
/// again, and the api-server's channel comes back with the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_hop_on_a_unix_socket_comes_back_after_a_relay_sigkill() {
    testkit::init_logs();
    let mut stack = ProcStack::start(
        bins(),
        None,
        Args {
            internal_socket: true,
            ..Args::default()
        },
    )
    .await;
    let socket = stack
        .relay_url
        .strip_prefix(directory::client::UNIX_SCHEME)
        .expect("the api-server is given the socket")
        .to_owned();
    // The socket asks for the shared secret as the TCP port does.
    for path in ["/internal/v1/sessions", directory::mux::MUX_PATH] {
        assert_eq!(status_over_unix(&socket, path).await, 401, "{path}");
    }
    let (dev, _stop) = stack.online_device("box").await;

    download_8_mib(&stack, dev).await;

    stack.kill_relay().await;
    assert!(
        std::fs::symlink_metadata(&socket).is_ok(),
        "a killed relay leaves its socket file"
    );
    assert_ne!(stack.info_status(dev).await, 200, "the relay is down");
    stack.restart_relay().await;
    stack.wait_reachable(dev).await;
    download_8_mib(&stack, dev).await;

    // A clean stop takes its file away.
    signal(stack.relay_pid(), "TERM");
    within("the relay stops", stack.relay.wait()).await.unwrap();
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "a relay that stopped cleanly removes its socket file"
    );
    println!("internal hop on {socket}: answered before and after a relay SIGKILL");
}

/// Download 8 MiB from `dev`'s box and check every byte.
async fn download_8_mib(stack: &ProcStack, dev: edge_core::DeviceId) {
    let res = stack
        .get(dev, "/test/download?bytes=8388608")
        .await
        .unwrap();
    let body = res.error_for_status().unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 8 << 20);
    let mut want = vec![0u8; body.len()];
    sim_box::pattern(0, &mut want);
    assert!(body[..] == want[..], "the download's bytes differ");
}

/// The status of a `GET path` sent over the Unix socket at `socket`
/// without credentials.
async fn status_over_unix(socket: &str, path: &str) -> u16 {
    let mut conn = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("an answer over the socket", conn.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}
