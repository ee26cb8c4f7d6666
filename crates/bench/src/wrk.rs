//! wrk (Debian's `wrk`) as a second load client beside edge-bench's own, so
//! no small-request figure depends on one client: runs it for a fixed time
//! with `--latency` and reads its request rate, median, 99th percentile and
//! failures from what it prints.

use crate::load::Latency;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// The wrk binary on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    crate::procs::on_path("wrk")
}

/// GET `url` (with `cookie`, if any) from `connections` connections on two
/// threads for `duration`.
pub async fn small_requests(
    wrk: &Path,
    url: &str,
    cookie: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Latency> {
    let mut cmd = Command::new(wrk);
    cmd.args(["-t2", "--latency", "--timeout", "10s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)));
    if let Some(c) = cookie {
        cmd.arg("-H").arg(format!("Cookie: {c}"));
    }
    let out = cmd.arg(url).output().await.context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!("wrk failed ({}): {text}", out.status);
    }
    parse(&text)
}

/// Read wrk's summary: `Requests/sec:`, the `50%` and `99%` lines of its
/// latency distribution, non-2xx answers and socket errors.
pub fn parse(text: &str) -> Result<Latency> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0usize;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse::<f64>().ok(),
            (Some("50%"), Some(v)) => p50 = duration(v),
            (Some("99%"), Some(v)) => p99 = duration(v),
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<usize>().unwrap_or(0);
        }
        if let Some(counts) = line.strip_prefix("Socket errors:") {
            errors += counts
                .split(',')
                .filter_map(|c| c.split_whitespace().last()?.parse::<usize>().ok())
                .sum::<usize>();
        }
    }
    Ok(Latency {
        rps: rps.context("wrk printed no Requests/sec")?,
        p50: p50.context("wrk printed no 50% latency")?,
        p99: p99.context("wrk printed no 99% latency")?,
        errors,
    })
}

/// One of wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn duration(v: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let nanos = (num.parse::<f64>().ok()? * scale * 1e9).round();
    (nanos.is_finite() && nanos >= 0.0).then(|| Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 3s test @ http://127.0.0.1:4000/api/info
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  811.37us  21.40ms   88.12%
    Req/Sec    21.10k     1.52k   24.02k    70.00%
  Latency Distribution
     50%    1.41ms
     75%    1.80ms
     90%    2.31ms
     99%  812.50us
  126012 requests in 3.00s, 25.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  41982.13
Transfer/sec:      8.37MB
";

    #[test]
    fn reads_rate_percentiles_and_failures() {
        let l = parse(SAMPLE).unwrap();
        assert!((l.rps - 41_982.13).abs() < 0.01);
        assert_eq!(l.p50, Duration::from_micros(1_410));
        assert_eq!(l.p99, Duration::from_nanos(812_500));
        assert_eq!(l.errors, 7);
    }

    #[test]
    fn output_without_a_rate_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        assert_eq!(duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(duration("soon"), None);
    }
}
