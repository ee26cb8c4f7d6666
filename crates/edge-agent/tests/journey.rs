//! The full journey with the real `edge-agent` binary: log in through the
//! development provider, create a pairing code, `edge-agent pair`,
//! `edge-agent run`, see the device online, reach the simulated box through
//! the proxy route, rename, rotate, delete, see the tunnel closed and the
//! credential refused; every audit event appears exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use testkit::browser::Browser;
use testkit::{within, Stack};
use tokio::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_edge-agent");

async fn pair(
    stack: &Stack,
    code: &str,
    cred: &std::path::Path,
    force: bool,
) -> std::process::Output {
    let mut cmd = Command::new(AGENT);
    cmd.args([
        "pair",
        "--server",
        &stack.api(""),
        "--code",
        code,
        "--name",
        "lobby-cam",
        "--credential-file",
    ])
    .arg(cred)
    .env_remove("EDGE_AGENT_TOKEN");
    if force {
        cmd.arg("--force");
    }
    within("edge-agent pair", cmd.output()).await.unwrap()
}

fn run_agent(stack: &Stack, cred: &std::path::Path) -> tokio::process::Child {
    Command::new(AGENT)
        .args([
            "run",
            "--relay",
            &stack.tunnel_url(),
            "--target",
            &stack.sim_addr.to_string(),
            "--backoff-max-ms",
            "500",
            "--credential-file",
        ])
        .arg(cred)
        .env_remove("EDGE_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_pair_run_use_delete() {
    let stack = Stack::start().await;
    let mut b = Browser::new();
    assert_eq!(stack.dev_login(&mut b, "alice").await.status(), 302);

    let created = json(b.post(&stack.api("/api/pairing/codes")).await).await;
    let code = created["code"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("credential");

    let bad = pair(&stack, "AAAAA-AAAAA", &cred, false).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("wrong, expired"),
        "{bad:?}"
    );
    assert!(!cred.exists());

    let ok = pair(&stack, &code, &cred, false).await;
    assert!(ok.status.success(), "{ok:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = pair(&stack, &code, &cred, false).await;
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{again:?}"
    );

    let mut agent = run_agent(&stack, &cred);
    let devices = json(b.get(&stack.api("/api/devices")).await).await;
    let id: edge_core::DeviceId = devices[0]["id"].as_str().unwrap().parse().unwrap();
    stack.wait_online(id).await;
    let listed = json(b.get(&stack.api("/api/devices")).await).await;
    assert_eq!(listed[0]["status"], "online");
    assert_eq!(listed[0]["name"], "lobby-cam");

    let info = b
        .get(&stack.api(&format!("/api/devices/{id}/proxy/api/info")))
        .await;
    assert_eq!(info.status(), 200);
    assert_eq!(json(info).await["model"], "SIM-1");

    let url = stack.api(&format!("/api/devices/{id}"));
    let req = b
        .client()
        .patch(&url)
        .header("x-csrf", "1")
        .json(&serde_json::json!({ "name": "lobby" }));
    assert_eq!(b.send(req, &url).await.status(), 200);

    // Rotate: the running agent is cut off; install the new credential and restart it.
    let rotated = json(
        b.post(&stack.api(&format!("/api/devices/{id}/credential")))
            .await,
    )
    .await;
    stack.wait_offline(id).await;
    agent.kill().await.unwrap();
    std::fs::write(&cred, rotated["credential"].as_str().unwrap()).unwrap();
    let mut agent = run_agent(&stack, &cred);
    stack.wait_online(id).await;

    let req = b.client().delete(&url).header("x-csrf", "1");
    assert_eq!(b.send(req, &url).await.status(), 204);
    stack.wait_offline(id).await;
    let token = edge_core::DeviceToken::from_secret(edge_core::secret::read_file(&cred).unwrap());
    assert!(matches!(
        stack.dial_raw(&token).await,
        Err(tunnel::dial::DialError::Refused { status: 401, .. })
    ));
    assert_eq!(
        json(b.get(&stack.api("/api/devices")).await)
            .await
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    agent.kill().await.unwrap();

    assert_eq!(b.post(&stack.api("/api/auth/logout")).await.status(), 200);
    // The audit log, read with a fresh login (which adds one more `login`).
    let mut b2 = Browser::new();
    assert_eq!(stack.dev_login(&mut b2, "alice").await.status(), 302);
    // The remote-access session ended with the tunnel; its record goes
    // through the audit writer (ADR 018), so it may land a moment later.
    let events = within("remote_access_closed in the audit log", async {
        loop {
            let events = json(b2.get(&stack.api("/api/audit?limit=200")).await).await;
            let closed = events
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["action"] == "remote_access_closed"));
            if closed {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let count = |action: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    for action in [
        "pairing_code_created",
        "pairing_code_used",
        "device_paired",
        "device_renamed",
        "credential_rotated",
        "device_deleted",
        "logout",
        "remote_access_opened",
        "remote_access_closed",
    ] {
        assert_eq!(count(action), 1, "{action}: {events}");
    }
    assert_eq!(
        count("login"),
        2,
        "this journey's login and the one reading the log"
    );
    let closed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "remote_access_closed")
        .unwrap();
    assert!(
        closed["detail"]["bytes_from_device"].as_u64().unwrap() > 0,
        "{closed}"
    );
    assert!(
        closed["detail"]["bytes_to_device"].as_u64().unwrap() > 0,
        "{closed}"
    );
}
