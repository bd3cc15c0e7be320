//! The one table that maps every ingress outcome to a status, an `error` code and a message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookline_core::{Refusal, Rejection};
use serde::Serialize;

/// Seconds a sender should wait before retrying after a 503 from a failing store.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// Seconds a sender should wait after a 503 for overload: capacity frees up quickly.
const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// Longest piece of a request's own text (a source name) repeated in an answer or a log.
pub(crate) const ECHO_LIMIT: usize = 64;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No source has that name (the name is cut to [`ECHO_LIMIT`] characters).
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
    /// The body did not arrive within `ingress.body_timeout_ms`.
    #[error("the body did not arrive within ingress.body_timeout_ms")]
    BodyTimeout,
    /// The request took longer than `ingress.request_timeout_ms`.
    #[error("the request took longer than ingress.request_timeout_ms; retry later")]
    RequestTimeout,
    /// A limit on what is held at once was reached; the text names it.
    #[error("too busy: {0}; retry later")]
    Overloaded(&'static str),
    /// Neither the broker nor the spool could take the delivery in time.
    #[error("the delivery could not be stored durably; retry later")]
    Unavailable,
    /// The method is not supported for this source.
    #[error("this source accepts POST only")]
    MethodNotAllowed,
    /// A `GET` echo check without a usable `echo`; the text says why.
    #[error("{0}")]
    BadEcho(&'static str),
}

/// Every `error` code an answer can carry (the metric label set of refusals).
pub(crate) const CODES: &[&str] = &[
    "unknown_source",
    "missing_signature",
    "duplicate_header",
    "stale_timestamp",
    "invalid_signature",
    "malformed_payload",
    "payload_too_large",
    "bad_request",
    "request_timeout",
    "unavailable",
    "method_not_allowed",
];

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
            ApiError::Rejected(Rejection::Malformed(_)) | ApiError::BadEcho(_) => {
                (StatusCode::BAD_REQUEST, "malformed_payload")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BodyRead => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::RequestTimeout | ApiError::Overloaded(_) | ApiError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
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
        let headers = response.headers_mut();
        match self {
            ApiError::Overloaded(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(OVERLOAD_RETRY_AFTER_SECS),
                );
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        if matches!(
            self,
            ApiError::BodyTimeout | ApiError::BodyRead | ApiError::PayloadTooLarge(_)
        ) {
            // The rest of the body is never read: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl ApiError {
    /// The 404 for `name`, repeating at most [`ECHO_LIMIT`] characters of it.
    pub fn unknown_source(name: &str) -> Self {
        ApiError::UnknownSource(cut(name, ECHO_LIMIT))
    }
}

/// At most `max` characters of `text`, marked when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Rejected(Rejection::Signature(refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_for_the_metrics() {
        let errors = [
            ApiError::unknown_source("x"),
            Refusal::Missing { header: "h" }.into(),
            Refusal::Duplicate { header: "h" }.into(),
            Refusal::Stale {
                header: "h",
                skew_secs: 1,
                tolerance_secs: 0,
            }
            .into(),
            Refusal::Mismatch { header: "h" }.into(),
            ApiError::Rejected(Rejection::Malformed("m".into())),
            ApiError::PayloadTooLarge(1),
            ApiError::BodyRead,
            ApiError::BodyTimeout,
            ApiError::RequestTimeout,
            ApiError::Overloaded("x"),
            ApiError::Unavailable,
            ApiError::MethodNotAllowed,
            ApiError::BadEcho("x"),
        ];
        for error in errors {
            let (_, code) = error.status_and_code();
            assert!(CODES.contains(&code), "{code} missing from CODES");
        }
    }
}
