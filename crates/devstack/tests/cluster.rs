//! Issue 12's cluster, as real processes: a throwaway `redis-server`, a
//! fresh PostgreSQL database, two `remote-proxy` and two `api-server`
//! release-or-test binaries, one `sim-box`, 100 Rust agents that know both
//! relays, and one Go device. It proves routing through both api-servers,
//! a session shared by them (and a login begun on one, finished on the
//! other), relay SIGKILL (time to routable printed), a device taking
//! itself from one relay to the other, a relay drained by SIGTERM with no
//! failed request, one pairing code exchanged 50 times at once across both
//! replicas, and a Redis outage that costs lookups but no tunnel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use edge_core::{DeviceId, DeviceToken};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use store::{NewDevice, Store};
use testkit::devstack::fresh_sibling_binary;
use testkit::procs::{free_port, wait_port};
use testkit::redis::RedisServer;
use testkit::within;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const DEVSTACK: &str = env!("CARGO_BIN_EXE_devstack");
const AGENTS: usize = 100;

fn bin(name: &str) -> PathBuf {
    fresh_sibling_binary(Path::new(DEVSTACK), name)
}

struct Cluster {
    data: tempfile::TempDir,
    db_url: String,
    redis_url: String,
}

impl Cluster {
    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("EDGE_DATA_DIR", self.data.path())
            .env("EDGE_DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// A relay on these ports (a restart keeps its URLs); returns
    /// (process, tunnel URL, node URL).
    async fn relay_on(&self, tunnel: u16, internal: u16) -> (Child, String, String) {
        let child = self
            .command("remote-proxy")
            .args(["--tunnel-listen", &format!("127.0.0.1:{tunnel}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
            .args(["--redis-url", &self.redis_url])
            .args(["--max-connections-per-client", "0"])
            .args(["--max-tunnels-per-owner", "1000"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        wait_port(internal).await;
        (
            child,
            format!("ws://127.0.0.1:{tunnel}/tunnel"),
            format!("http://127.0.0.1:{internal}"),
        )
    }

    /// An api-server; returns (process, base URL). Every replica sends
    /// logins back to `callback` (the load balancer's address in a real
    /// deployment).
    async fn api(&self, port: u16, issuer: &str, callback: &str) -> (Child, String) {
        let child = self
            .command("api-server")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &self.redis_url])
            .args(["--public-origin", &format!("http://127.0.0.1:{port}")])
            .args(["--cookie-insecure", "--oidc-issuer", issuer])
            .args(["--oidc-redirect-url", callback])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--max-connections-per-client", "0"])
            .spawn()
            .unwrap();
        wait_port(port).await;
        (child, format!("http://127.0.0.1:{port}"))
    }
}

/// `GET <api>/api/devices/<id>/proxy/api/info` as `cookie`.
fn info_request(
    http: &reqwest::Client,
    api: &str,
    cookie: &str,
    device: DeviceId,
) -> reqwest::RequestBuilder {
    http.get(format!("{api}/api/devices/{device}/proxy/api/info"))
        .header("cookie", cookie)
}

/// Status of [`info_request`] (0 when it fails).
async fn info_status(http: &reqwest::Client, api: &str, cookie: &str, device: DeviceId) -> u16 {
    info_request(http, api, cookie, device)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The status `req` gets (0 when it fails); a refusal is printed with its
/// body, so a failed assertion says which error it was.
async fn status_of(req: reqwest::RequestBuilder, what: &str) -> u16 {
    match req.send().await {
        Ok(r) if r.status() == 200 => 200,
        Ok(r) => {
            let status = r.status().as_u16();
            println!("{what}: {status} {}", r.text().await.unwrap_or_default());
            status
        }
        Err(err) => {
            println!("{what}: {err}");
            0
        }
    }
}

/// Wait until every device answers 200 through every api-server.
async fn all_reachable(http: &reqwest::Client, apis: &[&str], cookie: &str, devices: &[DeviceId]) {
    within("every device reachable through every api-server", async {
        for api in apis {
            futures_util::future::join_all(devices.iter().map(|d| async move {
                while info_status(http, api, cookie, *d).await != 200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }))
            .await;
        }
    })
    .await;
}

/// A device of `user` with a fresh credential.
async fn new_device(store: &Store, user: edge_core::UserId, name: &str) -> (DeviceId, DeviceToken) {
    let dev = store
        .create_device(
            user,
            &NewDevice {
                name: name.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = DeviceToken::generate();
    store.add_credential(dev.id, &token.hash()).await.unwrap();
    (dev.id, token)
}

/// Send signal `sig` (`TERM`, ...) to a child process.
fn nix_kill(child: &Child, sig: &str) {
    testkit::procs::signal(child.id().expect("the process is running"), sig);
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[cfg_attr(
    not(any(has_redis, require_interop)),
    ignore = "needs redis-server (Debian's redis-server package)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_and_two_api_servers_survive_a_relay_kill_and_a_redis_outage() {
    testkit::init_logs();
    let Some(admin) = store::testing::postgres_admin_url().unwrap() else {
        eprintln!("skipping: TEST_POSTGRES_URL is not set");
        return;
    };
    let started = Instant::now();
    let mut redis = RedisServer::start().await;
    let cluster = Cluster {
        data: tempfile::tempdir().unwrap(),
        db_url: store::testing::fresh_postgres_url(&admin).await.unwrap(),
        redis_url: redis.url(),
    };
    let store = Store::connect(&cluster.db_url).await.unwrap();
    // Shared files (internal secret, session and pairing keys) are made by
    // the first process; the rest read them.
    let (a_tunnel_port, a_internal_port) = (free_port(), free_port());
    let (b_tunnel_port, b_internal_port) = (free_port(), free_port());
    let (mut relay_a, tunnel_a, node_a) = cluster.relay_on(a_tunnel_port, a_internal_port).await;
    let (mut relay_b, tunnel_b, node_b) = cluster.relay_on(b_tunnel_port, b_internal_port).await;
    // The development provider, in process; logins come back to api-server 1's
    // address whichever replica began them.
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp_listener.local_addr().unwrap());
    let (port_1, port_2) = (free_port(), free_port());
    let callback = format!("http://127.0.0.1:{port_1}/api/auth/callback");
    let idp = dev_idp::DevIdp::new(
        issuer.clone(),
        vec![dev_idp::Client::public("edge-console", callback.clone())],
    );
    let stop_idp = CancellationToken::new();
    tokio::spawn(dev_idp::serve(idp_listener, idp, stop_idp.clone()));
    let (_api_1, api_1) = cluster.api(port_1, &issuer, &callback).await;
    let (_api_2, api_2) = cluster.api(port_2, &issuer, &callback).await;
    let box_port = free_port();
    let _sim = cluster
        .command("sim-box")
        .args(["--listen", &format!("127.0.0.1:{box_port}")])
        .spawn()
        .unwrap();
    wait_port(box_port).await;

    // One user, a session in PostgreSQL, its cookie signed with the shared key.
    let user = store
        .upsert_user("https://cluster", "alice", None, Some("alice"))
        .await
        .unwrap();
    let cookie = api_server::session::sign_in_over_data_dir(
        &store,
        cluster.data.path(),
        user.id,
        "cluster",
        3_600_000,
    )
    .await
    .unwrap();

    // 100 Rust agents that know both relays, and one Go device on B.
    let stop_agents = CancellationToken::new();
    let mut devices = Vec::new();
    for i in 0..AGENTS {
        let (dev, token) = new_device(&store, user.id, &format!("box-{i}")).await;
        let mut settings = edge_agent::config::AgentSettings::new(
            tunnel_a.clone(),
            format!("127.0.0.1:{box_port}"),
        );
        settings.relays = vec![tunnel_a.clone(), tunnel_b.clone()];
        settings.backoff_min = Duration::from_millis(100);
        settings.backoff_max = Duration::from_secs(2);
        tokio::spawn(edge_agent::run(settings, token, stop_agents.clone()));
        devices.push(dev);
    }
    let mut _go = None;
    if let Some(go) = testkit::go_device::binary() {
        let (dev, token) = new_device(&store, user.id, "go-box").await;
        _go = Some(testkit::go_device::spawn_observed(
            &go, &tunnel_b, &token, None, true,
        ));
        devices.push(dev);
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // 1 and 2: every device through both api-servers, on one session.
    all_reachable(&http, &[&api_1, &api_2], &cookie, &devices).await;
    let nodes = redis.lease_nodes(&devices).await;
    let on_a: Vec<DeviceId> = devices
        .iter()
        .zip(&nodes)
        .filter(|(_, n)| n.as_deref() == Some(node_a.as_str()))
        .map(|(d, _)| *d)
        .collect();
    let on_b = nodes
        .iter()
        .filter(|n| n.as_deref() == Some(node_b.as_str()))
        .count();
    println!("{} devices on relay A, {on_b} on relay B", on_a.len());
    assert_eq!(
        on_a.len() + on_b,
        devices.len(),
        "every device has one lease"
    );
    assert!(
        !on_a.is_empty() && on_b > 0,
        "agents spread over both relays"
    );

    // 2, second half: a login begun on api-server 1 and finished on 2.
    let mut browser = testkit::browser::Browser::new();
    let back_at_1 =
        testkit::browser::dev_login_until_callback_at(&api_1, &mut browser, "bob", "/").await;
    let back_at_2 = back_at_1.replace(&api_1, &api_2);
    assert_ne!(back_at_1, back_at_2);
    let done = browser.get(&back_at_2).await;
    assert_eq!(done.status(), 302, "callback on the other replica");
    assert_eq!(
        done.headers()["location"],
        "/",
        "signed in, back to the console"
    );
    for api in [&api_1, &api_2] {
        let me: serde_json::Value = browser
            .get(&format!("{api}/api/auth/me"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["email"], "bob@example.test", "{me}");
    }
    stop_idp.cancel();

    // 3: SIGKILL relay A; its devices come back through B.
    let killed = Instant::now();
    relay_a.start_kill().unwrap();
    let _ = relay_a.wait().await;
    let mut routable: Vec<Duration> = within(
        "relay A's devices routable through B",
        futures_util::future::join_all(on_a.iter().map(|d| {
            let (http, api, cookie) = (&http, api_1.as_str(), cookie.as_str());
            async move {
                while info_status(http, api, cookie, *d).await != 200 {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                killed.elapsed()
            }
        })),
    )
    .await;
    routable.sort();
    println!(
        "after SIGKILL of relay A, time to routable for its {} devices: p50 {:?}, p99 {:?}, max {:?}",
        routable.len(),
        pct(&routable, 0.5),
        pct(&routable, 0.99),
        routable[routable.len() - 1]
    );
    assert!(
        pct(&routable, 0.99) <= Duration::from_secs(5),
        "p99 time to routable over 5 s"
    );
    within("no lease names relay A (one TTL at most)", async {
        while redis
            .lease_nodes(&devices)
            .await
            .iter()
            .any(|n| n.as_deref() == Some(node_a.as_str()))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(killed.elapsed() <= directory::leases::DEFAULT_LEASE_TTL);
    // Relay A comes back on its addresses: agents that fail over later find it.
    let (relay_a, _, _) = cluster.relay_on(a_tunnel_port, a_internal_port).await;
    let _relay_a = relay_a;

    // 5: a device on A connects to B: one session, on B; A's closes within 1 s.
    let (mover, mover_token) = new_device(&store, user.id, "mover").await;
    // Relay A has just restarted, and the 100 agents are reconnecting to
    // it: a dial may be turned away, and a device dials again, as agents do.
    let dialed = within("the mover's tunnel to A", async {
        loop {
            match testkit::try_dial_raw_at(&tunnel_a, &mover_token).await {
                Ok(ws) => break ws,
                Err(err) => println!("the mover's dial to A failed ({err}); dialing again"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let on_a_session = testkit::serve_raw(dialed);
    within("mover leased to A", async {
        while redis.lease_nodes(&[mover]).await[0].as_deref() != Some(node_a.as_str()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let on_b_session = testkit::serve_raw(testkit::dial_raw_at(&tunnel_b, &mover_token).await);
    let mut taken = None;
    within("mover leased to B", async {
        while redis.lease_nodes(&[mover]).await[0].as_deref() != Some(node_b.as_str()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        taken = Some(Instant::now());
    })
    .await;
    let end = within("A closes the older session", on_a_session)
        .await
        .unwrap();
    let closed_after = taken.unwrap().elapsed();
    println!(
        "relay A closed the mover's older session {closed_after:?} after B took its lease ({end})"
    );
    assert!(closed_after <= Duration::from_secs(1));
    assert!(!on_b_session.is_finished(), "the session on B lives on");
    on_b_session.abort();

    // 4: SIGTERM relay B while requests are in flight: they finish, its
    // agents land on A, and requests made during the drain succeed.
    let nodes = redis.lease_nodes(&devices).await;
    let on_b: Vec<DeviceId> = devices
        .iter()
        .zip(&nodes)
        .filter(|(_, n)| n.as_deref() == Some(node_b.as_str()))
        .map(|(d, _)| *d)
        .collect();
    let go_device = _go.as_ref().map(|_| devices[devices.len() - 1]);
    let agents_on_b: Vec<DeviceId> = on_b
        .iter()
        .copied()
        .filter(|d| Some(*d) != go_device)
        .collect();
    let slow =
        futures_util::future::join_all(agents_on_b.iter().take(20).enumerate().map(|(i, d)| {
            let api = if i % 2 == 0 {
                api_1.clone()
            } else {
                api_2.clone()
            };
            let (http, cookie, d) = (http.clone(), cookie.clone(), *d);
            tokio::spawn(async move {
                let req = http
                    .get(format!("{api}/api/devices/{d}/proxy/test/delay?ms=3000"))
                    .header("cookie", cookie);
                status_of(req, &format!("slow request to {d}")).await
            })
        }));
    let slow = tokio::spawn(slow);
    // In flight: every slow request has reached the box, so its stream is
    // open on relay B when the signal comes.
    let in_flight = agents_on_b.len().min(20);
    within("the slow requests reach the box", async {
        let url = format!("http://127.0.0.1:{box_port}/test/delay/waiting");
        loop {
            let waiting = match http.get(&url).send().await {
                Ok(res) => res.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if waiting.trim().parse::<usize>().unwrap_or(0) >= in_flight {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let signalled = Instant::now();
    nix_kill(&relay_b, "TERM");
    let during = futures_util::future::join_all(agents_on_b.iter().map(|d| {
        let (http, api, cookie) = (&http, api_2.as_str(), cookie.as_str());
        async move {
            let req = info_request(http, api, cookie, *d);
            status_of(req, &format!("request to {d} during the drain")).await
        }
    }))
    .await;
    let failed_during = during.iter().filter(|s| **s != 200).count();
    let slow: Vec<u16> = slow
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        slow.iter().all(|s| *s == 200),
        "requests in flight at SIGTERM must finish: {slow:?}"
    );
    let status = within("relay B exits after draining", relay_b.wait())
        .await
        .unwrap();
    let drain_took = signalled.elapsed();
    assert!(status.success(), "relay B exits cleanly: {status}");
    all_reachable(&http, &[&api_1, &api_2], &cookie, &agents_on_b).await;
    println!(
        "SIGTERM on relay B: {} in-flight requests finished, {failed_during} of {} requests made during the drain failed, B exited after {drain_took:?}, its {} agents reachable through A after {:?}",
        slow.len(),
        during.len(),
        agents_on_b.len(),
        signalled.elapsed()
    );
    assert_eq!(failed_during, 0, "requests during the drain failed");
    // The Go device, which knows only B, was told GoAway(0); it returns
    // to B when B is back.
    if let Some(go) = _go.as_mut() {
        go.wait_for("the Go device saw GoAway(0)", |ev| {
            ev.iter().any(|e| e == "event: goaway 0")
        })
        .await;
    }
    let (relay_b, _, _) = cluster.relay_on(b_tunnel_port, b_internal_port).await;
    let _relay_b = relay_b;
    all_reachable(&http, &[&api_1, &api_2], &cookie, &devices).await;

    // 6: one pairing code, 50 exchanges at once over both api-servers.
    let code: serde_json::Value = testkit::checks::json_answer(
        http.post(format!("{api_1}/api/pairing/codes"))
            .header("cookie", &cookie)
            .header("x-csrf", "1"),
    )
    .await;
    let code = code["code"].as_str().unwrap().to_owned();
    let wins = futures_util::future::join_all((0..50).map(|i| {
        let (http, code) = (&http, code.as_str());
        let api = if i % 2 == 0 { &api_1 } else { &api_2 };
        async move {
            http.post(format!("{api}/api/pairing/exchange"))
                .json(&serde_json::json!({ "code": code, "name": format!("racer-{i}") }))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        }
    }))
    .await
    .into_iter()
    .filter(|ok| *ok)
    .count();
    assert_eq!(wins, 1, "one code pairs exactly one device");
    let paired = store.devices(user.id).await.unwrap();
    assert_eq!(
        paired
            .iter()
            .filter(|d| d.name.starts_with("racer-"))
            .count(),
        1
    );

    // 7: Redis down for 10 s: tunnels stay, lookups answer 503 in time.
    let fresh = {
        let (dev, token) = new_device(&store, user.id, "late-box").await;
        let mut settings = edge_agent::config::AgentSettings::new(
            tunnel_b.clone(),
            format!("127.0.0.1:{box_port}"),
        );
        settings.backoff_min = Duration::from_millis(100);
        tokio::spawn(edge_agent::run(settings, token, stop_agents.clone()));
        within("late box leased", async {
            while redis.lease_nodes(&[dev]).await[0].is_none() {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        dev
    };
    redis.kill().await;
    let down = Instant::now();
    let res = http
        .get(format!("{api_2}/api/devices/{fresh}/proxy/api/info"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let took = down.elapsed();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "directory_unavailable", "{body}");
    println!("with Redis down, a lookup answered 503 directory_unavailable in {took:?}");
    assert!(took < Duration::from_secs(3));
    // The outage itself is the scenario: ten seconds without Redis.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    redis.restart().await;
    let back = Instant::now();
    let mut everyone = devices.clone();
    everyone.push(fresh);
    all_reachable(&http, &[&api_1, &api_2], &cookie, &everyone).await;
    println!(
        "after Redis returned, every device reachable through both api-servers in {:?}",
        back.elapsed()
    );
    stop_agents.cancel();
    println!("cluster test took {:?}", started.elapsed());
}
