//! The one shared test helper. [`Stack`] starts the real relay, api-server
//! and simulated box routers on ephemeral loopback ports over a fresh store
//! (SQLite, or PostgreSQL when `TEST_STACK_ON_POSTGRES=1`), and makes users
//! (with real signed session cookies), devices with credentials,
//! in-process agents and Go peers. Tests and the benchmark use it; nothing
//! here is compiled into a product binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod checks;
pub mod chromium;
pub mod delay_proxy;
pub mod devstack;
pub mod go_device;
pub mod logs;
pub mod oidc_provider;
pub mod pg_tls;
pub mod procs;
pub mod prometheus;
pub mod redis;
pub mod statements;
pub mod tls;

use api_server::app::{AppBuilder, RelayNodes};
use api_server::config::Settings;
use api_server::AppState;
use auth::{CookieKey, CookieKeys};
use directory::{NodeId, RelayDirectory};
use edge_core::{DeviceId, DeviceToken, Secret, UserId};
use remote_proxy::config::Limits;
use remote_proxy::{Relay, RelayTls};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{NewDevice, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on each Redis call in multi-node stacks.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Upper bound for any single awaited step in a test.
pub const STEP: Duration = Duration::from_secs(30);

/// Await `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(STEP, what, fut).await
}

/// Await `fut`, failing the test if it takes longer than `bound` (for a
/// step known to be longer than [`STEP`], such as a whole outside tool run).
pub async fn within_for<F: Future>(bound: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(bound, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {bound:?}: {what}"),
    }
}

/// Route test logs to the test's output (RUST_LOG controls the level),
/// record every store statement ([`statements`]), and make rustls' `ring`
/// provider the default for plain HTTP clients.
pub fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    edge_tls::install_default_provider();
    let logs = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(statements::layer())
        .with(edge_core::telemetry::statement_timer())
        .with(logs::layer())
        .try_init();
}

/// Environment variable that puts every [`Stack`] on a fresh PostgreSQL
/// database (on the server `TEST_POSTGRES_URL` names) instead of SQLite;
/// CI runs the HTTP-level suites once this way.
pub const STACK_ON_POSTGRES_ENV: &str = "TEST_STACK_ON_POSTGRES";

/// The store a stack runs on: SQLite in `dir`, or PostgreSQL when
/// [`STACK_ON_POSTGRES_ENV`] is `1`.
async fn test_store(dir: &std::path::Path) -> Store {
    if std::env::var(STACK_ON_POSTGRES_ENV).as_deref() != Ok("1") {
        return store::testing::sqlite_in(dir).await.unwrap();
    }
    let url = store::testing::postgres_admin_url()
        .unwrap()
        .unwrap_or_else(|| panic!("{STACK_ON_POSTGRES_ENV}=1 needs TEST_POSTGRES_URL"));
    store::testing::fresh_postgres(&url).await.unwrap()
}

/// Whether interop peers are mandatory (CI sets `REQUIRE_INTEROP=1`).
pub fn interop_required() -> bool {
    std::env::var("REQUIRE_INTEROP").as_deref() == Ok("1")
}

/// A relay node running in-process.
pub struct RelayNode {
    pub relay: Arc<Relay>,
    pub tunnel_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RelayNode {
    async fn start(
        store: Store,
        secret: Secret,
        limits: Limits,
        tls: RelayTls,
        (tunnel, internal): (TcpListener, TcpListener),
        redis_url: Option<&str>,
    ) -> Self {
        let tunnel_addr = tunnel.local_addr().unwrap();
        let internal_addr = internal.local_addr().unwrap();
        let node = NodeId(node_url(&tls, internal_addr));
        let lease_key = directory::leases::LeaseKey::derive(&secret);
        let relay = Relay::new(store, node.clone(), secret, limits);
        if let Some(url) = redis_url {
            let redis = directory::leases::RedisConn::connect(url, REDIS_TIMEOUT)
                .await
                .unwrap();
            relay.use_leases(
                directory::leases::RelayLeases::new(
                    redis.clone(),
                    node,
                    lease_key,
                    directory::leases::DEFAULT_LEASE_TTL,
                ),
                directory::shared_limits::SharedBuckets::new(redis),
            );
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            relay
                .clone()
                .serve_tls(tunnel, internal, tls, shutdown.clone()),
        );
        Self {
            relay,
            tunnel_addr,
            internal_addr,
            shutdown,
            task,
        }
    }

    /// The URL devices dial (plain `ws://`).
    pub fn tunnel_url(&self) -> String {
        format!("ws://{}/tunnel", self.tunnel_addr)
    }

    /// The node id it announces (its internal URL).
    pub fn node(&self) -> NodeId {
        self.relay.directory.node().clone()
    }

    /// Graceful stop: GoAway to every device, listeners closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within("relay shutdown", self.task).await.unwrap();
    }
}

/// The internal URL of a relay node: `https://localhost:<port>` when its
/// internal port speaks TLS (test certificates name `localhost`).
fn node_url(tls: &RelayTls, internal: SocketAddr) -> String {
    match tls.internal {
        Some(_) => format!("https://localhost:{}", internal.port()),
        None => format!("http://{internal}"),
    }
}

/// Dial a plain `ws://` relay URL as a device with `token`.
pub async fn dial_raw_at(url: &str, token: &DeviceToken) -> tunnel::dial::DialedWs {
    try_dial_raw_at(url, token).await.unwrap()
}

/// [`dial_raw_at`], with the dial's error for the caller to judge.
pub async fn try_dial_raw_at(
    url: &str,
    token: &DeviceToken,
) -> Result<tunnel::dial::DialedWs, tunnel::dial::DialError> {
    tunnel::dial::dial(url, token, "raw-test/1", Default::default(), None).await
}

/// Serve a dialed tunnel as a bare device that resets every stream and
/// never reconnects; the task ends with the session (for takeover tests).
pub fn serve_raw(ws: tunnel::dial::DialedWs) -> JoinHandle<tunnel::session::SessionEnd> {
    tokio::spawn(async move {
        let activity = tunnel::pump::Activity::new();
        let (io, _ended) = tunnel::pump::spawn(
            ws,
            tunnel::pump::PumpConfig {
                idle_timeout: Duration::from_secs(60),
            },
            activity.clone(),
        );
        tunnel::session::serve(
            io,
            tunnel::session::device_config(),
            CancellationToken::new(),
            activity,
            drop,
        )
        .await
    })
}

/// A test user with a live session.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: UserId,
    /// `name=value`, ready for a `Cookie` header.
    pub cookie: String,
}

/// A device with a working credential.
#[derive(Clone, Debug)]
pub struct TestDevice {
    pub id: DeviceId,
    pub token: DeviceToken,
}

/// An in-process edge-agent.
pub struct AgentHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl AgentHandle {
    pub async fn stop(self) {
        self.cancel.cancel();
        within("agent stop", self.task).await.unwrap();
    }
}

/// Which OpenID Provider the stack's api-server trusts.
pub enum Idp {
    /// The in-process development provider; `confidential` registers the
    /// api-server as a confidential client (with a secret).
    Dev { confidential: bool },
    /// An outside provider (e.g. npm's oidc-provider) with the api-server's
    /// listener bound in advance, so its callback URL could be registered.
    External {
        api_listener: TcpListener,
        issuer: String,
        client_id: String,
        client_secret: Option<Secret>,
    },
    /// The development provider served over TLS with `cert` (whose CA the
    /// api-server trusts through `ca_file`), issuer `https://localhost:<port>`.
    DevTls {
        cert: edge_tls::TlsAcceptor,
        ca_file: std::path::PathBuf,
    },
}

/// Client id the api-server uses with the development provider.
pub const DEV_CLIENT_ID: &str = "edge-console";

/// Knobs for [`Stack::start_with`].
pub struct StackOptions {
    pub limits: Limits,
    pub settings_hook: fn(&mut Settings),
    pub idp: Idp,
    /// Host name in the console's origin (`127.0.0.1` by default;
    /// `localhost` for browser tests, whose device origins are then
    /// `{device}.localhost`).
    pub console_host: &'static str,
    /// TLS on the relay's listeners (tunnel: devices dial
    /// `wss://localhost`; internal: the api-server uses `https://localhost`).
    pub relay_tls: RelayTls,
    /// What the api-server (for `https://` relay nodes) and agents (for
    /// `wss://`) trust.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// The api-server listener's limits (per-client cap, trusted proxies,
    /// header timeout and size).
    pub api_serve: edge_core::serve::ServeOptions,
    /// Multi-node mode: relays keep leases in this Redis and the
    /// api-server finds devices there.
    pub redis_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            limits: Limits {
                drain_timeout: Duration::from_secs(5),
                // Off unless a test turns it on: a scrape is a stream, and
                // many tests count streams.
                telemetry: remote_proxy::scrape::TelemetrySettings {
                    interval: None,
                    ..Default::default()
                },
                ..Limits::default()
            },
            settings_hook: |_| {},
            idp: Idp::Dev {
                confidential: false,
            },
            console_host: "127.0.0.1",
            relay_tls: RelayTls::default(),
            client_tls: None,
            api_serve: edge_core::serve::ServeOptions::default(),
            redis_url: None,
        }
    }
}

/// The whole cloud side plus one simulated box, on ephemeral ports.
pub struct Stack {
    pub store: Store,
    pub relay: Option<RelayNode>,
    pub api_addr: SocketAddr,
    pub sim_addr: SocketAddr,
    pub state: AppState,
    /// The api-server's client of the relay (its counters are shared with
    /// the one in `state`).
    pub relay_client: RelayDirectory,
    pub http: reqwest::Client,
    /// The development provider, when the stack uses it.
    pub dev_idp: Option<dev_idp::DevIdp>,
    secret: Secret,
    limits: Limits,
    relay_tls: RelayTls,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    redis_url: Option<String>,
    tunnel_addr: SocketAddr,
    internal_addr: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn bind() -> TcpListener {
    edge_core::listen::bind(([127, 0, 0, 1], 0).into()).unwrap()
}

/// The api-server's listener and its login callback URL on `host`.
async fn api_with_callback(host: &str) -> (TcpListener, String) {
    let api = bind().await;
    let port = api.local_addr().unwrap().port();
    (api, format!("http://{host}:{port}/api/auth/callback"))
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(opts: StackOptions) -> Self {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path()).await;
        let secret = Secret::random(32);
        let shutdown = CancellationToken::new();

        let relay = RelayNode::start(
            store.clone(),
            secret.clone(),
            opts.limits.clone(),
            opts.relay_tls.clone(),
            (bind().await, bind().await),
            opts.redis_url.as_deref(),
        )
        .await;
        let (tunnel_addr, internal_addr) = (relay.tunnel_addr, relay.internal_addr);

        let sim = bind().await;
        let sim_addr = sim.local_addr().unwrap();
        tokio::spawn(sim_box::serve(sim, "sim-box".into(), shutdown.clone()));

        let mut oidc_ca = None;
        let (api, issuer, client_id, client_secret, dev) = match opts.idp {
            Idp::External {
                api_listener,
                issuer,
                client_id,
                client_secret,
            } => (api_listener, issuer, client_id, client_secret, None),
            Idp::DevTls { cert, ca_file } => {
                let (api, callback) = api_with_callback(opts.console_host).await;
                let idp_listener = bind().await;
                let issuer = format!(
                    "https://localhost:{}",
                    idp_listener.local_addr().unwrap().port()
                );
                let idp = dev_idp::DevIdp::new(
                    issuer.clone(),
                    vec![dev_idp::Client::public(DEV_CLIENT_ID, callback)],
                );
                tokio::spawn(edge_core::serve::serve_tls(
                    idp_listener,
                    idp.router(),
                    Default::default(),
                    Some(cert),
                    shutdown.clone(),
                ));
                oidc_ca = Some(ca_file);
                (api, issuer, DEV_CLIENT_ID.to_owned(), None, Some(idp))
            }
            Idp::Dev { confidential } => {
                let (api, callback) = api_with_callback(opts.console_host).await;
                let idp_listener = bind().await;
                let issuer = format!("http://{}", idp_listener.local_addr().unwrap());
                let secret = confidential.then(|| Secret::random(24));
                let client = dev_idp::Client {
                    id: DEV_CLIENT_ID.into(),
                    secret: secret.as_ref().map(|s| s.expose().to_owned()),
                    redirect_uris: vec![callback],
                };
                let idp = dev_idp::DevIdp::new(issuer.clone(), vec![client]);
                tokio::spawn(dev_idp::serve(idp_listener, idp.clone(), shutdown.clone()));
                (api, issuer, DEV_CLIENT_ID.to_owned(), secret, Some(idp))
            }
        };
        let api_addr = api.local_addr().unwrap();
        let origin = format!("http://{}:{}", opts.console_host, api_addr.port());
        let mut settings = Settings::new(&origin, false).unwrap();
        settings.proxy_connect_timeout = Duration::from_secs(5);
        settings.proxy_first_byte_timeout = Duration::from_secs(10);
        (opts.settings_hook)(&mut settings);
        let oidc = auth::oidc::OidcClient::new(auth::oidc::OidcSettings {
            issuer,
            client_id,
            client_secret,
            redirect_url: format!("{origin}/api/auth/callback"),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            clock_skew: Duration::from_secs(60),
            jwks_refresh_interval: Duration::from_secs(60),
            ca_file: oidc_ca,
        })
        .unwrap();
        let relays = match &opts.redis_url {
            Some(url) => RelayNodes::Leases(
                directory::leases::RedisConn::connect(url, REDIS_TIMEOUT)
                    .await
                    .unwrap(),
            ),
            None => RelayNodes::One(NodeId(node_url(&opts.relay_tls, internal_addr))),
        };
        let app = AppBuilder {
            store: store.clone(),
            settings,
            oidc,
            internal_secret: secret.clone(),
            cookies: CookieKeys::new(CookieKey::new(Secret::random(32)).unwrap(), vec![]),
            pairing_key: Secret::random(32),
            relays,
            relay_tls: opts.client_tls.clone(),
        }
        .build();
        app.spawn_tasks(&shutdown);
        let (state, relay_client) = (app.state.clone(), app.relay_client.clone());
        let api_serve = edge_core::serve::ServeOptions {
            lane: Some(api_server::proxy_lane::handle(state.clone())),
            ..opts.api_serve.clone()
        };
        tokio::spawn(edge_core::serve::serve(
            api,
            api_server::build_app(state.clone()),
            api_serve,
            shutdown.clone(),
        ));

        Self {
            store,
            relay: Some(relay),
            api_addr,
            sim_addr,
            state,
            relay_client,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            dev_idp: dev,
            secret,
            limits: opts.limits,
            relay_tls: opts.relay_tls,
            client_tls: opts.client_tls,
            redis_url: opts.redis_url,
            tunnel_addr,
            internal_addr,
            shutdown,
            _dir: dir,
        }
    }

    pub fn tunnel_url(&self) -> String {
        match self.relay_tls.tunnel {
            Some(_) => format!("wss://localhost:{}/tunnel", self.tunnel_addr.port()),
            None => format!("ws://{}/tunnel", self.tunnel_addr),
        }
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal_addr)
    }

    pub fn internal_secret(&self) -> &Secret {
        &self.secret
    }

    /// `http://api/...` for `path`.
    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_addr)
    }

    /// URL of `path` on `device`'s box, through the proxy route.
    pub fn proxy_url(&self, device: DeviceId, path: &str) -> String {
        self.api(&format!("/api/devices/{device}/proxy{path}"))
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay.as_ref().expect("relay is stopped").relay
    }

    /// A new scripted browser for this stack.
    pub fn browser(&self) -> browser::Browser {
        browser::Browser::new()
    }

    /// A user with a fresh session, created the way a login creates one.
    pub async fn user(&self, subject: &str) -> TestUser {
        let user = self
            .store
            .upsert_user("https://idp.test", subject, None, Some(subject))
            .await
            .unwrap();
        let set_cookie = api_server::session::start_session(&self.state, user.id)
            .await
            .unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        TestUser {
            id: user.id,
            cookie,
        }
    }

    /// A device owned by `owner` with a fresh credential.
    pub async fn device(&self, owner: UserId) -> TestDevice {
        let dev = self
            .store
            .create_device(
                owner,
                &NewDevice {
                    name: "box".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let token = DeviceToken::generate();
        self.store
            .add_credential(dev.id, &token.hash())
            .await
            .unwrap();
        TestDevice { id: dev.id, token }
    }

    /// Start an in-process agent for `device`, piping to the sim box.
    pub fn agent(&self, device: &TestDevice) -> AgentHandle {
        self.agent_to(device, self.sim_addr)
    }

    /// Start an in-process agent for `device`, piping to the box at `target`.
    pub fn agent_to(&self, device: &TestDevice, target: SocketAddr) -> AgentHandle {
        self.spawn_agent(device, vec![self.tunnel_url()], target, Vec::new())
    }

    /// Start an in-process agent for `device` piping to the sim box, whose
    /// `--allow` list names `allow` (forward targets, ADR 027).
    pub fn agent_allowing(&self, device: &TestDevice, allow: &[SocketAddr]) -> AgentHandle {
        let allow = allow
            .iter()
            .map(|a| a.to_string().parse().unwrap())
            .collect();
        self.spawn_agent(device, vec![self.tunnel_url()], self.sim_addr, allow)
    }

    /// A bearer session (the `edge` CLI's, ADR 028) for `user`: the token.
    pub async fn bearer(&self, user: UserId) -> Secret {
        api_server::session::start_bearer_session(&self.state, user, None, "edge CLI on test")
            .await
            .unwrap()
            .0
    }

    /// A service account of `user`'s made through the API (ADR 029) with
    /// `scopes` and `selector`: its client id and first secret.
    pub async fn service_account(
        &self,
        user: &TestUser,
        scopes: &[&str],
        selector: &[&str],
    ) -> (String, Secret) {
        let res = self
            .send_as(http::Method::POST, user, "/api/service-accounts")
            .json(&serde_json::json!({ "name": "ci", "scopes": scopes, "selector": selector }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "service account creation");
        let made: serde_json::Value = res.json().await.unwrap();
        (
            made["client_id"].as_str().unwrap().to_owned(),
            Secret::new(made["client_secret"].as_str().unwrap()),
        )
    }

    /// The token endpoint's answer to a `client_credentials` request with
    /// HTTP Basic `id:secret` and the extra form `fields`.
    pub async fn token_request(
        &self,
        id: &str,
        secret: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(fields);
        self.http
            .post(self.api("/api/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// A service account's access token (`client_credentials`).
    pub async fn service_token(&self, id: &str, secret: &Secret) -> Secret {
        let res = self.token_request(id, secret.expose(), &[]).await;
        assert_eq!(res.status(), 200, "token request");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        Secret::new(body["access_token"].as_str().unwrap())
    }

    fn spawn_agent(
        &self,
        device: &TestDevice,
        relays: Vec<String>,
        target: SocketAddr,
        allow: Vec<tunnel::preamble::TcpTarget>,
    ) -> AgentHandle {
        let mut settings =
            edge_agent::config::AgentSettings::new(relays[0].clone(), target.to_string());
        settings.relays = relays;
        settings.allow = allow;
        settings.backoff_min = Duration::from_millis(50);
        settings.backoff_max = Duration::from_millis(500);
        settings.tls = self.client_tls.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(edge_agent::run(
            settings,
            device.token.clone(),
            cancel.clone(),
        ));
        AgentHandle { cancel, task }
    }

    /// Start another simulated box (in `mode`) on an ephemeral port.
    pub async fn extra_box(&self, mode: sim_box::Mode) -> SocketAddr {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(sim_box::serve_with(
            listener,
            "extra-box".into(),
            mode,
            self.shutdown.clone(),
        ));
        addr
    }

    /// The origin of `device`'s content (its own origin).
    pub fn device_origin(&self, device: DeviceId) -> String {
        self.state.settings.device_origins.origin_of(device)
    }

    /// `path` on `device`'s origin.
    pub fn device_url(&self, device: DeviceId, path: &str) -> String {
        format!("{}{path}", self.device_origin(device))
    }

    /// A client that reaches `device`'s origin (`{device}.localhost`
    /// resolves to the api-server, as browsers do) and follows no redirect.
    pub fn device_client(&self, device: DeviceId) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&format!("{device}.localhost"), self.api_addr)
            .build()
            .unwrap()
    }

    /// A fresh device-origin ticket for `user` on `device`: `(action, ticket)`.
    pub async fn device_ticket(&self, user: &TestUser, device: DeviceId) -> (String, String) {
        let res = self
            .send_as(
                http::Method::POST,
                user,
                &format!("/api/devices/{device}/ui-ticket"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "ticket for {device}");
        let t: serde_json::Value = res.json().await.unwrap();
        (
            t["action"].as_str().unwrap().to_owned(),
            t["ticket"].as_str().unwrap().to_owned(),
        )
    }

    /// Post `ticket` to `action` as the console's form does.
    pub async fn post_ticket(
        &self,
        device: DeviceId,
        action: &str,
        ticket: &str,
    ) -> reqwest::Response {
        self.device_client(device)
            .post(action)
            .header("origin", &self.state.settings.public_origin)
            .form(&[("ticket", ticket)])
            .send()
            .await
            .unwrap()
    }

    /// Enter `device`'s origin as `user` (ticket, then the form post);
    /// returns the device cookie as `name=value`.
    pub async fn enter_device(&self, user: &TestUser, device: DeviceId) -> String {
        let (action, ticket) = self.device_ticket(user, device).await;
        let res = self.post_ticket(device, &action, &ticket).await;
        assert_eq!(res.status(), 303, "entering {device}");
        let set = res.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// Open a WebSocket to `path` on `device`'s origin with `cookie`.
    pub async fn device_ws(
        &self,
        device: DeviceId,
        cookie: &str,
        path: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = self.device_url(device, path).replacen("http", "ws", 1);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", http::HeaderValue::from_str(cookie).unwrap());
        // As the device's own page opens it in a browser.
        req.headers_mut().insert(
            "origin",
            http::HeaderValue::from_str(&self.device_origin(device)).unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(self.api_addr).await.unwrap();
        let (ws, res) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(res.status(), 101);
        ws
    }

    /// A device owned by `owner` with an in-process agent, online.
    pub async fn online_device(&self, owner: UserId) -> (TestDevice, AgentHandle) {
        let dev = self.device(owner).await;
        let agent = self.agent(&dev);
        self.wait_online(dev.id).await;
        (dev, agent)
    }

    /// Wait until `device` has a session on the relay.
    pub async fn wait_online(&self, device: DeviceId) {
        let dir = self.relay().directory.clone();
        within(
            "device online",
            dir.wait_until(|d| d.connection_of(device).is_some()),
        )
        .await;
    }

    /// Cancelled when the stack stops (for servers a test starts itself).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve `app` on an ephemeral loopback port until the stack stops (a
    /// scripted box, a webhook receiver); returns its address.
    pub async fn serve_local(&self, app: axum::Router) -> SocketAddr {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(edge_core::serve::serve(
            listener,
            app,
            Default::default(),
            self.shutdown.clone(),
        ));
        addr
    }

    /// Wait, one stored telemetry batch at a time, until `check` holds.
    pub async fn telemetry_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut written = self.relay().telemetry_writes.subscribe();
        within(what, async {
            loop {
                if check().await {
                    return;
                }
                if written.changed().await.is_err() {
                    panic!("the relay stopped before: {what}");
                }
            }
        })
        .await;
    }

    /// Wait until `device` has no session on the relay.
    pub async fn wait_offline(&self, device: DeviceId) {
        let dir = self.relay().directory.clone();
        within(
            "device offline",
            dir.wait_until(|d| d.connection_of(device).is_none()),
        )
        .await;
    }

    /// Stop the relay (graceful), keeping its addresses for a restart.
    /// Take the stack's relay out, to stop it while the test goes on.
    pub fn take_relay(&mut self) -> Option<RelayNode> {
        self.relay.take()
    }

    pub async fn stop_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
    }

    /// Start a relay again on the same addresses.
    pub async fn restart_relay(&mut self) {
        let tunnel = edge_core::listen::bind(self.tunnel_addr).unwrap();
        let internal = edge_core::listen::bind(self.internal_addr).unwrap();
        self.relay = Some(
            RelayNode::start(
                self.store.clone(),
                self.secret.clone(),
                self.limits.clone(),
                self.relay_tls.clone(),
                (tunnel, internal),
                self.redis_url.as_deref(),
            )
            .await,
        );
    }

    /// Another relay node on the stack's store and Redis (multi-node mode).
    pub async fn extra_relay(&self) -> RelayNode {
        RelayNode::start(
            self.store.clone(),
            self.secret.clone(),
            self.limits.clone(),
            RelayTls::default(),
            (bind().await, bind().await),
            self.redis_url.as_deref(),
        )
        .await
    }

    /// Start an in-process agent for `device` that dials `relay_url`.
    pub fn agent_via(&self, device: &TestDevice, relay_url: &str) -> AgentHandle {
        self.agent_via_any(device, vec![relay_url.to_owned()])
    }

    /// Start an in-process agent for `device` that knows several relays.
    pub fn agent_via_any(&self, device: &TestDevice, relays: Vec<String>) -> AgentHandle {
        self.spawn_agent(device, relays, self.sim_addr, Vec::new())
    }

    /// A state-changing call through the API as `user` (cookie and `X-CSRF`).
    pub fn send_as(
        &self,
        method: http::Method,
        user: &TestUser,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.api(path))
            .header("cookie", &user.cookie)
            .header("x-csrf", "1")
    }

    /// `GET path` as `user`, answered 200 and parsed as JSON.
    pub async fn get_json(&self, user: &TestUser, path: &str) -> serde_json::Value {
        let res = self.get(user, &self.api(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    /// The actions in `user`'s audit log, newest first.
    pub async fn audit_actions(&self, user: UserId) -> Vec<String> {
        self.store
            .audit_events(user, 200, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    /// `user`'s audit events (newest first, up to 200) once `done` holds
    /// for them (the audit writer batches; this waits for its rows).
    pub async fn audit_events_until(
        &self,
        user: UserId,
        what: &str,
        done: impl Fn(&[store::AuditEvent]) -> bool,
    ) -> Vec<store::AuditEvent> {
        within(what, async {
            loop {
                let events = self.store.audit_events(user, 200, 0).await.unwrap();
                if done(&events) {
                    return events;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }

    /// A GET through the API with `user`'s cookie.
    pub fn get(&self, user: &TestUser, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).header("cookie", &user.cookie)
    }

    /// Dial the tunnel endpoint directly, as a raw device.
    pub async fn dial_raw(
        &self,
        token: &DeviceToken,
    ) -> Result<tunnel::dial::DialedWs, tunnel::dial::DialError> {
        tunnel::dial::dial(
            &self.tunnel_url(),
            token,
            "raw-test/1",
            Default::default(),
            self.client_tls.clone(),
        )
        .await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Stack {
    /// A session cookie (`name=value`) for `user` whose server-side record
    /// was created at `created_ms` and ends at `expires_ms`, signed to stay
    /// valid as a cookie for an hour: for testing the server's own expiry.
    pub async fn session_cookie_at(
        &self,
        user: UserId,
        created_ms: i64,
        expires_ms: i64,
    ) -> String {
        let signed_until = edge_core::time::now_ms() + 3_600_000;
        self.session_cookie_signed_until(user, created_ms, expires_ms, signed_until)
            .await
    }

    /// As [`Self::session_cookie_at`], with the cookie signed to stop
    /// verifying at `signed_until_ms`: for testing the cookie's own expiry.
    pub async fn session_cookie_signed_until(
        &self,
        user: UserId,
        created_ms: i64,
        expires_ms: i64,
        signed_until_ms: i64,
    ) -> String {
        let id = auth::SessionId::generate();
        self.store
            .create_session(
                &id.hash(),
                Secret::random(8).expose(),
                user,
                created_ms,
                expires_ms,
                None,
            )
            .await
            .unwrap();
        let name = api_server::session::cookie_name(false);
        format!(
            "{name}={}",
            self.state.cookies.sign(
                name,
                api_server::session::SESSION_PURPOSE,
                id.expose(),
                signed_until_ms
            )
        )
    }
}
