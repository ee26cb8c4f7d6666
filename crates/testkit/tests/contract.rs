//! Issue 14's API contract proof: schemathesis (PyPI, pinned in `.ci/run`)
//! runs against a live api-server with a signed-in session cookie and
//! `X-CSRF: 1`, reading the served `/api/openapi.json`: no response is a
//! 5xx, and every response matches the document (status codes, content
//! types, bodies). A second run without the cookie must get the documented
//! 401 from every route that needs a session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use testkit::Stack;
use tokio::process::Command;

/// Upper bound for one schemathesis run (it ends by itself; this only
/// stops a hung one, in time to print what it did before nextest's own
/// bound for the whole test ends it silently).
const SCHEMATHESIS_BOUND: std::time::Duration = std::time::Duration::from_secs(150);

/// What one schemathesis run left: whether it passed, what it printed, and
/// its network log (every request it made, with the answer if one came).
struct Run {
    ok: bool,
    out: String,
    cassette: String,
}

/// Run schemathesis against the stack.
async fn schemathesis(stack: &Stack, headers: &[String], extra: &[&str]) -> Run {
    // Hypothesis keeps its example database and caches in `.hypothesis`
    // under the working directory: give each run its own, so a run leaves
    // nothing in the checkout. Its output goes to files there, so that a
    // run cut short still shows how far it got.
    let work = tempfile::tempdir().unwrap();
    let printed = work.path().join("printed.txt");
    let errors = work.path().join("errors.txt");
    let cassette = work.path().join("network.yaml");
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(work.path())
        .arg("run")
        .arg(stack.api("/api/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--checks", "status_code_conformance"])
        .args(["--checks", "content_type_conformance"])
        .args(["--checks", "response_schema_conformance"])
        .args(["--hypothesis-max-examples", "20"])
        .args(["--hypothesis-seed", "14"])
        .args(["--hypothesis-derandomize"])
        .args(["--workers", "2"])
        // A request left unanswered fails the run naming that request,
        // instead of stalling the whole run until its bound.
        .arg("--request-timeout=20000")
        .arg(format!("--cassette-path={}", cassette.display()))
        // The document is OpenAPI 3.1 (utoipa 5); schemathesis 3.x reads
        // it behind this switch.
        .arg("--experimental=openapi-3.1")
        .arg("--no-color")
        // The run must not end its own session; and the login start is a
        // browser redirect to the provider, which schemathesis follows (its
        // 302 is covered by the login suite).
        .args(["--exclude-path", "/api/auth/logout"])
        .args(["--exclude-path", "/api/auth/login"])
        // Its 302 goes to the CLI's loopback port (covered by the CLI's
        // tests), where nothing listens during the run.
        .args(["--exclude-path", "/api/cli/authorize"])
        .args(extra)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(std::fs::File::create(&errors).unwrap())
        .kill_on_drop(true);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let mut child = cmd.spawn().expect("schemathesis (PyPI) must be installed");
    // A whole schemathesis run is hundreds of requests from a Python
    // process: on a loaded 2-core machine it can take far longer than one
    // test step (`testkit::STEP`), so it gets its own, wider bound.
    let status = tokio::time::timeout(SCHEMATHESIS_BOUND, child.wait()).await;
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let out = format!("{}{}", read(&printed), read(&errors));
    let cassette = read(&cassette);
    match status {
        Ok(status) => Run {
            ok: status.unwrap().success(),
            out,
            cassette,
        },
        Err(_) => {
            let _ = child.kill().await;
            // The log holds answered requests: the last ones say where the
            // run was when it stalled.
            let answered: Vec<&str> = cassette
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("uri:") || l.starts_with("code:"))
                .collect();
            let tail = &answered[answered.len().saturating_sub(40)..];
            panic!(
                "schemathesis ran past {SCHEMATHESIS_BOUND:?}; it printed:\n{out}\n\
                 the last requests answered:\n{}",
                tail.join("\n")
            );
        }
    }
}

/// The forward route, as the document names it.
const FORWARD: &str = "/api/devices/{id}/forward";

/// Whether the cassette holds a request to exactly `url` answered 200.
fn answered_200(cassette: &str, url: &str) -> bool {
    let lines: Vec<&str> = cassette.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        line.trim() == format!("uri: '{url}'")
            && lines[i..]
                .iter()
                .take(40)
                .take_while(|l| !l.trim_start().starts_with("- id:"))
                .any(|l| l.trim() == "code: '200'" || l.trim() == "code: 200")
    })
}

#[cfg_attr(
    not(any(has_schemathesis, require_interop)),
    ignore = "needs schemathesis (pip install schemathesis==3.39.16)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_api_matches_its_openapi_document() {
    let stack = Stack::start().await;
    let alice = stack.user("alice").await;
    let (_dev, _agent) = stack.online_device(alice.id).await;
    let signed_in = [format!("Cookie: {}", alice.cookie), "X-CSRF: 1".to_owned()];
    // Forwards take a bearer only: they get a run of their own with one
    // (schemathesis would otherwise make up `Authorization` values, some
    // of which no HTTP server parses).
    let run = schemathesis(&stack, &signed_in, &["--exclude-path", FORWARD]).await;
    println!("{}", run.out);
    assert!(
        run.ok,
        "schemathesis found responses the document does not allow"
    );
    // The run was signed in: the session's own routes answered 200.
    for path in ["/api/auth/me", "/api/devices", "/api/pairing/codes"] {
        assert!(
            answered_200(&run.cassette, &stack.api(path)),
            "no 200 from {path} in the signed-in run"
        );
    }

    // With a cookie that names no session: every session route answers
    // its documented 401 (an explicit header stops schemathesis from
    // making up cookie values, some of which no HTTP server accepts).
    let signed_out = [
        "Cookie: edge_session=not-a-session".to_owned(),
        "X-CSRF: 1".to_owned(),
    ];
    let run = schemathesis(&stack, &signed_out, &["--exclude-path", FORWARD]).await;
    println!("{}", run.out);
    assert!(run.ok, "signed out, a response broke the document");

    // A terminal's bearer session on the forward route.
    let bearer = [format!(
        "Authorization: Bearer {}",
        stack.bearer(alice.id).await.expose()
    )];
    let run = schemathesis(&stack, &bearer, &["--include-path", FORWARD]).await;
    println!("{}", run.out);
    assert!(run.ok, "with a bearer, a forward answer broke the document");
    for path in ["/api/devices", "/api/auth/me", "/api/audit"] {
        let res = stack.http.get(stack.api(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} without a session");
    }
}
