//! Child processes of one bench run: the binaries beside this one, kept
//! and killed when the run ends, whatever way it ends. Ports, signals and
//! what the kernel says about a process (memory, CPU time) are the test
//! helper's (`testkit::procs`), shared with the fault tests.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tokio::process::Child;

pub use testkit::procs::{
    cpu_ms, free_port, kib_field, metric, on_path, rss_kib, signal, wait_port,
};

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

    /// SIGKILL the kept child `pid` and wait until it is gone (its ports
    /// free again).
    pub async fn kill(&mut self, pid: u32) -> Result<()> {
        let at = self
            .0
            .iter()
            .position(|c| c.id() == Some(pid))
            .context("no such child")?;
        let mut child = self.0.swap_remove(at);
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }
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

/// Raise this process's open-file limit to its hard limit; returns it.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
