//! How the figures grow (`edge-bench --scaling`): small requests through
//! the full path and through rathole-tcp at 1, 64 and 512 connections, and
//! the relay's memory and connect time as idle tunnels go to 1,000, 10,000
//! and 100,000, with the kernel's slab memory per socket beside ours. A step
//! the machine cannot hold (open files) is printed as skipped, with why,
//! and the largest step it can hold is measured in its place.

use crate::load::{self, Latency};
use crate::procs::rss_kib;
use crate::tunnels;
use anyhow::Result;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One path for the request steps: its name, base URL and cookie.
pub struct Path<'a> {
    pub name: &'static str,
    pub base: &'a str,
    pub cookie: Option<&'a str>,
}

/// Connection counts of the request steps.
const CONNECTIONS: [usize; 3] = [1, 64, 512];

/// Print req/s and p99 of each path at each connection count, and ours
/// over the first path's (rathole-tcp's) when there is one.
pub async fn requests(paths: &[Path<'_>], requests: usize) -> Result<()> {
    println!();
    println!("scaling, small requests ({requests} per step; p99 in ms):");
    print!("  {:<26}", "connections");
    for c in CONNECTIONS {
        print!(" {c:>18}");
    }
    println!();
    let mut rows: Vec<Vec<Latency>> = Vec::new();
    for p in paths {
        let mut row = Vec::new();
        for c in CONNECTIONS {
            let url = format!("{}/api/info", p.base);
            row.push(load::small_requests(&url, p.cookie, requests, c).await?);
        }
        print!("  {:<26}", p.name);
        for l in &row {
            print!(" {:>9.0} {:>8.2}", l.rps, load::ms(l.p99));
        }
        let errors: usize = row.iter().map(|l| l.errors).sum();
        if errors > 0 {
            print!("  ({errors} failed)");
        }
        println!();
        rows.push(row);
    }
    if let (Some(theirs), Some(ours)) = (rows.first(), rows.last()) {
        if rows.len() > 1 {
            print!("  {:<26}", "ours / first, req/s");
            for (o, t) in ours.iter().zip(theirs) {
                print!(" {:>17.2}×", o.rps / t.rps);
            }
            println!();
        }
    }
    Ok(())
}

/// Where the tunnel steps connect, and how to read the relay.
pub struct Relay<'a> {
    pub pid: u32,
    pub tunnel_url: &'a str,
    pub sessions_url: &'a str,
    pub secret: &'a str,
    /// Sessions the relay holds before the steps.
    pub already: usize,
}

/// Tunnel counts of the tunnel steps.
const TUNNELS: [usize; 3] = [1_000, 10_000, 100_000];

/// Open files the steps need per tunnel: the relay's socket and the
/// bench's own, with room for the rest.
fn files_needed(tunnels: usize) -> u64 {
    tunnels as u64 + 1_024
}

/// The most tunnels, in whole thousands, that `nofile` open files hold.
fn largest_that_fits(nofile: u64) -> usize {
    let tunnels = nofile.saturating_sub(files_needed(0)) / 1_000 * 1_000;
    usize::try_from(tunnels).unwrap_or(usize::MAX)
}

/// Grow the idle tunnels step by step (each step adds to the last) and
/// print the relay's RSS per tunnel, the step's connect time and the
/// kernel's slab memory per socket.
pub async fn tunnels(
    store: &store::Store,
    owner: edge_core::UserId,
    relay: &Relay<'_>,
    nofile: u64,
) -> Result<()> {
    println!();
    println!("scaling, idle tunnels (cumulative):");
    println!(
        "  {:>8} {:>12} {:>14} {:>16} {:>22}",
        "tunnels", "connect s", "relay RSS KiB", "KiB per tunnel", "kernel slab KiB/socket"
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    let cancel = CancellationToken::new();
    let (base_rss, base_slab) = (rss_kib(relay.pid), slab_kib());
    let mut held = 0;
    for step in TUNNELS {
        let mut want = step;
        if files_needed(step) > nofile {
            println!(
                "  {step:>8} skipped: this process may open {nofile} files, the step needs about {} (raise the hard open-file limit)",
                files_needed(step)
            );
            // The largest step the limit holds, so growth past the last
            // full step still shows.
            want = largest_that_fits(nofile);
            if want <= held {
                break;
            }
        }
        let tokens = tunnels::pair_devices(store, owner, want - held, "scale-").await?;
        let start = Instant::now();
        tunnels::connect_all(tokens, relay.tunnel_url, cancel.clone()).await?;
        let done = tunnels::wait_registered(
            &client,
            relay.sessions_url,
            relay.secret,
            relay.already + want,
        )
        .await?;
        held = want;
        // Let the relay's allocator settle before reading its memory.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let rss = rss_kib(relay.pid);
        let slab = slab_kib().saturating_sub(base_slab);
        println!(
            "  {want:>8} {:>12.2} {rss:>14} {:>16.1} {:>22.1}{}",
            (done - start).as_secs_f64(),
            rss.saturating_sub(base_rss) as f64 / want as f64,
            // Two sockets a tunnel on loopback: the relay's and the dialer's.
            slab as f64 / (2 * want) as f64,
            if want == step {
                ""
            } else {
                "  (the most the open-file limit holds)"
            }
        );
        if want != step {
            break;
        }
    }
    cancel.cancel();
    Ok(())
}

/// The kernel's slab memory, KiB (`/proc/meminfo`): sockets, their
/// files and epoll entries live there (the whole machine's, so other
/// work moves it too).
fn slab_kib() -> u64 {
    crate::procs::kib_field("/proc/meminfo", "Slab:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_step_leaves_room_for_the_rest_of_the_files() {
        assert_eq!(largest_that_fits(20_000), 18_000);
        assert_eq!(largest_that_fits(1_524), 0);
        assert_eq!(largest_that_fits(101_024), 100_000);
        assert!(files_needed(largest_that_fits(20_000)) <= 20_000);
    }
}
