//! The one error type of the service layer. Each variant carries a public message and maps to
//! one HTTP status; the mapping to a rokka-style JSON body lives in `http::error`, the only
//! place that knows about HTTP. Internal errors keep their cause for the log and show clients
//! only "internal error".

/// What went wrong, as the API reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed or asks for something invalid.
    #[error("{0}")]
    Invalid(String),
    /// 401: the `Authorization` header is malformed or the token is not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: credentials are missing or not valid (`invalid_authentication`).
    #[error("{0}")]
    BadCredentials(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the target exists, or the change would break an invariant.
    #[error("{0}")]
    Conflict(String),
    /// 412: a precondition header (`Overwrite: F`) is not met.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// 415: the format is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// 422: the input is understood but cannot be processed (broken image, too many pixels).
    #[error("{0}")]
    Unprocessable(String),
    /// 503: the render queue is full or a render took too long; retry later.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    /// 500: a bug or an environment failure; the text is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid(_) => 400,
            Error::Unauthenticated(_) => 401,
            Error::BadCredentials(_) | Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::PreconditionFailed(_) => 412,
            Error::TooLarge(_) => 413,
            Error::Unsupported(_) => 415,
            Error::Unprocessable(_) => 422,
            Error::Busy { .. } => 503,
            Error::Internal(_) => 500,
        }
    }

    /// The message a client may see.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Error {
        Error::Internal(cause.to_string())
    }
}

impl From<crate::storage::StorageError> for Error {
    fn from(e: crate::storage::StorageError) -> Error {
        Error::Internal(e.to_string())
    }
}

/// Result of service operations.
pub type Result<T> = std::result::Result<T, Error>;
