//! The Go interop peer (`go/device`): built in GOPATH mode against Debian's
//! `golang-github-hashicorp-yamux-dev` and `golang-github-gorilla-websocket-dev`,
//! and run as a real process. Missing Go skips the test unless
//! `REQUIRE_INTEROP=1`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::process::{Child, Command};

const GOPATH: &str = "/usr/share/gocode";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn build_once() -> Result<PathBuf, String> {
    let go = crate::procs::on_path("go")
        .ok_or("the `go` toolchain is not installed (apt-get install golang-go)")?;
    for pkg in ["github.com/hashicorp/yamux", "github.com/gorilla/websocket"] {
        if !Path::new(GOPATH).join("src").join(pkg).exists() {
            return Err(format!(
                "{pkg} is missing under {GOPATH} (install Debian's -dev package)"
            ));
        }
    }
    let out_dir = repo_root().join("target/go-device");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let out = out_dir.join("edge-go-device");
    // Build to a unique name and rename, so parallel test processes never
    // see a half-written binary.
    let tmp = out_dir.join(format!("edge-go-device.{}", std::process::id()));
    let status = std::process::Command::new(go)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg("./go/device")
        .current_dir(repo_root())
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "")
        .status()
        .map_err(|e| format!("cannot run go build: {e}"))?;
    if !status.success() {
        return Err(format!("go build failed: {status}"));
    }
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The built Go device (built once per process), or why it cannot be
/// built here.
pub fn build() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build_once).clone()
}

/// The built Go device, or `None` (test should skip) when Go is missing and
/// interop is not required. Panics when required and unavailable.
pub fn binary() -> Option<PathBuf> {
    match build() {
        Ok(p) => Some(p),
        Err(e) if crate::interop_required() => {
            panic!("Go interop peer required but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping Go interop: {e}");
            None
        }
    }
}

/// Start the Go device against `relay_url` with `token` (in its environment,
/// never on the command line).
pub fn spawn(bin: &Path, relay_url: &str, token: &edge_core::DeviceToken) -> Child {
    spawn_trusting(bin, relay_url, token, None)
}

/// [`spawn`], trusting the CA in `ca_file` for `wss://` (Go's crypto/tls).
pub fn spawn_trusting(
    bin: &Path,
    relay_url: &str,
    token: &edge_core::DeviceToken,
    ca_file: Option<&Path>,
) -> Child {
    command(bin, relay_url, token, ca_file, false)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Go device: {e}"))
}

/// [`spawn`] with extra flags (e.g. `-metrics`).
pub fn spawn_with(
    bin: &Path,
    relay_url: &str,
    token: &edge_core::DeviceToken,
    flags: &[&str],
) -> Child {
    command(bin, relay_url, token, None, false)
        .args(flags)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Go device: {e}"))
}

/// A Go device whose stdout events (`connected`, `event: ping`,
/// `event: goaway <code>`) the test can await.
pub struct ObservedGoDevice {
    pub child: Child,
    events: tokio::sync::watch::Receiver<Vec<String>>,
}

impl ObservedGoDevice {
    /// Wait (bounded by the test step) until the events seen so far satisfy `pred`.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let events = &mut self.events;
        crate::within(what, async {
            loop {
                if pred(&events.borrow_and_update()) {
                    return;
                }
                if events.changed().await.is_err() {
                    panic!("Go device output ended before: {what}");
                }
            }
        })
        .await;
    }
}

/// Start a Go device that reports what it receives; with `reconnect` it
/// dials again whenever its session ends.
pub fn spawn_observed(
    bin: &Path,
    relay_url: &str,
    token: &edge_core::DeviceToken,
    ca_file: Option<&Path>,
    reconnect: bool,
) -> ObservedGoDevice {
    use tokio::io::AsyncBufReadExt;
    let mut child = command(bin, relay_url, token, ca_file, reconnect)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Go device: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|v| v.push(line));
        }
    });
    ObservedGoDevice { child, events: rx }
}

fn command(
    bin: &Path,
    relay_url: &str,
    token: &edge_core::DeviceToken,
    ca_file: Option<&Path>,
    reconnect: bool,
) -> Command {
    let mut cmd = Command::new(bin);
    if let Some(ca) = ca_file {
        cmd.arg("-ca").arg(ca);
    }
    if reconnect {
        cmd.arg("-reconnect");
    }
    cmd.arg("-relay")
        .arg(relay_url)
        .env("EDGE_DEVICE_TOKEN", token.expose())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}
