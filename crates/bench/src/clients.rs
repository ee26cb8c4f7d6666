//! Small requests by box and by client: rathole-tcp and our full path to
//! each box (the Rust sim-box, a Go `net/http` box), each driven by
//! edge-bench's own client and by wrk, rathole and ours alternating within
//! a round, so no ratio depends on one box, one client or one minute.

use crate::load::{self, median, ms, Latency};
use anyhow::Result;
use std::path::Path;
use std::time::Duration;

/// One box as both paths reach it.
pub struct BoxPaths<'a> {
    pub name: &'static str,
    /// Base URL through rathole's tcp transport.
    pub rathole_tcp: String,
    /// Base URL of its proxy route on the api-server.
    pub ours: String,
    pub cookie: &'a str,
}

/// How each combination is driven.
pub struct Drive<'a> {
    pub wrk: Option<&'a Path>,
    /// Requests per run of edge-bench's client.
    pub requests: usize,
    /// How long each wrk run lasts.
    pub wrk_for: Duration,
    pub connections: usize,
    pub rounds: usize,
}

/// Which client drove a run.
#[derive(Clone, Copy)]
enum Client {
    EdgeBench,
    Wrk,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::EdgeBench => "edge-bench",
            Client::Wrk => "wrk",
        }
    }
}

/// Measure every box with every client and print each pair's ratios
/// against the targets (≥ 0.8× rathole-tcp's rate, p99 ≤ 1.5×
/// rathole-tcp's).
pub async fn compare(boxes: &[BoxPaths<'_>], drive: &Drive<'_>) -> Result<()> {
    let clients: Vec<Client> = std::iter::once(Client::EdgeBench)
        .chain(drive.wrk.map(|_| Client::Wrk))
        .collect();
    println!();
    println!(
        "small requests by box and client: GET /api/info, {} connections, median of {} rounds ({} requests a run for edge-bench, {} s for wrk)",
        drive.connections,
        drive.rounds.max(1),
        drive.requests,
        drive.wrk_for.as_secs()
    );
    if drive.wrk.is_none() {
        println!("  wrk: not found (apt-get install wrk); its rows skipped");
    }
    println!(
        "  {:<10} {:<11} {:>13} {:>8} {:>11} {:>8} {:>11} {:>10}",
        "box",
        "client",
        "rathole req/s",
        "p99 ms",
        "ours req/s",
        "p99 ms",
        "rate ratio",
        "p99 ratio"
    );
    for b in boxes {
        for &client in &clients {
            let (mut theirs, mut ours) = (Vec::new(), Vec::new());
            for _ in 0..drive.rounds.max(1) {
                theirs.push(run(drive, client, &b.rathole_tcp, None).await?);
                ours.push(run(drive, client, &b.ours, Some(b.cookie)).await?);
            }
            let (theirs, ours) = (median(&mut theirs), median(&mut ours));
            println!(
                "  {:<10} {:<11} {:>13.0} {:>8.2} {:>11.0} {:>8.2} {:>10.2}× {:>9.2}×{}",
                b.name,
                client.name(),
                theirs.rps,
                ms(theirs.p99),
                ours.rps,
                ms(ours.p99),
                ours.rps / theirs.rps,
                ours.p99.as_secs_f64() / theirs.p99.as_secs_f64().max(1e-9),
                errors_note(theirs.errors + ours.errors)
            );
        }
    }
    println!("  targets: rate ratio ≥ 0.80×, p99 ratio ≤ 1.50×");
    Ok(())
}

async fn run(
    drive: &Drive<'_>,
    client: Client,
    base: &str,
    cookie: Option<&str>,
) -> Result<Latency> {
    let url = format!("{base}/api/info");
    match (client, drive.wrk) {
        (Client::Wrk, Some(wrk)) => {
            crate::wrk::small_requests(wrk, &url, cookie, drive.connections, drive.wrk_for).await
        }
        _ => load::small_requests(&url, cookie, drive.requests, drive.connections).await,
    }
}

fn errors_note(errors: usize) -> String {
    if errors == 0 {
        String::new()
    } else {
        format!("  ({errors} failed)")
    }
}
