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
        assert!(matches!(store.user(UserId::new()).await, Ok(None)));
    }
}

#[tokio::test]
async fn last_seen_times_are_written_in_one_batch_and_never_move_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let owner = store
            .upsert_user("iss", "seen", None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut devices = Vec::new();
        for name in ["a", "b", "c"] {
            let d = store
                .create_device(
                    owner.id,
                    &NewDevice {
                        name: name.into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            devices.push(d.id);
        }
        let seen = |at: i64| devices[..2].iter().map(|d| (*d, at)).collect::<Vec<_>>();
        store
            .mark_devices_seen(&seen(2_000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // An older time, noted late, changes nothing.
        store
            .mark_devices_seen(&seen(1_000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .mark_devices_seen(&[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut times = Vec::new();
        for d in &devices {
            let dev = store
                .device(owner.id, *d)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("device {d}"));
            times.push(dev.last_seen_at);
        }
        assert_eq!(
            times,
            [Some(2_000), Some(2_000), None],
            "{:?}",
            store.backend()
        );
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
            matches!(store.device(bob.id, dev.id).await, Ok(None)),
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
        assert!(matches!(
            store
                .authenticate_device(&DeviceToken::generate().hash())
                .await,
            Ok(None)
        ));
        assert_eq!(store.revoke_credentials(dev.id).await.ok(), Some(1));
        assert!(
            matches!(store.authenticate_device(&token.hash()).await, Ok(None)),
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
            .create_session("hash-1", "pub-1", user.id, 1_000, 9_000, None)
            .await
            .unwrap();
        store
            .create_session("hash-2", "pub-2", user.id, 1_500, 9_000, Some("idp-sid"))
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
        assert!(matches!(store.session("hash-1").await, Ok(None)));
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
                    .exchange_pairing_code("code-hash", &new, &format!("token-{i}"), now, 100)
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
            .exchange_pairing_code("code-2", &new, "faulty-token", now, 100)
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

#[tokio::test]
async fn device_tickets_redeem_once_for_their_device_before_expiry() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let b = store.backend();
        let user = store.upsert_user("iss", "t", None, None).await.unwrap();
        let dev = store
            .create_device(user.id, &NewDevice::default())
            .await
            .unwrap();
        let other = edge_core::DeviceId::new();
        store
            .create_device_ticket("h1", user.id, "sess", dev.id, 1_000, 31_000)
            .await
            .unwrap();
        store
            .create_device_ticket("h2", user.id, "sess", dev.id, 1_000, 2_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .redeem_device_ticket("h1", other, 1_500)
                .await
                .unwrap(),
            None,
            "{b:?}: another device"
        );
        let redeemed = store
            .redeem_device_ticket("h1", dev.id, 1_500)
            .await
            .unwrap();
        assert_eq!(
            redeemed,
            Some(store::RedeemedTicket {
                user_id: user.id,
                session_hash: "sess".into()
            })
        );
        assert_eq!(
            store
                .redeem_device_ticket("h1", dev.id, 1_600)
                .await
                .unwrap(),
            None,
            "{b:?}: used"
        );
        assert_eq!(
            store
                .redeem_device_ticket("h2", dev.id, 2_000)
                .await
                .unwrap(),
            None,
            "{b:?}: expired"
        );
        assert_eq!(
            store
                .redeem_device_ticket("nope", dev.id, 1_500)
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn provider_sessions_end_by_sid_or_by_subject_and_logout_tokens_count_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let b = store.backend();
        let alice = store.upsert_user("iss", "alice", None, None).await.unwrap();
        let bob = store.upsert_user("iss", "bob", None, None).await.unwrap();
        for (hash, user, sid) in [
            ("a1", alice.id, Some("s1")),
            ("a2", alice.id, Some("s2")),
            ("a3", alice.id, None),
            ("b1", bob.id, Some("s1")),
        ] {
            store
                .create_session(hash, hash, user, 1, i64::MAX, sid)
                .await
                .unwrap();
        }
        let alive = |hash: &'static str| {
            let store = store.clone();
            async move { store.session(hash).await.unwrap().is_some() }
        };
        // sid alone: only that provider session, of that issuer's users.
        assert_eq!(
            store
                .delete_idp_sessions("other-iss", None, Some("s2"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .delete_idp_sessions("iss", None, Some("s2"))
                .await
                .unwrap(),
            1,
            "{b:?}"
        );
        assert!(!alive("a2").await && alive("a1").await && alive("b1").await);
        // sid and sub: that session, and the user's sessions without a sid.
        assert_eq!(
            store
                .delete_idp_sessions("iss", Some("alice"), Some("s1"))
                .await
                .unwrap(),
            2,
            "{b:?}"
        );
        assert!(!alive("a1").await && !alive("a3").await && alive("b1").await);
        // sub alone: every session of the user.
        assert_eq!(
            store
                .delete_idp_sessions("iss", Some("bob"), None)
                .await
                .unwrap(),
            1
        );
        assert!(!alive("b1").await);
        assert_eq!(
            store.delete_idp_sessions("iss", None, None).await.unwrap(),
            0
        );

        assert!(store.remember_logout_token("j1", 100, 1_000).await.unwrap());
        assert!(
            !store.remember_logout_token("j1", 200, 1_000).await.unwrap(),
            "{b:?}: replay"
        );
        // Once past its acceptance window it is forgotten.
        assert!(store
            .remember_logout_token("j1", 2_000, 3_000)
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn email_verified_is_kept_as_the_provider_says() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let claims = |verified| store::UserClaims {
            issuer: "iss".into(),
            subject: "v".into(),
            email: Some("v@x".into()),
            email_verified: verified,
            name: None,
        };
        let u = store.upsert_user_claims(&claims(Some(true))).await.unwrap();
        assert_eq!(u.email_verified, Some(true), "{:?}", store.backend());
        let u = store
            .upsert_user_claims(&claims(Some(false)))
            .await
            .unwrap();
        assert_eq!(u.email_verified, Some(false));
        let u = store.upsert_user_claims(&claims(None)).await.unwrap();
        assert_eq!(u.email_verified, None);
    }
}

#[tokio::test]
async fn sweeping_deletes_only_what_expired_and_old_audit_in_batches() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let b = store.backend();
        let old = store.upsert_user("iss", "old", None, None).await.unwrap();
        let new = store.upsert_user("iss", "new", None, None).await.unwrap();
        let now = 10_000_000_000;
        let idle = 1_800_000;
        for (hash, last_seen, expires) in [
            ("expired", now - 10, now - 1),
            ("idle", now - idle - 1, now + 1_000_000),
            ("live", now - 10, now + 1_000_000),
        ] {
            store
                .create_session(hash, hash, new.id, last_seen, expires, None)
                .await
                .unwrap();
            store.touch_session(hash, last_seen).await.unwrap();
        }
        store
            .create_pairing_code(new.id, "stale", now - 86_400_001)
            .await
            .unwrap();
        store
            .create_pairing_code(new.id, "recent", now - 1)
            .await
            .unwrap();
        let dev = store
            .create_device(new.id, &NewDevice::default())
            .await
            .unwrap();
        store
            .create_device_ticket("t-old", new.id, "live", dev.id, 1, now - 1)
            .await
            .unwrap();
        store
            .create_device_ticket("t-new", new.id, "live", dev.id, 1, now + 30_000)
            .await
            .unwrap();
        for i in 0..7 {
            store
                .audit(
                    old.id,
                    "old_event",
                    Some(&i.to_string()),
                    serde_json::json!({}),
                )
                .await
                .unwrap();
        }
        testing::backdate_audit(&store, old.id, now - 401 * 86_400_000)
            .await
            .unwrap();
        store
            .audit(new.id, "recent_event", None, serde_json::json!({}))
            .await
            .unwrap();

        let swept = store
            .sweep(now, idle, now - 400 * 86_400_000, 3)
            .await
            .unwrap();
        assert_eq!(
            swept,
            store::Swept {
                sessions: 2,
                pairing_codes: 1,
                tickets: 1,
                logout_tokens: 0,
                audit_events: 7,
            },
            "{b:?}"
        );
        assert!(store.session("live").await.unwrap().is_some());
        assert!(store.audit_events(old.id, 10, 0).await.unwrap().is_empty());
        assert_eq!(store.audit_events(new.id, 10, 0).await.unwrap().len(), 1);
        assert_eq!(
            store.sweep(now, idle, 0, 3).await.unwrap(),
            store::Swept::default()
        );
    }
}

#[tokio::test]
async fn concurrent_exchanges_of_one_owners_codes_never_pass_the_device_quota() {
    const QUOTA: i64 = 3;
    const CODES: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    for store in backends(dir.path()).await {
        let owner = store.upsert_user("iss", "quota", None, None).await.unwrap();
        let now = edge_core::time::now_ms();
        for i in 0..CODES {
            store
                .create_pairing_code(owner.id, &format!("quota-{i}"), now + 600_000)
                .await
                .unwrap();
        }
        let new = NewDevice {
            name: "box".into(),
            ..Default::default()
        };
        let attempts = (0..CODES).map(|i| {
            let (store, new) = (store.clone(), new.clone());
            async move {
                store
                    .exchange_pairing_code(
                        &format!("quota-{i}"),
                        &new,
                        &format!("qt-{i}"),
                        now,
                        QUOTA,
                    )
                    .await
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let owned = store.devices(owner.id).await.unwrap().len();
        assert_eq!(
            owned,
            QUOTA as usize,
            "{:?}: {owned} devices",
            store.backend()
        );
        assert_eq!(ok, QUOTA as usize, "{:?}", store.backend());
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(store::ExchangeError::DeviceQuota(_)))),
            "{:?}: {:?}",
            store.backend(),
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_evaluators_record_one_health_change_with_one_delivery_per_webhook() {
    let dir = tempfile::tempdir().unwrap();
    for store in backends(dir.path()).await {
        let owner = store
            .upsert_user("https://idp", "health", None, None)
            .await
            .unwrap();
        let device = store
            .create_device(
                owner.id,
                &store::NewDevice {
                    name: "b".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for _ in 0..2 {
            store
                .create_webhook(owner.id, "https://8.8.8.8/h", &edge_core::Secret::random(8))
                .await
                .unwrap();
        }
        let ok = store::DeviceHealth {
            device_id: device.id,
            state: "ok".into(),
            reasons: vec![],
            since: 1,
        };
        assert!(store
            .change_health(&device, None, &ok, false, |_| String::new())
            .await
            .unwrap());
        let critical = store::DeviceHealth {
            state: "critical".into(),
            since: 2,
            ..ok.clone()
        };
        // Eight evaluators see "ok" and all decide "critical" at once.
        let racers = (0..8).map(|_| {
            let (store, device, critical) = (store.clone(), device.clone(), critical.clone());
            tokio::spawn(async move {
                store
                    .change_health(&device, Some("ok"), &critical, true, |id| {
                        format!("{{\"id\":\"{id}\"}}")
                    })
                    .await
            })
        });
        let mut won = 0;
        for r in futures_util::future::join_all(racers).await {
            // A loser may also see the database busy; it changes nothing.
            if matches!(r.unwrap(), Ok(true)) {
                won += 1;
            }
        }
        assert_eq!(won, 1, "{:?}", store.backend());
        let hooks = store.webhooks(owner.id).await.unwrap();
        let mut deliveries = 0;
        for h in &hooks {
            deliveries += store
                .deliveries(owner.id, &h.id, 10)
                .await
                .unwrap()
                .unwrap()
                .len();
        }
        assert_eq!(deliveries, 2, "one per webhook");
        assert_eq!(
            store
                .audit_count(owner.id, "device_health_changed")
                .await
                .unwrap(),
            2
        );
        let now = store.device_health(owner.id, &[device.id]).await.unwrap();
        assert_eq!(now[&device.id].state, "critical");
    }
}

/// A telemetry pass writes many rows per statement: more rows than one
/// statement holds all land, and a batch holding a row twice (a failed
/// pass requeued before the next) stores the later one, on PostgreSQL too
/// (where one statement may not update a row twice).
#[tokio::test]
async fn telemetry_batches_store_every_row_and_the_later_of_a_repeat() {
    use store::{LatestRow, RollupRow, SeriesRow, TelemetryBatch, WindowRow};
    let dir = tempfile::tempdir().unwrap();
    for store in backends(dir.path()).await {
        let owner = store.upsert_user("iss", "fleet", None, None).await.unwrap();
        let mut devices = Vec::new();
        for i in 0..130 {
            let d = NewDevice {
                name: format!("box-{i}"),
                ..Default::default()
            };
            devices.push(store.create_device(owner.id, &d).await.unwrap().id);
        }
        let latest = |d, at: i64| LatestRow {
            device_id: d,
            scraped_at: at,
            outcome: "ok".into(),
            error: None,
            last_ok_at: Some(at),
            figures: format!("{{\"at\":{at}}}"),
        };
        let window = |d, samples: i64| WindowRow {
            device_id: d,
            start_ms: 1_000,
            end_ms: 1_000 + samples,
            samples,
            data: vec![samples as u8; 40],
        };
        let mut batch = TelemetryBatch::default();
        for d in &devices {
            batch.series.push(SeriesRow {
                device_id: *d,
                series_id: 7,
                metric: "edge_host_cpu_ratio".into(),
                labels: "{}".into(),
            });
            batch.windows.push(window(*d, 1));
            batch.rollups.push(RollupRow {
                device_id: *d,
                bucket_ms: 0,
                start_ms: 1_000,
                data: vec![1],
            });
            batch.latest.push(latest(*d, 10));
        }
        // The first device again, later (and within the first statement's
        // rows): the repeat of a requeued pass.
        let first = devices[0];
        batch.series.insert(1, batch.series[0].clone());
        batch.windows.insert(1, window(first, 2));
        batch.rollups.insert(
            1,
            RollupRow {
                device_id: first,
                bucket_ms: 0,
                start_ms: 1_000,
                data: vec![2],
            },
        );
        batch.latest.insert(1, latest(first, 20));
        store
            .write_telemetry(&batch)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", store.backend()));

        let got = store.telemetry_latest(owner.id, &devices).await.unwrap();
        assert_eq!(got.len(), devices.len(), "{:?}", store.backend());
        assert_eq!(got[&first].scraped_at, 20);
        assert_eq!(got[&devices[129]].scraped_at, 10);
        let w = store
            .telemetry_windows(owner.id, first, 0, 10_000)
            .await
            .unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].samples, w[0].data[0]), (2, 2));
        let last = store
            .telemetry_windows(owner.id, devices[129], 0, 10_000)
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        let r = store
            .telemetry_rollups(owner.id, &devices, 0, 10_000)
            .await
            .unwrap();
        assert_eq!(r.len(), devices.len());
        assert!(r.iter().any(|r| r.device_id == first && r.data == vec![2]));
        let s = store.telemetry_series(owner.id, first, None).await.unwrap();
        assert_eq!(s.len(), 1);
    }
}

#[tokio::test]
async fn service_accounts_rotate_with_overlap_revoke_and_take_their_tokens_with_them() {
    use edge_core::scope::{Scope, Scopes};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let alice = store.upsert_user("iss", "alice", None, None).await.unwrap();
        let bob = store.upsert_user("iss", "bob", None, None).await.unwrap();
        let scopes = Scopes::new(vec![Scope::DevicesRead, Scope::DevicesRemote]);
        let selector = vec!["site=a".to_owned()];
        let now = 1_000_000;
        let made = store
            .create_service_account(&store::NewServiceAccount {
                id: "sa-1",
                owner: alice.id,
                name: "ci",
                scopes: &scopes,
                selector: &selector,
                public_jwk: None,
                expires_at: Some(now + 10_000),
                secret: ("sk-1", "hash-1"),
                now,
            })
            .await
            .unwrap();
        assert_eq!(
            (made.scopes.clone(), made.selector.clone()),
            (scopes.clone(), selector.clone())
        );
        assert_eq!(made.secrets.len(), 1);
        // Owners see only their own.
        assert!(store
            .service_account_of(bob.id, "sa-1")
            .await
            .unwrap()
            .is_none());
        assert!(store.service_accounts_of(bob.id).await.unwrap().is_empty());
        assert!(!store.delete_service_account(bob.id, "sa-1").await.unwrap());
        assert!(store
            .rotate_service_secret(bob.id, "sa-1", ("sk-x", "hash-x"), now, now)
            .await
            .unwrap()
            .is_none());

        // A rotation keeps the old secret until the overlap ends.
        let (found, secret) = store
            .service_account_by_secret("hash-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id.as_str(), secret.expires_at), ("sa-1", None));
        store
            .rotate_service_secret(alice.id, "sa-1", ("sk-2", "hash-2"), now + 1, now + 500)
            .await
            .unwrap()
            .unwrap();
        let (_, old) = store
            .service_account_by_secret("hash-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.expires_at, Some(now + 500));
        let (_, new) = store
            .service_account_by_secret("hash-2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new.expires_at, None);

        // A token carries its grant; revoking its secret ends it.
        let grant = store::ServiceGrant {
            account: "sa-1".into(),
            scopes: scopes.clone(),
            selector: selector.clone(),
        };
        store
            .issue_service_token(
                &found,
                ("tok-1", "pub-1"),
                (now, now + 900_000),
                &grant,
                Some("sk-2"),
            )
            .await
            .unwrap();
        let record = store.session("tok-1").await.unwrap().unwrap();
        assert_eq!(
            (record.kind, record.user_id),
            (store::SessionKind::Service, alice.id)
        );
        assert_eq!(record.service.as_ref(), Some(&grant));
        assert!(
            store.sessions_of(alice.id, now).await.unwrap().is_empty(),
            "tokens are not 'my sessions'"
        );
        let used = store
            .service_account_of(alice.id, "sa-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.last_used_at, Some(now));
        assert_eq!(
            used.secrets
                .iter()
                .find(|s| s.id == "sk-2")
                .unwrap()
                .last_used_at,
            Some(now)
        );
        assert!(!store
            .revoke_service_secret(bob.id, "sa-1", "sk-2")
            .await
            .unwrap());
        assert!(store
            .revoke_service_secret(alice.id, "sa-1", "sk-2")
            .await
            .unwrap());
        assert!(store.session("tok-1").await.unwrap().is_none());
        assert!(store
            .service_account_by_secret("hash-2")
            .await
            .unwrap()
            .is_none());

        // Deleting the account ends every token it holds.
        store
            .issue_service_token(
                &found,
                ("tok-2", "pub-2"),
                (now, now + 900_000),
                &grant,
                Some("sk-1"),
            )
            .await
            .unwrap();
        assert_eq!(store.service_tokens_live("sa-1", now).await.unwrap(), 1);
        assert!(store
            .delete_service_account(alice.id, "sa-1")
            .await
            .unwrap());
        assert!(store.session("tok-2").await.unwrap().is_none());
        assert!(store
            .service_account_by_secret("hash-1")
            .await
            .unwrap()
            .is_none());

        // The quota holds.
        let plain = |i: String| {
            let (store, scopes) = (&store, &scopes);
            async move {
                let (id, sk, hash) = (format!("sa-{i}"), format!("sk-{i}"), format!("h-{i}"));
                store
                    .create_service_account(&store::NewServiceAccount {
                        id: &id,
                        owner: bob.id,
                        name: "n",
                        scopes,
                        selector: &[],
                        public_jwk: None,
                        expires_at: None,
                        secret: (&sk, &hash),
                        now,
                    })
                    .await
            }
        };
        for i in 0..store::MAX_SERVICE_ACCOUNTS_PER_OWNER {
            plain(format!("q{i}")).await.unwrap();
        }
        let over = plain("over".into()).await;
        assert!(matches!(over, Err(store::StoreError::QuotaExceeded)));
    }
}

/// Transactions that read before they write (a quota count, then the
/// insert) racing other writers: none may fail. On SQLite a deferred
/// transaction whose snapshot went stale cannot take the write lock and
/// fails at once with `SQLITE_BUSY_SNAPSHOT` (517), which no busy timeout
/// waits out; write transactions must take the lock when they begin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_read_then_write_never_fail_beside_other_writers() {
    use edge_core::scope::{Scope, Scopes};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for store in backends(dir.path()).await {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                let owner = store
                    .upsert_user("iss", &format!("racer-{worker}"), None, None)
                    .await?;
                let scopes = Scopes::new(vec![Scope::DevicesRead]);
                for round in 0..12 {
                    let id = format!("sa-{worker}-{round}");
                    let secret = (
                        format!("sk-{worker}-{round}"),
                        format!("hash-{worker}-{round}"),
                    );
                    // A writer outside any transaction in between.
                    store
                        .upsert_user("iss", &format!("other-{worker}-{round}"), None, None)
                        .await?;
                    if round < 8 {
                        store
                            .create_service_account(&store::NewServiceAccount {
                                id: &id,
                                owner: owner.id,
                                name: "race",
                                scopes: &scopes,
                                selector: &[],
                                public_jwk: None,
                                expires_at: None,
                                secret: (&secret.0, &secret.1),
                                now: 1_000,
                            })
                            .await?;
                    } else {
                        store
                            .create_device(
                                owner.id,
                                &NewDevice {
                                    name: id,
                                    ..Default::default()
                                },
                            )
                            .await?;
                    }
                }
                Ok::<_, store::StoreError>(owner.id)
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                Ok(owner) => {
                    let made = store.service_accounts_of(owner).await.unwrap();
                    assert_eq!(made.len(), 8, "{:?}", store.backend());
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        assert!(failures.is_empty(), "{:?}: {failures:?}", store.backend());
    }
}
