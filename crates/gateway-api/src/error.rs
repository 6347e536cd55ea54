//! The one error type of the API. User mistakes get their real status and a
//! message that says what to fix; internal failures get a generic message and
//! are logged, so nothing internal leaks into a response. Every error body is
//! `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error as the API answers it: a status and
/// `{"error": {"code", "message"}}`. Every handler fails with this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 4xx for the caller's mistakes, 5xx for failures of the gateway or a device.
    pub status: StatusCode,
    /// Machine-readable code (`not_found`, `invalid_json`, ...).
    pub code: &'static str,
    /// What went wrong and what to fix, for people; for a 500 only a generic
    /// text, the detail being logged.
    pub message: String,
}

impl ApiError {
    /// An error with any status; the helpers below cover the common ones.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// 404 `not_found`, with the message `{what} "{name}" does not exist`.
    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {name:?} does not exist"))
    }

    /// 400: the request itself is wrong; `message` should say how to fix it.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 409: the request is well formed but clashes with the current state (a
    /// name taken, a tag not writable, a device owned by the config file).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 500; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "Internal error while answering a request.");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the gateway log has the details")
    }
}

impl ApiError {
    /// The JSON body, `{"error": {"code", "message"}}`, for the answers the
    /// server writes itself, outside the router.
    pub fn body(&self) -> String {
        json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, [(header::CONTENT_TYPE, "application/json")], self.body()).into_response()
    }
}

impl From<gateway_store::StoreError> for ApiError {
    fn from(e: gateway_store::StoreError) -> Self {
        use gateway_store::StoreError;
        match e {
            StoreError::NotFound { what, name } => ApiError::not_found(what, &name),
            StoreError::Conflict { what, name } => {
                ApiError::conflict("exists", format!("{what} {name:?} already exists"))
            }
            StoreError::Full(_) => {
                tracing::error!(error = %e, "A change could not be stored: the database is full.");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the gateway's database is full; nothing was changed. Free disk space, then retry",
                )
            }
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "The database is unavailable.");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the gateway's database is unavailable; nothing was changed. Retry later",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: 400 naming the problem for
/// malformed or mistyped JSON, 413 for a body over the limit, 415 without a
/// JSON content type.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request("invalid_json", format!("malformed JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", source_text(&e)),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than max_request_size",
        ),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// The innermost message of an error (axum wraps serde's in its own words).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
