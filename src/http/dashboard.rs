//! The operator dashboard: the three files of `static/`, compiled into the binary so a release
//! build needs nothing beside it at runtime. The page holds no data of its own; it asks for an
//! API key and talks to the same API listener as any client, so these handlers need no
//! authentication. Each file answers with a strong ETag (BLAKE3 of its bytes, computed once),
//! `Cache-Control: no-cache` (revalidate every time: an upgraded appliance serves new files
//! under the same names) and a strict Content-Security-Policy that allows only same-origin
//! scripts, styles and requests.

use crate::error::{Error, Result};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::LazyLock;

/// The policy of every dashboard answer: nothing inline, nothing from elsewhere, no framing.
/// Pictures are `blob:` URLs of previews the page fetched with its key (`/preview/…`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// The name under `/dashboard/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file the dashboard serves; `index.html` is also the answer to `/dashboard`.
static ASSETS: [Asset; 3] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../static/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/style.css"),
    },
];

/// The quoted ETag of each asset, in the order of `ASSETS`, hashed once on first use.
static ETAGS: LazyLock<[String; 3]> = LazyLock::new(|| {
    ASSETS
        .each_ref()
        .map(|a| format!("\"{}\"", blake3::hash(a.bytes).to_hex()))
});

/// `GET /dashboard` and `/dashboard/` (and `HEAD`): the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, &ASSETS[0], &ETAGS[0])
}

/// `GET /dashboard/{file}`: the page's script and style sheet (and the page again); any other
/// name is the appliance's JSON 404.
pub async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let wanted = path.into_inner();
    ASSETS
        .iter()
        .zip(ETAGS.iter())
        .find(|(asset, _)| asset.name == wanted)
        .map(|(asset, etag)| serve(&req, asset, etag))
        .ok_or_else(|| Error::NotFound(format!("the dashboard has no file named {wanted}")))
}

/// Answers with `asset`, or `304` when the client already holds these bytes.
fn serve(req: &HttpRequest, asset: &Asset, etag: &str) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_etag(v, etag));
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        resp.finish()
    } else {
        resp.content_type(asset.content_type).body(asset.bytes)
    }
}

/// Whether an `If-None-Match` value names `etag`: `*`, or any listed tag, compared weakly as
/// RFC 9110 asks for this header (a `W/` prefix is ignored).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = "\"abc\"";
        assert!(matches_etag("\"abc\"", tag));
        assert!(matches_etag("\"x\", W/\"abc\"", tag));
        assert!(matches_etag("*", tag));
        assert!(!matches_etag("\"abcd\"", tag));
        assert!(!matches_etag("abc", tag));
    }

    #[test]
    fn the_script_never_writes_html() {
        let js = std::str::from_utf8(ASSETS[1].bytes).unwrap();
        assert_eq!(ASSETS[1].name, "app.js");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn the_key_is_kept_in_session_storage_only() {
        let js = std::str::from_utf8(ASSETS[1].bytes).unwrap();
        assert!(js.contains("sessionStorage"));
        assert!(!js.contains("localStorage"));
    }
}
