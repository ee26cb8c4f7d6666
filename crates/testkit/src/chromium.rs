//! Browser tests: Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM`)
//! driven by Playwright from `e2e/`. A missing Chromium skips the test
//! unless `REQUIRE_INTEROP=1`, where it fails; a missing `playwright-core`
//! is installed with `npm ci` (the version is pinned in
//! `e2e/package-lock.json`), so the README's test command needs nothing
//! else on a fresh machine.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The repository's `e2e/` directory.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

/// The Chromium binary to drive; `None` means skip (with a message).
pub fn available() -> Option<PathBuf> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if chromium.is_file() {
        return Some(chromium);
    }
    let why = format!(
        "{} not found (apt-get install chromium)",
        chromium.display()
    );
    if crate::interop_required() {
        panic!("browser test required but Chromium is unavailable: {why}");
    }
    eprintln!("skipping browser test: {why}");
    None
}

/// Install `e2e/`'s pinned packages if they are not there yet.
pub fn ensure_packages() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = e2e_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run npm (Node.js 20 is required): {e}"));
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Run `e2e/<script>` with Node and `env`; panics if it fails.
pub async fn run_script(script: &str, chromium: &Path, env: &[(&str, &str)]) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(e2e_dir())
        .env("CHROMIUM", chromium)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.status())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 3 minutes"))
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    assert!(status.success(), "{script} failed: {status}");
}
