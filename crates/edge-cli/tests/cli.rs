//! The real `edge` binary against the real servers (testkit's stack on
//! ephemeral ports, an in-process agent): forwards carrying 64 MiB both
//! ways with SHA-256 checked, concurrent forwards, refusals with their
//! codes, a logout ending an open forward, `ssh` through `ProxyCommand` to
//! a real `sshd` on the "box", and the device login against npm's
//! certified `oidc-provider`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use edge_cli::credentials::{self, Credential};
use edge_core::Secret;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;
use testkit::{go_device, oidc_provider, within, within_for, Stack};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const MIB: usize = 1 << 20;

/// The `edge` binary with its server and config directory set.
fn edge(server: &str, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge"));
    cmd.env("EDGE_SERVER", server)
        .env("EDGE_CONFIG_DIR", config)
        .env_remove("EDGE_CA_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A config directory holding a bearer session for `user`.
async fn logged_in(stack: &Stack, user: edge_core::UserId) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edge");
    let g = edge_cli::Global {
        server: None,
        config_dir: Some(dir.clone()),
        ca_file: None,
        insecure_plaintext: false,
        client_id: None,
    };
    credentials::save(
        &g,
        &Credential {
            server: stack.api(""),
            token: stack.bearer(user).await,
            expires_at: 0,
        },
    )
    .unwrap();
    (tmp, dir)
}

/// The ids in `edge devices -o json`'s output.
/// Run `cmd` to its end: its standard output, the run having succeeded
/// (its standard error shown otherwise).
async fn succeeded(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn device_ids(stdout: &[u8]) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A TCP echo service on the "box's" side.
async fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// `n` bytes of a seeded pseudo-random stream.
fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Send `data` through `conn` (half-closing after it) while reading
/// everything back: the SHA-256 of what came back.
async fn round_trip(conn: TcpStream, data: &[u8]) -> [u8; 32] {
    let (mut r, mut w) = conn.into_split();
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            h.update(&buf[..n]);
        }
        assert_eq!(total, data.len(), "every byte came back");
        h.finalize().into()
    };
    tokio::join!(send, recv).1
}

/// `edge forward` running; the local address it listens on.
async fn start_forward(
    server: &str,
    config: &Path,
    device: &str,
    spec: &str,
) -> (Child, SocketAddr) {
    let mut child = edge(server, config)
        .args(["forward", device, spec])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = within("the forward's first line", lines.next_line())
        .await
        .unwrap()
        .expect("edge forward printed nothing");
    let addr = line
        .strip_prefix("Forwarding ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// A stack, alice with an online device whose agent allows an echo
/// service, and `edge forward` to it running as alice.
struct Forwarding {
    stack: Stack,
    alice: testkit::TestUser,
    device: testkit::TestDevice,
    service: SocketAddr,
    local: SocketAddr,
    config: PathBuf,
    _agent: testkit::AgentHandle,
    _forward: Child,
    _tmp: tempfile::TempDir,
}

impl Forwarding {
    async fn start() -> Self {
        let stack = Stack::start().await;
        let alice = stack.user("alice").await;
        let device = stack.device(alice.id).await;
        let service = echo_service().await;
        let agent = stack.agent_allowing(&device, &[service]);
        stack.wait_online(device.id).await;
        let (tmp, config) = logged_in(&stack, alice.id).await;
        let (forward, local) = start_forward(
            &stack.api(""),
            &config,
            &device.id.to_string(),
            &format!("0:{service}"),
        )
        .await;
        Self {
            stack,
            alice,
            device,
            service,
            local,
            config,
            _agent: agent,
            _forward: forward,
            _tmp: tmp,
        }
    }
}

#[tokio::test]
async fn a_forward_carries_64_mib_both_ways_and_several_run_at_once() {
    let f = Forwarding::start().await;
    let (stack, alice, device, service, local) =
        (&f.stack, &f.alice, &f.device, f.service, f.local);

    let data = payload(64 * MIB, 7);
    let sent: [u8; 32] = Sha256::digest(&data).into();
    let conn = TcpStream::connect(local).await.unwrap();
    let back = within_for(
        Duration::from_secs(120),
        "64 MiB both ways",
        round_trip(conn, &data),
    )
    .await;
    assert_eq!(back, sent, "SHA-256 of what came back");

    // Four at once, each its own stream.
    let runs = (0..4u64).map(|i| {
        let data = payload(4 * MIB, 100 + i);
        async move {
            let conn = TcpStream::connect(local).await.unwrap();
            let sent: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(round_trip(conn, &data).await, sent);
        }
    });
    within(
        "four concurrent forwards",
        futures_util::future::join_all(runs),
    )
    .await;

    // Each forward is audited with its target and its bytes each way.
    within("the forwards' audit rows", async {
        while stack
            .audit_actions(alice.id)
            .await
            .iter()
            .filter(|a| *a == "forward_closed")
            .count()
            < 5
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let audit = stack.get_json(alice, "/api/audit").await;
    let closed: Vec<serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "forward_closed")
        .cloned()
        .collect();
    assert_eq!(closed.len(), 5);
    let big = closed
        .iter()
        .find(|e| e["detail"]["bytes_to_device"].as_u64() == Some(64 * MIB as u64))
        .expect("the 64 MiB forward's row");
    assert_eq!(big["detail"]["bytes_from_device"], 64 * MIB as u64);
    assert_eq!(big["detail"]["target"], service.to_string());
    assert_eq!(big["target"], device.id.to_string());
    let actions = stack.audit_actions(alice.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "forward_opened").count(), 5);
}

/// One forward asked for directly: the status and error code.
async fn ask(stack: &Stack, device: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .get(stack.api(&format!("/api/devices/{device}/forward?target={target}")))
        .header("connection", "upgrade")
        .header("upgrade", "edge-forward");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn refused_forwards_name_their_reason() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let device = stack.device(alice.id).await;
    let allowed = echo_service().await;
    let other = echo_service().await;
    let _agent = stack.agent_allowing(&device, &[allowed]);
    stack.wait_online(device.id).await;
    let token = stack.bearer(alice.id).await;
    let bearer = format!("Bearer {}", token.expose());
    let id = device.id.to_string();
    let auth = [("authorization", bearer.as_str())];

    // The CLI shows the agent's refusal with its code.
    let (_tmp, config) = logged_in(&stack, alice.id).await;
    let out = within(
        "edge ssh to a target not allowed",
        edge(&stack.api(""), &config)
            .args(["ssh", &id, "--port", &other.port().to_string()])
            .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target_not_allowed") && err.contains("request "),
        "{err}"
    );

    assert_eq!(
        ask(&stack, &id, &other.to_string(), &auth).await,
        (403, "target_not_allowed".into())
    );
    // Allowed, but nothing listens there any more.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let _agent2 = {
        let d2 = stack.device(alice.id).await;
        let a = stack.agent_allowing(&d2, &[closed]);
        stack.wait_online(d2.id).await;
        assert_eq!(
            ask(&stack, &d2.id.to_string(), &closed.to_string(), &auth).await,
            (502, "target_unreachable".into())
        );
        a
    };
    assert_eq!(
        ask(&stack, &id, "no-port", &auth).await,
        (400, "bad_request".into())
    );
    // Another owner's device, and an unknown one: 404 alike.
    let bob_token = stack.bearer(bob.id).await;
    let bob_auth = format!("Bearer {}", bob_token.expose());
    assert_eq!(
        ask(
            &stack,
            &id,
            &allowed.to_string(),
            &[("authorization", &bob_auth)]
        )
        .await,
        (404, "not_found".into())
    );
    // The console's cookie does not forward; a bearer from a page is refused.
    assert_eq!(
        ask(
            &stack,
            &id,
            &allowed.to_string(),
            &[("cookie", &alice.cookie)]
        )
        .await,
        (403, "bearer_required".into())
    );
    assert_eq!(
        ask(
            &stack,
            &id,
            &allowed.to_string(),
            &[
                ("authorization", &bearer),
                ("origin", "https://evil.example")
            ]
        )
        .await,
        (403, "bearer_from_browser".into())
    );
    assert_eq!(
        ask(
            &stack,
            &id,
            &allowed.to_string(),
            &[("authorization", "Bearer edge_s_forged")]
        )
        .await,
        (401, "unauthenticated".into())
    );
    // A browser session's id is no bearer: each session opens its own door.
    let browser_id = alice
        .cookie
        .split_once('=')
        .and_then(|(_, v)| v.split('.').next())
        .unwrap();
    let as_bearer = format!("Bearer edge_s_{browser_id}");
    let me = reqwest::Client::new()
        .get(stack.api("/api/auth/me"))
        .header("authorization", &as_bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    // Without the upgrade it is a bad request, not a pipe.
    let res = reqwest::Client::new()
        .get(stack.api(&format!("/api/devices/{id}/forward?target={allowed}")))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_go_device_answers_target_not_supported_and_keeps_working() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let device = stack.device(alice.id).await;
    let _go = go_device::spawn(&bin, &stack.tunnel_url(), &device.token);
    stack.wait_online(device.id).await;
    let token = stack.bearer(alice.id).await;
    let bearer = format!("Bearer {}", token.expose());
    assert_eq!(
        ask(
            &stack,
            &device.id.to_string(),
            "127.0.0.1:22",
            &[("authorization", &bearer)]
        )
        .await,
        (409, "target_not_supported".into())
    );
    // Its plain streams are as before: the console's proxy still reaches it.
    let res = stack
        .get(&alice, &stack.proxy_url(device.id, "/api/info"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

#[tokio::test]
async fn logging_out_ends_an_open_forward_within_a_second() {
    let f = Forwarding::start().await;
    let (stack, config, local) = (&f.stack, &f.config, f.local);
    let mut conn = TcpStream::connect(local).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("the echo", conn.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");

    let out = within(
        "edge logout",
        edge(&stack.api(""), config).arg("logout").output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    within_for(Duration::from_secs(1), "the forward to end", async {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    })
    .await;
    // Logged out here too: the next call says so (exit code 3).
    let out = edge(&stack.api(""), config)
        .arg("devices")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("edge login"));
}

#[tokio::test]
async fn devices_list_as_json_and_as_a_table_and_resolve_by_name() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (online, _agent) = stack.online_device(alice.id).await;
    let _offline = stack.device(bob.id).await;
    let (_tmp, config) = logged_in(&stack, alice.id).await;
    let stdout = succeeded(
        edge(&stack.api(""), &config).args(["devices", "-o", "json", "--status", "online"]),
    )
    .await;
    assert_eq!(
        device_ids(&stdout),
        [online.id.to_string()],
        "alice's online device only"
    );
    let out = edge(&stack.api(""), &config)
        .args(["devices"])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("ID") && table.contains(&online.id.to_string()),
        "{table}"
    );
    let out = edge(&stack.api(""), &config)
        .args(["device", "show", "box", "-o", "json"])
        .output()
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], online.id.to_string(), "found by its name");
    // Someone else's device id reads as not found, with the server's code.
    let out = edge(&stack.api(""), &config)
        .args(["device", "show", &_offline.id.to_string()])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let out = edge(&stack.api(""), &config)
        .args(["completions", "bash"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("forward"));
}

/// `edge` acting as a service account (ADR 029): `--client-id` in its
/// environment, the secret in `EDGE_CLIENT_SECRET`, no stored login.
fn edge_as(server: &str, config: &Path, client_id: &str, secret: &Secret) -> Command {
    let mut cmd = edge(server, config);
    cmd.env("EDGE_CLIENT_ID", client_id)
        .env("EDGE_CLIENT_SECRET", secret.expose());
    cmd
}

#[tokio::test]
async fn a_service_account_lists_its_selector_forwards_and_is_cut_when_deleted() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let device = stack.device(alice.id).await;
    let labels = vec!["ci".to_owned()];
    stack
        .store
        .update_device(alice.id, device.id, None, Some(&labels))
        .await
        .unwrap()
        .unwrap();
    let _hidden = stack.device(alice.id).await;
    let service = echo_service().await;
    let _agent = stack.agent_allowing(&device, &[service]);
    stack.wait_online(device.id).await;
    let (client_id, secret) = stack
        .service_account(&alice, &["devices:read", "devices:remote"], &["ci"])
        .await;
    let empty = tempfile::tempdir().unwrap();
    let config = empty.path().join("edge");

    // The list holds the selector's device only.
    let stdout = succeeded(
        edge_as(&stack.api(""), &config, &client_id, &secret).args(["devices", "-o", "json"]),
    )
    .await;
    assert_eq!(device_ids(&stdout), [device.id.to_string()]);

    // A wrong secret is the token endpoint's invalid_client, exit 3.
    let out = edge_as(
        &stack.api(""),
        &config,
        &client_id,
        &Secret::new("edge_sk_wrong"),
    )
    .arg("devices")
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_client"));

    // A forward as the account carries bytes both ways.
    let mut child = edge_as(&stack.api(""), &config, &client_id, &secret)
        .args(["forward", &device.id.to_string(), &format!("0:{service}")])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = within(
        "the forward's first line",
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .unwrap()
    .expect("edge forward printed nothing");
    let local: SocketAddr = line
        .strip_prefix("Forwarding ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap()
        .parse()
        .unwrap();
    let data = payload(MIB, 9);
    let sent: [u8; 32] = Sha256::digest(&data).into();
    let conn = TcpStream::connect(local).await.unwrap();
    assert_eq!(
        within("1 MiB both ways", round_trip(conn, &data)).await,
        sent
    );

    // Deleting the account ends an open forward within a second.
    let mut conn = TcpStream::connect(local).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("the echo", conn.read_exact(&mut buf)).await.unwrap();
    let res = stack
        .send_as(
            reqwest::Method::DELETE,
            &alice,
            &format!("/api/service-accounts/{client_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    within_for(Duration::from_secs(1), "the forward to end", async {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    })
    .await;

    // Audited under the account and its owner.
    let events = stack
        .audit_events_until(alice.id, "the forwards' audit rows", |events| {
            events
                .iter()
                .filter(|e| {
                    e.action == "forward_closed"
                        && e.service_account.as_deref() == Some(client_id.as_str())
                })
                .count()
                == 2
        })
        .await;
    assert!(events.iter().any(|e| e.action == "forward_closed"
        && e.detail["ended"] == "access_ended"
        && e.detail["bytes_to_device"] == 4));
}

fn which(cmd: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// The peers an interop test needs, or `None` to skip (a failure when
/// `REQUIRE_INTEROP=1`).
fn peers(names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Option<Vec<PathBuf>> = names.iter().map(|n| which(n)).collect();
    if found.is_none() && testkit::interop_required() {
        panic!("REQUIRE_INTEROP=1 but one of {names:?} is missing (apt-get install openssh-server openssh-client)");
    }
    found
}

/// A real `sshd` on the "box": each connection to the returned address
/// runs `sshd -i` for it, taking `user_key` for the current user.
async fn sshd(dir: &Path, sshd: PathBuf, keygen: &Path) -> (SocketAddr, PathBuf) {
    let host_key = dir.join("host_key");
    let user_key = dir.join("user_key");
    for key in [&host_key, &user_key] {
        let st = std::process::Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(key)
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\nPidFile none\n",
            host_key.display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    // Run as root, sshd wants its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(out) = conn.try_clone() else { continue };
            let _ = std::process::Command::new(&sshd)
                .arg("-i")
                .arg("-f")
                .arg(&config)
                .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(conn)))
                .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(out)))
                .stderr(std::process::Stdio::null())
                .spawn();
        }
    });
    (addr, user_key)
}

#[tokio::test]
async fn ssh_through_proxy_command_runs_a_command_on_the_box() {
    let Some(bins) = peers(&["sshd", "ssh", "ssh-keygen"]) else {
        return;
    };
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let device = stack.device(alice.id).await;
    let keys = tempfile::tempdir().unwrap();
    let (sshd_addr, user_key) = sshd(keys.path(), bins[0].clone(), &bins[2]).await;
    let _agent = stack.agent_allowing(&device, &[sshd_addr]);
    stack.wait_online(device.id).await;
    let (_tmp, config) = logged_in(&stack, alice.id).await;
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let proxy = format!(
        "ProxyCommand={} --server {} --config-dir {} ssh %h --port {}",
        env!("CARGO_BIN_EXE_edge"),
        stack.api(""),
        config.display(),
        sshd_addr.port()
    );
    let out = within_for(
        Duration::from_secs(60),
        "ssh through edge",
        Command::new(&bins[1])
            .args(["-F", "/dev/null", "-o", &proxy])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&user_key)
            .arg(format!("{me}@box"))
            .arg("echo hello from the box; echo $((6 * 7))")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hello from the box\n42\n");
    let actions = stack.audit_actions(alice.id).await;
    assert!(actions.iter().any(|a| a == "forward_opened"), "{actions:?}");
}

/// The page `edge login` tells the user to open (with the code in it).
async fn login_page(login: &mut Child) -> String {
    let stderr = login.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    within("the login's instructions", async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("edge login ended early");
            if let Some(rest) = line.strip_prefix("(or open ") {
                break rest.trim_end_matches(" directly)").to_owned();
            }
        }
    })
    .await
}

#[tokio::test]
async fn edge_login_works_against_the_embedded_dev_provider() {
    let stack = Stack::start().await;
    let config = tempfile::tempdir().unwrap();
    let mut login = edge(&stack.api(""), config.path())
        .arg("login")
        .spawn()
        .unwrap();
    let page = url::Url::parse(&login_page(&mut login).await).unwrap();
    let code = page
        .query_pairs()
        .find(|(k, _)| k == "user_code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let approve = page.join("device").unwrap();
    let http = reqwest::Client::new();
    let wrong = http
        .post(approve.clone())
        .form(&[("user_code", "BCDF-GHJK"), ("user", "bob")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400, "another code approves nothing");
    let res = http
        .post(approve)
        .form(&[("user_code", code.as_str()), ("user", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let status = within("edge login to finish", login.wait()).await.unwrap();
    assert!(status.success());
    let out = edge(&stack.api(""), config.path())
        .args(["whoami", "-o", "json"])
        .output()
        .await
        .unwrap();
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["email"], "alice@example.test");
    let actions = stack
        .audit_actions(edge_core::UserId::from_str(me["id"].as_str().unwrap()).unwrap())
        .await;
    assert!(actions.iter().any(|a| a == "login"), "{actions:?}");
}

#[tokio::test]
async fn edge_login_through_a_browser_on_this_machine() {
    let stack = Stack::start().await;
    let config = tempfile::tempdir().unwrap();
    let mut login = edge(&stack.api(""), config.path())
        .args(["login", "--browser"])
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let page = within("the page to open", async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("edge login ended early");
            if let Some(url) = line.trim().strip_prefix(&stack.api("/api/cli/authorize")) {
                break format!("/api/cli/authorize{url}");
            }
        }
    })
    .await;
    // Signed out, the page sends the browser to the login first, and the
    // login back to the page.
    let mut b = testkit::browser::Browser::new();
    let first = b.get(&stack.api(&page)).await;
    assert_eq!(first.status(), 302);
    assert!(testkit::browser::Browser::location(&first)
        .starts_with(&stack.api("/api/auth/login?return_to=")));
    let callback = stack.dev_login_until_callback(&mut b, "alice", &page).await;
    let signed_in = b.get(&callback).await;
    assert_eq!(
        testkit::browser::Browser::location(&signed_in),
        stack.api(&page)
    );
    let to_cli = b.get(&stack.api(&page)).await;
    assert_eq!(to_cli.status(), 302);
    let to_cli = url::Url::parse(&testkit::browser::Browser::location(&to_cli)).unwrap();
    assert_eq!(
        to_cli.host_str(),
        Some("127.0.0.1"),
        "only ever to loopback"
    );
    let code = to_cli
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // The code is bound to the CLI's verifier: another is refused.
    let stolen = reqwest::Client::new()
        .post(stack.api("/api/cli/login/code"))
        .json(&serde_json::json!({ "code": code, "verifier": "0".repeat(64) }))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 400);
    // Another state is not the login the CLI waits for.
    let mut wrong = to_cli.clone();
    wrong.set_query(Some("code=x&state=not-ours"));
    assert_eq!(b.get(wrong.as_str()).await.status(), 400);
    assert_eq!(b.get(to_cli.as_str()).await.status(), 200);
    let status = within("edge login to finish", login.wait()).await.unwrap();
    assert!(status.success());
    let out = edge(&stack.api(""), config.path())
        .args(["whoami", "-o", "json"])
        .output()
        .await
        .unwrap();
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["email"], "alice@example.test");
}

/// The `action` of a page's first form and all its hidden inputs.
fn form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let html = &html[start..];
    let action = html
        .split("action=\"")
        .nth(1)?
        .split('"')
        .next()?
        .replace("&amp;", "&");
    let mut fields = Vec::new();
    for input in html.split("<input").skip(1) {
        let attr = |name: &str| {
            input
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_owned)
        };
        if attr("type").as_deref() == Some("hidden") {
            if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
                fields.push((n, v));
            }
        }
    }
    if html.contains("name=\"login\"") {
        fields.push(("login".into(), "alice".into()));
        fields.push(("password".into(), "anything".into()));
    }
    if html.contains("name=\"confirm\"") && !fields.iter().any(|(n, _)| n == "confirm") {
        fields.push(("confirm".into(), "yes".into()));
    }
    Some((action, fields))
}

#[tokio::test]
async fn edge_login_uses_the_device_grant_of_a_certified_provider() {
    if oidc_provider::available().is_none() {
        return;
    }
    let (stack, provider) = oidc_provider::stack_with("confidential-client", true).await;
    let config = tempfile::tempdir().unwrap();
    let mut login = edge(&stack.api(""), config.path())
        .arg("login")
        .spawn()
        .unwrap();
    let page = login_page(&mut login).await;
    assert!(page.starts_with(&provider.issuer), "{page}");

    // The user opens the page, confirms the code, signs in and consents.
    let mut b = testkit::browser::Browser::new();
    // What to do next: a URL to open, or a page (its URL and HTML) whose
    // form to send.
    let mut next = Ok(page);
    for step in 0.. {
        assert!(step < 16, "the provider's pages never ended");
        let (base, html) = match next {
            Ok(url) => {
                let res = b.get(&url).await;
                if res.status().is_redirection() {
                    let to = testkit::browser::Browser::location(&res);
                    next = Ok(res.url().join(&to).unwrap().to_string());
                    continue;
                }
                assert_eq!(res.status(), 200, "unexpected page at {url}");
                (res.url().clone(), res.text().await.unwrap())
            }
            Err(page) => page,
        };
        let Some((action, fields)) = form(&html) else {
            break;
        };
        let target = base.join(&action).unwrap();
        let posted = b.post_form(target.as_ref(), &fields).await;
        next = if posted.status().is_redirection() {
            Ok(target
                .join(&testkit::browser::Browser::location(&posted))
                .unwrap()
                .to_string())
        } else {
            assert_eq!(posted.status(), 200, "posting to {target}");
            Err((target, posted.text().await.unwrap()))
        };
    }
    let status = within_for(
        Duration::from_secs(30),
        "edge login to finish",
        login.wait(),
    )
    .await
    .unwrap();
    assert!(status.success());

    let stdout =
        succeeded(edge(&stack.api(""), config.path()).args(["whoami", "-o", "json"])).await;
    let me: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        me["email"], "alice@example.test",
        "the provider's user, claims from UserInfo"
    );
    // The session is listed as a terminal's, beside browser sessions.
    let stored = credentials::load(&edge_cli::Global {
        server: None,
        config_dir: Some(config.path().to_owned()),
        ca_file: None,
        insecure_plaintext: false,
        client_id: None,
    })
    .unwrap()
    .unwrap();
    let sessions: serde_json::Value = testkit::checks::json_answer(
        reqwest::Client::new()
            .get(stack.api("/api/auth/sessions"))
            .bearer_auth(stored.token.expose()),
    )
    .await;
    let current = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap();
    assert_eq!(current["kind"], "bearer");
    assert!(current["client"].as_str().unwrap().starts_with("edge CLI"));
    // Logout revokes it on the server.
    let out = edge(&stack.api(""), config.path())
        .arg("logout")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let res = reqwest::Client::new()
        .get(stack.api("/api/auth/me"))
        .bearer_auth(stored.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
