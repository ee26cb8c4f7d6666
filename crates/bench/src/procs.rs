//! Child processes of one bench run and what the kernel says about them:
//! start, wait for a port, resident memory, CPU time. Children are killed
//! when the run ends, whatever way it ends.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Every child of the run; killed on drop.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

impl Procs {
    /// Keep `child`; returns its pid.
    pub fn keep(&mut self, child: Child) -> Result<u32> {
        let pid = child.id().context("child has no pid")?;
        self.0.push(child);
        Ok(pid)
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A release binary next to this one.
pub fn bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: run `cargo build --release --bins` first",
            p.display()
        );
    }
    Ok(p)
}

/// Wait until something accepts on `port` (20 s at most).
pub async fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("port {port} did not open")
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// User + system CPU time `pid` has used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("bad stat field")
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    // The kernel reports them in clock ticks of 10 ms on Linux.
    Ok((ticks(11)? + ticks(12)?) * 10)
}

/// Send signal `sig` (`TERM`, `STOP`, `CONT`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid}: {status}");
    }
    Ok(())
}

/// Raise this process's open-file limit to its hard limit; returns it.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
