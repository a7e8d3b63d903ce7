//! The only place that names actix: route tables for the API and render listeners, request
//! parsing helpers and the error mapping. Handlers parse input, call `service`, and shape the
//! answer; they hold no business rules.

pub mod accounts;
pub mod admin;
pub mod aliases;
pub mod api;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod images;
pub mod render;
pub mod stacks;

use crate::error::{Error, Result};
use crate::service::accounts::{authenticate, Principal};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// Largest JSON body accepted by the API (stack definitions, metadata).
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;

/// A JSON answer with exactly `Content-Type: application/json` (rokka.js compares the header
/// as a string).
pub fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK),
    )
    .content_type("application/json")
    .body(body.to_string())
}

/// 204 with an empty body.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// A header as a string, if present and valid.
pub fn header(req: &HttpRequest, name: impl actix_web::http::header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The caller of this request.
pub fn principal(req: &HttpRequest, svc: &Services) -> Result<Principal> {
    if header(req, "api-key").is_some_and(|k| svc.operator_keys.holds(k.trim())) {
        return Ok(Principal::Root);
    }
    authenticate(
        &*svc.store,
        &svc.config.auth.root_key,
        header(req, "api-key"),
        header(req, "authorization"),
        client_ip(req, svc),
    )
}

/// The client's address: the peer, or what a trusted proxy (`auth.trusted_proxies`) says in
/// `X-Forwarded-For`.
pub fn client_ip(req: &HttpRequest, svc: &Services) -> Option<std::net::IpAddr> {
    let trusted: Vec<ipnet::IpNet> = svc
        .config
        .auth
        .trusted_proxies
        .iter()
        .filter_map(|p| crate::model::net::parse_net(p))
        .collect();
    crate::service::tokens::client_ip(
        req.peer_addr().map(|a| a.ip()),
        header(req, "x-forwarded-for"),
        &trusted,
    )
}

/// Query pairs with keys and values percent-decoded (`user%3Aint%3Aid` → `user:int:id`) and
/// `+` read as a space.
pub fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    parse_query(req.query_string())
}

/// Parses a raw query string into decoded pairs.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .to_string()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The last non-empty value of a query parameter (empty values count as absent).
pub fn query_value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// Whether the request asks for a dry run (`?dry_run=true`).
pub fn dry_run(req: &HttpRequest) -> bool {
    query_value(&query_pairs(req), "dry_run").is_some_and(|v| v == "true")
}

/// Reads a request body up to `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            // Raised by the body guard (`body::guard_request`).
            actix_web::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Error::Timeout("the request body stalled or arrived too slowly".into())
            }
            e => Error::Invalid(format!("cannot read the request body: {e}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge(format!(
                "the request body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body whatever its `Content-Type` (rokka.js sends `text/plain`). An empty body
/// is `null`.
pub async fn json_body(payload: web::Payload) -> Result<Value> {
    let bytes = read_body(payload, MAX_JSON_BODY).await?;
    parse_json(&bytes)
}

/// Parses JSON bytes; empty input is `null`.
pub fn parse_json(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("the body is not valid JSON: {e}")))
}

/// Parses an organization name from a path.
pub fn org_name(raw: &str) -> Result<crate::model::ids::OrgName> {
    crate::model::ids::OrgName::parse(raw).map_err(Error::Invalid)
}

/// `attachment; filename="…"` with the name made safe inside the quotes; the file name comes
/// last, as the Go client requires.
pub fn attachment(name: &str) -> Option<actix_web::http::header::HeaderValue> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    actix_web::http::header::HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")).ok()
}

/// The JSON 404 for paths no route matches.
pub async fn not_found() -> HttpResponse {
    let err = Error::NotFound("no such resource".into());
    json_response(404, &error::error_body(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_percent_decoded_and_empty_values_kept_as_empty() {
        let pairs = parse_query("user%3Aint%3Aid=5&from&to=&name=a+b");
        assert_eq!(pairs[0], ("user:int:id".to_string(), "5".to_string()));
        assert_eq!(query_value(&pairs, "from"), None);
        assert_eq!(query_value(&pairs, "to"), None);
        assert_eq!(query_value(&pairs, "name"), Some("a b".into()));
    }
}
