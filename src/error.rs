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
    /// 408: the request body did not arrive in time (too slow, or stalled).
    #[error("{0}")]
    Timeout(String),
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
    /// 429: the caller has too many uploads (or upload bytes) in flight; retry later.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after_secs: u64,
    },
    /// 507: the data folder is below its free-space headroom; writes resume once there is
    /// room, reads keep working.
    #[error("{0}")]
    InsufficientStorage(String),
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
            Error::Timeout(_) => 408,
            Error::Conflict(_) => 409,
            Error::PreconditionFailed(_) => 412,
            Error::TooLarge(_) => 413,
            Error::Unsupported(_) => 415,
            Error::Unprocessable(_) => 422,
            Error::TooMany { .. } => 429,
            Error::Busy { .. } => 503,
            Error::InsufficientStorage(_) => 507,
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

    /// A file error: 507 when the disk is full (or the headroom refused the write), else
    /// internal.
    pub fn io(e: std::io::Error) -> Error {
        Error::from(crate::storage::StorageError::Io(e))
    }
}

/// What a client sees when the disk filled up under a write despite the headroom.
const OUT_OF_SPACE: &str = "the appliance is out of disk space; retry when space was freed";

impl From<crate::storage::StorageError> for Error {
    fn from(e: crate::storage::StorageError) -> Error {
        use crate::storage::StorageError;
        match e {
            StorageError::NoSpace(message) => Error::InsufficientStorage(message),
            // The headroom's own refusal of a blob write, passed through `io::Error`.
            StorageError::Io(io)
                if io.kind() == std::io::ErrorKind::StorageFull && io.raw_os_error().is_none() =>
            {
                Error::InsufficientStorage(io.to_string())
            }
            e if e.is_no_space() => {
                log::error!("out of disk space under the headroom: {e}");
                Error::InsufficientStorage(OUT_OF_SPACE.into())
            }
            e => Error::Internal(e.to_string()),
        }
    }
}

/// Result of service operations.
pub type Result<T> = std::result::Result<T, Error>;
