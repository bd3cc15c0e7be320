//! The one table that maps every ingress outcome to a status, an `error` code and a message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookline_core::{Refusal, Rejection};
use serde::Serialize;

/// Seconds a sender should wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No source has that name.
    #[error("no source is named {0:?}")]
    UnknownSource(String),
    /// Signature missing, repeated, stale or wrong, or body malformed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The body is over `ingress.max_body_bytes`.
    #[error("body is larger than {0} bytes (ingress.max_body_bytes)")]
    PayloadTooLarge(usize),
    /// The body could not be read from the connection.
    #[error("could not read the request body")]
    BodyRead,
    /// Neither the broker nor the spool could take the delivery in time.
    #[error("the delivery could not be stored durably; retry later")]
    Unavailable,
    /// The method is not supported for this source.
    #[error("this source accepts POST only")]
    MethodNotAllowed,
    /// A `GET` echo check without `echo`.
    #[error("missing `echo` query parameter")]
    MissingEcho,
}

impl ApiError {
    /// Status and machine-readable code, the whole mapping in one place.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnknownSource(_) => (StatusCode::NOT_FOUND, "unknown_source"),
            ApiError::Rejected(Rejection::Signature(refusal)) => match refusal {
                Refusal::Missing { .. } | Refusal::Unreadable { .. } => {
                    (StatusCode::UNAUTHORIZED, "missing_signature")
                }
                Refusal::Duplicate { .. } => (StatusCode::BAD_REQUEST, "duplicate_header"),
                Refusal::Stale { .. } => (StatusCode::UNAUTHORIZED, "stale_timestamp"),
                Refusal::Mismatch { .. } => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            },
            ApiError::Rejected(Rejection::Malformed(_)) | ApiError::MissingEcho => {
                (StatusCode::BAD_REQUEST, "malformed_payload")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BodyRead => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (
            status,
            Json(Body {
                error: code,
                message: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Rejected(Rejection::Signature(refusal))
    }
}
