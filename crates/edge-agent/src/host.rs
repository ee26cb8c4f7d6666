//! The box's host figures as the telemetry contract names them, read from
//! `/proc` and `/sys` at each scrape: CPU seconds by mode (summed over
//! CPUs), CPU count, memory, the root filesystem, load, boot time, thermal
//! zones and network bytes per interface. A file that is missing or does
//! not parse leaves its family out (a container may not have
//! `/sys/class/thermal`); nothing here fails the scrape. The parsers take
//! the files' text so tests can feed them fixtures.

use std::fmt::Write;
use std::path::Path;

/// `/proc/stat`: CPU seconds by mode, the CPU count, and boot time.
pub fn parse_stat(
    text: &str,
    ticks_per_sec: f64,
) -> (Vec<(&'static str, f64)>, usize, Option<f64>) {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut modes = Vec::new();
    let mut cpus = 0;
    let mut boot = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                for (mode, v) in MODES.iter().zip(fields) {
                    if let Ok(ticks) = v.parse::<f64>() {
                        modes.push((*mode, ticks / ticks_per_sec));
                    }
                }
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            Some("btime") => boot = fields.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    (modes, cpus, boot)
}

/// `/proc/meminfo`: total and available bytes.
pub fn parse_meminfo(text: &str) -> Option<(f64, f64)> {
    let kb = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(v * 1024.0)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// `/proc/net/dev`: received and sent bytes per interface (not `lo`).
pub fn parse_net_dev(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.is_empty() {
                return None;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                name.to_owned(),
                f.first()?.parse().ok()?,
                f.get(8)?.parse().ok()?,
            ))
        })
        .collect()
}

/// A label value made safe for the exposition (quotes and backslashes
/// escaped, control characters dropped, at most 64 characters).
fn label(v: &str) -> String {
    v.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// The host families in exposition text, read under `root` (`/` on a box;
/// a fixture directory in tests).
pub fn render(root: &Path, out: &mut String) {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    if let Some(stat) = read("proc/stat") {
        // USER_HZ is 100 on every Linux ABI the agent ships for.
        let (modes, cpus, boot) = parse_stat(&stat, 100.0);
        if !modes.is_empty() {
            let _ = writeln!(out, "# TYPE edge_host_cpu_seconds_total counter");
        }
        for (mode, secs) in modes {
            let _ = writeln!(out, "edge_host_cpu_seconds_total{{mode=\"{mode}\"}} {secs}");
        }
        if cpus > 0 {
            let _ = writeln!(out, "edge_host_cpus {cpus}");
        }
        if let Some(boot) = boot {
            let _ = writeln!(out, "edge_host_boot_time_seconds {boot}");
        }
    }
    if let Some((total, avail)) = read("proc/meminfo").as_deref().and_then(parse_meminfo) {
        let _ = writeln!(out, "edge_host_memory_bytes{{kind=\"total\"}} {total}");
        let _ = writeln!(out, "edge_host_memory_bytes{{kind=\"available\"}} {avail}");
    }
    if let Some(load) =
        read("proc/loadavg").and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    {
        let _ = writeln!(out, "edge_host_load1 {load}");
    }
    if let Ok(fs) = rustix::fs::statvfs(root) {
        let block = fs.f_frsize.max(1) as f64;
        let _ = writeln!(
            out,
            "edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"size\"}} {}",
            fs.f_blocks as f64 * block
        );
        let _ = writeln!(
            out,
            "edge_host_filesystem_bytes{{mountpoint=\"/\",kind=\"avail\"}} {}",
            fs.f_bavail as f64 * block
        );
    }
    if let Ok(zones) = std::fs::read_dir(root.join("sys/class/thermal")) {
        let mut zones: Vec<_> = zones.flatten().map(|e| e.path()).collect();
        zones.sort();
        for zone in zones.iter().filter(|z| {
            z.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("thermal_zone"))
        }) {
            let kind = std::fs::read_to_string(zone.join("type")).unwrap_or_default();
            let temp = std::fs::read_to_string(zone.join("temp"))
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok());
            if let Some(milli) = temp {
                let _ = writeln!(
                    out,
                    "edge_host_temperature_celsius{{sensor=\"{}\"}} {}",
                    label(kind.trim()),
                    milli / 1000.0
                );
            }
        }
    }
    if let Some(net) = read("proc/net/dev") {
        let ifaces = parse_net_dev(&net);
        if !ifaces.is_empty() {
            let _ = writeln!(out, "# TYPE edge_host_network_bytes_total counter");
        }
        for (name, rx, tx) in ifaces {
            let name = label(&name);
            let _ = writeln!(
                out,
                "edge_host_network_bytes_total{{device=\"{name}\",direction=\"rx\"}} {rx}"
            );
            let _ = writeln!(
                out,
                "edge_host_network_bytes_total{{device=\"{name}\",direction=\"tx\"}} {tx}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 50 0 25 400 5 0 0 0 0 0\ncpu1 50 0 25 400 5 0 0 0 0 0\nbtime 1700000000\n";
        let (modes, cpus, boot) = parse_stat(stat, 100.0);
        assert_eq!(cpus, 2);
        assert_eq!(boot, Some(1_700_000_000.0));
        assert_eq!(modes[3], ("idle", 8.0));
        let mem = "MemTotal:        8000 kB\nMemFree:  100 kB\nMemAvailable:    2000 kB\n";
        assert_eq!(parse_meminfo(mem), Some((8_192_000.0, 2_048_000.0)));
        let net = "Inter-|   Receive |  Transmit\n face |bytes    packets ...\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1000 5 0 0 0 0 0 0 2000 7 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(net),
            vec![("eth0".to_owned(), 1000.0, 2000.0)]
        );
    }

    #[test]
    fn this_host_renders_a_valid_exposition_with_its_figures() {
        let mut out = String::new();
        render(Path::new("/"), &mut out);
        let e = box_metrics::parse(out.as_bytes(), &Default::default()).unwrap();
        let names: Vec<&str> = e.samples.iter().map(|s| s.name).collect();
        for family in [
            "edge_host_cpu_seconds_total",
            "edge_host_memory_bytes",
            "edge_host_filesystem_bytes",
        ] {
            assert!(names.contains(&family), "{family} missing from {out}");
        }
    }
}
