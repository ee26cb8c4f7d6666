//! npm's certified `oidc-provider` (pinned in `interop/oidc-provider`) as an
//! interop peer, run as a real Node.js process. Missing Node or an
//! uninstalled package skips the test unless `REQUIRE_INTEROP=1`, where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/oidc-provider")
}

/// Whether the peer can run here; `None` means skip (with a message).
pub fn available() -> Option<()> {
    let why = if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        "node is not installed"
    } else if !dir().join("node_modules/oidc-provider").is_dir() {
        "run `npm ci --prefix interop/oidc-provider` first"
    } else {
        return Some(());
    };
    if crate::interop_required() {
        panic!("oidc-provider interop peer required but unavailable: {why}");
    }
    eprintln!("skipping oidc-provider interop: {why}");
    None
}

/// A running provider.
pub struct Provider {
    pub issuer: String,
    _child: Child,
}

/// Start the provider with `redirect_uri` registered for both clients, and
/// back-channel logout sent to the api-server beside it.
pub async fn start(redirect_uri: &str, confidential_secret: &str) -> Provider {
    let backchannel = redirect_uri.replace("/api/auth/callback", "/api/auth/backchannel-logout");
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(dir())
        .env("REDIRECT_URI", redirect_uri)
        .env("CONFIDENTIAL_SECRET", confidential_secret)
        .env("BACKCHANNEL_URI", backchannel)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let issuer = crate::within("oidc-provider READY", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(issuer) = line.strip_prefix("READY ") {
                return issuer.to_owned();
            }
        }
        panic!("oidc-provider exited before READY");
    })
    .await;
    Provider {
        issuer,
        _child: child,
    }
}

/// A stack signing in through a fresh provider as `client_id` (with a
/// secret when `confidential`), and the provider.
pub async fn stack_with(client_id: &str, confidential: bool) -> (crate::Stack, Provider) {
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let callback = format!(
        "http://{}/api/auth/callback",
        api.local_addr().expect("bound")
    );
    let secret = edge_core::Secret::random(24);
    let provider = start(&callback, secret.expose()).await;
    let stack = crate::Stack::start_with(crate::StackOptions {
        idp: crate::Idp::External {
            api_listener: api,
            issuer: provider.issuer.clone(),
            client_id: client_id.into(),
            client_secret: confidential.then_some(secret),
        },
        ..crate::StackOptions::default()
    })
    .await;
    (stack, provider)
}
