//! A hostile box must never act as its owner. The owner signs in with
//! Chromium and opens a hostile box's UI on its device origin; the box's
//! page attacks the console API, the other device's origin, our cookies,
//! a service worker and the opener (`e2e/hostile-box.test.mjs` asserts the
//! page's view of each). Here the server's view: nothing changed in the
//! owner's audit log, no pairing code exists, the other box keeps its
//! connection and its credential.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testkit::{chromium, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_chromium, require_interop)),
    ignore = "needs Chromium: apt-get install chromium"
)]
async fn a_hostile_box_page_cannot_act_as_its_owner() {
    let Some(chromium_bin) = chromium::available() else {
        return;
    };
    chromium::ensure_packages();
    let stack = Stack::start_with(StackOptions {
        console_host: "localhost",
        ..StackOptions::default()
    })
    .await;
    let issuer = stack.dev_idp.as_ref().unwrap().issuer().to_owned();
    let alice = stack
        .store
        .upsert_user(&issuer, "alice", None, None)
        .await
        .unwrap();
    let hostile_box = stack.extra_box(sim_box::Mode::Hostile).await;
    let hostile = stack.device(alice.id).await;
    let other = stack.device(alice.id).await;
    let _hostile_agent = stack.agent_to(&hostile, hostile_box);
    let _other_agent = stack.agent(&other);
    stack.wait_online(hostile.id).await;
    stack.wait_online(other.id).await;
    let other_conn = stack.relay().directory.connection_of(other.id);

    let console = format!("http://localhost:{}/", stack.api_addr.port());
    chromium::run_script(
        "hostile-box.test.mjs",
        &chromium_bin,
        &[
            ("CONSOLE_URL", &console),
            ("HOSTILE_ID", &hostile.id.to_string()),
            ("OTHER_ID", &other.id.to_string()),
        ],
    )
    .await;

    let actions: Vec<String> = stack.audit_actions(alice.id).await;
    for forbidden in [
        "credential_rotated",
        "pairing_code_created",
        "device_deleted",
        "device_renamed",
    ] {
        assert!(
            !actions.iter().any(|a| a == forbidden),
            "{forbidden} in the audit log: {actions:?}"
        );
    }
    let opened = actions.iter().filter(|a| *a == "device_ui_opened").count();
    assert_eq!(opened, 2, "both device UIs were entered once: {actions:?}");
    assert!(stack
        .store
        .pending_pairing_codes(alice.id, edge_core::time::now_ms())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        stack.relay().directory.connection_of(other.id),
        other_conn,
        "the other box's tunnel was closed or replaced"
    );
    assert!(stack
        .store
        .authenticate_device(&other.token.hash())
        .await
        .unwrap()
        .is_some());
}
