//! The README's run command, end to end: the `devstack` binary in a fresh
//! directory on ephemeral ports. The browser test drives the web console in
//! Debian's Chromium (see `e2e/console.test.mjs`); the restart test pairs
//! the simulated box through the real pairing flow, stops the stack with
//! Ctrl-C and checks that a second run reuses the data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use testkit::browser::{dev_login_until_callback_at, Browser};
use testkit::chromium;
use testkit::devstack::{sibling_binary, Devstack};

const DEVSTACK: &str = env!("CARGO_BIN_EXE_devstack");

fn edge_agent() -> PathBuf {
    sibling_binary(Path::new(DEVSTACK), "edge-agent")
}

/// Where screenshots go: `ARTIFACTS_DIR`, else `target/e2e-artifacts`.
fn artifacts_dir() -> PathBuf {
    std::env::var_os("ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = Path::new(DEVSTACK).parent().and_then(Path::parent).unwrap();
            target.join("e2e-artifacts")
        })
}

#[tokio::test]
#[cfg_attr(
    not(any(has_chromium, require_interop)),
    ignore = "needs Chromium: apt-get install chromium"
)]
async fn the_web_console_works_in_chromium_against_the_devstack() {
    let Some(chromium) = chromium::available() else {
        return;
    };
    chromium::ensure_packages();
    let dir = tempfile::tempdir().unwrap();
    let stack = Devstack::start(Path::new(DEVSTACK), dir.path()).await;
    assert!(
        stack
            .output()
            .contains("simulated box: waiting to be paired"),
        "a fresh stack starts with an unpaired box"
    );
    let agent = edge_agent();
    let artifacts = artifacts_dir();
    chromium::run_script(
        "console.test.mjs",
        &chromium,
        &[
            ("CONSOLE_URL", &stack.console),
            ("EDGE_AGENT_BIN", agent.to_str().unwrap()),
            ("PAIR_CWD", dir.path().to_str().unwrap()),
            ("ARTIFACTS_DIR", artifacts.to_str().unwrap()),
        ],
    )
    .await;
    let shot = artifacts.join("console-devices.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "no screenshot"
    );
    println!("screenshot of the device list: {}", shot.display());
    let detail = artifacts.join("console-device-detail.png");
    assert!(
        std::fs::metadata(&detail).unwrap().len() > 1000,
        "no screenshot of the device detail page"
    );
    println!("screenshot of the device detail page: {}", detail.display());
    let status = stack.interrupt().await;
    assert!(status.success(), "devstack did not exit cleanly: {status}");
}

/// Sign in as `user` through the development provider; returns the jar.
async fn signed_in(stack: &Devstack, user: &str) -> Browser {
    let mut b = Browser::new();
    let callback = dev_login_until_callback_at(&stack.api(""), &mut b, user, "/").await;
    let done = b.get(&callback).await;
    assert_eq!(done.status(), 302, "login callback");
    b
}

async fn devices(b: &mut Browser, stack: &Devstack) -> Vec<serde_json::Value> {
    let res = b.get(&stack.api("/api/devices")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Poll the device list (the console's own signal) until `name` is online.
async fn wait_online(b: &mut Browser, stack: &Devstack, name: &str) -> serde_json::Value {
    testkit::within("the box shows online", async {
        loop {
            let list = devices(b, stack).await;
            if let Some(d) = list
                .into_iter()
                .find(|d| d["name"] == name && d["status"] == "online")
            {
                return d;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_box_pairs_through_the_real_flow_and_a_second_run_reuses_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let first = Devstack::start(Path::new(DEVSTACK), dir.path()).await;
    let mut alice = signed_in(&first, "alice").await;
    assert!(devices(&mut alice, &first).await.is_empty());
    let created = alice.post(&first.api("/api/pairing/codes")).await;
    assert_eq!(created.status(), 201);
    let code: serde_json::Value = created.json().await.unwrap();
    let origin = first.api("");
    let paired = tokio::process::Command::new(edge_agent())
        .args(["pair", "--server", &origin, "--name", "bench box"])
        .args(["--code", code["code"].as_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        paired.status.success(),
        "edge-agent pair: {}",
        String::from_utf8_lossy(&paired.stderr)
    );
    let device = wait_online(&mut alice, &first, "bench box").await;
    let idp = first.idp_addr.clone();
    assert!(first.interrupt().await.success(), "first run: Ctrl-C");

    let second = Devstack::start_with_idp(Path::new(DEVSTACK), dir.path(), &idp).await;
    assert!(
        second.output().contains("simulated box: paired earlier"),
        "second run sees the credential"
    );
    let mut alice = signed_in(&second, "alice").await;
    let again = wait_online(&mut alice, &second, "bench box").await;
    assert_eq!(again["id"], device["id"], "same device, same data");
    let audit = alice.get(&second.api("/api/audit?limit=200")).await;
    let events: Vec<serde_json::Value> = audit.json().await.unwrap();
    let logins = events.iter().filter(|e| e["action"] == "login").count();
    assert_eq!(logins, 2, "both runs' logins are in the one database");
    assert!(second.interrupt().await.success(), "second run: Ctrl-C");
}
