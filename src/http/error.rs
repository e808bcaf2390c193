//! Errors: [`HttpError`] is what starting the server can fail with (a library boundary);
//! [`ApiError`] is a refused request, answered as JSON `{"error": "..."}` with a message that says
//! what to fix.

use crate::gallery::GalleryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.bind = {bind:?} is not an address and a port (such as 127.0.0.1:8080)")]
    BadAddress { bind: String },
    #[error("cannot listen on {addr} (http.bind): is another program (or another farsight) using the port?")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the HTTP server's threads")]
    Runtime(#[source] std::io::Error),
}

/// A refused request: its status and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Refused because the daemon is stopping: nothing was written.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "farsight is shutting down: nothing was written; retry once it is running again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<GalleryError> for ApiError {
    fn from(e: GalleryError) -> Self {
        let status = match &e {
            GalleryError::UnknownIdentity(_) | GalleryError::Missing { .. } => StatusCode::NOT_FOUND,
            GalleryError::NameTaken(_) | GalleryError::ForeignEmbedder { .. } => StatusCode::CONFLICT,
            GalleryError::BadName { .. } => StatusCode::BAD_REQUEST,
            GalleryError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, crate::error_chain(&e))
    }
}
