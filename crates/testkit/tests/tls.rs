//! TLS on every hop, with certificates the test makes (a private CA):
//! agent → relay over `wss://` (and the refusals for a wrong CA or name),
//! a relay certificate reloaded without dropping tunnels, api-server →
//! relay over `https://`, and api-server → OpenID Provider over `https`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use remote_proxy::RelayTls;
use std::sync::Arc;
use std::time::Duration;
use testkit::tls::TestCa;
use testkit::{checks, within, Stack, StackOptions};
use tokio_util::sync::CancellationToken;

/// A stack whose relay speaks TLS on both ports with a `localhost`
/// certificate from `ca`; agents and the api-server trust `ca`.
async fn tls_stack(ca: &TestCa) -> (Stack, Arc<edge_tls::ReloadingCert>) {
    let leaf = ca.issue("relay", &["localhost"]);
    let cert = edge_tls::ReloadingCert::load(&leaf.cert, &leaf.key).unwrap();
    let tls = RelayTls {
        tunnel: Some(cert.acceptor().unwrap()),
        internal: Some(cert.acceptor().unwrap()),
    };
    let stack = Stack::start_with(StackOptions {
        relay_tls: tls,
        client_tls: Some(edge_tls::client_config(Some(&ca.cert_path)).unwrap()),
        ..StackOptions::default()
    })
    .await;
    (stack, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_runs_over_tls_with_a_private_ca() {
    let ca = TestCa::new("relay");
    let (stack, _cert) = tls_stack(&ca).await;
    assert!(stack.tunnel_url().starts_with("wss://localhost:"));
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    // api-server → relay (https internal port) → agent (wss) → box.
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
    checks::ws_echo(&stack, &alice, dev.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_wrong_name_is_refused_with_the_reason() {
    let ca = TestCa::new("relay");
    let (stack, _cert) = tls_stack(&ca).await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;

    let other_ca = TestCa::new("other");
    let untrusted = edge_tls::client_config(Some(&other_ca.cert_path)).unwrap();
    let err = tunnel::dial::dial(
        &stack.tunnel_url(),
        &dev.token,
        "tls-test/1",
        Default::default(),
        Some(untrusted),
    )
    .await
    .expect_err("an untrusted relay certificate was accepted");
    let text = err.to_string();
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The certificate names `localhost`; dialling 127.0.0.1 must fail.
    let by_ip = stack.tunnel_url().replace("localhost", "127.0.0.1");
    let trusted = edge_tls::client_config(Some(&ca.cert_path)).unwrap();
    let err = tunnel::dial::dial(
        &by_ip,
        &dev.token,
        "tls-test/1",
        Default::default(),
        Some(trusted),
    )
    .await
    .expect_err("a certificate for another name was accepted");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    // The same for the api-server's view of an https relay.
    let directory = directory::RelayDirectory::new(
        Arc::new(directory::StaticNode(directory::NodeId(format!(
            "https://localhost:{}",
            url::Url::parse(&stack.internal_url("/"))
                .unwrap()
                .port()
                .unwrap()
        )))),
        stack.internal_secret().clone(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .with_tls(edge_tls::client_config(Some(&other_ca.cert_path)).unwrap());
    let err = directory::SessionView::lookup(&directory, dev.id)
        .await
        .expect_err("an untrusted relay was asked");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_relay_certificate_is_served_without_dropping_tunnels() {
    let ca = TestCa::new("relay");
    let (stack, cert) = tls_stack(&ca).await;
    let alice = stack.user("alice").await;
    let (dev, _agent) = stack.online_device(alice.id).await;
    let conn = stack.relay().directory.connection_of(dev.id);
    let before = cert.leaf().unwrap();

    let stop = CancellationToken::new();
    let watcher = tokio::spawn(cert.clone().watch(Duration::from_millis(50), stop.clone()));
    ca.issue_to(
        &testkit::tls::Leaf {
            cert: ca.dir().join("relay.pem"),
            key: ca.dir().join("relay.key"),
        },
        &["localhost"],
    );
    within("certificate reloaded", async {
        while cert.leaf().unwrap() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.cancel();
    watcher.await.unwrap();

    // A new handshake gets the new certificate...
    let config = edge_tls::client_config(Some(&ca.cert_path)).unwrap();
    let tcp = tokio::net::TcpStream::connect(
        stack
            .tunnel_url()
            .trim_start_matches("wss://")
            .trim_end_matches("/tunnel"),
    )
    .await
    .unwrap();
    let tls = edge_tls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served, cert.leaf().unwrap());
    assert_ne!(served, before);
    // ...while the tunnel made before the reload is the same connection
    // and still carries requests.
    assert_eq!(stack.relay().directory.connection_of(dev.id), conn);
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "SIM-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_works_against_a_provider_served_over_https() {
    let ca = TestCa::new("idp");
    let leaf = ca.issue("idp", &["localhost"]);
    let cert = edge_tls::ReloadingCert::load(&leaf.cert, &leaf.key).unwrap();
    let stack = Stack::start_with(StackOptions {
        idp: testkit::Idp::DevTls {
            cert: cert.acceptor().unwrap(),
            ca_file: ca.cert_path.clone(),
        },
        ..StackOptions::default()
    })
    .await;
    let issuer = stack.dev_idp.as_ref().unwrap().issuer().to_owned();
    assert!(issuer.starts_with("https://localhost:"));
    let mut b = testkit::browser::Browser::trusting(Some(&ca.cert_path));
    let res = stack.dev_login(&mut b, "alice").await;
    assert_eq!(res.status(), 302, "{:?}", res.text().await);
    assert_eq!(b.get(&stack.api("/api/auth/me")).await.status(), 200);
}

/// OIDC settings for `issuer` trusting `ca_file`.
fn oidc_settings(issuer: &str, ca_file: Option<std::path::PathBuf>) -> auth::oidc::OidcSettings {
    auth::oidc::OidcSettings {
        issuer: issuer.to_owned(),
        client_id: "edge-console".into(),
        client_secret: None,
        redirect_url: "http://127.0.0.1:1/api/auth/callback".into(),
        scopes: vec!["openid".into()],
        clock_skew: Duration::from_secs(60),
        jwks_refresh_interval: Duration::from_secs(60),
        ca_file,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_with_an_untrusted_or_misnamed_certificate_is_refused_with_the_reason() {
    let ca = TestCa::new("idp");
    let leaf = ca.issue("idp", &["localhost"]);
    let cert = edge_tls::ReloadingCert::load(&leaf.cert, &leaf.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = format!("https://localhost:{port}");
    let idp = dev_idp::DevIdp::new(issuer.clone(), vec![]);
    let stop = CancellationToken::new();
    tokio::spawn(edge_core::serve::serve_tls(
        listener,
        idp.router(),
        Default::default(),
        Some(cert.acceptor().unwrap()),
        stop.clone(),
    ));

    let trusted =
        auth::oidc::OidcClient::new(oidc_settings(&issuer, Some(ca.cert_path.clone()))).unwrap();
    trusted.warm_up().await.unwrap();

    let other = TestCa::new("other");
    let untrusted =
        auth::oidc::OidcClient::new(oidc_settings(&issuer, Some(other.cert_path.clone()))).unwrap();
    let err = untrusted
        .warm_up()
        .await
        .expect_err("untrusted provider accepted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The certificate names localhost; an issuer on 127.0.0.1 does not match.
    let by_ip = format!("https://127.0.0.1:{port}");
    let misnamed =
        auth::oidc::OidcClient::new(oidc_settings(&by_ip, Some(ca.cert_path.clone()))).unwrap();
    let err = misnamed
        .warm_up()
        .await
        .expect_err("misnamed provider accepted");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn a_go_device_from_the_field_connects_over_wss() {
    let Some(bin) = testkit::go_device::binary() else {
        return;
    };
    let ca = TestCa::new("relay");
    let (stack, _cert) = tls_stack(&ca).await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let _go = testkit::go_device::spawn_trusting(
        &bin,
        &stack.tunnel_url(),
        &dev.token,
        Some(&ca.cert_path),
    );
    stack.wait_online(dev.id).await;
    assert_eq!(checks::info(&stack, &alice, dev.id).await["model"], "GO-1");
    let n = 8 << 20;
    assert_eq!(
        checks::download(&stack, &alice, dev.id, n).await,
        (n, sim_box::pattern_sha256(n))
    );
    checks::ws_echo(&stack, &alice, dev.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_initdb, require_interop)),
    ignore = "needs PostgreSQL server binaries (initdb, pg_ctl)"
)]
async fn the_store_reaches_postgresql_over_verified_tls_and_refuses_a_wrong_name() {
    let Some(bin) = testkit::pg_tls::available() else {
        return;
    };
    let ca = TestCa::new("postgres");
    let pg = tokio::task::block_in_place(|| testkit::pg_tls::PgTls::start(bin, &ca));
    let root = ca.cert_path.display();
    let verified = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let store = store::Store::connect(&verified).await.unwrap();
    store.ping().await.unwrap();
    assert!(
        store.uses_tls().await.unwrap(),
        "the session is not encrypted"
    );

    // The certificate names localhost: 127.0.0.1 is a name mismatch.
    let mismatch = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let err = store::Store::connect(&mismatch)
        .await
        .expect_err("name mismatch accepted");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // Another CA is refused too.
    let other = TestCa::new("other");
    let untrusted = pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            other.cert_path.display()
        ),
    );
    assert!(store::Store::connect(&untrusted).await.is_err());
    // sslmode=disable is honoured: plaintext is possible when asked for.
    let plain = store::Store::connect(&pg.url("localhost", "sslmode=disable"))
        .await
        .unwrap();
    assert!(!plain.uses_tls().await.unwrap());
}
