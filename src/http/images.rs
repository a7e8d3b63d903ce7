//! Handlers for `/sourceimages`: multipart upload, reads, lists, deletes, downloads, metadata,
//! protection, locking and copies. Parsing of client quirks (double-encoded JSON, any file
//! field name, `deletePrevious` in the body) happens here, at the boundary.

use super::body::{self, BodyWatch};
use super::{
    header, json_body, json_response, no_content, org_name, principal, query_pairs, query_value,
    read_body, MAX_JSON_BODY,
};
use crate::error::{Error, Result};
use crate::service::images::{
    self as img, Copied, HashChange, HashChangeFlags, MetaChange, UploadFile, UploadMeta,
};
use crate::service::Services;
use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::task::Poll;

type Svc = web::Data<Services>;

/// What a multipart field name means.
#[derive(Debug, PartialEq)]
enum FormField {
    UserMeta(usize),
    DynamicMeta(usize),
    DynamicMetaEntry(usize, String),
    Options(usize),
    Url,
    Ignored,
    File,
}

/// Parses `meta_user[0]`, `meta_dynamic[0][subject_area]`, `options[]`, … A field with a
/// filename is always a file, whatever its name.
fn classify(name: &str, has_filename: bool) -> FormField {
    if has_filename {
        return FormField::File;
    }
    let (base, rest) = name.split_once('[').map_or((name, ""), |(b, r)| (b, r));
    let mut parts = rest.split('[').map(|p| p.trim_end_matches(']'));
    let index = parts
        .next()
        .map(|i| i.parse::<usize>().unwrap_or(0))
        .unwrap_or(0);
    let sub = parts.next().map(str::to_string);
    match (base, sub) {
        ("meta_user", _) => FormField::UserMeta(index),
        ("meta_dynamic", Some(entry)) => FormField::DynamicMetaEntry(index, entry),
        ("meta_dynamic", None) => FormField::DynamicMeta(index),
        ("options", _) => FormField::Options(index),
        ("url", _) => FormField::Url,
        ("meta_static" | "optimize_source", _) => FormField::Ignored,
        _ => FormField::File,
    }
}

/// Reads a JSON value that may have been encoded twice.
fn decode_twice(what: &str, raw: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| Error::Invalid(format!("{what} is not valid JSON: {e}")))?;
    Ok(match v {
        Value::String(inner) => serde_json::from_str(&inner).unwrap_or(Value::String(inner)),
        other => other,
    })
}

/// Room for the form fields and multipart framing beside the file itself in one upload body.
pub const FORM_OVERHEAD: u64 = MAX_JSON_BODY as u64 + 64 * 1024;

/// The next item of a multipart stream, or a 400 when the stream can make no more progress:
/// actix-multipart 0.7 answers `Pending` for ever when the body ends inside a part or just
/// before a closing boundary that never comes (its last bytes are `\r\n`), since nothing
/// will wake it again. Once the whole body was read, `Pending` can only mean that.
async fn next_part<S>(stream: &mut S, watch: &BodyWatch) -> Result<Option<S::Item>>
where
    S: futures_util::Stream + Unpin,
{
    futures_util::future::poll_fn(|cx| match stream.poll_next_unpin(cx) {
        Poll::Pending if watch.ended() => Poll::Ready(Err(Error::Invalid(
            "malformed multipart body: it ends without its closing boundary".into(),
        ))),
        other => other.map(Ok),
    })
    .await
}

/// Temporary files of received parts, removed when the request ends however it ends: by an
/// answer, or by the client going away (actix then drops the handler's future, and no error
/// path runs). Files moved into the store by then are no longer there to remove.
#[derive(Default)]
struct TempFiles(Vec<crate::storage::ReceivedBlob>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for blob in &self.0 {
            blob.discard();
        }
    }
}

/// A multipart error, or the body rule it came from (408 stalled or too slow, 413 too large).
fn multipart_error(watch: &BodyWatch, e: impl std::fmt::Display) -> Error {
    watch
        .error()
        .unwrap_or_else(|| Error::Invalid(format!("malformed multipart body: {e}")))
}

/// `POST /sourceimages/{org}`: multipart upload of one or more files. A body declared larger
/// than the limit is refused before it is read (413); the body is held to the timeout and
/// minimum rate of [`crate::http::body`]; each API key has a bounded number of uploads and
/// bytes in flight (429); every way out, including the client going away, removes the
/// temporary files.
pub async fn upload(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let org = org_name(&path)?;
    crate::service::accounts::authorize(
        &*svc.store,
        &who,
        &org,
        crate::model::account::Right::Upload,
    )?;
    let limits = &svc.config.limits;
    let max = limits.max_upload_bytes;
    let max_body = max.saturating_add(FORM_OVERHEAD);
    let declared = match header(&req, "content-length") {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::Invalid("the Content-Length header is not a number".into()))?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > max_body) {
        return Err(Error::TooLarge(format!(
            "the upload body is larger than the limit of {max} bytes (plus {FORM_OVERHEAD} for form fields)"
        )));
    }
    // Refused before a byte is read when there is no room (507).
    img::check_room(&svc)?;
    let _slot = svc.uploads.acquire(
        &who,
        declared.unwrap_or(max_body),
        limits.max_concurrent_uploads_per_key,
        limits.max_upload_bytes_in_flight_per_key,
    )?;
    let server = &svc.config.server;
    let (payload, watch) = body::watched(
        &req,
        payload,
        body::BodyLimits {
            timeout: std::time::Duration::from_secs(server.body_timeout_secs),
            min_rate: server.min_body_rate_bytes_per_sec,
            max_bytes: max_body,
        },
    );
    let mut form = Multipart::new(req.headers(), payload);
    let mut files: Vec<UploadFile> = Vec::new();
    let mut temp = TempFiles::default();
    let mut meta: BTreeMap<usize, UploadMeta> = BTreeMap::new();
    let result: Result<()> = async {
        while let Some(field) = next_part(&mut form, &watch).await? {
            let mut field = field.map_err(|e| multipart_error(&watch, e))?;
            let (name, filename) = match field.content_disposition() {
                Some(cd) => (
                    cd.get_name().unwrap_or("").to_string(),
                    cd.get_filename().map(str::to_string),
                ),
                None => (String::new(), None),
            };
            match classify(&name, filename.is_some()) {
                FormField::File => {
                    let mut up = img::begin_upload(&svc).await?;
                    loop {
                        let chunk = match next_part(&mut field, &watch).await {
                            Ok(Some(Ok(c))) => c,
                            Ok(None) => break,
                            Ok(Some(Err(e))) => {
                                up.abort().await;
                                return Err(multipart_error(&watch, e));
                            }
                            Err(e) => {
                                up.abort().await;
                                return Err(e);
                            }
                        };
                        if up.size() + chunk.len() as u64 > max {
                            up.abort().await;
                            return Err(Error::TooLarge(format!(
                                "the file is larger than the limit of {max} bytes"
                            )));
                        }
                        if let Err(e) = up.write(&chunk).await {
                            up.abort().await;
                            return Err(Error::io(e));
                        }
                    }
                    let blob = up.finish().await.map_err(Error::io)?;
                    let filename = filename
                        .filter(|f| !f.is_empty())
                        .unwrap_or_else(|| format!("{}.bin", &blob.id[..8.min(blob.id.len())]));
                    temp.0.push(blob.clone());
                    files.push(UploadFile { blob, filename });
                }
                kind => {
                    let mut bytes = Vec::new();
                    while let Some(chunk) = next_part(&mut field, &watch).await? {
                        let chunk = chunk.map_err(|e| multipart_error(&watch, e))?;
                        if bytes.len() + chunk.len() > MAX_JSON_BODY {
                            return Err(Error::TooLarge(format!(
                                "the form field '{name}' is too large"
                            )));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    match kind {
                        FormField::UserMeta(i) => {
                            meta.entry(i).or_default().user =
                                Some(img::parse_json_object("meta_user", &text)?);
                        }
                        FormField::DynamicMeta(i) => {
                            let m = img::parse_json_object("meta_dynamic", &text)?;
                            meta.entry(i).or_default().dynamic.extend(m);
                        }
                        FormField::DynamicMetaEntry(i, entry) => {
                            let v = decode_twice(&format!("meta_dynamic[{i}][{entry}]"), &text)?;
                            meta.entry(i).or_default().dynamic.insert(entry, v);
                        }
                        FormField::Options(i) => {
                            let opts = img::parse_json_object("options", &text)?;
                            img::parse_upload_options(&opts, meta.entry(i).or_default())?;
                        }
                        FormField::Url => {
                            return Err(Error::Invalid(
                                "importing images from URLs is not supported; upload the file"
                                    .into(),
                            ))
                        }
                        FormField::Ignored | FormField::File => {}
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        files.iter().for_each(|f| f.blob.discard());
        return Err(e);
    }
    let meta: Vec<UploadMeta> = (0..files.len())
        .map(|i| meta.remove(&i).unwrap_or_default())
        .collect();
    let body = img::upload(&svc, &who, &org, files, meta).await?;
    Ok(json_response(200, &body))
}

/// `GET /sourceimages/{org}`.
pub async fn list(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(
        200,
        &img::list(&svc, &who, &org_name(&path)?, &query_pairs(&req))?,
    ))
}

/// `DELETE /sourceimages/{org}?binaryHash=`.
pub async fn delete_by_binary(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let bh = query_value(&query_pairs(&req), "binaryHash").ok_or_else(|| {
        Error::Invalid("DELETE on an organization's images needs ?binaryHash=".into())
    })?;
    img::delete_by_binary_hash(&svc, &who, &org_name(&path)?, &bh).await?;
    Ok(no_content())
}

/// `GET /sourceimages/{org}/binaryhash/{sha1}`.
pub async fn by_binary(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, bh) = path.into_inner();
    Ok(json_response(
        200,
        &img::by_binary_hash(&svc, &who, &org_name(&org)?, &bh)?,
    ))
}

/// `GET /sourceimages/{org}/{hash}`.
pub async fn get(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let deleted = query_value(&query_pairs(&req), "deleted").is_some_and(|v| v == "true");
    Ok(json_response(
        200,
        &img::get(&svc, &who, &org_name(&org)?, &hash, deleted)?,
    ))
}

/// `DELETE /sourceimages/{org}/{hash}`.
pub async fn delete(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    Ok(
        match img::delete(&svc, &who, &org_name(&org)?, &hash, super::dry_run(&req)).await? {
            Some(report) => json_response(200, &report),
            None => no_content(),
        },
    )
}

/// `DELETE /sourceimages/{org}/{hash}/cache`: removes the image's renders and lists their
/// paths.
pub async fn purge(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let report = crate::service::purge::image_cache(
        &svc,
        &who,
        &org_name(&org)?,
        &hash,
        super::dry_run(&req),
    )
    .await?;
    Ok(json_response(200, &report))
}

/// `POST /sourceimages/{org}/{hash}/restore`.
pub async fn restore(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    Ok(json_response(
        200,
        &img::restore(&svc, &who, &org_name(&org)?, &hash).await?,
    ))
}

/// `GET /sourceimages/{org}/{hash}/download`: the original bytes, streamed from the file.
pub async fn download(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let d = img::download(&svc, &who, &org_name(&org)?, &hash)?;
    svc.traffic.add(&org, d.size);
    let stream = img::stream_blob(&svc, &d.blob).await?;
    let mut resp = HttpResponse::Ok();
    resp.content_type(d.mimetype);
    if let Some(v) = super::attachment(&d.name) {
        resp.insert_header((actix_web::http::header::CONTENT_DISPOSITION, v));
    }
    Ok(resp.no_chunking(d.size).streaming(stream))
}

/// `GET /sourceimages/{org}/download`: the originals the listing with the same query selects,
/// as one ZIP archive. Every refusal (rights, 400 for the list's bad parameters, 413 past the
/// `limits.max_zip_*` bounds) comes before the first byte; the archive is then streamed with
/// chunked transfer encoding, since its length is known only once it is written.
pub async fn download_zip(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let org = org_name(&path)?;
    let archive = crate::service::archive::plan(&svc, &who, &org, &query_pairs(&req))?;
    let stream = crate::service::archive::stream(svc.into_inner(), &org, archive);
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/zip");
    if let Some(v) = super::attachment(&format!("{org}.zip")) {
        resp.insert_header((actix_web::http::header::CONTENT_DISPOSITION, v));
    }
    Ok(resp.streaming(stream))
}

/// `PUT /sourceimages/{org}/{hash}/name`.
pub async fn rename(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let body = json_body(payload).await?;
    img::rename(&svc, &who, &org_name(&org)?, &hash, &body).await?;
    Ok(no_content())
}

/// `GET /sourceimages/{org}/{hash}/meta/user`.
pub async fn get_user_meta(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    Ok(json_response(
        200,
        &img::get_user_meta(&svc, &who, &org_name(&org)?, &hash, None)?,
    ))
}

/// `GET /sourceimages/{org}/{hash}/meta/user/{field}`.
pub async fn get_user_field(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash, field) = path.into_inner();
    Ok(json_response(
        200,
        &img::get_user_meta(&svc, &who, &org_name(&org)?, &hash, Some(&field))?,
    ))
}

async fn change_meta(
    req: &HttpRequest,
    svc: &Services,
    org: &str,
    hash: &str,
    change: MetaChange,
) -> Result<HttpResponse> {
    let who = principal(req, svc)?;
    img::change_user_meta(svc, &who, &org_name(org)?, hash, change).await?;
    Ok(no_content())
}

/// `PUT /sourceimages/{org}/{hash}/meta/user`.
pub async fn replace_user_meta(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (org, hash) = path.into_inner();
    let body = json_body(payload).await?;
    change_meta(&req, &svc, &org, &hash, MetaChange::Replace(body)).await
}

/// `PATCH /sourceimages/{org}/{hash}/meta/user`.
pub async fn merge_user_meta(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (org, hash) = path.into_inner();
    let body = json_body(payload).await?;
    change_meta(&req, &svc, &org, &hash, MetaChange::Merge(body)).await
}

/// `DELETE /sourceimages/{org}/{hash}/meta/user`.
pub async fn clear_user_meta(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (org, hash) = path.into_inner();
    change_meta(&req, &svc, &org, &hash, MetaChange::Clear).await
}

/// `PUT /sourceimages/{org}/{hash}/meta/user/{field}`.
pub async fn set_user_field(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (org, hash, field) = path.into_inner();
    let body = json_body(payload).await?;
    change_meta(&req, &svc, &org, &hash, MetaChange::SetField(field, body)).await
}

/// `DELETE /sourceimages/{org}/{hash}/meta/user/{field}`.
pub async fn delete_user_field(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let (org, hash, field) = path.into_inner();
    change_meta(&req, &svc, &org, &hash, MetaChange::DeleteField(field)).await
}

/// `deletePrevious`/`keepHash` from the query, or (rokka.js quirk) from a JSON body.
fn hash_flags(req: &HttpRequest, body: Option<&Value>) -> HashChangeFlags {
    let pairs = query_pairs(req);
    let truthy = |key: &str| -> bool {
        let from_query = query_value(&pairs, key).map(|v| v == "true");
        let from_body = body
            .and_then(|b| b.get(key))
            .map(|v| v == &Value::Bool(true) || v.as_str() == Some("true"));
        from_query.or(from_body).unwrap_or(false)
    };
    HashChangeFlags {
        delete_previous: truthy("deletePrevious"),
        keep_hash: truthy("keepHash"),
    }
}

fn hash_change_response(org: &str, change: HashChange) -> HttpResponse {
    match change {
        HashChange::Unchanged(_) => no_content(),
        HashChange::Changed {
            hash,
            image,
            kept_hash,
        } => {
            let mut resp = json_response(201, &image);
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!(
                "/sourceimages/{org}/{hash}"
            )) {
                resp.headers_mut()
                    .insert(actix_web::http::header::LOCATION, v);
            }
            if kept_hash {
                if let Ok(v) = actix_web::http::header::HeaderValue::from_str(
                    "299 - \"keepHash: the image changed but kept its hash; cached renders may be stale\"",
                ) {
                    resp.headers_mut().insert(actix_web::http::header::WARNING, v);
                }
            }
            resp
        }
    }
}

/// `PUT /sourceimages/{org}/{hash}/meta/dynamic/{name}`.
pub async fn set_dynamic(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash, name) = path.into_inner();
    let body = json_body(payload).await?;
    let flags = hash_flags(&req, None);
    let change = img::set_dynamic_meta(
        &svc,
        &who,
        &org_name(&org)?,
        &hash,
        &name,
        Some(body),
        flags,
    )
    .await?;
    Ok(hash_change_response(&org, change))
}

/// `DELETE /sourceimages/{org}/{hash}/meta/dynamic/{name}`.
pub async fn delete_dynamic(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash, name) = path.into_inner();
    let body = super::parse_json(&read_body(payload, MAX_JSON_BODY).await?).unwrap_or(Value::Null);
    let flags = hash_flags(&req, Some(&body));
    let change =
        img::set_dynamic_meta(&svc, &who, &org_name(&org)?, &hash, &name, None, flags).await?;
    Ok(hash_change_response(&org, change))
}

/// `PUT /sourceimages/{org}/{hash}/options/protected`.
pub async fn set_protected(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let protected = img::parse_bool_body(&json_body(payload).await?)?;
    let flags = hash_flags(&req, None);
    match img::set_protected(&svc, &who, &org_name(&org)?, &hash, protected, flags).await? {
        HashChange::Unchanged(image) => Ok(json_response(200, &image)),
        change => Ok(hash_change_response(&org, change)),
    }
}

/// `PUT /sourceimages/{org}/{hash}/options/locked`.
pub async fn set_locked(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let locked = img::parse_bool_body(&json_body(payload).await?)?;
    Ok(json_response(
        200,
        &img::set_locked(&svc, &who, &org_name(&org)?, &hash, locked).await?,
    ))
}

fn copy_headers(req: &HttpRequest) -> Result<(String, bool)> {
    let dest = header(req, "destination")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            Error::Invalid("the Destination header must name the target organization".into())
        })?;
    // rokka.js sends the organization name; accept a URL ending in it too.
    let dest = dest
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(dest)
        .to_string();
    let overwrite = !header(req, "overwrite").is_some_and(|v| v.trim().eq_ignore_ascii_case("f"));
    Ok((dest, overwrite))
}

/// `COPY /sourceimages/{org}/{hash}` and `POST …/{hash}/copy`.
pub async fn copy(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, hash) = path.into_inner();
    let (dest, overwrite) = copy_headers(&req)?;
    Ok(
        match img::copy(&svc, &who, &org_name(&org)?, &hash, &dest, overwrite).await? {
            Copied::Created => HttpResponse::Created().finish(),
            Copied::Overwritten | Copied::Existing => no_content(),
        },
    )
}

/// `POST /sourceimages/{org}/copy` with a JSON array of hashes.
pub async fn copy_many(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (dest, overwrite) = copy_headers(&req)?;
    let body = json_body(payload).await?;
    Ok(json_response(
        200,
        &img::copy_many(&svc, &who, &org_name(&path)?, &body, &dest, overwrite).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn form_fields_are_classified_by_name() {
        assert_eq!(classify("filedata", true), FormField::File);
        assert_eq!(classify("anything", false), FormField::File);
        assert_eq!(classify("meta_user[0]", false), FormField::UserMeta(0));
        assert_eq!(
            classify("meta_dynamic[2]", false),
            FormField::DynamicMeta(2)
        );
        assert_eq!(
            classify("meta_dynamic[0][subject_area]", false),
            FormField::DynamicMetaEntry(0, "subject_area".into())
        );
        assert_eq!(classify("options[]", false), FormField::Options(0));
        assert_eq!(classify("options[1]", false), FormField::Options(1));
        assert_eq!(classify("meta_static[0]", false), FormField::Ignored);
    }

    #[test]
    fn twice_encoded_json_is_decoded() {
        let v = decode_twice("x", r#""{\"x\":1,\"y\":2}""#).unwrap();
        assert_eq!(v["x"], 1);
        let m: Map<String, Value> = img::parse_json_object("m", r#""{\"a\":\"b\"}""#).unwrap();
        assert_eq!(m["a"], "b");
    }
}
