//! The `devstack` binary (what the README's run command starts) as a child
//! process in its own working directory, on ephemeral loopback ports.
//! [`Devstack::interrupt`] sends SIGINT, as Ctrl-C does, and returns how the
//! process ended.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running devstack.
pub struct Devstack {
    /// The console URL it printed, e.g. `http://localhost:41234/`.
    pub console: String,
    /// The development provider's address it printed (`127.0.0.1:port`).
    pub idp_addr: String,
    /// Its working directory (its data lives in `data/` below it).
    pub dir: PathBuf,
    child: Child,
    output: Arc<Mutex<String>>,
}

/// A binary of the workspace next to `bin` (same target directory and
/// profile), e.g. `remote-proxy` next to `devstack`. `cargo nextest run`
/// builds only the binaries of the packages under test, so a missing one is
/// built here, once per test process, with the same cargo and profile.
pub fn sibling_binary(bin: &Path, name: &str) -> PathBuf {
    let path = bin.with_file_name(name);
    if !path.is_file() {
        build_sibling(bin, name);
    }
    assert!(path.is_file(), "{} could not be built", path.display());
    path
}

/// [`sibling_binary`] for a binary no package under test builds: built (or
/// found fresh) by cargo once per test process, so a test never runs a
/// stale copy left by an earlier build.
pub fn fresh_sibling_binary(bin: &Path, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        build_sibling(bin, name);
        built.push(name.to_owned());
    }
    sibling_binary(bin, name)
}

/// Variables cargo sets for the crate being compiled or tested (not for
/// cargo itself).
const CRATE_ENV_PREFIXES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

fn build_sibling(bin: &Path, name: &str) {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let profile_dir = bin.parent().expect("binary directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    let target_dir = profile_dir.parent().expect("target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // What cargo set for this test binary is not the caller's environment:
    // build scripts that watch such a variable (ring's watches
    // `CARGO_MANIFEST_DIR`) would otherwise see it change, and the next
    // top-level build would compile them and all that depends on them again.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if CRATE_ENV_PREFIXES.iter().any(|p| key_text.starts_with(p)) || key_text == "OUT_DIR" {
            command.env_remove(&key);
        }
    }
    let status = command
        .args(["build", "--quiet", "--profile", profile, "--bin", name])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
    assert!(status.success(), "building {name} failed: {status}");
}

impl Devstack {
    /// Start `bin` in `dir` (created if missing) with `data/` as its data
    /// directory and every port ephemeral; returns once it printed its
    /// banner.
    pub async fn start(bin: &Path, dir: &Path) -> Self {
        Self::start_with_idp(bin, dir, "127.0.0.1:0").await
    }

    /// [`start`](Self::start) with the development provider on `idp_addr`
    /// (a second run must keep the provider's address: it is the issuer
    /// that users are stored under).
    pub async fn start_with_idp(bin: &Path, dir: &Path, idp_addr: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let any = "127.0.0.1:0";
        let mut child = Command::new(bin)
            .args([
                "--data-dir",
                "data",
                "--api-listen",
                any,
                "--tunnel-listen",
                any,
            ])
            .args(["--internal-listen", any, "--idp-listen", idp_addr])
            // Live charts within seconds for the browser test.
            .args(["--telemetry-interval-secs", "1"])
            .current_dir(dir)
            .env_remove("EDGE_DATA_DIR")
            .env_remove("EDGE_AGENT_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (banner_done, banner) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&output);
        tokio::spawn(async move {
            let mut banner_done = Some(banner_done);
            while let Ok(Some(line)) = lines.next_line().await {
                println!("devstack| {line}");
                let last_banner_line = line.trim().starts_with("data:");
                {
                    let mut out = sink.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
                if last_banner_line {
                    if let Some(tx) = banner_done.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        crate::within("devstack prints its banner", banner)
            .await
            .expect("devstack exited before printing its banner");
        let text = output.lock().unwrap().clone();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no `{name}` line in the banner:\n{text}"))
                .to_owned()
        };
        let console = field("console:");
        let idp_addr = field("provider:").trim_start_matches("http://").to_owned();
        Self {
            console,
            idp_addr,
            dir: dir.to_owned(),
            child,
            output,
        }
    }

    /// `path` on the api-server, e.g. `api("/api/devices")`.
    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.console.trim_end_matches('/'))
    }

    /// Everything it printed on stdout so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Send SIGINT (Ctrl-C) and wait for it to exit.
    pub async fn interrupt(mut self) -> ExitStatus {
        let pid = self.child.id().expect("devstack already exited");
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -INT {pid} failed");
        crate::within("devstack stops after Ctrl-C", self.child.wait())
            .await
            .unwrap()
    }
}
