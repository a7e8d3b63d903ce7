//! Errors of the pure rendering layer. Each carries a public message; the service layer maps
//! the variant to an HTTP status (Invalid 400, Unsupported 415, Unprocessable 422,
//! TooLarge 422, Internal 500).

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The request asks for something impossible (bad option combination, absurd size).
    #[error("{0}")]
    Invalid(String),
    /// The input format (or requested output) is not supported by this build.
    #[error("{0}")]
    Unsupported(String),
    /// The input is recognised but broken (truncated, corrupt).
    #[error("{0}")]
    Unprocessable(String),
    /// The input exceeds a configured limit (dimensions, pixels).
    #[error("{0}")]
    TooLarge(String),
    /// The work was stopped: its deadline passed or nobody waits for it any more.
    #[error("the render was cancelled")]
    Cancelled,
    /// A bug or an environment failure; the message is for the log, not for clients.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, RenderError>;
