//! The load the bench drives, the same for every path it compares: one
//! bulk download (and upload), and small requests from N keep-alive
//! connections with latency percentiles.

use anyhow::{bail, Result};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Download `url` (with `cookie`, if any); MiB/s.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    expect: u64,
) -> Result<f64> {
    let start = Instant::now();
    let mut req = client.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await?;
    if !res.status().is_success() {
        bail!("download from {url} got {}", res.status());
    }
    let mut body = res.bytes_stream();
    let mut n = 0u64;
    while let Some(c) = body.next().await {
        n += c?.len() as u64;
    }
    if n != expect {
        bail!("download from {url} lost bytes: {n} of {expect}");
    }
    Ok(mib_per_s(n, start.elapsed()))
}

/// Upload `n` bytes to the sim box's upload route; MiB/s.
pub async fn upload(client: &reqwest::Client, url: &str, cookie: &str, n: u64) -> Result<f64> {
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
    Ok(mib_per_s(n, start.elapsed()))
}

/// Figures of one small-request run.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

/// The run with the median request rate.
pub fn median(v: &mut [Latency]) -> Latency {
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `total` GETs of `url` from `conc` connections.
pub async fn small_requests(
    url: &str,
    cookie: Option<&str>,
    total: usize,
    conc: usize,
) -> Result<Latency> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(conc)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers = (0..conc).map(|_| {
        let client = client.clone();
        let next = next.clone();
        let url = url.to_owned();
        let cookie = cookie.map(str::to_owned);
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(c) = &cookie {
                    req = req.header("cookie", c);
                }
                let ok = match req.send().await {
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
    Ok(Latency {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        errors,
    })
}

/// The `p` quantile (0 to 1) of `sorted` latencies; zero when there are
/// none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}
