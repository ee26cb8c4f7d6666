//! `edge login` and `edge logout`. Login is the device login (RFC 8628)
//! the api-server runs with the provider: the CLI prints the page and the
//! code, polls at the interval the server names (five seconds more after
//! each `slow_down`) until the user confirmed, and keeps the bearer
//! session it gets. Logout ends that session on the server first.

use crate::api::Api;
use crate::credentials::{self, Credential};
use crate::{CliError, Global};
use edge_core::Secret;
use std::io::Write;
use std::time::Duration;

/// What this terminal calls itself in "my sessions".
fn client_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => format!("edge CLI on {h}"),
        None => "edge CLI".to_owned(),
    }
}

pub async fn login(g: &Global) -> Result<(), CliError> {
    let api = Api::anonymous(g)?;
    let started = api
        .post(
            "/api/cli/login",
            &serde_json::json!({ "client": client_name() }),
        )
        .await?;
    let field = |k: &str| started[k].as_str().map(str::to_owned);
    let (Some(login), Some(code), Some(uri)) = (
        field("login"),
        field("user_code"),
        field("verification_uri"),
    ) else {
        return Err(CliError::Io(
            "the server's login answer is incomplete".into(),
        ));
    };
    let login = Secret::new(login);
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "To log in, open {uri}");
    let _ = writeln!(stderr, "and confirm the code {code}");
    if let Some(complete) = field("verification_uri_complete") {
        let _ = writeln!(stderr, "(or open {complete} directly)");
    }
    let _ = writeln!(stderr, "Waiting for you to confirm...");
    let mut interval = Duration::from_secs(started["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(started["expires_in"].as_u64().unwrap_or(600).min(3600));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Usage(
                "the code expired before it was confirmed: run `edge login` again".into(),
            ));
        }
        let polled = api
            .post(
                "/api/cli/login/poll",
                &serde_json::json!({ "login": login.expose() }),
            )
            .await?;
        match polled["status"].as_str() {
            Some("pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("done") => {
                let token = polled["token"]
                    .as_str()
                    .ok_or_else(|| CliError::Io("the server sent no token".into()))?;
                let path = credentials::save(
                    g,
                    &Credential {
                        server: api.server.clone(),
                        token: Secret::new(token),
                        expires_at: polled["expires_at"].as_i64().unwrap_or(0),
                    },
                )?;
                let _ = writeln!(
                    stderr,
                    "Logged in to {}; the session is kept in {}",
                    api.server,
                    path.display()
                );
                return Ok(());
            }
            _ => return Err(CliError::Io("the server's poll answer is unknown".into())),
        }
    }
}

pub async fn logout(g: &Global) -> Result<(), CliError> {
    let api = match Api::logged_in(g) {
        Ok(api) => api,
        Err(CliError::NotLoggedIn(server)) => {
            eprintln!("Not logged in to {server}.");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match api.post("/api/auth/logout", &serde_json::json!({})).await {
        // Already ended on the server (revoked, expired): forget it here.
        Ok(_) | Err(CliError::Api { status: 401, .. }) => {}
        Err(e) => return Err(e),
    }
    credentials::remove(g)?;
    eprintln!("Logged out of {}.", api.server);
    Ok(())
}
