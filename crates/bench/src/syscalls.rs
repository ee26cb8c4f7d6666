//! System calls that processes make over one phase of a run, counted by
//! `perf stat` (Debian's `linux-perf`) attached to each of them: beside CPU
//! time, what shows whether a process's cost per request is its own work
//! or the kernel's price per call. Each counter starts disabled and is
//! enabled and disabled through perf's control FIFOs, each step
//! acknowledged, so a count covers exactly the phase. Without perf, or
//! where the kernel refuses it, nothing is counted.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The event counted: every system call's entry.
const EVENT: &str = "raw_syscalls:sys_enter";

/// One `perf stat` attached to one process, with its control FIFOs open.
struct Counter {
    /// `None` once [`Counter::finish`] has taken it.
    perf: Option<Child>,
    control: std::fs::File,
    ack: BufReader<std::fs::File>,
}

impl Counter {
    /// Attach (events disabled) to `pid`; the FIFOs are made in `dir`.
    fn attach(perf: &Path, pid: u32, dir: &Path) -> Result<Self> {
        let ctl = dir.join(format!("ctl-{pid}"));
        let ack = dir.join(format!("ack-{pid}"));
        for fifo in [&ctl, &ack] {
            let made = Command::new("mkfifo").arg(fifo).status()?;
            if !made.success() {
                bail!("mkfifo {} failed", fifo.display());
            }
        }
        let mut control_arg = std::ffi::OsString::from("fifo:");
        control_arg.push(&ctl);
        control_arg.push(",");
        control_arg.push(&ack);
        let mut child = Command::new(perf)
            .args(["stat", "-x,", "-e", EVENT, "-D", "-1", "--control"])
            .arg(control_arg)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("perf stat")?;
        // perf opens both FIFOs at once (read-write, so neither end
        // waits): once the control FIFO is open, so is the other.
        let fifos = open_control(&ctl, &mut child)
            .and_then(|control| Ok((control, BufReader::new(std::fs::File::open(&ack)?))));
        let (control, ack) = match fifos {
            Ok(f) => f,
            Err(e) => {
                let _ = (child.kill(), child.wait());
                return Err(e);
            }
        };
        // From here a failure drops the counter, which stops perf.
        let mut counter = Self {
            perf: Some(child),
            control,
            ack,
        };
        counter.command("disable")?;
        Ok(counter)
    }

    /// Send `command` and wait for perf's acknowledgement.
    fn command(&mut self, command: &str) -> Result<()> {
        writeln!(self.control, "{command}")?;
        let mut line = String::new();
        self.ack.read_line(&mut line)?;
        // perf writes the C string "ack\n" with its terminating NUL.
        if line.trim_matches(|c: char| c == '\0' || c.is_whitespace()) != "ack" {
            bail!("perf stat answered {line:?} to {command}");
        }
        Ok(())
    }

    /// Stop perf and read its count.
    fn finish(mut self) -> Result<u64> {
        self.command("disable")?;
        let perf = self.perf.take().context("perf already finished")?;
        // perf prints its count when interrupted; if it has already ended,
        // its output says what went wrong.
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let out = perf.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        parse_count(&text).with_context(|| format!("no {EVENT} count in perf's output: {text}"))
    }
}

impl Drop for Counter {
    /// A counter left behind (its phase failed) does not outlive the run.
    fn drop(&mut self) {
        if let Some(perf) = &mut self.perf {
            let _ = perf.kill();
            let _ = perf.wait();
        }
    }
}

/// Open the control FIFO for writing once perf has opened it: a
/// non-blocking open fails (ENXIO) until then; perf exiting first is an
/// error with what it said.
fn open_control(ctl: &Path, perf: &mut Child) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(ctl)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => return Err(e.into()),
        }
        if perf.try_wait()?.is_some() {
            let mut said = String::new();
            if let Some(mut err) = perf.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut said);
            }
            bail!("perf stat ended before it opened its control FIFO: {said}");
        }
        if std::time::Instant::now() > deadline {
            bail!("perf stat did not open its control FIFO within 10 s");
        }
        // perf is starting up; no event tells us when it has opened the FIFO.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The count on perf's CSV line for [`EVENT`]. "<not counted>" is a
/// process that never ran while counting was on: no calls.
fn parse_count(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.get(2) != Some(&EVENT) {
            return None;
        }
        match *fields.first()? {
            "<not counted>" => Some(0),
            n => n.parse().ok(),
        }
    })
}

/// Counters running over one phase, one per process.
pub struct Counting {
    counters: Vec<Counter>,
    _fifos: tempfile::TempDir,
}

impl Counting {
    /// Start counting the system calls of each of `pids`; an error when perf
    /// is missing or refused. Blocks while perf starts: call it off the
    /// runtime's threads.
    pub fn start(pids: &[u32]) -> Result<Self> {
        let perf = testkit::procs::on_path("perf").context("perf is not on PATH")?;
        let fifos = tempfile::tempdir()?;
        let mut counters = Vec::with_capacity(pids.len());
        for &pid in pids {
            counters.push(Counter::attach(&perf, pid, fifos.path())?);
        }
        for c in &mut counters {
            c.command("enable")?;
        }
        Ok(Self {
            counters,
            _fifos: fifos,
        })
    }

    /// Stop counting; the system calls of each process, in `pids` order.
    /// Blocks while perf ends.
    pub fn finish(self) -> Result<Vec<u64>> {
        self.counters.into_iter().map(Counter::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_count_is_read_off_perfs_csv_line() {
        let text = "Events disabled\nEvents enabled\nEvents disabled\n3596177,,raw_syscalls:sys_enter,970224361,100.00,,\n";
        assert_eq!(parse_count(text), Some(3_596_177));
        assert_eq!(
            parse_count("<not counted>,,raw_syscalls:sys_enter,0,100.00,,"),
            Some(0)
        );
        assert_eq!(
            parse_count("<not supported>,,raw_syscalls:sys_enter,0,100.00,,"),
            None
        );
        assert_eq!(parse_count("12,,cycles,1,100.00,,"), None);
    }

    /// Write system calls `pid` has made so far (`/proc/<pid>/io`).
    fn writes(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn each_process_is_counted_over_the_phase_alone() {
        if testkit::procs::on_path("perf").is_none() {
            assert!(
                !testkit::interop_required(),
                "perf (Debian's linux-perf) is required"
            );
            eprintln!("skipped: perf is not installed");
            return;
        }
        // Killed on drop, so a failing assertion leaves no busy `yes`.
        struct Reaped(Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = (self.0.kill(), self.0.wait());
            }
        }
        let busy = Reaped(Command::new("yes").stdout(Stdio::null()).spawn().unwrap());
        let idle = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
        let (busy, idle) = (&busy.0, &idle.0);
        let counting = Counting::start(&[busy.id(), idle.id()]).unwrap();
        // Until the busy one has made 10,000 writes the counters saw.
        let from = writes(busy.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while writes(busy.id()) < from + 10_000 {
            assert!(std::time::Instant::now() < deadline, "yes made no writes");
            std::thread::yield_now();
        }
        let counts = counting.finish().unwrap();
        assert!(counts[0] >= 10_000, "busy: {counts:?}");
        assert!(counts[1] < 10, "idle: {counts:?}");
    }
}
