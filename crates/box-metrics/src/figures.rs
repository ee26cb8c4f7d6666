//! From one parsed scrape to the figures the cloud keeps: the telemetry
//! contract's metrics become a small set of series an owner reads directly
//! (CPU busy ratio, memory and disk used ratios, FPS and dropped FPS per
//! model, mean and p95 latency per model, accelerator figures, network
//! bytes per second), counters becoming rates against the previous scrape,
//! which a [`Tracker`] remembers per device. Metrics outside the contract
//! are kept, as they are, only when the operator's [`AllowList`] names
//! them. A stored metric with a NaN or infinite value fails the scrape.

use crate::exposition::{Exposition, Kind, Sample};
use serde::Serialize;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// A metric or label name: the cloud's own names are borrowed, a box's
/// copied.
pub type Name = Cow<'static, str>;

/// One series: a metric name and its labels, sorted by label name. A
/// derived series (nearly all of them) costs one allocation per label
/// value and none for its names or its one or two labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub metric: Name,
    pub labels: SmallVec<[(Name, String); 2]>,
}

impl SeriesKey {
    /// Any series; names are copied (a box's own, an allow-listed metric).
    pub fn new(metric: &str, labels: &[(&str, &str)]) -> Self {
        Self::sorted(
            Cow::Owned(metric.to_owned()),
            labels
                .iter()
                .map(|(k, v)| (Cow::Owned((*k).to_owned()), (*v).to_owned()))
                .collect(),
        )
    }

    /// A series the cloud derives: its names are the cloud's constants.
    pub fn derived(metric: &'static str, labels: &[(&'static str, &str)]) -> Self {
        Self::sorted(
            Cow::Borrowed(metric),
            labels
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), (*v).to_owned()))
                .collect(),
        )
    }

    fn sorted(metric: Name, mut labels: SmallVec<[(Name, String); 2]>) -> Self {
        labels.sort();
        Self { metric, labels }
    }

    /// The canonical text form, `metric{a="x",b="y"}` (quotes and
    /// backslashes escaped), as Prometheus writes a series.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.metric.len() + 16 * self.labels.len());
        self.write_text(|part| out.push_str(part));
        out
    }

    /// Hand the text form to `put` piece by piece.
    fn write_text(&self, mut put: impl FnMut(&str)) {
        put(&self.metric);
        if self.labels.is_empty() {
            return;
        }
        put("{");
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                put(",");
            }
            put(k);
            put("=\"");
            let mut rest = v.as_str();
            while let Some(at) = rest.find(['\\', '"']) {
                put(&rest[..at]);
                put(if rest.as_bytes()[at] == b'\\' {
                    "\\\\"
                } else {
                    "\\\""
                });
                rest = &rest[at + 1..];
            }
            put(rest);
            put("\"");
        }
        put("}");
    }

    /// The series' number within its device: FNV-1a of the text form
    /// (hashed as it is written, without building it: this runs for every
    /// series of every scrape). Two series of one device colliding is
    /// about 1 in 10^5 at 200 series; the store keeps the first and the
    /// later one is dropped.
    pub fn id(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        self.write_text(|part| {
            for b in part.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
        });
        h
    }

    /// The label `name`'s value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Metrics outside the contract that an operator keeps: exact names, or
/// prefixes written `name_*`.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AllowList {
    /// From a comma-separated list such as `vendor_queue_depth,acme_*`.
    pub fn parse(s: &str) -> Self {
        let mut list = Self::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.strip_suffix('*') {
                Some(prefix) => list.prefixes.push(prefix.to_owned()),
                None => list.exact.push(item.to_owned()),
            }
        }
        list
    }

    pub fn allows(&self, metric: &str) -> bool {
        self.exact.iter().any(|e| e == metric)
            || self.prefixes.iter().any(|p| metric.starts_with(p))
    }
}

/// Which model a box runs (`edge_model_info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub version: String,
    pub runtime: String,
}

/// The figures of one scrape, sorted by series.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub values: Vec<(SeriesKey, f64)>,
    pub models: Vec<ModelInfo>,
}

impl Figures {
    /// Add the relay's figures of the tunnel: how long it has been up and
    /// its latest ping round trip.
    pub fn add_tunnel(&mut self, connected_secs: f64, rtt_secs: Option<f64>) {
        self.values.push((
            SeriesKey::derived(names::TUNNEL_CONNECTED, &[]),
            connected_secs.max(0.0),
        ));
        if let Some(rtt) = rtt_secs {
            self.values
                .push((SeriesKey::derived(names::TUNNEL_RTT, &[]), rtt));
        }
        self.values.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

/// Why a scrape's figures were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FigureError {
    #[error("{0} has a NaN or infinite value")]
    NonFinite(String),
}

impl FigureError {
    pub fn code(&self) -> &'static str {
        "non_finite_value"
    }
}

/// The series names the cloud derives (the API's `metric` values).
pub mod names {
    pub const CPU: &str = "cpu_busy_ratio";
    pub const CPUS: &str = "host_cpus";
    pub const MEMORY: &str = "memory_used_ratio";
    pub const DISK: &str = "disk_used_ratio";
    pub const LOAD1: &str = "load1";
    pub const UPTIME: &str = "uptime_seconds";
    pub const HOST_TEMP: &str = "host_temperature_celsius";
    pub const NETWORK: &str = "network_bytes_per_second";
    pub const ACCEL_UTIL: &str = "accel_utilization_ratio";
    pub const ACCEL_MEMORY: &str = "accel_memory_used_ratio";
    pub const ACCEL_TEMP: &str = "accel_temperature_celsius";
    pub const ACCEL_POWER: &str = "accel_power_watts";
    pub const ACCEL_THROTTLED: &str = "accel_throttled";
    pub const FPS: &str = "inference_fps";
    pub const DROPPED_FPS: &str = "inference_dropped_fps";
    pub const LATENCY: &str = "inference_latency_seconds";
    pub const LATENCY_P95: &str = "inference_latency_p95_seconds";
    pub const STREAM_UP: &str = "stream_up";
    /// The relay's own figures of the tunnel (every device, Go ones too).
    pub const TUNNEL_RTT: &str = "tunnel_rtt_seconds";
    pub const TUNNEL_CONNECTED: &str = "tunnel_connected_seconds";
    /// What the agent reports of itself (agents that offer it, ADR 026).
    pub const AGENT_RECONNECTS: &str = "agent_reconnects";

    /// Every derived name, for the API's validation and documentation.
    pub const ALL: &[&str] = &[
        CPU,
        CPUS,
        MEMORY,
        DISK,
        LOAD1,
        UPTIME,
        HOST_TEMP,
        NETWORK,
        ACCEL_UTIL,
        ACCEL_MEMORY,
        ACCEL_TEMP,
        ACCEL_POWER,
        ACCEL_THROTTLED,
        FPS,
        DROPPED_FPS,
        LATENCY,
        LATENCY_P95,
        STREAM_UP,
        TUNNEL_RTT,
        TUNNEL_CONNECTED,
        AGENT_RECONNECTS,
    ];
}

/// The decimal exponent a series' values are stored at (values are kept
/// as integers of 10^exp): enough for what a chart or a rule can tell
/// (0.1 FPS, 0.1 °C, 0.1 % of a ratio, 0.1 ms of inference latency,
/// 10 µs of round trip, 1 kB/s).
pub fn resolution_exp(metric: &str) -> i8 {
    use names::*;
    match metric {
        CPU | MEMORY | DISK | ACCEL_UTIL | ACCEL_MEMORY => -3,
        LATENCY | LATENCY_P95 => -4,
        TUNNEL_RTT => -5,
        HOST_TEMP | ACCEL_TEMP | FPS | DROPPED_FPS | ACCEL_POWER => -1,
        LOAD1 => -2,
        NETWORK => 3,
        UPTIME | CPUS | ACCEL_THROTTLED | STREAM_UP | TUNNEL_CONNECTED | AGENT_RECONNECTS => 0,
        _ => -3,
    }
}

/// A counter's last reading, to turn the next into a rate.
#[derive(Debug, Clone, Copy)]
struct Reading {
    value: f64,
    at_ms: i64,
}

/// What one device's previous scrape left behind for the next: its counter
/// readings (only those the last scrape had, so this stays bounded).
#[derive(Debug, Default)]
pub struct Tracker {
    prev: HashMap<String, Reading>,
    /// Latency bucket counts per model at the previous scrape.
    prev_buckets: HashMap<String, Vec<(f64, f64)>>,
}

/// Contract families read per scrape, before they become figures; keyed
/// by label values borrowed from the scrape's body.
#[derive(Default)]
struct Gathered<'a> {
    cpu: BTreeMap<&'a str, f64>,
    memory: BTreeMap<&'a str, f64>,
    disks: BTreeMap<&'a str, BTreeMap<&'a str, f64>>,
    accel_memory: BTreeMap<&'a str, BTreeMap<&'a str, f64>>,
    frames: BTreeMap<&'a str, f64>,
    dropped: BTreeMap<&'a str, f64>,
    latency_sum: BTreeMap<&'a str, f64>,
    latency_count: BTreeMap<&'a str, f64>,
    latency_buckets: BTreeMap<&'a str, Vec<(f64, f64)>>,
    network: BTreeMap<(&'a str, &'a str), f64>,
}

/// A derived gauge straight from a sample.
fn gauge(out: &mut Figures, metric: &'static str, labels: &[(&'static str, &str)], v: f64) {
    out.values.push((SeriesKey::derived(metric, labels), v));
}

impl<'a> Gathered<'a> {
    /// Take one stored sample: into the families derived figures come
    /// from, or straight into `out` as a gauge.
    fn take(&mut self, out: &mut Figures, s: &'a Sample<'a>, kind: Kind, at_ms: i64) {
        use names::*;
        let g = self;
        let l = |name: &str| s.label(name).unwrap_or("");
        let v = s.value;
        match s.name {
            "edge_host_cpu_seconds_total" => *g.cpu.entry(l("mode")).or_default() += v,
            "edge_host_cpus" => gauge(out, CPUS, &[], v),
            "edge_host_memory_bytes" => {
                g.memory.insert(l("kind"), v);
            }
            "edge_host_filesystem_bytes" => {
                g.disks
                    .entry(l("mountpoint"))
                    .or_default()
                    .insert(l("kind"), v);
            }
            "edge_host_load1" => gauge(out, LOAD1, &[], v),
            "edge_host_boot_time_seconds" => {
                gauge(out, UPTIME, &[], (at_ms as f64 / 1000.0 - v).max(0.0));
            }
            "edge_host_temperature_celsius" => {
                gauge(out, HOST_TEMP, &[("sensor", l("sensor"))], v);
            }
            "edge_host_network_bytes_total" => {
                *g.network.entry((l("device"), l("direction"))).or_default() += v;
            }
            "edge_accel_utilization_ratio" => {
                gauge(out, ACCEL_UTIL, &[("accel", l("accel"))], v);
            }
            "edge_accel_memory_bytes" => {
                g.accel_memory
                    .entry(l("accel"))
                    .or_default()
                    .insert(l("kind"), v);
            }
            "edge_accel_temperature_celsius" => {
                gauge(out, ACCEL_TEMP, &[("accel", l("accel"))], v);
            }
            "edge_accel_power_watts" => {
                gauge(out, ACCEL_POWER, &[("accel", l("accel"))], v);
            }
            "edge_accel_throttled" => {
                gauge(out, ACCEL_THROTTLED, &[("accel", l("accel"))], v);
            }
            "edge_inference_frames_total" => *g.frames.entry(l("model")).or_default() += v,
            "edge_inference_dropped_frames_total" => {
                *g.dropped.entry(l("model")).or_default() += v;
            }
            "edge_inference_latency_seconds_sum" => {
                *g.latency_sum.entry(l("model")).or_default() += v;
            }
            "edge_inference_latency_seconds_count" => {
                *g.latency_count.entry(l("model")).or_default() += v;
            }
            "edge_inference_latency_seconds_bucket" => {
                let le = match s.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::NAN),
                    None => f64::NAN,
                };
                if !le.is_nan() {
                    g.latency_buckets
                        .entry(l("model"))
                        .or_default()
                        .push((le, v));
                }
            }
            "edge_model_info" => out.models.push(ModelInfo {
                model: l("model").to_owned(),
                version: l("version").to_owned(),
                runtime: l("runtime").to_owned(),
            }),
            "edge_stream_up" => gauge(out, STREAM_UP, &[("stream", l("stream"))], v),
            "edge_agent_reconnects_total" => gauge(out, AGENT_RECONNECTS, &[], v),
            _ => extra(out, s, kind),
        }
    }
}

impl Tracker {
    /// The figures of scrape `e`, taken at `at_ms`.
    pub fn figures(
        &mut self,
        e: &Exposition<'_>,
        at_ms: i64,
        allow: &AllowList,
    ) -> Result<Figures, FigureError> {
        let mut out = Figures::default();
        let mut g = Gathered::default();
        for s in &e.samples {
            let stored = is_contract(s.name) || allow.allows(s.name);
            if !stored {
                continue;
            }
            if !s.value.is_finite() {
                return Err(FigureError::NonFinite(s.name.to_owned()));
            }
            g.take(&mut out, s, e.kind_of(s.name), at_ms);
        }
        self.derive(&mut out, g, at_ms);
        // Finite inputs can still give an infinite figure (a sum or a rate
        // that overflows, a bucket bound of +Inf): such a figure is dropped.
        out.values.retain(|(_, v)| v.is_finite());
        out.values.sort_by(|a, b| a.0.cmp(&b.0));
        out.values.dedup_by(|a, b| a.0 == b.0);
        out.models.sort_by(|a, b| a.model.cmp(&b.model));
        out.models.dedup();
        Ok(out)
    }

    fn derive(&mut self, out: &mut Figures, g: Gathered<'_>, at_ms: i64) {
        let mut rates = Rates {
            prev: &self.prev,
            next: HashMap::new(),
            at_ms,
        };
        host_figures(out, &g, &mut rates);
        inference_figures(out, &g, &mut rates);
        self.prev = rates.next;
        self.latency_p95(out, g.latency_buckets);
    }

    /// Each model's 95th percentile latency between the previous scrape's
    /// bucket counts and these, which the next scrape compares with.
    fn latency_p95(&mut self, out: &mut Figures, buckets: BTreeMap<&str, Vec<(f64, f64)>>) {
        use names::LATENCY_P95;
        let mut next_buckets = HashMap::new();
        for (model, mut buckets) in buckets {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            // One count per bound (a box that repeats a bound keeps the last).
            buckets.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 = later.1;
                }
                same
            });
            if let Some(prev) = self.prev_buckets.get(model) {
                if let Some(p95) = quantile(0.95, prev, &buckets) {
                    out.values
                        .push((SeriesKey::derived(LATENCY_P95, &[("model", model)]), p95));
                }
            }
            next_buckets.insert(model.to_owned(), buckets);
        }
        self.prev_buckets = next_buckets;
    }
}

/// Counter readings of one scrape, turned into rates against the
/// previous scrape's; `next` is what the next scrape compares with.
struct Rates<'p> {
    prev: &'p HashMap<String, Reading>,
    next: HashMap<String, Reading>,
    at_ms: i64,
}

impl Rates<'_> {
    /// Per second since the previous reading of `key`; `None` on the
    /// first reading, a reset or no time passed.
    fn rate(&mut self, key: String, value: f64) -> Option<f64> {
        let prev = self.prev.get(&key).copied();
        self.next.insert(
            key,
            Reading {
                value,
                at_ms: self.at_ms,
            },
        );
        let prev = prev?;
        let dt = (self.at_ms - prev.at_ms) as f64 / 1000.0;
        (dt > 0.0 && value >= prev.value).then(|| (value - prev.value) / dt)
    }
}

/// The host's derived figures: CPU busy, memory and disk use, accelerator
/// memory, network rates.
fn host_figures(out: &mut Figures, g: &Gathered<'_>, rates: &mut Rates<'_>) {
    use names::*;
    if !g.cpu.is_empty() {
        let total: f64 = g.cpu.values().sum();
        let idle =
            g.cpu.get("idle").copied().unwrap_or(0.0) + g.cpu.get("iowait").copied().unwrap_or(0.0);
        let (dt, di) = (
            rates.rate("cpu:total".into(), total),
            rates.rate("cpu:idle".into(), idle),
        );
        if let (Some(dt), Some(di)) = (dt, di) {
            if dt > 0.0 {
                out.values.push((
                    SeriesKey::derived(CPU, &[]),
                    (1.0 - di / dt).clamp(0.0, 1.0),
                ));
            }
        }
    }
    if let (Some(total), Some(avail)) = (g.memory.get("total"), g.memory.get("available")) {
        if *total > 0.0 {
            out.values.push((
                SeriesKey::derived(MEMORY, &[]),
                (1.0 - avail / total).clamp(0.0, 1.0),
            ));
        }
    }
    for (mount, kinds) in &g.disks {
        if let (Some(size), Some(avail)) = (kinds.get("size"), kinds.get("avail")) {
            if *size > 0.0 {
                let used = (1.0 - avail / size).clamp(0.0, 1.0);
                out.values
                    .push((SeriesKey::derived(DISK, &[("mountpoint", mount)]), used));
            }
        }
    }
    for (accel, kinds) in &g.accel_memory {
        if let (Some(total), Some(used)) = (kinds.get("total"), kinds.get("used")) {
            if *total > 0.0 {
                let ratio = (used / total).clamp(0.0, 1.0);
                out.values
                    .push((SeriesKey::derived(ACCEL_MEMORY, &[("accel", accel)]), ratio));
            }
        }
    }
    for ((device, direction), v) in &g.network {
        if let Some(r) = rates.rate(format!("net:{device}:{direction}"), *v) {
            let key = SeriesKey::derived(NETWORK, &[("device", device), ("direction", direction)]);
            out.values.push((key, r));
        }
    }
}

/// The inference figures: frames and dropped frames per second and mean
/// latency per model.
fn inference_figures(out: &mut Figures, g: &Gathered<'_>, rates: &mut Rates<'_>) {
    use names::*;
    for (model, v) in &g.frames {
        if let Some(r) = rates.rate(format!("frames:{model}"), *v) {
            out.values
                .push((SeriesKey::derived(FPS, &[("model", model)]), r));
        }
    }
    for (model, v) in &g.dropped {
        if let Some(r) = rates.rate(format!("dropped:{model}"), *v) {
            out.values
                .push((SeriesKey::derived(DROPPED_FPS, &[("model", model)]), r));
        }
    }
    for (model, sum) in &g.latency_sum {
        let Some(count) = g.latency_count.get(model) else {
            continue;
        };
        let ds = rates.rate(format!("lsum:{model}"), *sum);
        let dc = rates.rate(format!("lcount:{model}"), *count);
        if let (Some(ds), Some(dc)) = (ds, dc) {
            if dc > 0.0 {
                out.values
                    .push((SeriesKey::derived(LATENCY, &[("model", model)]), ds / dc));
            }
        }
    }
}

/// A sample outside the contract that the allow-list keeps: its value as
/// it is (a counter stays a counter; charts show its rate).
fn extra(out: &mut Figures, s: &Sample<'_>, _kind: Kind) {
    let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    out.values.push((SeriesKey::new(s.name, &labels), s.value));
}

fn is_contract(name: &str) -> bool {
    name == "edge_agent_reconnects_total"
        || name.starts_with("edge_host_")
        || name.starts_with("edge_accel_")
        || name.starts_with("edge_inference_")
        || name == "edge_model_info"
        || name == "edge_stream_up"
}

/// The `q` quantile of the observations between two cumulative bucket
/// readings (`le`, count), interpolated within the bucket as PromQL's
/// `histogram_quantile` does; `None` without observations or on a reset.
fn quantile(q: f64, prev: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|(le, c)| {
            let before = prev.iter().find(|(p, _)| p == le).map_or(0.0, |(_, c)| *c);
            (*le, c - before)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 || delta.iter().any(|(_, c)| *c < 0.0) {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, count) in &delta {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(*le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (*le, *count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::exposition::{parse, Limits};

    fn scrape(t: &mut Tracker, body: &str, at: i64, allow: &AllowList) -> Figures {
        let e = parse(body.as_bytes(), &Limits::default()).unwrap();
        t.figures(&e, at, allow).unwrap()
    }

    fn value(f: &Figures, key: &str) -> Option<f64> {
        f.values
            .iter()
            .find(|(k, _)| k.text() == key)
            .map(|(_, v)| *v)
    }

    fn body(frames: u64, idle: f64, busy: f64, lat: [u64; 3], sum: f64) -> String {
        format!(
            "edge_host_cpu_seconds_total{{mode=\"idle\"}} {idle}\n\
             edge_host_cpu_seconds_total{{mode=\"user\"}} {busy}\n\
             edge_host_memory_bytes{{kind=\"total\"}} 1000\n\
             edge_host_memory_bytes{{kind=\"available\"}} 250\n\
             edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"size\"}} 100\n\
             edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"avail\"}} 5\n\
             edge_accel_temperature_celsius{{accel=\"npu0\"}} 71.5\n\
             edge_inference_frames_total{{model=\"yolo\",stream=\"a\"}} {frames}\n\
             edge_inference_frames_total{{model=\"yolo\",stream=\"b\"}} {frames}\n\
             edge_inference_latency_seconds_bucket{{model=\"yolo\",le=\"0.01\"}} {}\n\
             edge_inference_latency_seconds_bucket{{model=\"yolo\",le=\"0.02\"}} {}\n\
             edge_inference_latency_seconds_bucket{{model=\"yolo\",le=\"+Inf\"}} {}\n\
             edge_inference_latency_seconds_sum{{model=\"yolo\"}} {sum}\n\
             edge_inference_latency_seconds_count{{model=\"yolo\"}} {}\n\
             edge_model_info{{model=\"yolo\",version=\"8n\",runtime=\"rknn\"}} 1\n\
             vendor_queue_depth 7\n\
             other_metric 1\n",
            lat[0], lat[1], lat[2], lat[2]
        )
    }

    #[test]
    fn counters_become_rates_and_gauges_ratios() {
        let mut t = Tracker::default();
        let allow = AllowList::parse("vendor_*");
        let first = scrape(&mut t, &body(100, 10.0, 10.0, [0, 0, 0], 0.0), 0, &allow);
        assert_eq!(
            value(&first, "inference_fps{model=\"yolo\"}"),
            None,
            "no rate yet"
        );
        assert_eq!(value(&first, "memory_used_ratio"), Some(0.75));
        assert_eq!(
            value(&first, "disk_used_ratio{mountpoint=\"/\"}"),
            Some(0.95)
        );
        assert_eq!(value(&first, "vendor_queue_depth"), Some(7.0));
        assert_eq!(value(&first, "other_metric"), None, "not allow-listed");
        assert_eq!(first.models[0].runtime, "rknn");

        // 10 s later: 2 streams × 150 frames, 3 s idle of 10 s CPU time,
        // 100 frames of which 90 took ≤ 10 ms and 100 ≤ 20 ms.
        let second = scrape(
            &mut t,
            &body(250, 13.0, 17.0, [90, 100, 100], 1.2),
            10_000,
            &allow,
        );
        assert_eq!(value(&second, "inference_fps{model=\"yolo\"}"), Some(30.0));
        assert_eq!(value(&second, "cpu_busy_ratio"), Some(0.7));
        let mean = value(&second, "inference_latency_seconds{model=\"yolo\"}").unwrap();
        assert!((mean - 0.012).abs() < 1e-9, "{mean}");
        let p95 = value(&second, "inference_latency_p95_seconds{model=\"yolo\"}").unwrap();
        assert!((p95 - 0.015).abs() < 1e-9, "{p95}");

        // A restart (counters went down) gives no rate rather than a negative one.
        let third = scrape(&mut t, &body(5, 1.0, 1.0, [1, 1, 1], 0.01), 20_000, &allow);
        assert_eq!(value(&third, "inference_fps{model=\"yolo\"}"), None);
    }

    #[test]
    fn a_non_finite_stored_value_fails_the_scrape_and_others_do_not() {
        let mut t = Tracker::default();
        let allow = AllowList::default();
        let e = parse(b"unrelated NaN\nedge_host_load1 0.5\n", &Limits::default()).unwrap();
        assert!(t.figures(&e, 0, &allow).is_ok());
        let e = parse(b"edge_host_load1 +Inf\n", &Limits::default()).unwrap();
        assert_eq!(
            t.figures(&e, 0, &allow).unwrap_err().code(),
            "non_finite_value"
        );
    }

    #[test]
    fn figures_stay_finite_whatever_finite_input_gives() {
        // Found by the `exposition` fuzz target: repeated +Inf bounds made
        // the p95 the +Inf bound itself; overflowing sums are dropped too.
        let body = "edge_inference_latency_seconds_bucket{le=\"+Inf\"} 2\n\
                    edge_inference_latency_seconds_bucket{le=\"+Inf\"} 4\n\
                    edge_host_cpu_seconds_total{mode=\"idle\"} 1e308\n\
                    edge_host_cpu_seconds_total{mode=\"idle\"} 1e308\n\
                    edge_inference_frames_total{model=\"m\"} 1e308\n\
                    edge_inference_frames_total{model=\"m\"} 1e308\n";
        let mut t = Tracker::default();
        let allow = AllowList::default();
        for at in [0, 15_000, 30_000] {
            let f = scrape(&mut t, body, at, &allow);
            assert!(
                f.values.iter().all(|(_, v)| v.is_finite()),
                "{:?}",
                f.values
            );
        }
    }

    #[test]
    fn series_keys_are_canonical() {
        let a = SeriesKey::new("m", &[("b", "2"), ("a", "x\"y")]);
        let b = SeriesKey::new("m", &[("a", "x\"y"), ("b", "2")]);
        assert_eq!(a, b);
        assert_eq!(a.text(), "m{a=\"x\\\"y\",b=\"2\"}");
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), SeriesKey::new("m", &[]).id());
        // A derived key is the same series as one with copied names.
        let derived = SeriesKey::derived("m", &[("b", "2"), ("a", "x\"y")]);
        assert_eq!(derived, a);
        assert_eq!(derived.id(), a.id());
    }

    /// Series ids are stored: the allocation-free hash gives what hashing
    /// the built text gave (the form ids were first written with).
    #[test]
    fn series_ids_keep_their_values() {
        fn by_text(k: &SeriesKey) -> u32 {
            let text = if k.labels.is_empty() {
                k.metric.to_string()
            } else {
                let labels: Vec<String> = k
                    .labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                format!("{}{{{}}}", k.metric, labels.join(","))
            };
            text.bytes().fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            })
        }
        let keys = [
            SeriesKey::new("edge_host_cpu_ratio", &[]),
            SeriesKey::new("edge_inference_fps", &[("model", "yolo-v8")]),
            SeriesKey::new("m", &[("b", "a\\b\"c\\"), ("a", "\"\"")]),
            SeriesKey::new("net", &[("device", "eth0"), ("direction", "rx"), ("x", "")]),
        ];
        for k in &keys {
            assert_eq!(k.id(), by_text(k), "{}", k.text());
        }
        assert_eq!(
            SeriesKey::new("m", &[("a", "x\"y")]).text(),
            "m{a=\"x\\\"y\"}"
        );
    }
}
