//! The OAuth 2.0 Device Authorization Grant (RFC 8628) against the
//! provider, for logins from a terminal (the `edge` CLI, ADR 028): ask the
//! provider's device authorization endpoint for a user code, then poll its
//! token endpoint with the device code until the user approved (or denied,
//! or the code expired). The ID token it returns is verified as any login's
//! (no nonce: this grant sends none) and UserInfo fills the claims it
//! lacks. The api-server stays the only OAuth client: the device code goes
//! to the CLI sealed by the api-server and comes back on every poll.

use crate::oidc::{error_chain, Identity, OidcClient, OidcError};
use edge_core::Secret;
use serde::Deserialize;

/// The grant type of a device-code token request.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The polling interval when the provider names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL_SECS: u64 = 5;

/// A started device login: what the user is shown, and the code to poll
/// with (a secret: whoever holds it gets the user's tokens once approved).
#[derive(Debug)]
pub struct DeviceLogin {
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

/// Where a device login stands.
#[derive(Debug)]
pub enum DevicePoll {
    /// The user has not approved yet: ask again after the interval.
    Pending,
    /// Asked too often: add five seconds to the interval (RFC 8628 §3.5).
    SlowDown,
    /// Approved: who logged in.
    Done(Box<Identity>),
}

#[derive(Deserialize)]
struct AuthorizationAnswer {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

impl OidcClient {
    /// Ask the provider for a user code; `None` when it has no device
    /// authorization endpoint.
    pub async fn start_device_login(&self) -> Result<Option<DeviceLogin>, OidcError> {
        let m = self.metadata().await?;
        let Some(endpoint) = m
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
        else {
            return Ok(None);
        };
        let scope = self
            .settings()
            .scopes
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("openid"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ");
        let body = self.post_form(&endpoint, &[("scope", &scope)]).await?;
        let answer: AuthorizationAnswer = match body {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                OidcError::Unavailable("unreadable device authorization answer".into())
            })?,
            Err(code) => return Err(OidcError::Rejected(code)),
        };
        Ok(Some(DeviceLogin {
            device_code: Secret::new(answer.device_code),
            user_code: answer.user_code,
            verification_uri: answer.verification_uri,
            verification_uri_complete: answer.verification_uri_complete,
            expires_in: answer.expires_in,
            interval: answer.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1),
        }))
    }

    /// Ask the token endpoint once whether `device_code` was approved. A
    /// denied or expired login is `Rejected` (`access_denied`,
    /// `expired_token`).
    pub async fn poll_device_login(&self, device_code: &Secret) -> Result<DevicePoll, OidcError> {
        let m = self.metadata().await?;
        let endpoint = m
            .token_endpoint()
            .ok_or_else(|| OidcError::Config("the provider has no token endpoint".into()))?
            .url()
            .to_string();
        let body = self
            .post_form(
                &endpoint,
                &[
                    ("grant_type", DEVICE_CODE_GRANT),
                    ("device_code", device_code.expose()),
                ],
            )
            .await?;
        match body {
            Ok(bytes) => {
                let token: openidconnect::core::CoreTokenResponse = serde_json::from_slice(&bytes)
                    .map_err(|_| OidcError::Unavailable("unreadable token response".into()))?;
                let identity = self.identity_of(m, &token, None).await?;
                Ok(DevicePoll::Done(Box::new(identity)))
            }
            Err(code) if code == "authorization_pending" => Ok(DevicePoll::Pending),
            Err(code) if code == "slow_down" => Ok(DevicePoll::SlowDown),
            Err(code) => Err(OidcError::Rejected(code)),
        }
    }

    /// POST `form` to `endpoint` with this client's authentication
    /// (`client_secret_basic`, or `client_id` in the body for a public
    /// client): `Ok(body)` on success, `Err(code)` for the provider's OAuth
    /// error answer.
    async fn post_form(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<Result<Vec<u8>, String>, OidcError> {
        let settings = self.settings();
        let mut req = self
            .http
            .post(endpoint)
            .header("accept", "application/json");
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        match &settings.client_secret {
            Some(secret) => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(enc(&settings.client_id), Some(enc(secret.expose())));
            }
            None => fields.push(("client_id", &settings.client_id)),
        }
        let res = req
            .form(&fields)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(error_chain(&e.without_url())))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| OidcError::Unavailable(error_chain(&e.without_url())))?;
        if bytes.len() > crate::oidc::MAX_PROVIDER_BODY {
            return Err(OidcError::Unavailable("provider response too large".into()));
        }
        if status.is_success() {
            return Ok(Ok(bytes.to_vec()));
        }
        match serde_json::from_slice::<ErrorAnswer>(&bytes) {
            Ok(e) if status.is_client_error() => Ok(Err(stable_code(&e.error))),
            _ => Err(OidcError::Unavailable(format!(
                "the provider answered {status}"
            ))),
        }
    }
}

/// An OAuth error code as we pass it on: RFC 6749 codes are
/// `%x20-21 / %x23-5B / %x5D-7E`; anything odd becomes `invalid_response`.
fn stable_code(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        code.to_owned()
    } else {
        "invalid_response".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_error_codes_are_not_passed_on() {
        assert_eq!(
            stable_code("authorization_pending"),
            "authorization_pending"
        );
        assert_eq!(stable_code("<b>x</b>"), "invalid_response");
        assert_eq!(stable_code(""), "invalid_response");
    }
}
