//! Every failure becomes `{"error": {"code", "message"}}` with the contract's
//! status, in one place, with no side effects.

use atocore_backup_core::{Error, ErrorClass, RestoreRefusal};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn bad_body(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message)
    }

    /// The status of this answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.chain();
        let (status, code) = match (&error, error.class()) {
            (Error::PruneRefused(_), _) => (StatusCode::BAD_REQUEST, "bad_policy"),
            (_, ErrorClass::BadInput) => (StatusCode::BAD_REQUEST, "bad_stamp"),
            (_, ErrorClass::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            (_, ErrorClass::Busy) => (StatusCode::CONFLICT, "busy"),
            (_, ErrorClass::InvalidBackup) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_backup"),
            (
                Error::Refused {
                    refusal: RestoreRefusal::ChromaNotInBackup { .. },
                    ..
                },
                _,
            ) => (StatusCode::BAD_REQUEST, "chroma_not_in_backup"),
            (_, ErrorClass::Refused) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            (_, ErrorClass::Failed) => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
