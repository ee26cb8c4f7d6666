//! The relay's one error type and its single mapping to a JSON error body.
//! Bodies never echo what the caller sent (no token, no query string).

use axum::response::{IntoResponse, Response};
use edge_core::error_body::error_response;
use http::{header, HeaderValue, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Missing, malformed, unknown or revoked credential: one body for all.
    #[error("missing, malformed, unknown or revoked credential")]
    Unauthorized,
    #[error("device reconnects too fast")]
    TooFast { retry_after_secs: u64 },
    /// This address presented too many bad credentials lately; nothing is
    /// looked up for it until its bucket refills.
    #[error("too many bad credentials from this address")]
    TooManyBadCredentials { retry_after_secs: u64 },
    #[error("relay is shutting down")]
    Draining,
    #[error("relay is at its tunnel capacity")]
    AtCapacity,
    #[error("this account's devices hold as many tunnels on this relay as allowed")]
    OwnerQuota,
    #[error("{0}")]
    BadRequest(String),
    #[error("device is not connected")]
    Offline,
    #[error("could not open a stream to the device: {0}")]
    Stream(String),
    #[error("internal error")]
    Internal,
    #[error("cannot start: {0}")]
    Startup(String),
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::TooFast { .. } => (StatusCode::TOO_MANY_REQUESTS, "reconnecting_too_fast"),
            Self::TooManyBadCredentials { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_bad_credentials")
            }
            Self::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            Self::AtCapacity => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            Self::OwnerQuota => (StatusCode::TOO_MANY_REQUESTS, "tunnel_quota"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Offline => (StatusCode::NOT_FOUND, directory::internal_api::CODE_OFFLINE),
            Self::Stream(_) => (StatusCode::BAD_GATEWAY, "stream_failed"),
            Self::Internal | Self::Startup(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut res = error_response(status, code, self.to_string());
        let retry_after = match self {
            Self::TooFast { retry_after_secs }
            | Self::TooManyBadCredentials { retry_after_secs } => Some(retry_after_secs.max(1)),
            Self::OwnerQuota => Some(60),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
