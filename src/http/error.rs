//! The single mapping from service errors to HTTP answers: status, a rokka-style JSON body
//! `{"error":{"code","message"}}` (plus top-level `code`, `message` and
//! `invalid_authentication` on authentication failures, which some clients read), and
//! `Retry-After` on 503. Internal causes are logged here, once, and never sent.

use crate::error::Error;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// The JSON body of an error.
pub fn error_body(err: &Error) -> Value {
    let code = err.status();
    let message = err.public_message();
    let mut body = json!({ "error": { "code": code, "message": message } });
    if let (Error::BadCredentials(_) | Error::Unauthenticated(_), Value::Object(map)) =
        (err, &mut body)
    {
        map.insert("code".into(), json!(code));
        map.insert("message".into(), json!(message));
        map.insert("invalid_authentication".into(), json!(true));
    }
    body
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let Error::Internal(cause) = self {
            log::error!("internal error: {cause}");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.content_type("application/json");
        if let Error::Busy {
            retry_after_secs, ..
        }
        | Error::TooMany {
            retry_after_secs, ..
        } = self
        {
            resp.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        resp.body(error_body(self).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_rokka_shape() {
        let body = error_body(&Error::NotFound("nope".into()));
        assert_eq!(body, json!({"error": {"code": 404, "message": "nope"}}));
    }

    #[test]
    fn authentication_failures_also_carry_top_level_fields() {
        let body = error_body(&Error::BadCredentials("bad".into()));
        assert_eq!(body["code"], 403);
        assert_eq!(body["invalid_authentication"], true);
        assert_eq!(body["error"]["message"], "bad");
    }

    #[test]
    fn a_full_disk_is_507_and_too_many_uploads_429_with_retry_after() {
        let full: Error = crate::storage::StorageError::NoSpace("low on disk space".into()).into();
        assert_eq!(full.status(), 507);
        assert_eq!(error_body(&full)["error"]["message"], "low on disk space");
        let enospc: Error =
            crate::storage::StorageError::Io(std::io::Error::from_raw_os_error(28)).into();
        assert_eq!(enospc.status(), 507);
        assert!(!enospc.public_message().contains("os error"));
        let many = Error::TooMany {
            message: "too many uploads".into(),
            retry_after_secs: 2,
        };
        let resp = many.error_response();
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "2");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let body = error_body(&Error::Internal("disk on fire at /var/lib".into()));
        assert_eq!(body["error"]["message"], "internal error");
    }
}
