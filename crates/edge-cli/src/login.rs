//! `edge login` and `edge logout`. Login is the device login (RFC 8628)
//! the api-server runs with the provider: the CLI prints the page and the
//! code, polls at the interval the server names (five seconds more after
//! each `slow_down`) until the user confirmed, and keeps the bearer
//! session it gets. Where the provider has no device login (or with
//! `--browser`) it is the loopback login (RFC 8252): the CLI listens on
//! `127.0.0.1`, the user opens the printed page in a browser on this
//! machine and signs in to the console, the browser comes back to the
//! CLI's port with a code, and the CLI trades it with its PKCE verifier.
//! Logout ends the session on the server first.

use crate::api::Api;
use crate::credentials::{self, Credential};
use crate::{CliError, Global};
use edge_core::Secret;
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

pub async fn login(g: &Global, browser: bool) -> Result<(), CliError> {
    let api = Api::anonymous(g)?;
    if !browser {
        match device_login(g, &api).await {
            Err(CliError::Api { code, .. }) if code == "device_login_unsupported" => {
                say!("The provider has no device login; signing in through a browser instead.");
            }
            other => return other,
        }
    }
    loopback_login(g, &api).await
}

/// Keep the bearer session of a finished login.
fn keep(g: &Global, api: &Api, done: &serde_json::Value) -> Result<(), CliError> {
    let token = done["token"]
        .as_str()
        .ok_or_else(|| CliError::Io("the server sent no token".into()))?;
    let path = credentials::save(
        g,
        &Credential {
            server: api.server.clone(),
            token: Secret::new(token),
            expires_at: done["expires_at"].as_i64().unwrap_or(0),
        },
    )?;
    say!(
        "Logged in to {}; the session is kept in {}",
        api.server,
        path.display()
    );
    Ok(())
}

/// The loopback login: listen, send the user to the page, take the code
/// the browser brings back (checking the state), trade it.
async fn loopback_login(g: &Global, api: &Api) -> Result<(), CliError> {
    use sha2::Digest;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Io(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| CliError::Io(e.to_string()))?
        .port();
    let verifier = Secret::random(32);
    let challenge = base64_url(&sha2::Sha256::digest(verifier.expose().as_bytes()));
    let state = Secret::random(16);
    let page = format!(
        "{}/api/cli/authorize?port={port}&challenge={challenge}&state={}&client={}",
        api.server,
        state.expose(),
        url::form_urlencoded::byte_serialize(client_name().as_bytes()).collect::<String>()
    );
    say!("To log in, open this page in a browser on this machine:");
    say!("  {page}");
    say!("Waiting for the browser...");
    let code = tokio::time::timeout(
        Duration::from_secs(600),
        callback(&listener, state.expose()),
    )
    .await
    .map_err(|_| {
        CliError::Usage("no browser came back within 10 minutes: run `edge login` again".into())
    })??;
    let done = api
        .post(
            "/api/cli/login/code",
            &serde_json::json!({ "code": code.expose(), "verifier": verifier.expose() }),
        )
        .await?;
    keep(g, api, &done)
}

/// Wait for `GET /callback?code=…&state=…` with our `state`; answer the
/// browser, and return the code.
async fn callback(listener: &tokio::net::TcpListener, state: &str) -> Result<Secret, CliError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut conn, _) = listener
            .accept()
            .await
            .map_err(|e| CliError::Io(e.to_string()))?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let target = line
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        let query = target.strip_prefix("/callback?").unwrap_or_default();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let ok = get("state").as_deref() == Some(state);
        let body = if ok {
            "Signed in. You can close this tab and return to your terminal."
        } else {
            "This is not the login the terminal is waiting for."
        };
        let status = if ok { "200 OK" } else { "400 Bad Request" };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(answer.as_bytes()).await;
        let _ = conn.shutdown().await;
        if let (true, Some(code)) = (ok, get("code")) {
            return Ok(Secret::new(code));
        }
    }
}

/// Unpadded base64url (RFC 4648 §5), as PKCE's S256 challenge is written.
fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The device login.
async fn device_login(g: &Global, api: &Api) -> Result<(), CliError> {
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
    say!("To log in, open {uri}");
    say!("and confirm the code {code}");
    if let Some(complete) = field("verification_uri_complete") {
        say!("(or open {complete} directly)");
    }
    say!("Waiting for you to confirm...");
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
            Some("done") => return keep(g, api, &polled),
            _ => return Err(CliError::Io("the server's poll answer is unknown".into())),
        }
    }
}

pub async fn logout(g: &Global) -> Result<(), CliError> {
    let api = match Api::logged_in(g) {
        Ok(api) => api,
        Err(CliError::NotLoggedIn(server)) => {
            say!("Not logged in to {server}.");
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
    say!("Logged out of {}.", api.server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        use sha2::Digest;
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            base64_url(&sha2::Sha256::digest(verifier.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
