//! The public render listener: `/{org}/{stack}/…/{hash}[/{slug}].{format}` (path form) or, when
//! `render.host_template` matches the `Host`, `/{stack}/…` with the organization taken from the
//! host. Renders are immutable: a year of `Cache-Control`, a strong `ETag`, `304` on
//! `If-None-Match`; alias URLs (`-_name_-`) alone get a short max-age, since re-pointing the
//! alias changes their answer. Errors are JSON with a short max-age so an edge cache replaces
//! a stale 200.

use super::header;
use crate::error::Error;
use crate::metrics::Outcome;
use crate::service::renders::{self, AnswerHeaders, RenderAnswer, RenderTarget, Served};
use crate::service::Services;
use crate::storage::ServedPath;
use actix_web::http::header::{
    HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, ETAG, HOST,
    IF_NONE_MATCH, VARY,
};
use actix_web::{web, HttpRequest, HttpResponse};

type Svc = web::Data<Services>;

/// `Cache-Control` of every successful render.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The names of the headers a render answer adds, made once rather than parsed per answer.
const SAVE_DATA: HeaderName = HeaderName::from_static("save-data");
const RENDERED: HeaderName = HeaderName::from_static("x-darkroom-render");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// The socket of a render connection, noted when it is accepted so that a handler can tell
/// whether its client is still there (actix does not drop a handler whose client left).
#[derive(Debug, Clone, Copy)]
struct PeerSocket(std::os::fd::RawFd);

/// The Host and the path with its query, as a render was asked for.
fn served_path(req: &HttpRequest) -> ServedPath {
    ServedPath {
        host: header(req, HOST).unwrap_or_default().to_string(),
        path: match req.query_string() {
            "" => req.path().to_string(),
            q => format!("{}?{q}", req.path()),
        },
    }
}

/// `on_connect` hook of both listeners: notes the socket (see [`PeerSocket`]) and turns off
/// Nagle's algorithm. A streamed body (a download, a preview) is written after its head in a
/// second small write, which Nagle would hold until the client's delayed ACK: 40 ms on every
/// such answer.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsRawFd;
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = stream.set_nodelay(true);
        ext.insert(PeerSocket(stream.as_raw_fd()));
    }
}

/// Whether the client of this connection has closed it: a peek that reads end-of-stream or
/// fails for another reason than "no data yet". Pipelined bytes mean it is still there.
fn peer_gone(socket: PeerSocket) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: the descriptor belongs to the connection whose request is being handled, so it
    // stays open (and is not reused) until this handler returns; recv with MSG_PEEK and
    // MSG_DONTWAIT neither blocks nor consumes data, and writes at most one byte into `byte`.
    let n = unsafe {
        libc::recv(
            socket.0,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return true;
    }
    n < 0 && {
        let err = std::io::Error::last_os_error();
        !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        )
    }
}

/// Registers every render route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(serve));
}

/// Splits the request into organization and rokka-style path.
fn target<'a>(req: &'a HttpRequest, template: &str) -> Option<(String, &'a str, bool)> {
    let path = req.path();
    if !template.is_empty() {
        if let Some(host) = header(req, HOST) {
            let host = host.split(':').next().unwrap_or(host);
            let (pre, post) = template.split_once("{organization}")?;
            if let Some(org) = host.strip_prefix(pre).and_then(|h| h.strip_suffix(post)) {
                if !org.is_empty() && !org.contains('.') {
                    return Some((org.to_string(), path, false));
                }
            }
        }
    }
    let (org, _) = path.strip_prefix('/')?.split_once('/')?;
    Some((org.to_string(), path.get(org.len() + 1..)?, true))
}

/// Serves one render URL.
async fn serve(req: HttpRequest, svc: Svc) -> HttpResponse {
    if req.method() != actix_web::http::Method::GET && req.method() != actix_web::http::Method::HEAD
    {
        return error_response(
            &svc,
            &Error::NotFound("render URLs answer GET and HEAD only".into()),
        );
    }
    let Some((org, path, path_form)) = target(&req, &svc.config.render.host_template) else {
        return error_response(&svc, &Error::NotFound("not a render URL".into()));
    };
    let socket = req.conn_data::<PeerSocket>().copied();
    let gone = move || socket.is_some_and(peer_gone);
    let t = RenderTarget {
        client_gone: &gone,
        save_data: header(&req, SAVE_DATA).is_some_and(|v| v.trim().eq_ignore_ascii_case("on")),
        org: &org,
        path,
        query: req.query_string(),
        org_prefix: path_form.then_some(org.as_str()),
        via_api: false,
        accept: header(&req, ACCEPT),
        // The Host is kept for both forms: the edge keys its cache by host and path, and a
        // refresh must reach the same entry.
        served: served_path(&req),
    };
    let started = std::time::Instant::now();
    let result = renders::render(&svc, t).await;
    svc.metrics.render_took(
        match &result {
            Ok(RenderAnswer::Render { served, .. }) => match served {
                Served::Hit => Outcome::Hit,
                Served::Rendered => Outcome::Miss,
                Served::Joined => Outcome::Joined,
            },
            Ok(RenderAnswer::Original { .. }) => Outcome::Hit,
            Err(_) => Outcome::Error,
        },
        started.elapsed(),
    );
    match result {
        Ok(answer) => {
            let resp = respond(&req, &svc, answer).await;
            if resp.status() == actix_web::http::StatusCode::OK {
                let size = match actix_web::body::MessageBody::size(resp.body()) {
                    actix_web::body::BodySize::Sized(n) => n,
                    _ => 0,
                };
                svc.traffic.add(&org, size);
            }
            resp
        }
        Err(e) => {
            if e.status() >= 500 {
                log::warn!("render of {} failed: {e}", req.path());
            }
            error_response(&svc, &e)
        }
    }
}

/// `GET /preview/{org}/{render path}` on the API listener: the render URL
/// `/{org}/{render path}` of the render listener, answered for a caller whose `Api-Key` may
/// read the organization's images (protected images included, with no signature).
///
/// This is how the dashboard shows pictures without loosening its Content-Security-Policy or
/// needing to know where the render listener is reachable: it fetches previews with its key
/// (a plain `<img>` could not send the header) and shows them through `blob:` URLs. The
/// render goes through the public path (`service::renders`): same render key and stored
/// render, single-flight, limits and render queue. It is not counted as the organization's
/// traffic, nor recorded as a path an edge cache holds, and the answer is private to the key.
pub async fn preview(req: HttpRequest, svc: Svc) -> crate::error::Result<HttpResponse> {
    let who = super::principal(&req, &svc)?;
    let rest = req.path().strip_prefix("/preview/").unwrap_or_default();
    // `path` keeps its leading slash: `/{stack}/…/{hash}.{format}`, as the render host sees it.
    let Some((org, path)) = rest.find('/').map(|at| rest.split_at(at)) else {
        return Err(Error::NotFound(
            "a preview is /preview/{org}/{stack}/…/{hash}.{format}".into(),
        ));
    };
    let socket = req.conn_data::<PeerSocket>().copied();
    let gone = move || socket.is_some_and(peer_gone);
    let t = RenderTarget {
        client_gone: &gone,
        save_data: false,
        org,
        path,
        query: req.query_string(),
        org_prefix: None,
        via_api: true,
        accept: header(&req, ACCEPT),
        served: served_path(&req),
    };
    let started = std::time::Instant::now();
    let result = renders::preview(&svc, &who, t).await;
    svc.metrics.render_took(
        match &result {
            Ok(RenderAnswer::Render { served, .. }) => match served {
                Served::Hit => Outcome::Hit,
                Served::Rendered => Outcome::Miss,
                Served::Joined => Outcome::Joined,
            },
            Ok(RenderAnswer::Original { .. }) => Outcome::Hit,
            Err(_) => Outcome::Error,
        },
        started.elapsed(),
    );
    let mut resp = respond(&req, &svc, result?).await;
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    headers.remove("surrogate-key");
    headers.remove("cache-tag");
    Ok(resp)
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    header(req, IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn respond(req: &HttpRequest, svc: &Services, answer: RenderAnswer) -> HttpResponse {
    match answer {
        RenderAnswer::Render {
            body,
            etag,
            content_type,
            served,
            headers,
        } => {
            // Shared, not copied: a hit only checks the bytes.
            let (Ok(etag), Ok(content_type)) = (
                HeaderValue::from_maybe_shared(etag),
                HeaderValue::from_maybe_shared(content_type),
            ) else {
                return error_plain(&Error::internal("a stored render's header is unreadable"));
            };
            let unchanged = etag.to_str().is_ok_and(|e| not_modified(req, e));
            let mut resp = if unchanged {
                HttpResponse::NotModified()
            } else {
                HttpResponse::Ok()
            };
            resp.insert_header((CACHE_CONTROL, cache_control(&headers)))
                .insert_header((ETAG, etag));
            resp.insert_header((
                RENDERED,
                match served {
                    Served::Hit => "hit",
                    Served::Rendered => "miss",
                    Served::Joined => "joined",
                },
            ));
            add_common(&mut resp, &headers);
            if unchanged {
                return resp.finish();
            }
            resp.insert_header((CONTENT_TYPE, content_type)).body(body)
        }
        RenderAnswer::Original {
            blob,
            mimetype,
            size,
            etag,
            headers,
        } => {
            let mut resp = if not_modified(req, &etag) {
                HttpResponse::NotModified()
            } else {
                HttpResponse::Ok()
            };
            resp.insert_header((CACHE_CONTROL, cache_control(&headers)))
                .insert_header((ETAG, etag.clone()));
            add_common(&mut resp, &headers);
            if not_modified(req, &etag) {
                return resp.finish();
            }
            let stream = match crate::service::images::stream_blob(svc, &blob).await {
                Ok(stream) => stream,
                Err(e) => return error_plain(&e),
            };
            resp.content_type(mimetype)
                .no_chunking(size)
                .streaming(stream)
        }
    }
}

/// A year and `immutable`, except for alias URLs, whose answer changes when the alias is
/// re-pointed: those get `render.alias_max_age_secs`.
fn cache_control(headers: &AnswerHeaders) -> HeaderValue {
    match headers.max_age {
        None => HeaderValue::from_static(IMMUTABLE),
        // Digits always make a valid value; the fallback only keeps this total.
        Some(secs) => HeaderValue::from_str(&format!("public, max-age={secs}"))
            .unwrap_or_else(|_| HeaderValue::from_static("no-cache")),
    }
}

fn add_common(resp: &mut actix_web::HttpResponseBuilder, headers: &AnswerHeaders) {
    let vary = match (headers.vary_accept, headers.vary_save_data) {
        (true, true) => Some("Accept, Save-Data"),
        (true, false) => Some("Accept"),
        (false, true) => Some("Save-Data"),
        (false, false) => None,
    };
    if let Some(vary) = vary {
        resp.insert_header((VARY, vary));
    }
    if let Some(name) = &headers.attachment {
        if let Some(v) = super::attachment(name) {
            resp.insert_header((CONTENT_DISPOSITION, v));
        }
    }
    // Shared, not copied: a hit only checks the bytes.
    if let Ok(v) = HeaderValue::from_maybe_shared(headers.surrogate_key.clone()) {
        resp.insert_header((SURROGATE_KEY, v));
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(headers.cache_tag.clone()) {
        resp.insert_header((CACHE_TAG, v));
    }
}

/// A JSON error; 4xx answers may be cached briefly so that an edge replaces a stale render.
fn error_response(svc: &Services, e: &Error) -> HttpResponse {
    let mut resp = error_plain(e);
    if (400..500).contains(&e.status()) {
        let value = format!(
            "public, max-age={}",
            svc.config.render.not_found_max_age_secs
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(CACHE_CONTROL, v);
        }
    } else if let Ok(v) = HeaderValue::from_str("no-store") {
        resp.headers_mut().insert(CACHE_CONTROL, v);
    }
    resp
}

fn error_plain(e: &Error) -> HttpResponse {
    actix_web::ResponseError::error_response(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_path_form_takes_the_organization_from_the_first_segment() {
        let req = TestRequest::get()
            .uri("/acme/thumb/abcdef.jpg")
            .to_http_request();
        let (org, path, path_form) = target(&req, "").unwrap();
        assert_eq!(
            (org.as_str(), path, path_form),
            ("acme", "/thumb/abcdef.jpg", true)
        );
    }

    #[test]
    fn the_host_form_takes_the_organization_from_the_host() {
        let req = TestRequest::get()
            .uri("/thumb/abcdef.jpg")
            .insert_header(("Host", "acme.img.example.com:8081"))
            .to_http_request();
        let (org, path, path_form) = target(&req, "{organization}.img.example.com").unwrap();
        assert_eq!(
            (org.as_str(), path, path_form),
            ("acme", "/thumb/abcdef.jpg", false)
        );
    }

    #[test]
    fn a_host_that_does_not_match_falls_back_to_the_path_form() {
        let req = TestRequest::get()
            .uri("/acme/thumb/abcdef.jpg")
            .insert_header(("Host", "localhost"))
            .to_http_request();
        let (org, _, path_form) = target(&req, "{organization}.img.example.com").unwrap();
        assert_eq!((org.as_str(), path_form), ("acme", true));
    }
}
