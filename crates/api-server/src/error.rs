//! The api-server's one error type and its single mapping to the JSON error
//! body. Messages never include secrets or caller-supplied values.

use axum::response::{IntoResponse, Response};
use directory::DirectoryError;
use edge_core::error_body::{error_response, ErrorBody};
use http::StatusCode;

/// `Retry-After` when the database or the audit trail cannot be written.
const STORE_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("not found")]
    NotFound,
    #[error("the device is not connected")]
    DeviceOffline,
    #[error("the relay is unreachable")]
    RelayUnavailable,
    #[error("the device directory is unavailable; try again shortly")]
    DirectoryUnavailable,
    #[error("the device could not be reached")]
    DeviceUnreachable,
    #[error("the device did not answer in time")]
    DeviceTimeout,
    #[error("{0}")]
    BadRequest(String),
    #[error("missing CSRF header or foreign origin")]
    Forbidden,
    #[error("login failed: {0}")]
    LoginFailed(String),
    #[error("the identity provider is unavailable")]
    IdpUnavailable,
    #[error("invalid, expired or already used pairing code")]
    InvalidPairingCode,
    #[error("too many failed attempts; retry later")]
    RateLimited(u64),
    #[error("cross-site requests are not accepted here")]
    CrossSite,
    #[error("box content is served on the device's own origin; open it from the console")]
    UseDeviceOrigin,
    #[error("open this device from the console to use it")]
    DeviceAccessRequired,
    #[error(
        "the link to this device has expired or was already used; open it again from the console"
    )]
    InvalidTicket,
    #[error("service workers are not allowed on device origins")]
    ServiceWorkerRefused,
    #[error("the change is saved and the credential revoked, but the relay could not close the live tunnel; it will be closed within {0} s")]
    TunnelNotClosed(u64),
    #[error("invalid logout token: {0}")]
    InvalidLogoutToken(String),
    #[error("the request body is larger than this route accepts")]
    PayloadTooLarge,
    #[error("the request body stalled; send it without long pauses")]
    RequestTimeout,
    #[error("unsupported content type for this route")]
    UnsupportedMediaType,
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("webhook URL refused: {0}")]
    WebhookRefused(String),
    #[error("the database is unavailable; try again shortly")]
    StoreUnavailable,
    #[error("remote access is paused: its audit trail cannot be written; try again shortly")]
    AuditUnavailable,
    #[error("this device's agent reaches only its local service; update the agent to forward to other targets")]
    TargetNotSupported,
    #[error("the device's agent does not allow this target (see edge-agent --allow)")]
    TargetNotAllowed,
    #[error("the target did not accept the connection on the device's side")]
    TargetUnreachable,
    #[error("bearer credentials are not accepted from a browser")]
    BearerFromBrowser,
    #[error("this route takes a bearer session (edge login), not the console's cookie")]
    BearerRequired,
    #[error("the identity provider offers no device login")]
    DeviceLoginUnsupported,
    #[error("this credential's scopes do not cover this route")]
    InsufficientScope,
    /// The token endpoint's errors, in RFC 6749 §5.2's own body.
    #[error("{0}")]
    OAuth(#[from] OAuthError),
    #[error("internal error")]
    Internal,
    #[error("configuration: {0}")]
    Config(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::DeviceOffline => (StatusCode::SERVICE_UNAVAILABLE, "device_offline"),
            Self::RelayUnavailable => (StatusCode::BAD_GATEWAY, "relay_unavailable"),
            Self::DirectoryUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "directory_unavailable")
            }
            Self::DeviceUnreachable => (StatusCode::BAD_GATEWAY, "device_unreachable"),
            Self::DeviceTimeout => (StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::LoginFailed(_) => (StatusCode::BAD_REQUEST, "login_failed"),
            Self::IdpUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable"),
            Self::InvalidPairingCode => (StatusCode::BAD_REQUEST, "invalid_pairing_code"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::CrossSite => (StatusCode::FORBIDDEN, "cross_site"),
            Self::UseDeviceOrigin => (StatusCode::FORBIDDEN, "use_device_origin"),
            Self::DeviceAccessRequired => (StatusCode::UNAUTHORIZED, "device_access_required"),
            Self::InvalidTicket => (StatusCode::FORBIDDEN, "invalid_ticket"),
            Self::ServiceWorkerRefused => (StatusCode::FORBIDDEN, "service_worker_refused"),
            Self::TunnelNotClosed(_) => (StatusCode::BAD_GATEWAY, "tunnel_not_closed"),
            Self::InvalidLogoutToken(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::QuotaExceeded(_) => (StatusCode::CONFLICT, "quota_exceeded"),
            Self::WebhookRefused(_) => (StatusCode::BAD_REQUEST, "webhook_url_refused"),
            Self::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            Self::TargetNotSupported => (StatusCode::CONFLICT, "target_not_supported"),
            Self::TargetNotAllowed => (StatusCode::FORBIDDEN, "target_not_allowed"),
            Self::TargetUnreachable => (StatusCode::BAD_GATEWAY, "target_unreachable"),
            Self::BearerFromBrowser => (StatusCode::FORBIDDEN, "bearer_from_browser"),
            Self::BearerRequired => (StatusCode::FORBIDDEN, "bearer_required"),
            Self::DeviceLoginUnsupported => {
                (StatusCode::NOT_IMPLEMENTED, "device_login_unsupported")
            }
            Self::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::OAuth(e) => (e.status(), e.code()),
            Self::Internal | Self::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::OAuth(e) = self {
            return e.into_response();
        }
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::info!(code, status = status.as_u16(), "request failed");
        }
        let mut res = error_response(status, code, self.to_string());
        let retry_after = match self {
            Self::RateLimited(secs) => Some(secs.max(1)),
            Self::StoreUnavailable | Self::AuditUnavailable => Some(STORE_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        res
    }
}

impl From<store::StoreError> for ApiError {
    fn from(err: store::StoreError) -> Self {
        if matches!(err, store::StoreError::QuotaExceeded) {
            return Self::QuotaExceeded(err.to_string());
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, "store unavailable");
            return Self::StoreUnavailable;
        }
        tracing::error!(error = %err, "store failure");
        Self::Internal
    }
}

impl From<DirectoryError> for ApiError {
    fn from(err: DirectoryError) -> Self {
        Self::from_directory(&err)
    }
}

impl ApiError {
    /// What a directory failure means to the caller.
    pub fn from_directory(err: &DirectoryError) -> Self {
        match err {
            DirectoryError::Offline | DirectoryError::Draining => Self::DeviceOffline,
            DirectoryError::Unreachable(e) => {
                tracing::warn!(error = %e, "relay unreachable");
                Self::RelayUnavailable
            }
            DirectoryError::Timeout => Self::RelayUnavailable,
            DirectoryError::Unavailable(e) => {
                tracing::warn!(error = %e, "device directory unavailable");
                Self::DirectoryUnavailable
            }
            DirectoryError::NotSupported => Self::TargetNotSupported,
            DirectoryError::Relay(e) | DirectoryError::Stream(e) => {
                tracing::warn!(error = %e, "relay could not open a stream");
                Self::DeviceUnreachable
            }
        }
    }
}

impl From<auth::oidc::OidcError> for ApiError {
    fn from(err: auth::oidc::OidcError) -> Self {
        use auth::oidc::OidcError;
        tracing::warn!(error = %err, "login failed");
        match err {
            OidcError::Unavailable(_) => Self::IdpUnavailable,
            OidcError::Rejected(e) => {
                Self::LoginFailed(format!("the provider rejected the code ({e})"))
            }
            OidcError::InvalidToken { .. } => {
                Self::LoginFailed("the ID token was not acceptable".into())
            }
            OidcError::Config(_) => Self::Internal,
        }
    }
}

/// An error of the OAuth token endpoint (RFC 6749 §5.2), answered as
/// `{"error": code, "error_description": message}` with `Cache-Control:
/// no-store`, the shape OAuth client libraries read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Unknown client, wrong secret or key, expired account or secret:
    /// one answer for all, so a caller learns nothing of which.
    /// `basic`: the client tried HTTP Basic (the answer then challenges it).
    #[error("client authentication failed")]
    InvalidClient { basic: bool },
    #[error("only the client_credentials grant is supported here")]
    UnsupportedGrantType,
    #[error("the requested scope is unknown or beyond the client's")]
    InvalidScope,
}

impl OAuthError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient { .. } => "invalid_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code(),
            "error_description": self.to_string(),
        });
        let mut res = (self.status(), axum::Json(body)).into_response();
        let headers = res.headers_mut();
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if matches!(self, Self::InvalidClient { basic: true }) {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"edge\""),
            );
        }
        res
    }
}

/// The answers any route for a signed-in caller may give besides its own
/// (401 without a valid session, 500), written once for the routes'
/// `#[utoipa::path(responses(..))]`.
#[derive(utoipa::IntoResponses)]
pub enum SessionErrors {
    #[response(status = 401, description = "no valid session")]
    NoSession(ErrorBody),
    #[response(status = 500, description = "internal error")]
    Internal(ErrorBody),
}

/// [`SessionErrors`] and the 403 of a state-changing route called
/// cross-site.
#[derive(utoipa::IntoResponses)]
pub enum ChangeErrors {
    #[response(status = 401, description = "no valid session")]
    NoSession(ErrorBody),
    #[response(
        status = 403,
        description = "cross-site request (missing `X-CSRF: 1` or foreign `Origin`)"
    )]
    CrossSite(ErrorBody),
    #[response(status = 500, description = "internal error")]
    Internal(ErrorBody),
}

/// [`SessionErrors`] and the 403 of a change only a person may make: one
/// called cross-site, or with a service account's token.
#[derive(utoipa::IntoResponses)]
pub enum PersonChangeErrors {
    #[response(status = 401, description = "no valid session")]
    NoSession(ErrorBody),
    #[response(
        status = 403,
        description = "cross-site request, or a service account's token"
    )]
    NotAPerson(ErrorBody),
    #[response(status = 500, description = "internal error")]
    Internal(ErrorBody),
}
