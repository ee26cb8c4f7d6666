//! The product as real processes, for fault tests: `remote-proxy`,
//! `api-server` and `sim-box` binaries on free loopback ports over one data
//! directory and database, one signed-in user, and what the kernel says
//! about each process (descriptors, resident memory) and what it says
//! about itself (its metrics). Processes are killed when dropped.

use crate::within;
use edge_core::{DeviceId, DeviceToken, UserId};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use store::{NewDevice, Store};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The program `cmd` in a directory of `PATH`, if any.
pub fn on_path(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// A free loopback port for a child to take (bound, then released). It
/// lies below the kernel's ephemeral range, so that between this check and
/// the child's bind no outgoing connection can take it as its source port
/// and no listener on port 0 can be given it (a relay once failed to start
/// with its port taken so); and it is never handed out twice by this
/// process.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const FLOOR: u16 = 10_000;
    let ceiling = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if ceiling > FLOOR + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1_000 {
            let port = rng.gen_range(FLOOR..ceiling);
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: whatever the kernel gives.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    given.push(port);
    port
}

/// Wait (bounded) until something accepts on `port`.
pub async fn wait_port(port: u16) {
    within("port opens", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Wait (bounded) until something accepts on the Unix socket at `path`.
pub async fn wait_unix(path: &Path) {
    within("socket opens", async {
        while tokio::net::UnixStream::connect(path).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Send signal `sig` (`TERM`, `KILL`, `STOP`, `CONT`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The `field` line's number of kB in a `/proc` file such as
/// `/proc/meminfo`; 0 when it cannot be read.
pub fn kib_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time `pid` has used so far, in milliseconds (0 once
/// it is gone).
pub fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command name (which may hold spaces) in
    // parentheses; utime and stime are fields 14 and 15 of the whole line,
    // 11 and 12 here, in clock ticks of 10 ms on Linux.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10
}

/// The value of an unlabelled sample `name` in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The three product binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub relay: PathBuf,
    pub api: PathBuf,
    pub sim_box: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// The workspace's binaries next to `bin` (built when missing or stale).
    pub fn next_to(bin: &Path) -> Self {
        let b = |n| crate::devstack::fresh_sibling_binary(bin, n);
        Self {
            relay: b("remote-proxy"),
            api: b("api-server"),
            sim_box: b("sim-box"),
            agent: b("edge-agent"),
        }
    }
}

/// A running product on loopback.
pub struct ProcStack {
    pub bins: Binaries,
    pub data: tempfile::TempDir,
    pub db_url: String,
    pub store: Store,
    pub relay: Child,
    pub api: Child,
    pub sim_box: Child,
    pub tunnel_port: u16,
    pub internal_port: u16,
    pub relay_metrics_port: u16,
    pub api_port: u16,
    pub box_port: u16,
    pub user: UserId,
    /// The user's signed session cookie (`name=value`).
    pub cookie: String,
    pub http: reqwest::Client,
    api_args: Vec<String>,
    relay_args: Vec<String>,
    /// How the api-server reaches the relay: its internal port, or its
    /// Unix socket ([`Args::internal_socket`]).
    pub relay_url: String,
}

/// Extra command-line arguments of the servers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Args<'a> {
    pub api: &'a [&'a str],
    pub relay: &'a [&'a str],
    /// The api-server reaches the relay on the relay's Unix socket in the
    /// data directory (ADR 041) instead of its internal TCP port.
    pub internal_socket: bool,
}

impl ProcStack {
    /// Start everything on `db_url` (a fresh SQLite file when `None`),
    /// with `args` added to the servers' command lines.
    pub async fn start(bins: Binaries, db_url: Option<String>, args: Args<'_>) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let db_url =
            db_url.unwrap_or_else(|| format!("sqlite://{}", data.path().join("edge.db").display()));
        let store = Store::connect(&db_url).await.expect("store");
        let user = store
            .upsert_user("https://faults", "owner", None, Some("owner"))
            .await
            .expect("user")
            .id;
        let (tunnel_port, internal_port, relay_metrics_port) =
            (free_port(), free_port(), free_port());
        let (api_port, box_port) = (free_port(), free_port());
        let mut relay_args: Vec<String> = args.relay.iter().map(|s| (*s).to_owned()).collect();
        let relay_url = if args.internal_socket {
            let socket = data.path().join("relay-internal.sock");
            relay_args.push("--internal-socket".to_owned());
            relay_args.push(socket.display().to_string());
            directory::client::unix_node_url(&socket)
        } else {
            format!("http://127.0.0.1:{internal_port}")
        };
        let relay_arg_refs: Vec<&str> = relay_args.iter().map(String::as_str).collect();
        let mut stack = Self {
            relay: spawn_relay(
                &bins.relay,
                data.path(),
                &db_url,
                [tunnel_port, internal_port, relay_metrics_port],
                &relay_arg_refs,
            ),
            api: spawn_api(
                &bins.api,
                data.path(),
                &db_url,
                api_port,
                &relay_url,
                args.api,
            ),
            sim_box: command(&bins.sim_box, data.path(), &db_url)
                .args(["--listen", &format!("127.0.0.1:{box_port}")])
                .spawn()
                .expect("sim-box starts"),
            bins,
            store,
            tunnel_port,
            internal_port,
            relay_metrics_port,
            api_port,
            box_port,
            user,
            cookie: String::new(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            api_args: args.api.iter().map(|s| (*s).to_owned()).collect(),
            relay_args,
            relay_url,
            db_url,
            data,
        };
        for port in [internal_port, api_port, box_port] {
            wait_port(port).await;
        }
        stack.wait_relay_socket().await;
        stack.cookie = stack.sign_in().await;
        stack
    }

    /// A session of `user` in the store, its cookie signed with the key
    /// the api-server made in the data directory.
    async fn sign_in(&self) -> String {
        api_server::session::sign_in_over_data_dir(
            &self.store,
            self.data.path(),
            self.user,
            "faults",
            3_600_000,
        )
        .await
        .expect("a session in the store")
    }

    pub fn tunnel_url(&self) -> String {
        format!("ws://127.0.0.1:{}/tunnel", self.tunnel_port)
    }

    pub fn box_addr(&self) -> String {
        format!("127.0.0.1:{}", self.box_port)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn proxy_url(&self, device: DeviceId, path: &str) -> String {
        self.api_url(&format!("/api/devices/{device}/proxy{path}"))
    }

    pub fn relay_pid(&self) -> u32 {
        self.relay.id().expect("relay running")
    }

    pub fn api_pid(&self) -> u32 {
        self.api.id().expect("api-server running")
    }

    /// A device of the user with a fresh credential.
    pub async fn device(&self, name: &str) -> (DeviceId, DeviceToken) {
        let dev = self
            .store
            .create_device(
                self.user,
                &NewDevice {
                    name: name.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("device");
        let token = DeviceToken::generate();
        self.store
            .add_credential(dev.id, &token.hash())
            .await
            .expect("credential");
        (dev.id, token)
    }

    /// A device with an in-process agent, reachable through the api-server;
    /// cancel the token to stop the agent.
    pub async fn online_device(&self, name: &str) -> (DeviceId, CancellationToken) {
        let (dev, token) = self.device(name).await;
        let stop = CancellationToken::new();
        tokio::spawn(edge_agent::run(self.agent_settings(), token, stop.clone()));
        self.wait_reachable(dev).await;
        (dev, stop)
    }

    /// Agent settings for this stack's relay and box.
    pub fn agent_settings(&self) -> edge_agent::config::AgentSettings {
        edge_agent::config::AgentSettings::new(self.tunnel_url(), self.box_addr())
    }

    /// An `edge-agent` process for `token` (its descriptors can be counted).
    pub fn agent_process(&self, token: &DeviceToken) -> Child {
        command(&self.bins.agent, self.data.path(), &self.db_url)
            .args([
                "run",
                "--relay",
                &self.tunnel_url(),
                "--target",
                &self.box_addr(),
            ])
            .env("EDGE_AGENT_TOKEN", token.expose())
            .spawn()
            .expect("edge-agent starts")
    }

    /// GET `path` on `device` through the api-server as the user.
    pub async fn get(&self, device: DeviceId, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(self.proxy_url(device, path))
            .header("cookie", &self.cookie)
            .send()
            .await
    }

    /// Status of `GET /api/info` on `device` (0: no answer).
    pub async fn info_status(&self, device: DeviceId) -> u16 {
        self.get(device, "/api/info")
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Wait (bounded) until `device` answers 200 through the api-server.
    pub async fn wait_reachable(&self, device: DeviceId) {
        within("device reachable through the api-server", async {
            while self.info_status(device).await != 200 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    }

    /// Wait (bounded) until the api-server lists `device` as online
    /// (without sending the box a request).
    pub async fn wait_online_listed(&self, device: DeviceId) {
        within("device listed online", async {
            loop {
                let view: Option<serde_json::Value> = match self
                    .http
                    .get(self.api_url(&format!("/api/devices/{device}")))
                    .header("cookie", &self.cookie)
                    .send()
                    .await
                {
                    Ok(res) => res.json().await.ok(),
                    Err(_) => None,
                };
                if view.is_some_and(|v| v["status"] == "online") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    }

    /// The relay's metrics page.
    pub async fn relay_metrics(&self) -> String {
        self.http
            .get(format!(
                "http://127.0.0.1:{}/metrics",
                self.relay_metrics_port
            ))
            .send()
            .await
            .expect("relay metrics answer")
            .text()
            .await
            .expect("relay metrics body")
    }

    /// An unlabelled relay metric, e.g. `edge_relay_streams_open`.
    pub async fn relay_metric(&self, name: &str) -> f64 {
        let page = self.relay_metrics().await;
        metric(&page, name).unwrap_or_else(|| panic!("no {name} in the relay's metrics"))
    }

    /// SIGKILL the relay and wait for it to be gone.
    pub async fn kill_relay(&mut self) {
        self.relay.start_kill().expect("kill relay");
        let _ = self.relay.wait().await;
    }

    /// Start the relay again on its ports.
    pub async fn restart_relay(&mut self) {
        let args: Vec<&str> = self.relay_args.iter().map(String::as_str).collect();
        self.relay = spawn_relay(
            &self.bins.relay,
            self.data.path(),
            &self.db_url,
            [
                self.tunnel_port,
                self.internal_port,
                self.relay_metrics_port,
            ],
            &args,
        );
        wait_port(self.internal_port).await;
        self.wait_relay_socket().await;
    }

    /// With [`Args::internal_socket`], wait until the relay serves its
    /// socket (bound after its ports, and a killed relay's file stays).
    async fn wait_relay_socket(&self) {
        if let Some(path) = self.relay_url.strip_prefix(directory::client::UNIX_SCHEME) {
            wait_unix(Path::new(path)).await;
        }
    }

    /// SIGKILL the api-server and wait for it to be gone.
    pub async fn kill_api(&mut self) {
        self.api.start_kill().expect("kill api-server");
        let _ = self.api.wait().await;
    }

    /// Start the api-server again on its port.
    pub async fn restart_api(&mut self) {
        let args: Vec<&str> = self.api_args.iter().map(String::as_str).collect();
        self.api = spawn_api(
            &self.bins.api,
            self.data.path(),
            &self.db_url,
            self.api_port,
            &self.relay_url,
            &args,
        );
        wait_port(self.api_port).await;
    }
}

fn command(bin: &Path, data: &Path, db_url: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("EDGE_DATA_DIR", data)
        .env("EDGE_DATABASE_URL", db_url)
        .env(
            "RUST_LOG",
            std::env::var("TEST_PROCS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // Its warnings and errors go where the test's own output goes, so
        // a failed test shows what the process said.
        .stdout(Stdio::inherit())
        .kill_on_drop(true);
    c
}

/// A relay on `[tunnel, internal, metrics]` ports.
fn spawn_relay(bin: &Path, data: &Path, db_url: &str, ports: [u16; 3], extra: &[&str]) -> Child {
    let [tunnel, internal, metrics] = ports;
    command(bin, data, db_url)
        .args(["--tunnel-listen", &format!("127.0.0.1:{tunnel}")])
        .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--max-connections-per-client", "0"])
        .args(["--max-tunnels-per-owner", "10000"])
        .args(extra)
        .spawn()
        .expect("remote-proxy starts")
}

fn spawn_api(
    bin: &Path,
    data: &Path,
    db_url: &str,
    port: u16,
    relay_url: &str,
    extra: &[&str],
) -> Child {
    command(bin, data, db_url)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--relay-url", relay_url])
        .args(["--cookie-insecure", "--oidc-issuer", "http://127.0.0.1:9"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--max-connections-per-client", "0"])
        .args(extra)
        .spawn()
        .expect("api-server starts")
}
