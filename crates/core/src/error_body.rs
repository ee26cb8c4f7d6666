//! The one JSON error shape every HTTP surface of the platform returns:
//! `{"error": {"code": "<stable_code>", "message": "<human text>",
//! "request_id": "<id>"}}` (the id of the request being served, when there
//! is one: see `request_id`).

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Every error response's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unauthenticated`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Build the response for `status` with a stable machine `code`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            request_id: crate::request_id::current().map(|id| id.to_string()),
        },
    };
    (status, Json(body)).into_response()
}
