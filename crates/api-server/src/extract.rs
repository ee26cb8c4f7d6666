//! Body extractors whose every rejection is this API's JSON error: a body
//! over the route's limit is 413 `payload_too_large`, a body that stalls
//! past the idle timeout is 408 `request_timeout`, a wrong content type is
//! 415, anything else unreadable is 400. Messages never echo the body (it
//! may hold a pairing code).

use crate::error::ApiError;
use axum::extract::rejection::{BytesRejection, FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// Whether `err` (or anything behind it) is the body idle timeout.
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn from_bytes(rejection: &BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    if let BytesRejection::FailedToBufferBody(e) = rejection {
        if is_body_timeout(e) {
            return ApiError::RequestTimeout;
        }
    }
    ApiError::BadRequest("the request body could not be read".into())
}

/// A public id from a path (a session's, a pairing code's): 1 to 64 of
/// `A-Z a-z 0-9 _ -`. Anything else names nothing (404) and never reaches
/// the store (PostgreSQL refuses text with NUL: that was a 500).
pub fn public_id(raw: &str) -> Result<&str, ApiError> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(raw).ok_or(ApiError::NotFound)
}

/// `Json<T>` with JSON errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::BytesRejection(b)) => Err(from_bytes(&b)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(_) => Err(ApiError::BadRequest(
                "the request body is not the JSON this route expects".into(),
            )),
        }
    }
}

/// `Form<T>` with JSON errors.
#[derive(Debug)]
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Self(v)),
            Err(FormRejection::BytesRejection(b)) => Err(from_bytes(&b)),
            Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(_) => Err(ApiError::BadRequest(
                "the request body is not the form this route expects".into(),
            )),
        }
    }
}

/// `Query<T>` with JSON errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|_| {
                ApiError::BadRequest("the query string is not what this route expects".into())
            })
    }
}
