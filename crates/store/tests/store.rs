//! One suite, run against every backend: SQLite always, PostgreSQL when
//! `TEST_POSTGRES_URL` is set (required when `REQUIRE_INTEROP=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use edge_core::{DeviceToken, UserId};
use store::{testing, NewDevice, Store};

async fn backends(dir: &std::path::Path) -> Vec<Store> {
    let mut stores = vec![testing::sqlite_in(dir)
        .await
        .unwrap_or_else(|e| panic!("sqlite: {e}"))];
    match testing::postgres_admin_url() {
        Ok(Some(url)) => stores.push(
            testing::fresh_postgres(&url)
                .await
                .unwrap_or_else(|e| panic!("postgres: {e}")),
        ),
        Ok(None) => eprintln!("TEST_POSTGRES_URL unset: PostgreSQL run skipped"),
        Err(msg) => panic!("{msg}"),
    }
    stores
}

#[tokio::test]
async fn users_upsert_by_issuer_and_subject() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let a = store
            .upsert_user("https://idp", "sub-1", Some("a@x"), Some("A"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = store
            .upsert_user("https://idp", "sub-1", Some("new@x"), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.id, again.id, "{:?}", store.backend());
        assert_eq!(again.email.as_deref(), Some("new@x"));
        let other_issuer = store
            .upsert_user("https://other", "sub-1", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.id, other_issuer.id);
        assert_eq!(
            store.user(a.id).await.ok().flatten().map(|u| u.subject),
            Some("sub-1".into())
        );
        assert!(store.user(UserId::new()).await.ok().flatten().is_none());
    }
}

#[tokio::test]
async fn devices_are_scoped_to_their_owner() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let alice = store
            .upsert_user("iss", "alice", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let bob = store
            .upsert_user("iss", "bob", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dev = store
            .create_device(
                alice.id,
                &NewDevice {
                    name: "cam-1".into(),
                    model: Some("X1".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev.owner_id, alice.id);
        assert_eq!(
            store
                .device(alice.id, dev.id)
                .await
                .ok()
                .flatten()
                .map(|d| d.name),
            Some("cam-1".into())
        );
        assert!(
            store.device(bob.id, dev.id).await.ok().flatten().is_none(),
            "{:?}",
            store.backend()
        );
        assert_eq!(store.devices(alice.id).await.map(|v| v.len()).ok(), Some(1));
        assert_eq!(store.devices(bob.id).await.map(|v| v.len()).ok(), Some(0));
    }
}

#[tokio::test]
async fn credentials_authenticate_until_revoked() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let owner = store
            .upsert_user("iss", "owner", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dev = store
            .create_device(
                owner.id,
                &NewDevice {
                    name: "box".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let token = DeviceToken::generate();
        store
            .add_credential(dev.id, &token.hash())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let auth = store
            .authenticate_device(&token.hash())
            .await
            .ok()
            .flatten();
        assert_eq!(
            auth.map(|a| (a.device_id, a.owner_id)),
            Some((dev.id, owner.id))
        );
        assert!(store
            .authenticate_device(&DeviceToken::generate().hash())
            .await
            .ok()
            .flatten()
            .is_none());
        assert_eq!(store.revoke_credentials(dev.id).await.ok(), Some(1));
        assert!(
            store
                .authenticate_device(&token.hash())
                .await
                .ok()
                .flatten()
                .is_none(),
            "{:?}",
            store.backend()
        );
    }
}

#[tokio::test]
async fn sessions_are_found_by_hash_and_deleted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let user = store
            .upsert_user("iss", "s", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let other = store.upsert_user("iss", "other", None, None).await.unwrap();
        store
            .create_session("hash-1", "pub-1", user.id, 1_000, 9_000)
            .await
            .unwrap();
        store
            .create_session("hash-2", "pub-2", user.id, 1_500, 9_000)
            .await
            .unwrap();
        let listed = store.sessions_of(user.id, 2_000).await.unwrap();
        let ids: Vec<_> = listed.iter().map(|s| s.public_id.as_str()).collect();
        assert_eq!(ids, ["pub-2", "pub-1"], "{:?}", store.backend());
        assert!(
            store.sessions_of(user.id, 9_000).await.unwrap().is_empty(),
            "expired ones are not listed"
        );
        assert!(
            !store.delete_session_of(other.id, "pub-2").await.unwrap(),
            "not the owner"
        );
        assert!(store.delete_session_of(user.id, "pub-2").await.unwrap());
        assert!(store.session("hash-2").await.unwrap().is_none());
        let rec = store.session("hash-1").await.ok().flatten();
        assert_eq!(
            rec.as_ref()
                .map(|r| (r.user_id, r.last_seen_at, r.expires_at)),
            Some((user.id, 1_000, 9_000))
        );
        store
            .touch_session("hash-1", 2_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store
                .session("hash-1")
                .await
                .ok()
                .flatten()
                .map(|r| r.last_seen_at),
            Some(2_000)
        );
        assert_eq!(store.delete_session("hash-1").await.ok(), Some(true));
        assert!(store.session("hash-1").await.ok().flatten().is_none());
        assert_eq!(store.delete_session("hash-1").await.ok(), Some(false));
    }
}

#[tokio::test]
async fn reconnecting_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}", dir.path().join("nested/dir/x.db").display());
    let s1 = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let u = s1
        .upsert_user("iss", "keep", None, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s1.close().await;
    let s2 = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s2.user(u.id).await.ok().flatten().map(|x| x.id), Some(u.id));
    assert!(Store::connect("mysql://nope").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exchanges_of_one_code_make_one_device_and_faults_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for store in backends(dir.path()).await {
        let owner = store
            .upsert_user("iss", "pairer", None, None)
            .await
            .unwrap();
        let now = edge_core::time::now_ms();
        store
            .create_pairing_code(owner.id, "code-hash", now + 600_000)
            .await
            .unwrap();
        let new = NewDevice {
            name: "box".into(),
            ..Default::default()
        };
        let attempts = (0..50).map(|i| {
            let store = store.clone();
            let new = new.clone();
            async move {
                store
                    .exchange_pairing_code("code-hash", &new, &format!("token-{i}"), now)
                    .await
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(
            ok.len(),
            1,
            "{:?}: {:?}",
            store.backend(),
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(store::ExchangeError::InvalidCode))),
            "{:?}",
            store.backend()
        );
        assert_eq!(store.devices(owner.id).await.unwrap().len(), 1);

        // A fault while marking the code used keeps neither device nor credential.
        store
            .create_pairing_code(owner.id, "code-2", now + 600_000)
            .await
            .unwrap();
        store
            .faults()
            .fail_mark_used
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(store
            .exchange_pairing_code("code-2", &new, "faulty-token", now)
            .await
            .is_err());
        store
            .faults()
            .fail_mark_used
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            store.devices(owner.id).await.unwrap().len(),
            1,
            "{:?}",
            store.backend()
        );
        assert!(store
            .authenticate_device("faulty-token")
            .await
            .unwrap()
            .is_none());
    }
}

/// The relay and the api-server may open a fresh SQLite file at the same
/// moment; both must come up with the schema applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_a_fresh_sqlite_file_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("edge.db").display());
        let (a, b, c) = tokio::join!(
            Store::connect(&url),
            Store::connect(&url),
            Store::connect(&url)
        );
        for (name, s) in [("a", a), ("b", b), ("c", c)] {
            let s = s.unwrap_or_else(|e| panic!("round {round}, connect {name}: {e}"));
            s.ping().await.unwrap();
        }
    }
}
