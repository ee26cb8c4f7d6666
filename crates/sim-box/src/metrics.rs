//! The simulated box's `/metrics`: the telemetry contract's figures
//! (`../shared/docs/telemetry-contract.md`) moving as a real box's do. Two
//! models run (`yolov8n` on `cam0` at about 30 FPS, `resnet50` on `cam1`
//! at about 12 FPS) with noise; the NPU warms up over eight minutes and
//! then throttles for two (clocks down, FPS down 40 %, latency up, the
//! temperature falling back), and again every ten minutes; CPU, memory,
//! disk, load and network move slowly. Counters grow by integrating the
//! rates between requests, so any scraper sees consistent rates.

use std::sync::Mutex;
use std::time::Instant;

/// A thermal cycle: warm up for `WARM_SECS`, throttle for the rest.
const CYCLE_SECS: f64 = 600.0;
const WARM_SECS: f64 = 480.0;
/// Latency histogram bounds (seconds).
const BOUNDS: [f64; 6] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5];

struct Model {
    name: &'static str,
    stream: &'static str,
    version: &'static str,
    fps: f64,
    latency: f64,
    frames: f64,
    dropped: f64,
    latency_sum: f64,
    /// Observations per bound, cumulative (the last is `+Inf`).
    buckets: [f64; 7],
}

struct State {
    last: f64,
    rng: u64,
    cpu: [f64; 3],
    net: [f64; 2],
    models: [Model; 2],
}

/// The box's changing figures.
pub struct SimMetrics {
    started: Instant,
    /// Unix time (s) the simulated box booted.
    boot: f64,
    state: Mutex<State>,
}

impl Default for SimMetrics {
    fn default() -> Self {
        let now = edge_core::time::now_ms() as f64 / 1000.0;
        let model = |name, stream, version, fps, latency| Model {
            name,
            stream,
            version,
            fps,
            latency,
            frames: 0.0,
            dropped: 0.0,
            latency_sum: 0.0,
            buckets: [0.0; 7],
        };
        Self {
            started: Instant::now(),
            boot: now - 3_600.0,
            state: Mutex::new(State {
                last: 0.0,
                rng: 0x2545_f491_4f6c_dd1d,
                cpu: [0.0; 3],
                net: [0.0; 2],
                models: [
                    model("yolov8n", "cam0", "8.1.0", 30.0, 0.024),
                    model("resnet50", "cam1", "1.5", 12.0, 0.07),
                ],
            }),
        }
    }
}

impl State {
    /// Uniform noise in [-1, 1] (xorshift).
    fn noise(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Move the counters on to `t` seconds after start (slower while
    /// `throttled`).
    fn advance(&mut self, t: f64, throttled: bool) {
        let dt = (t - self.last).max(0.0);
        self.last = t;
        let busy = 0.35 + 0.1 * (t / 60.0).sin() + 0.03 * self.noise();
        self.cpu[0] += dt * 4.0 * (1.0 - busy);
        self.cpu[1] += dt * 4.0 * busy * 0.8;
        self.cpu[2] += dt * 4.0 * busy * 0.2;
        let (rx, tx) = (
            250_000.0 * (1.0 + 0.2 * self.noise()),
            40_000.0 * (1.0 + 0.2 * self.noise()),
        );
        self.net[0] += dt * rx;
        self.net[1] += dt * tx;
        let slow = if throttled { 0.6 } else { 1.0 };
        for i in 0..2 {
            let n = self.noise();
            let m = &mut self.models[i];
            let fps = m.fps * slow * (1.0 + 0.05 * n);
            let frames = fps * dt;
            m.frames += frames;
            m.dropped += frames * if throttled { 0.05 } else { 0.002 };
            let mean = m.latency / slow;
            m.latency_sum += frames * mean;
            // Latencies spread evenly over [mean/2, 3 mean/2].
            for (k, bound) in BOUNDS.iter().enumerate() {
                let share = ((bound - mean / 2.0) / mean).clamp(0.0, 1.0);
                m.buckets[k] += frames * share;
            }
            m.buckets[6] += frames;
        }
    }
}

/// The NPU's temperature and whether it throttles, `t` seconds in.
fn thermal(t: f64) -> (f64, bool) {
    let p = t.rem_euclid(CYCLE_SECS);
    if p < WARM_SECS {
        (48.0 + 36.0 * p / WARM_SECS, false)
    } else {
        (
            84.0 - 30.0 * (p - WARM_SECS) / (CYCLE_SECS - WARM_SECS),
            true,
        )
    }
}

impl SimMetrics {
    /// The exposition body now.
    pub fn render(&self) -> String {
        self.render_at(self.started.elapsed().as_secs_f64())
    }

    /// The body `t` seconds after the box started (benchmarks replay days
    /// in seconds; `t` should not go back).
    pub fn render_at(&self, t: f64) -> String {
        let (temp, throttled) = thermal(t);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.advance(t, throttled);
        let load = 1.2 + 0.4 * (t / 90.0).sin();
        let avail_mem = 3.4e9 + 2.0e8 * (t / 120.0).sin();
        let disk_avail = 21.0e9 - t * 1_000.0;
        let util = if throttled { 0.55 } else { 0.78 } + 0.04 * st.noise();

        let mut out = String::with_capacity(4096);
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("# TYPE edge_host_cpu_seconds_total counter".into());
        for (mode, v) in ["idle", "user", "system"].iter().zip(st.cpu) {
            line(format!(
                "edge_host_cpu_seconds_total{{mode=\"{mode}\"}} {v:.3}"
            ));
        }
        line("edge_host_cpus 4".into());
        line(format!(
            "edge_host_memory_bytes{{kind=\"total\"}} {}",
            8u64 << 30
        ));
        line(format!(
            "edge_host_memory_bytes{{kind=\"available\"}} {avail_mem:.0}"
        ));
        line(format!(
            "edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"size\"}} {}",
            64_000_000_000u64
        ));
        line(format!(
            "edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"avail\"}} {disk_avail:.0}"
        ));
        line(format!("edge_host_load1 {load:.2}"));
        line(format!("edge_host_boot_time_seconds {:.0}", self.boot));
        line(format!(
            "edge_host_temperature_celsius{{sensor=\"soc\"}} {:.1}",
            temp - 6.0
        ));
        line("# TYPE edge_host_network_bytes_total counter".into());
        line(format!(
            "edge_host_network_bytes_total{{device=\"eth0\",direction=\"rx\"}} {:.0}",
            st.net[0]
        ));
        line(format!(
            "edge_host_network_bytes_total{{device=\"eth0\",direction=\"tx\"}} {:.0}",
            st.net[1]
        ));
        write_accel(&mut line, util, temp, throttled);
        write_inference(&mut line, &st.models);
        line("# A figure outside the contract: kept only if allow-listed.".into());
        line(format!(
            "sim_queue_depth {}",
            (3.0 + 2.0 * st.noise()).round()
        ));
        out
    }
}

/// The accelerator's lines: utilisation `util`, temperature `temp`.
fn write_accel(line: &mut impl FnMut(String), util: f64, temp: f64, throttled: bool) {
    line(format!(
        "edge_accel_utilization_ratio{{accel=\"npu0\"}} {util:.3}"
    ));
    line(format!(
        "edge_accel_memory_bytes{{accel=\"npu0\",kind=\"total\"}} {}",
        4u64 << 30
    ));
    line(format!(
        "edge_accel_memory_bytes{{accel=\"npu0\",kind=\"used\"}} {}",
        1_900_000_000u64
    ));
    line(format!(
        "edge_accel_temperature_celsius{{accel=\"npu0\"}} {temp:.1}"
    ));
    line(format!(
        "edge_accel_power_watts{{accel=\"npu0\"}} {:.2}",
        4.0 + 4.0 * util
    ));
    line(format!(
        "edge_accel_throttled{{accel=\"npu0\"}} {}",
        u8::from(throttled)
    ));
}

/// The inference families' lines for `models`.
fn write_inference(line: &mut impl FnMut(String), models: &[Model]) {
    line("# TYPE edge_inference_frames_total counter".into());
    for m in models {
        line(format!(
            "edge_inference_frames_total{{model=\"{}\",stream=\"{}\"}} {:.0}",
            m.name, m.stream, m.frames
        ));
    }
    line("# TYPE edge_inference_dropped_frames_total counter".into());
    for m in models {
        line(format!(
            "edge_inference_dropped_frames_total{{model=\"{}\",stream=\"{}\"}} {:.0}",
            m.name, m.stream, m.dropped
        ));
    }
    line("# TYPE edge_inference_latency_seconds histogram".into());
    for m in models {
        for (k, bound) in BOUNDS.iter().enumerate() {
            line(format!(
                "edge_inference_latency_seconds_bucket{{model=\"{}\",le=\"{bound}\"}} {:.0}",
                m.name, m.buckets[k]
            ));
        }
        line(format!(
            "edge_inference_latency_seconds_bucket{{model=\"{}\",le=\"+Inf\"}} {:.0}",
            m.name, m.buckets[6]
        ));
        line(format!(
            "edge_inference_latency_seconds_sum{{model=\"{}\"}} {:.4}",
            m.name, m.latency_sum
        ));
        line(format!(
            "edge_inference_latency_seconds_count{{model=\"{}\"}} {:.0}",
            m.name, m.buckets[6]
        ));
    }
    for m in models {
        line(format!(
            "edge_model_info{{model=\"{}\",version=\"{}\",runtime=\"rknn\"}} 1",
            m.name, m.version
        ));
        line(format!("edge_stream_up{{stream=\"{}\"}} 1", m.stream));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_npu_warms_then_throttles_and_cools() {
        assert_eq!(thermal(0.0), (48.0, false));
        assert!(thermal(479.0).0 > 83.0 && !thermal(479.0).1);
        assert!(thermal(480.0).1);
        assert!(thermal(599.0).0 < 55.0);
        assert!(!thermal(600.0).1);
    }

    #[test]
    fn the_body_is_a_valid_exposition_with_every_contract_family() {
        let body = SimMetrics::default().render();
        for name in [
            "edge_host_cpu_seconds_total",
            "edge_accel_temperature_celsius",
            "edge_inference_frames_total",
            "edge_inference_latency_seconds_bucket",
            "edge_model_info",
        ] {
            assert!(body.contains(name), "{name}");
        }
        let parsed = box_metrics::parse(body.as_bytes(), &Default::default()).unwrap();
        let figures = box_metrics::Tracker::default()
            .figures(&parsed, 0, &Default::default())
            .unwrap();
        assert_eq!(figures.models.len(), 2);
        assert!(figures
            .values
            .iter()
            .any(|(k, _)| k.metric == "accel_temperature_celsius"));
    }
}
