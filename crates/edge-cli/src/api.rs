//! The REST API as the CLI calls it: the server's base URL (TLS, or plain
//! http only to loopback unless allowed), the bearer session on every call,
//! JSON both ways, and the server's error body turned into
//! [`CliError::Api`] (code, message, request id).

use crate::credentials::{self, Credential, DEFAULT_SERVER};
use crate::{CliError, Global, Status};
use edge_core::Secret;
use serde_json::Value;
use std::time::Duration;

/// A client of one server, with or without a session.
#[derive(Debug, Clone)]
pub struct Api {
    pub server: String,
    http: reqwest::Client,
    token: Option<Secret>,
}

/// The server to use: `--server`, else the stored credential's, else the
/// default; checked for transport.
pub fn server_of(g: &Global, stored: Option<&Credential>) -> Result<String, CliError> {
    let server = g
        .server
        .clone()
        .or_else(|| stored.map(|c| c.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let server = server.trim_end_matches('/').to_owned();
    let url = url::Url::parse(&server)
        .map_err(|e| CliError::Usage(format!("--server {server:?}: {e}")))?;
    let loopback = edge_core::net::is_loopback_url(&url);
    match url.scheme() {
        "https" => Ok(server),
        "http" if loopback || g.insecure_plaintext => Ok(server),
        "http" => Err(CliError::Usage(format!(
            "{server} is plain http to a non-loopback address: use https:// (or --insecure-plaintext)"
        ))),
        other => Err(CliError::Usage(format!("unsupported URL scheme {other:?}"))),
    }
}

/// A service account's client secret, from the environment only (never a
/// flag: it would show in the process list).
pub const CLIENT_SECRET_ENV: &str = "EDGE_CLIENT_SECRET";

impl Api {
    /// A client with the credential to act with: with `--client-id` (or
    /// `EDGE_CLIENT_ID`) and `EDGE_CLIENT_SECRET`, a service account's
    /// fresh access token (ADR 029); else the stored login.
    pub async fn acting(g: &Global) -> Result<Self, CliError> {
        let Some(client_id) = g.client_id.as_deref() else {
            return Self::logged_in(g);
        };
        let secret = std::env::var(CLIENT_SECRET_ENV)
            .map(Secret::new)
            .map_err(|_| {
                CliError::Usage(format!(
                    "--client-id needs the secret in {CLIENT_SECRET_ENV}"
                ))
            })?;
        let anon = Self::new(g, server_of(g, None)?, None)?;
        let token = anon.client_credentials(client_id, &secret).await?;
        Ok(Self {
            token: Some(token),
            ..anon
        })
    }

    /// A service account's access token from the token endpoint
    /// (`client_credentials`, `client_secret_basic`).
    async fn client_credentials(&self, id: &str, secret: &Secret) -> Result<Secret, CliError> {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let res = self
            .http
            .post(format!("{}/api/oauth/token", self.server))
            .basic_auth(encode(id), Some(encode(secret.expose())))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| self.unreachable(e))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match body["access_token"].as_str() {
            Some(token) if status == 200 => Ok(Secret::new(token)),
            _ => Err(CliError::Api {
                status,
                code: body["error"]
                    .as_str()
                    .unwrap_or("unexpected_answer")
                    .to_owned(),
                message: body["error_description"]
                    .as_str()
                    .unwrap_or("the token endpoint refused the client")
                    .to_owned(),
                request_id: None,
            }),
        }
    }

    /// A client without a session (for the login itself).
    pub fn anonymous(g: &Global) -> Result<Self, CliError> {
        let stored = credentials::load(g)?;
        Self::new(g, server_of(g, stored.as_ref())?, None)
    }

    /// A client with the stored session; an error when there is none for
    /// this server.
    pub fn logged_in(g: &Global) -> Result<Self, CliError> {
        let stored = credentials::load(g)?;
        let server = server_of(g, stored.as_ref())?;
        let token = stored
            .filter(|c| c.server.trim_end_matches('/') == server)
            .map(|c| c.token)
            .ok_or_else(|| CliError::NotLoggedIn(server.clone()))?;
        Self::new(g, server, Some(token))
    }

    fn new(g: &Global, server: String, token: Option<Secret>) -> Result<Self, CliError> {
        let tls = edge_tls::client_config(g.ca_file.as_deref())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            server,
            http,
            token,
        })
    }

    /// A request to `path` with the session's bearer.
    pub fn request(&self, method: http::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.server))
            .header(http::header::ACCEPT, "application/json");
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Send `req`; the answer's JSON, or the server's error.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let res = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|_| {
                CliError::Io(format!(
                    "{} answered something that is not JSON",
                    self.server
                ))
            });
        }
        Err(api_error(status.as_u16(), &bytes))
    }

    pub fn unreachable(&self, e: reqwest::Error) -> CliError {
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        CliError::Unreachable {
            server: self.server.clone(),
            detail,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(http::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let req = self
            .request(http::Method::POST, path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(req).await
    }

    /// Every device of the caller's (page by page), filtered by status and
    /// labels.
    pub async fn devices(
        &self,
        status: Option<Status>,
        labels: &[String],
    ) -> Result<Vec<Value>, CliError> {
        const PAGE: usize = 200;
        let mut all = Vec::new();
        loop {
            let mut path = format!("/api/devices?limit={PAGE}&offset={}", all.len());
            if let Some(s) = status {
                path.push_str("&status=");
                path.push_str(s.as_str());
            }
            let page = self.get(&path).await?;
            let page = page.as_array().cloned().unwrap_or_default();
            let n = page.len();
            all.extend(page);
            if n < PAGE {
                break;
            }
        }
        all.retain(|d| {
            labels.iter().all(|want| {
                d["labels"]
                    .as_array()
                    .is_some_and(|ls| ls.iter().any(|l| l.as_str() == Some(want)))
            })
        });
        Ok(all)
    }

    /// A device id from an id or an exact, unique name of the caller's.
    pub async fn resolve(&self, device: &str) -> Result<String, CliError> {
        if is_uuid(device) {
            return Ok(device.to_ascii_lowercase());
        }
        let named: Vec<Value> = self
            .devices(None, &[])
            .await?
            .into_iter()
            .filter(|d| d["name"].as_str() == Some(device))
            .collect();
        match named.as_slice() {
            [one] => Ok(one["id"].as_str().unwrap_or_default().to_owned()),
            [] => Err(CliError::Usage(format!(
                "you have no device named {device:?}"
            ))),
            _ => Err(CliError::Usage(format!(
                "{} devices are named {device:?}: use the id",
                named.len()
            ))),
        }
    }
}

/// The server's error body as [`CliError::Api`].
pub fn api_error(status: u16, body: &[u8]) -> CliError {
    match serde_json::from_slice::<edge_core::error_body::ErrorBody>(body) {
        Ok(b) => CliError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
            request_id: b.error.request_id,
        },
        Err(_) => CliError::Api {
            status,
            code: "unexpected_answer".into(),
            message: "the server's answer is not an error body".into(),
            request_id: None,
        },
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn global(server: &str, insecure: bool) -> Global {
        Global {
            server: Some(server.into()),
            config_dir: None,
            ca_file: None,
            insecure_plaintext: insecure,
            client_id: None,
        }
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        assert!(server_of(&global("https://cloud.example/", false), None).is_ok());
        assert_eq!(
            server_of(&global("http://127.0.0.1:3721/", false), None).unwrap(),
            "http://127.0.0.1:3721"
        );
        assert!(server_of(&global("http://cloud.example", false), None).is_err());
        assert!(server_of(&global("http://cloud.example", true), None).is_ok());
        assert!(server_of(&global("ftp://x", true), None).is_err());
    }

    #[test]
    fn error_bodies_carry_code_and_request_id() {
        let body = br#"{"error":{"code":"not_found","message":"not found","request_id":"r-1"}}"#;
        let e = api_error(404, body);
        assert_eq!(
            e.to_string(),
            "not found (not_found, HTTP 404, request r-1)"
        );
        let e = api_error(502, b"<html>");
        assert!(e.to_string().contains("unexpected_answer"), "{e}");
        assert!(is_uuid("0b5e2f0c-6a4f-4c1e-9a5e-2b7d3c1f0a9e"));
        assert!(!is_uuid("camera-1"));
    }
}
