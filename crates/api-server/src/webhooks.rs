//! Webhooks: an owner registers URLs that hear of their devices' health
//! changes. Each delivery is a JSON `POST` signed like Stripe's:
//! `Edge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the webhook's secret (shown once, at registration), plus
//! `Edge-Webhook-Id: <delivery id>`; a receiver checks the signature,
//! refuses a `t` more than five minutes old (replay) and drops ids it has
//! seen. Failures are retried with backoff (eight attempts), and every
//! attempt is in the delivery log the API shows. A URL whose host is (or
//! resolves to) a loopback, private, link-local or otherwise non-public
//! address is refused unless the operator allows it, at registration and
//! again at each delivery, which connects to the address it checked (no
//! DNS rebinding) and follows no redirect.

use crate::error::{ApiError, ChangeErrors, SessionErrors};
use crate::extract::ApiJson;
use crate::session::CurrentUser;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use edge_core::error_body::ErrorBody;
use edge_core::time::now_ms;
use edge_core::Secret;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts per delivery before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// Deliveries one worker pass takes at most.
const BATCH: i64 = 50;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "edge-signature";
/// The delivery id header.
pub const ID_HEADER: &str = "edge-webhook-id";

/// `v1` of a delivery: hex HMAC-SHA256 of `"<t>.<body>"`.
pub fn sign(secret: &Secret, t: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// The URL, if it is one a webhook may have, and the addresses to use.
async fn allowed(url: &str, allow_private: bool) -> Result<(url::Url, SocketAddr), ApiError> {
    let refused = |why: &str| ApiError::WebhookRefused(why.to_owned());
    if url.len() > 2000 {
        return Err(refused("the URL is longer than 2000 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|_| refused("not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(refused("the URL must be https:// (or http://)"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused("the URL must not carry credentials"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| refused("the URL has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| refused("the host did not resolve in time"))?
    .map_err(|_| refused("the host does not resolve"))?
    .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| refused("the host does not resolve"))?;
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(refused(
            "the host is a loopback, private or otherwise non-public address",
        ));
    }
    Ok((parsed, first))
}

/// The wait before attempt `n + 1` (after `n` failed ones).
fn backoff(base: Duration, failed: i64) -> Duration {
    let factor = 3u32.saturating_pow(u32::try_from(failed.saturating_sub(1)).unwrap_or(u32::MAX));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// One attempt: the receiver's status, or why there was none.
async fn attempt(
    state: &AppState,
    hook: &store::Webhook,
    d: &store::Delivery,
) -> Result<u16, String> {
    let (url, addr) = allowed(&hook.url, state.settings.webhook_allow_private)
        .await
        .map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let tls = edge_tls::client_config(None).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(state.settings.webhook_timeout)
        .resolve(&host, addr)
        .no_proxy()
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .map_err(|e| e.to_string())?;
    let t = now_ms() / 1000;
    let res = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "edge-webhooks/1")
        .header(ID_HEADER, &d.id)
        .header(
            SIGNATURE_HEADER,
            format!("t={t},v1={}", sign(&hook.secret, t, &d.body)),
        )
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else {
                "cannot reach the receiver".to_owned()
            }
        })?;
    Ok(res.status().as_u16())
}

/// Attempt every due delivery once; returns how many were attempted.
pub async fn deliver_due(state: &AppState) -> Result<usize, ApiError> {
    let now = now_ms();
    let lease =
        now + i64::try_from(state.settings.webhook_timeout.as_millis() * 2).unwrap_or(60_000);
    let due = state.store.due_deliveries(now, BATCH).await?;
    let mut work = Vec::new();
    for (d, hook) in due {
        let Some(at) = d.next_attempt_at else {
            continue;
        };
        if state.store.claim_delivery(&d.id, at, lease).await? {
            work.push((d, hook));
        }
    }
    let n = work.len();
    futures_util::future::join_all(work.into_iter().map(|(d, hook)| async move {
        let result = attempt(state, &hook, &d).await;
        let attempts = d.attempts + 1;
        let done_at = now_ms();
        let (status, error, delivered) = match result {
            Ok(s) if (200..300).contains(&s) => (Some(i64::from(s)), None, true),
            Ok(s) => (Some(i64::from(s)), Some(format!("the receiver answered {s}")), false),
            Err(e) => (None, Some(e), false),
        };
        let next = (!delivered && attempts < MAX_ATTEMPTS).then(|| {
            done_at + i64::try_from(backoff(state.settings.webhook_retry_base, attempts).as_millis()).unwrap_or(i64::MAX / 2)
        });
        if let Err(err) = state
            .store
            .record_attempt(&d.id, attempts, status, error.as_deref(), next, delivered.then_some(done_at))
            .await
        {
            tracing::warn!(webhook = %hook.id, error = %err, "cannot record a delivery attempt");
        }
        if !delivered {
            tracing::info!(webhook = %hook.id, delivery = %d.id, attempts, "webhook delivery failed");
        }
        state.signals.delivery_attempts.send_modify(|n| *n += 1);
    }))
    .await;
    Ok(n)
}

/// Deliver until `shutdown`: every `webhook_poll`, or at once when the
/// health pass queued deliveries.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.settings.webhook_poll) => {}
            _ = state.signals.webhook_wake.notified() => {}
        }
        if let Err(err) = deliver_due(&state).await {
            tracing::warn!(error = %err, "webhook deliveries failed; retrying next time");
        }
    }
}

/// A webhook id as the store makes them (32 hex digits); anything else
/// names no webhook.
fn webhook_id(id: &str) -> Result<&str, ApiError> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(id)
        .ok_or(ApiError::NotFound)
}

/// A registered webhook.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    id: String,
    url: String,
    created_at: i64,
}

/// A new webhook with its signing secret (shown once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    id: String,
    url: String,
    created_at: i64,
    /// Verifies `Edge-Signature`; shown only now.
    secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `https://…` (or `http://…`) that accepts `POST`.
    url: String,
}

/// One delivery as its owner sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: String,
    /// `pending`, `delivered` or `failed` (given up after the last attempt).
    state: &'static str,
    created_at: i64,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    delivered_at: Option<i64>,
    /// What was (or will be) sent.
    #[schema(value_type = Object)]
    event: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "telemetry",
    security(("session" = [])),
    responses(
        (status = 200, description = "the caller's webhooks", body = Vec<WebhookView>),
        SessionErrors
    )
)]
pub async fn list(
    user: CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    Ok(Json(
        state
            .store
            .webhooks(user.id)
            .await?
            .into_iter()
            .map(|w| WebhookView {
                id: w.id,
                url: w.url,
                created_at: w.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "telemetry",
    request_body = NewWebhook,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "the webhook and its secret, shown once", body = CreatedWebhook),
        (status = 400, description = "the URL is malformed or refused (`webhook_url_refused`)", body = ErrorBody),
        (status = 409, description = "as many webhooks as an account may have", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn create(
    user: CurrentUser,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    allowed(&new.url, state.settings.webhook_allow_private).await?;
    let secret = Secret::random(32);
    let hook = state
        .store
        .create_webhook(user.id, &new.url, &secret)
        .await?;
    state.audit.record(
        user.id,
        "webhook_created",
        Some(hook.id.clone()),
        serde_json::json!({}),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            id: hook.id,
            url: hook.url,
            created_at: hook.created_at,
            secret: secret.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "telemetry",
    params(("id" = String, Path, description = "webhook id")),
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "deleted, with its delivery log"),
        (status = 404, description = "no such webhook of the caller's", body = ErrorBody),
        ChangeErrors
    )
)]
pub async fn delete(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .store
        .delete_webhook(user.id, webhook_id(&id)?)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state
        .audit
        .record(user.id, "webhook_deleted", Some(id), serde_json::json!({}));
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "telemetry",
    params(("id" = String, Path, description = "webhook id")),
    security(("session" = [])),
    responses(
        (status = 200, description = "the webhook's newest 100 deliveries", body = Vec<DeliveryView>),
        (status = 404, description = "no such webhook of the caller's", body = ErrorBody),
        SessionErrors
    )
)]
pub async fn deliveries(
    user: CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let rows = state
        .store
        .deliveries(user.id, webhook_id(&id)?, 100)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DeliveryView {
                state: match (d.delivered_at, d.next_attempt_at) {
                    (Some(_), _) => "delivered",
                    (None, Some(_)) => "pending",
                    (None, None) => "failed",
                },
                event: serde_json::from_str(&d.body).unwrap_or_default(),
                id: d.id,
                created_at: d.created_at,
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at,
                last_status: d.last_status,
                last_error: d.last_error,
                delivered_at: d.delivered_at,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(
                !is_public(ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))),
                "{ip}"
            );
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(
                is_public(ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))),
                "{ip}"
            );
        }
    }

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        let s = Secret::new("k");
        let a = sign(&s, 1, "{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign(&s, 2, "{}"));
        assert_ne!(a, sign(&s, 1, "{ }"));
        assert_ne!(a, sign(&Secret::new("j"), 1, "{}"));
    }

    #[test]
    fn backoff_triples_up_to_six_hours() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff(base, 1), Duration::from_secs(10));
        assert_eq!(backoff(base, 2), Duration::from_secs(30));
        assert_eq!(backoff(base, 3), Duration::from_secs(90));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }
}
