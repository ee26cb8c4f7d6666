//! The connect storm: many agents hold tunnels to one relay, the relay is
//! killed and started again, and every agent comes back at once. Each
//! simulated agent is the agent's own loop (`edge_agent::run`, so its
//! reconnect backoff and jitter are the ones boxes run: the first retry
//! after 50–100 ms, then each delay doubled up to 15 s and drawn in its
//! upper half), over a real paired device. The harness prints how long
//! until the relay held every tunnel again, how that grew, and what a
//! proxied request through the full path cost before and during the
//! storm.

use crate::procs::rss_kib;
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where the storm happens and what it asks through.
pub struct Storm<'a> {
    /// Simulated agents.
    pub agents: usize,
    /// The relay's pid before the kill.
    pub relay_pid: u32,
    /// The relay's tunnel URL, and its port.
    pub relay_url: &'a str,
    pub tunnel_port: u16,
    /// The relay's metrics endpoint (`edge_relay_tunnels_online`).
    pub metrics_url: &'a str,
    /// Tunnels of real agent processes the relay holds besides the
    /// simulated ones (they come back in the storm too).
    pub already: usize,
    /// The local service the simulated agents would pipe streams to.
    pub target: &'a str,
    /// A small request through the full path (api-server, relay, a real
    /// agent, the box) and the cookie it needs.
    pub proxied_url: &'a str,
    pub cookie: &'a str,
}

/// Connections that keep asking through the full path during the storm,
/// each at most once per [`ASK_EVERY`] (200 requests a second in all:
/// steady traffic beside the storm, not a load that takes its cores).
const ASKERS: usize = 8;
const ASK_EVERY: Duration = Duration::from_millis(40);
/// How long requests are timed before the relay is killed.
const BEFORE: Duration = Duration::from_secs(2);
/// The longest the storm may take before the harness gives up.
const STORM_LIMIT: Duration = Duration::from_secs(120);
/// How often the relay's tunnel count is read.
const POLL: Duration = Duration::from_millis(100);

/// Files the storm needs in each of this process and the relay: a socket
/// per agent, with room for the rest.
pub fn files_needed(agents: usize) -> u64 {
    agents as u64 + 1_024
}

/// Run the storm: `restart`, awaited once every agent holds its tunnel,
/// kills the relay and starts it again on the same ports and store (it
/// gives the new relay's pid).
pub async fn run(
    storm: &Storm<'_>,
    store: &store::Store,
    owner: edge_core::UserId,
    nofile: u64,
    restart: impl std::future::Future<Output = Result<u32>>,
) -> Result<()> {
    println!();
    println!(
        "connect storm: {} agents (edge-agent's own reconnect loop and jitter), relay killed and started again",
        storm.agents
    );
    if files_needed(storm.agents) > nofile {
        println!(
            "  skipped: this process may open {nofile} files, the storm needs about {} (raise the hard open-file limit)",
            files_needed(storm.agents)
        );
        return Ok(());
    }
    let client = reqwest::Client::builder().no_proxy().build()?;
    let tokens = crate::tunnels::pair_devices(store, owner, storm.agents, "storm-").await?;
    // The agents run on a runtime of their own, so the harness's reads of
    // the relay and its timed requests do not queue behind them.
    let agents = Agents(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    ));
    let cancel = CancellationToken::new();
    let _stop_agents = cancel.clone().drop_guard();
    let start = Instant::now();
    for token in tokens {
        let settings = edge_agent::config::AgentSettings::new(storm.relay_url, storm.target);
        agents.spawn(edge_agent::run(settings, token, cancel.child_token()));
    }
    let all = storm.agents + storm.already;
    let first = until_online(&client, storm.metrics_url, all, start).await?;
    println!(
        "  all agents started at once, registered in   {:>7.2} s",
        first.all.as_secs_f64()
    );

    // Requests before the kill give the storm's figures something to be
    // set beside.
    let asking = CancellationToken::new();
    let askers = ask(storm, &asking)?;
    tokio::time::sleep(BEFORE).await;
    let rss_before = rss_kib(storm.relay_pid);
    let killed = Instant::now();
    let new_pid = restart.await?;
    crate::procs::wait_port(storm.tunnel_port).await;
    let listening = killed.elapsed();
    let storm_end = until_online(&client, storm.metrics_url, all, killed).await;
    asking.cancel();
    let asked = askers.await?;
    let storm_end = storm_end?;
    let cut = killed + storm_end.all;
    let before = Percentiles::of(asked.iter().filter(|a| a.sent + a.took < killed));
    // Sent before the kill, answered (or not) after it.
    let cut_short = asked
        .iter()
        .filter(|a| a.sent < killed && a.sent + a.took >= killed && !a.ok)
        .count();
    let during = Percentiles::of(asked.iter().filter(|a| a.sent >= killed && a.sent < cut));
    let first_answer = asked
        .iter()
        .filter(|a| a.sent >= killed && a.ok)
        .map(|a| a.sent + a.took - killed)
        .min();
    // Let the relay's allocator settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib(new_pid);

    let at =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "  relay listening again after the kill        {:>9}",
        at(Some(listening))
    );
    println!(
        "  tunnels registered again: half {}, 90 % {}, all {} after the kill  (target ≤ 30 s for 100,000)",
        at(storm_end.half),
        at(storm_end.most),
        at(Some(storm_end.all))
    );
    println!(
        "  proxied requests before the kill            {}",
        before.line()
    );
    println!(
        "  proxied requests during the storm           {}",
        during.line()
    );
    println!(
        "  first answer after the kill                 {:>9}  (the box's own agent back; {cut_short} requests in flight at the kill failed)",
        at(first_answer)
    );
    println!(
        "  relay RSS with the tunnels: before the kill {rss_before} KiB, after the storm {rss_after} KiB"
    );
    Ok(())
}

/// The simulated agents' runtime; ended without waiting on drop (a
/// runtime may not be dropped inside another's task).
struct Agents(Option<tokio::runtime::Runtime>);

impl Agents {
    fn spawn(&self, agent: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.0 {
            rt.spawn(agent);
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// When the relay's tunnel count reached its marks, from `since`.
struct Marks {
    half: Option<Duration>,
    most: Option<Duration>,
    all: Duration,
}

/// Read the relay's tunnel count until it is `want`, noting when it
/// passed half and 90 % of `want`.
async fn until_online(
    client: &reqwest::Client,
    metrics_url: &str,
    want: usize,
    since: Instant,
) -> Result<Marks> {
    let mut marks = Marks {
        half: None,
        most: None,
        all: Duration::ZERO,
    };
    loop {
        if let Some(n) = tunnels_online(client, metrics_url).await {
            let now = since.elapsed();
            if n * 2 >= want {
                marks.half.get_or_insert(now);
            }
            if n * 10 >= want * 9 {
                marks.most.get_or_insert(now);
            }
            if n >= want {
                marks.all = now;
                return Ok(marks);
            }
            if since.elapsed() > STORM_LIMIT {
                bail!("the relay held {n} of {want} tunnels after {STORM_LIMIT:?}");
            }
        } else if since.elapsed() > STORM_LIMIT {
            bail!("the relay's metrics never answered");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `edge_relay_tunnels_online` from the relay's metrics; `None` while the
/// relay does not answer.
async fn tunnels_online(client: &reqwest::Client, metrics_url: &str) -> Option<usize> {
    let page = client
        .get(metrics_url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    crate::procs::metric(&page, "edge_relay_tunnels_online").map(|v| v as usize)
}

/// One proxied request: when it was sent, how long it took, whether the
/// box answered it.
struct Asked {
    sent: Instant,
    took: Duration,
    ok: bool,
}

/// Ask through the full path from [`ASKERS`] connections until `stop`,
/// on a runtime of their own: the simulated agents' tasks fill this
/// process's runtime in the storm, and a request's answer must not wait
/// behind them to be timed.
fn ask(
    storm: &Storm<'_>,
    stop: &CancellationToken,
) -> Result<tokio::sync::oneshot::Receiver<Vec<Asked>>> {
    let url = Arc::<str>::from(storm.proxied_url);
    let cookie = Arc::<str>::from(storm.cookie);
    let stop = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (done, asked) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(runtime.block_on(ask_until(client, url, cookie, stop)));
    });
    Ok(asked)
}

/// The askers' loop: each sends at most once per [`ASK_EVERY`].
async fn ask_until(
    client: reqwest::Client,
    url: Arc<str>,
    cookie: Arc<str>,
    stop: CancellationToken,
) -> Vec<Asked> {
    let workers = (0..ASKERS).map(|_| {
        let (client, url, cookie, stop) =
            (client.clone(), url.clone(), cookie.clone(), stop.clone());
        tokio::spawn(async move {
            let mut asked = Vec::new();
            let mut tick = tokio::time::interval(ASK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                tick.tick().await;
                let sent = Instant::now();
                let ok = match client.get(&*url).header("cookie", &*cookie).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                asked.push(Asked {
                    sent,
                    took: sent.elapsed(),
                    ok,
                });
            }
            asked
        })
    });
    let mut all = Vec::new();
    for w in futures_util::future::join_all(workers).await {
        all.extend(w.unwrap_or_default());
    }
    all
}

/// Latency percentiles of the answered requests, and how many were not.
struct Percentiles {
    answered: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of<'a>(asked: impl Iterator<Item = &'a Asked>) -> Self {
        let mut took = Vec::new();
        let mut failed = 0;
        for a in asked {
            if a.ok {
                took.push(a.took);
            } else {
                failed += 1;
            }
        }
        took.sort();
        Self {
            answered: took.len(),
            failed,
            p50: crate::load::percentile(&took, 0.50),
            p99: crate::load::percentile(&took, 0.99),
            max: took.last().copied().unwrap_or_default(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{:>6} answered, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} not answered",
            self.answered,
            crate::load::ms(self.p50),
            crate::load::ms(self.p99),
            crate::load::ms(self.max),
            self.failed
        )
    }
}
