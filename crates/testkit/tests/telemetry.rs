//! Telemetry end to end: the relay scrapes real boxes through their real
//! tunnels (a sim-box behind the agent, a Go device with and without
//! `/metrics`), the figures land in the store and read back through the
//! API as the latest values, a device list row, raw series and, once a
//! window closes, rollups and fleet queries; retention deletes; another
//! user sees none of it; a box serving bad input gets a recorded error
//! for that scrape and never disturbs another device.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::routing::get;
use edge_core::DeviceId;
use remote_proxy::config::Limits;
use remote_proxy::scrape::TelemetrySettings;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{go_device, Stack, StackOptions, TestUser};

fn fast_telemetry() -> StackOptions {
    StackOptions {
        limits: Limits {
            drain_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_millis(200),
            telemetry: TelemetrySettings {
                interval: Some(Duration::from_millis(300)),
                write_every: Duration::from_millis(100),
                window_every: Duration::from_millis(100),
                timeout: Duration::from_secs(2),
                allow: box_metrics::AllowList::parse("sim_queue_*"),
                ..Default::default()
            },
            ..Limits::default()
        },
        ..StackOptions::default()
    }
}

/// The device's last scrape as the API shows it.
async fn latest(stack: &Stack, user: &TestUser, dev: DeviceId) -> serde_json::Value {
    stack
        .get_json(user, &format!("/api/devices/{dev}/telemetry"))
        .await
}

/// The figure `metric{label=value}` of the last good scrape.
fn figure(t: &serde_json::Value, metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    t["figures"]["series"].as_array()?.iter().find_map(|s| {
        let labels_match = label.is_none_or(|(k, v)| s["labels"][k] == v);
        (s["metric"] == metric && labels_match).then(|| s["value"].as_f64())?
    })
}

/// The device's `inference_fps` series as the API answers it.
async fn fps_series(stack: &Stack, user: &TestUser, dev: DeviceId) -> serde_json::Value {
    let path = format!("/api/devices/{dev}/telemetry/series?metric=inference_fps");
    stack.get_json(user, &path).await
}

/// Mean of the non-null values of a series answer's series with `label`.
fn mean(series: &serde_json::Value, label: (&str, &str)) -> f64 {
    let s = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"][label.0] == label.1)
        .unwrap_or_else(|| panic!("no series with {label:?}: {series}"));
    let vals: Vec<f64> = s["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert!(!vals.is_empty(), "{series}");
    vals.iter().sum::<f64>() / vals.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_box_is_scraped_through_its_tunnel_and_its_figures_read_back() {
    let stack = Stack::start_with(fast_telemetry()).await;
    let alice = stack.user("alice").await;
    let bob = stack.user("bob").await;
    let (dev, agent) = stack.online_device(alice.id).await;

    stack
        .telemetry_until("five good scrapes of the sim-box", || async {
            let series = fps_series(&stack, &alice, dev.id).await;
            series["series"].as_array().is_some_and(|s| {
                s.len() == 2
                    && s.iter().all(|x| {
                        x["values"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|v| v.is_number())
                            .count()
                            >= 5
                    })
            })
        })
        .await;
    let t = latest(&stack, &alice, dev.id).await;
    assert_eq!(t["outcome"], "ok", "{t}");
    assert_eq!(t["figures"]["models"].as_array().unwrap().len(), 2, "{t}");
    let temp = figure(&t, "accel_temperature_celsius", Some(("accel", "npu0"))).unwrap();
    assert!((40.0..90.0).contains(&temp), "{temp}");
    let memory = figure(&t, "memory_used_ratio", None).unwrap();
    assert!((0.5..0.7).contains(&memory), "{memory}");
    assert!(
        figure(&t, "sim_queue_depth", None).is_some(),
        "allow-listed"
    );
    assert!(figure(&t, "load1", None).is_some());
    // The agent's own figure, through its endpoint (ADR 026), and the
    // relay's figures of the tunnel.
    assert_eq!(stack.relay().directory.has_preamble(dev.id), Some(true));
    assert_eq!(
        stack.relay().directory.has_burst_windows(dev.id),
        Some(true)
    );
    assert_eq!(figure(&t, "agent_reconnects", None), Some(0.0), "{t}");
    assert!(
        figure(&t, "tunnel_connected_seconds", None).is_some(),
        "{t}"
    );

    let series = fps_series(&stack, &alice, dev.id).await;
    assert_eq!(series["source"], "raw");
    // ~30 and ~12 FPS (±5 % noise, counters rounded to whole frames over
    // 300 ms scrapes).
    let yolo = mean(&series, ("model", "yolov8n"));
    let resnet = mean(&series, ("model", "resnet50"));
    assert!((22.0..38.0).contains(&yolo), "yolov8n at {yolo} FPS");
    assert!((7.0..17.0).contains(&resnet), "resnet50 at {resnet} FPS");
    assert_eq!(
        series["timestamps"].as_array().unwrap().len(),
        series["series"][0]["values"].as_array().unwrap().len()
    );

    // The device list carries the key figures in the same page.
    let list = stack.get_json(&alice, "/api/devices").await;
    let row = &list.as_array().unwrap()[0];
    assert_eq!(row["telemetry"]["outcome"], "ok", "{row}");
    assert!(row["telemetry"]["fps"].as_f64().unwrap() > 20.0, "{row}");

    // Another user: the same 404 as a device that does not exist.
    let missing = DeviceId::new();
    for path in ["telemetry", "telemetry/series?metric=inference_fps"] {
        for (id, who) in [(dev.id, &bob), (missing, &alice)] {
            let res = stack
                .get(who, &stack.api(&format!("/api/devices/{id}/{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404, "{path}");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
    let bobs = stack
        .get_json(
            &bob,
            "/api/telemetry/fleet?metric=inference_fps&above=0&hours=1",
        )
        .await;
    assert_eq!(bobs, serde_json::json!([]));

    // The agent leaves: after three quiet intervals the writer closes the
    // window with its rollup.
    agent.stop().await;
    stack
        .telemetry_until("the closed window's rollup", || async {
            let s = stack
                .get_json(
                    &alice,
                    &format!(
                        "/api/devices/{}/telemetry/series?metric=inference_fps&step=300000",
                        dev.id
                    ),
                )
                .await;
            s["source"] == "rollup"
                && s["series"].as_array().is_some_and(|x| {
                    x.iter().any(|s| {
                        s["values"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|v| v.is_number())
                    })
                })
        })
        .await;
    let slow = stack
        .get_json(
            &alice,
            "/api/telemetry/fleet?metric=inference_fps&label=model=yolov8n&below=1000&hours=1",
        )
        .await;
    let matches = slow.as_array().unwrap();
    assert_eq!(matches.len(), 1, "{slow}");
    assert_eq!(matches[0]["device_id"], dev.id.to_string());
    assert!(matches[0]["min"].as_f64().unwrap() <= matches[0]["max"].as_f64().unwrap());
    let none = stack
        .get_json(
            &alice,
            "/api/telemetry/fleet?metric=inference_fps&label=model=yolov8n&below=1&hours=1",
        )
        .await;
    assert_eq!(
        none,
        serde_json::json!([]),
        "no 5-minute bucket of yolov8n was below 1 FPS"
    );
    for bad in [
        "metric=inference_fps",
        "metric=inference_fps&below=1&above=2",
        "metric=bad%20name&below=1",
        "metric=inference_fps&below=1&label=nolabel",
    ] {
        let res = stack
            .get(&alice, &stack.api(&format!("/api/telemetry/fleet?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }

    // Retention: raw windows go first, rollups after theirs.
    let now = edge_core::time::now_ms();
    let swept = stack.store.sweep_telemetry(now + 1, 0, 2).await.unwrap();
    assert!(swept.windows >= 1 && swept.rollups == 0, "{swept:?}");
    let raw = stack
        .store
        .telemetry_windows(alice.id, dev.id, 0, now + 1)
        .await
        .unwrap();
    assert!(raw.is_empty());
    let swept = stack
        .store
        .sweep_telemetry(now + 1, now + 1, 2)
        .await
        .unwrap();
    assert!(swept.rollups >= 1, "{swept:?}");
    assert!(stack
        .store
        .telemetry_rollups(alice.id, &[dev.id], 0, now + 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(has_go, require_interop)),
    ignore = "needs Go: apt-get install golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev"
)]
async fn go_devices_are_scraped_unchanged_and_one_without_metrics_has_none() {
    let Some(bin) = go_device::binary() else {
        return;
    };
    let stack = Stack::start_with(fast_telemetry()).await;
    let alice = stack.user("alice").await;
    let with = stack.device(alice.id).await;
    let without = stack.device(alice.id).await;
    let _a = go_device::spawn_with(&bin, &stack.tunnel_url(), &with.token, &["-metrics"]);
    let _b = go_device::spawn(&bin, &stack.tunnel_url(), &without.token);
    stack.wait_online(with.id).await;
    stack.wait_online(without.id).await;
    stack
        .telemetry_until("the Go devices' scrapes", || async {
            let a = latest(&stack, &alice, with.id).await;
            let b = latest(&stack, &alice, without.id).await;
            figure(&a, "inference_fps", Some(("model", "go-det"))).is_some()
                && b["outcome"] == "none"
        })
        .await;
    // Go devices did not ask for preambles: their streams are plain, as
    // in the field.
    assert_eq!(stack.relay().directory.has_preamble(with.id), Some(false));
    assert_eq!(
        stack.relay().directory.has_preamble(without.id),
        Some(false)
    );
    stack
        .telemetry_until("the Go device's tunnel round trip", || async {
            let a = latest(&stack, &alice, with.id).await;
            figure(&a, "tunnel_rtt_seconds", None).is_some_and(|rtt| rtt > 0.0 && rtt < 1.0)
        })
        .await;
    let a = latest(&stack, &alice, with.id).await;
    assert_eq!(a["outcome"], "ok");
    assert_eq!(
        figure(&a, "agent_reconnects", None),
        None,
        "a Go device has no agent endpoint"
    );
    let fps = figure(&a, "inference_fps", Some(("model", "go-det"))).unwrap();
    assert!((10.0..30.0).contains(&fps), "{fps}");
    assert_eq!(
        figure(&a, "accel_temperature_celsius", Some(("accel", "gpu0"))),
        Some(61.5)
    );
    // No metrics path is not an error, and the device still works as before.
    let b = latest(&stack, &alice, without.id).await;
    assert_eq!(b["error"], serde_json::Value::Null, "{b}");
    assert_eq!(
        testkit::checks::info(&stack, &alice, without.id).await["model"],
        "GO-1"
    );
    let list = stack.get_json(&alice, "/api/devices").await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == without.id.to_string())
        .unwrap();
    assert_eq!(row["status"], "online");
    assert_eq!(row["telemetry"]["outcome"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_supplies_host_figures_for_a_box_without_metrics() {
    let stack = Stack::start_with(fast_telemetry()).await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    // A box whose local API has no /metrics.
    let app = axum::Router::new().route(
        "/api/info",
        get(|| async { axum::Json(serde_json::json!({"model": "NO-METRICS"})) }),
    );
    let addr = stack.serve_local(app).await;
    let _agent = stack.agent_to(&dev, addr);
    stack.wait_online(dev.id).await;
    stack
        .telemetry_until("the agent's host figures", || async {
            let t = latest(&stack, &alice, dev.id).await;
            t["outcome"] == "ok" && figure(&t, "cpu_busy_ratio", None).is_some()
        })
        .await;
    let t = latest(&stack, &alice, dev.id).await;
    let memory = figure(&t, "memory_used_ratio", None).unwrap();
    assert!(memory > 0.0 && memory < 1.0, "{memory}");
    let disk = figure(&t, "disk_used_ratio", Some(("mountpoint", "/"))).unwrap();
    assert!(disk > 0.0 && disk < 1.0, "{disk}");
    assert!(figure(&t, "host_cpus", None).unwrap() >= 1.0);
    assert!(figure(&t, "uptime_seconds", None).unwrap() > 0.0);
    assert_eq!(figure(&t, "inference_fps", None), None);
    // The box's own API still answers through the same agent.
    assert_eq!(
        testkit::checks::info(&stack, &alice, dev.id).await["model"],
        "NO-METRICS"
    );
}

/// A box whose `/metrics` answers whatever the test sets.
async fn scripted_box(stack: &Stack) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let body = Arc::new(Mutex::new(b"edge_host_load1 1\n".to_vec()));
    let served = body.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let b = served.lock().unwrap().clone();
            async move { b }
        }),
    );
    let addr = stack.serve_local(app).await;
    (addr, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_a_box_fails_its_scrape_with_a_reason_and_spares_the_others() {
    let stack = Stack::start_with(fast_telemetry()).await;
    let alice = stack.user("alice").await;
    let (good, _good_agent) = stack.online_device(alice.id).await;
    let bad = stack.device(alice.id).await;
    let (addr, body) = scripted_box(&stack).await;
    let _bad_agent = stack.agent_to(&bad, addr);
    stack.wait_online(bad.id).await;
    stack
        .telemetry_until("a first good scrape of the scripted box", || async {
            figure(&latest(&stack, &alice, bad.id).await, "load1", None) == Some(1.0)
        })
        .await;

    let many: String = (0..100_000).map(|i| format!("m{} 1\n", i % 10)).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"edge_host_load1{oops 1\n".to_vec()),
        ("body_too_large", vec![b'#'; 10 << 20]),
        ("too_many_samples", many.into_bytes()),
        ("non_finite_value", b"edge_host_load1 NaN\n".to_vec()),
        ("non_finite_value", b"edge_host_load1 +Inf\n".to_vec()),
        (
            "label_too_long",
            format!(
                "edge_host_temperature_celsius{{sensor=\"{}\"}} 1\n",
                "x".repeat(200)
            )
            .into_bytes(),
        ),
        ("not_utf8", b"edge_host_load1 1\xff\n".to_vec()),
    ];
    for (code, bytes) in cases {
        *body.lock().unwrap() = bytes;
        stack
            .telemetry_until(code, || async {
                let t = latest(&stack, &alice, bad.id).await;
                t["outcome"] == "failed"
                    && t["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with(&format!("{code}:")))
            })
            .await;
        // Nothing of the bad scrape was kept: the last good figures stay.
        let t = latest(&stack, &alice, bad.id).await;
        assert_eq!(figure(&t, "load1", None), Some(1.0), "{code}: {t}");
    }

    // Control and bidi characters leave label values; the scrape is good.
    *body.lock().unwrap() =
        b"edge_host_temperature_celsius{sensor=\"s\xe2\x80\xaeoc\x07\"} 55\n".to_vec();
    stack
        .telemetry_until("the cleaned label", || async {
            let t = latest(&stack, &alice, bad.id).await;
            figure(&t, "host_temperature_celsius", Some(("sensor", "soc"))) == Some(55.0)
        })
        .await;

    // Through all of it the other device's figures kept coming.
    let before = latest(&stack, &alice, good.id).await["scraped_at"]
        .as_i64()
        .unwrap();
    stack
        .telemetry_until("a newer scrape of the good device", || async {
            let t = latest(&stack, &alice, good.id).await;
            t["outcome"] == "ok" && t["scraped_at"].as_i64().unwrap() > before
        })
        .await;
    let scrapes = stack.relay().metrics.telemetry_scrapes.clone();
    let ok = scrapes.get_or_create(&[("outcome", "ok")]).get();
    assert!(ok > 5, "{ok} good scrapes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_its_own_metrics_path_is_scraped_there() {
    let stack = Stack::start_with(fast_telemetry()).await;
    let alice = stack.user("alice").await;
    let dev = stack.device(alice.id).await;
    let app = axum::Router::new().route("/custom/prom", get(|| async { "edge_host_load1 4.5\n" }));
    let addr = stack.serve_local(app).await;
    let patch = |body: serde_json::Value| {
        stack
            .send_as(
                reqwest::Method::PATCH,
                &alice,
                &format!("/api/devices/{}", dev.id),
            )
            .json(&body)
            .send()
    };
    for bad in ["metrics", "/with space", "/\u{e9}"] {
        let res = patch(serde_json::json!({ "metrics_path": bad }))
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    let res = patch(serde_json::json!({ "metrics_path": "/custom/prom" }))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let view: serde_json::Value = res.json().await.unwrap();
    assert_eq!(view["metrics_path"], "/custom/prom");
    let _agent = stack.agent_to(&dev, addr);
    stack.wait_online(dev.id).await;
    stack
        .telemetry_until("a scrape of the device's own path", || async {
            figure(&latest(&stack, &alice, dev.id).await, "load1", None) == Some(4.5)
        })
        .await;
    let actions = stack.audit_actions(alice.id).await;
    assert!(
        actions.iter().any(|a| a == "device_metrics_path_changed"),
        "{actions:?}"
    );
}
