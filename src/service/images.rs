//! Source-image use cases (spec §4): upload with dedupe, read, list, delete and restore,
//! download, name and user metadata, dynamic metadata and protection (new hashes), locking and
//! copies between organizations.

use super::accounts::{authorize, require_org, Principal};
use super::listing::ListQuery;
use super::Services;
use crate::error::{Error, Result};
use crate::model::account::Right;
use crate::model::ids::{parse_binary_hash, HashPrefix, OrgName};
use crate::model::image::{self, image_hash, ImageRecord};
use crate::model::time;
use crate::storage::{Inserted, Purged, ReceivedBlob, Records};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Uploads in flight per API key (count and declared bytes), so that one client cannot hold
/// every worker, connection and temporary file of the appliance (issue 11, part 4).
#[derive(Debug, Default)]
pub struct UploadSlots {
    in_flight: Arc<Mutex<HashMap<String, (usize, u64)>>>,
}

/// One upload's place in [`UploadSlots`], given back when dropped (whatever ends the upload).
#[derive(Debug)]
pub struct UploadSlot {
    in_flight: Arc<Mutex<HashMap<String, (usize, u64)>>>,
    key: String,
    bytes: u64,
}

/// Seconds a refused upload is asked to wait.
const UPLOAD_RETRY_AFTER_SECS: u64 = 1;

impl UploadSlots {
    /// Takes a place for an upload of `bytes` by `who`, or answers 429 when the key already
    /// has `max_count` uploads or `max_bytes` in flight (0 = no limit). A key's first upload is
    /// always let in, whatever its size, so that a large file is not refused for ever.
    pub fn acquire(
        &self,
        who: &Principal,
        bytes: u64,
        max_count: usize,
        max_bytes: u64,
    ) -> Result<UploadSlot> {
        let key = match who {
            Principal::Root => "root".to_string(),
            Principal::User { key_id, .. } => key_id.clone(),
        };
        let mut map = self
            .in_flight
            .lock()
            .map_err(|_| Error::internal("upload slots poisoned"))?;
        let entry = map.entry(key.clone()).or_insert((0, 0));
        let (count, held) = *entry;
        if count > 0 {
            if max_count > 0 && count >= max_count {
                return Err(Error::TooMany {
                    message: format!(
                        "this API key already has {count} uploads in flight (limits.max_concurrent_uploads_per_key); retry when one finished"
                    ),
                    retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
                });
            }
            if max_bytes > 0 && held.saturating_add(bytes) > max_bytes {
                return Err(Error::TooMany {
                    message: format!(
                        "this API key already has {held} upload bytes in flight (limits.max_upload_bytes_in_flight_per_key); retry when one finished"
                    ),
                    retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
                });
            }
        }
        *entry = (count + 1, held.saturating_add(bytes));
        Ok(UploadSlot {
            in_flight: self.in_flight.clone(),
            key,
            bytes,
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.in_flight.lock() {
            if let Some(entry) = map.get_mut(&self.key) {
                entry.0 = entry.0.saturating_sub(1);
                entry.1 = entry.1.saturating_sub(self.bytes);
                if entry.0 == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// One file of an upload, already received into a temporary file.
pub struct UploadFile {
    pub blob: ReceivedBlob,
    pub filename: String,
}

/// Metadata sent with the file of the same index.
#[derive(Debug, Default, Clone)]
pub struct UploadMeta {
    pub user: Option<Map<String, Value>>,
    pub dynamic: Map<String, Value>,
    pub protected: bool,
    /// The hash to keep (`options.hash`): an image moved in from another rokka-compatible
    /// host keeps the hash its render URLs use. Root key only.
    pub hash: Option<String>,
    /// The creation time to keep (`options.created`, RFC 3339), in Unix seconds. Root key
    /// only.
    pub created: Option<i64>,
}

/// Reads an upload's `options[i]` object: `protected`, and for the root key `hash` and
/// `created`, which let an import keep an image's identity. Unknown keys are ignored, as
/// rokka does.
pub fn parse_upload_options(opts: &Map<String, Value>, meta: &mut UploadMeta) -> Result<()> {
    meta.protected = match opts.get("protected") {
        None | Some(Value::Null) => false,
        Some(v) => parse_bool_body(v)
            .map_err(|_| Error::Invalid("options.protected must be true or false".into()))?,
    };
    meta.hash = match opts.get("hash") {
        None | Some(Value::Null) => None,
        Some(Value::String(h))
            if h.len() == 40 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Some(h.clone())
        }
        Some(_) => {
            return Err(Error::Invalid(
                "options.hash must be 40 lowercase hexadecimal characters".into(),
            ))
        }
    };
    meta.created = match opts.get("created") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(time::parse_rfc3339(t).ok_or_else(|| {
            Error::Invalid(format!(
                "options.created must be an RFC 3339 time, not '{}'",
                crate::model::ids::truncate(t, 40)
            ))
        })?),
        Some(_) => {
            return Err(Error::Invalid(
                "options.created must be an RFC 3339 time".into(),
            ))
        }
    };
    Ok(())
}

/// Finds an image by full or short hash. Soft-deleted images are found only with
/// `include_deleted`.
pub fn find(
    store: &dyn Records,
    org: &OrgName,
    raw_hash: &str,
    include_deleted: bool,
) -> Result<ImageRecord> {
    let not_found = || {
        Error::NotFound(format!(
            "source image '{}' not found",
            crate::model::ids::truncate(raw_hash, 48)
        ))
    };
    let prefix = HashPrefix::parse(raw_hash).ok_or_else(not_found)?;
    let rec = if prefix.is_full() {
        store.get_image(org.as_str(), prefix.as_str())?
    } else {
        let hashes = store.hashes_with_prefix(org.as_str(), prefix.as_str(), 2)?;
        match hashes.as_slice() {
            [one] => store.get_image(org.as_str(), one)?,
            [] => None,
            _ => {
                return Err(Error::Invalid(format!(
                    "the short hash '{}' matches several images",
                    prefix.as_str()
                )))
            }
        }
    };
    rec.filter(|r| include_deleted || !r.deleted)
        .ok_or_else(not_found)
}

fn to_json(store: &dyn Records, rec: &ImageRecord) -> Result<Value> {
    Ok(rec.to_json(&store.short_hash(&rec.organization, &rec.hash)?))
}

/// `GET /sourceimages/{org}/{hash}`.
pub fn get(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    deleted: bool,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    to_json(&*svc.store, &find(&*svc.store, org, hash, deleted)?)
}

/// `GET /sourceimages/{org}?…` and `?binaryHash=`.
pub fn list(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    query: &[(String, String)],
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    if let Some(bh) = binary_hash_param(query) {
        return by_binary_hash(svc, who, org, &bh);
    }
    ListQuery::parse(query)?.run(&*svc.store, org.as_str())
}

/// The `binaryHash` of a list query, which answers every live image with those bytes instead
/// of a listing.
pub(crate) fn binary_hash_param(query: &[(String, String)]) -> Option<String> {
    query
        .iter()
        .find(|(k, v)| k == "binaryHash" && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// `GET /sourceimages/{org}/binaryhash/{sha1}`: every live image with these bytes.
pub fn by_binary_hash(svc: &Services, who: &Principal, org: &OrgName, raw: &str) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let items: Vec<Value> = live_by_binary_hash(svc, org, raw)?
        .iter()
        .map(|r| to_json(&*svc.store, r))
        .collect::<Result<_>>()?;
    Ok(json!({ "total": items.len(), "items": items }))
}

/// The live images of an organization with these bytes (`raw` is the SHA-1 as given).
pub(crate) fn live_by_binary_hash(
    svc: &Services,
    org: &OrgName,
    raw: &str,
) -> Result<Vec<ImageRecord>> {
    let bh = parse_binary_hash(raw)
        .ok_or_else(|| Error::Invalid("binaryHash must be 40 hex characters".into()))?;
    Ok(svc
        .store
        .images_by_binary(org.as_str(), &bh)?
        .into_iter()
        .filter(|r| !r.deleted)
        .collect())
}

/// Accepts a JSON object given directly or as a JSON string that contains one (rokka.js
/// encodes multipart metadata twice).
pub fn parse_json_object(what: &str, raw: &str) -> Result<Map<String, Value>> {
    let bad = || Error::Invalid(format!("{what} must be a JSON object"));
    let mut v: Value = serde_json::from_str(raw)
        .map_err(|e| Error::Invalid(format!("{what} is not valid JSON: {e}")))?;
    if let Value::String(inner) = &v {
        v = serde_json::from_str(inner).map_err(|_| bad())?;
    }
    match v {
        Value::Object(m) => Ok(m),
        // PHP clients send empty arrays for empty objects.
        Value::Array(a) if a.is_empty() => Ok(Map::new()),
        _ => Err(bad()),
    }
}

/// Refuses a write before a byte of it is read while the data folder is below its headroom
/// (507).
pub fn check_room(svc: &Services) -> Result<()> {
    Ok(svc.blobs.space().check()?)
}

/// Starts receiving the bytes of one uploaded file (see [`upload`]).
pub async fn begin_upload(svc: &Services) -> Result<crate::storage::BlobUpload> {
    svc.blobs.begin().await.map_err(Error::io)
}

/// Uploads files. Every file is checked (format, limits, full decode) before any is stored,
/// so a request with one broken file stores nothing. Each stored image is durable before the
/// answer. Identical bytes with identical dynamic metadata give the existing image back.
pub async fn upload(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    files: Vec<UploadFile>,
    meta: Vec<UploadMeta>,
) -> Result<Value> {
    let discard_all = |files: &[UploadFile]| files.iter().for_each(|f| f.blob.discard());
    if let Err(e) = authorize(&*svc.store, who, org, Right::Upload)
        .and_then(|_| require_org(&*svc.store, org).map(|_| ()))
    {
        discard_all(&files);
        return Err(e);
    }
    if files.is_empty() {
        return Err(Error::Invalid("the upload contains no file".into()));
    }
    if *who != Principal::Root && meta.iter().any(|m| m.hash.is_some() || m.created.is_some()) {
        discard_all(&files);
        return Err(Error::Forbidden(
            "options.hash and options.created are kept only for uploads with the root key (imports)"
                .into(),
        ));
    }
    // A kept hash may not name an image of other bytes.
    for (f, m) in files.iter().zip(&meta) {
        let taken = match &m.hash {
            Some(h) => svc.store.get_image(org.as_str(), h)?,
            None => None,
        };
        if let Some(existing) = taken.filter(|e| e.blob != f.blob.id) {
            discard_all(&files);
            return Err(Error::Conflict(format!(
                "source image '{}' already exists with other bytes",
                existing.hash
            )));
        }
    }
    // Validate metadata first: it is cheap and fails fast.
    let mut metas = Vec::with_capacity(files.len());
    for i in 0..files.len() {
        let m = meta.get(i).cloned().unwrap_or_default();
        let checked = check_upload_meta(m);
        match checked {
            Ok(m) => metas.push(m),
            Err(e) => {
                discard_all(&files);
                return Err(e);
            }
        }
    }
    let mut infos = Vec::with_capacity(files.len());
    for f in &files {
        if f.blob.size == 0 {
            discard_all(&files);
            return Err(Error::Invalid(format!(
                "the file '{}' is empty",
                f.filename
            )));
        }
        let received = f.blob.clone();
        let limits = svc.limits();
        let probed = svc
            .pool
            .run(move || -> Result<crate::render::probe::ImageInfo> {
                let bytes = received.read().map_err(Error::internal)?;
                Ok(crate::render::probe::probe(&bytes, &limits)?)
            })
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        match probed {
            Ok(info) => infos.push(info),
            Err(e) => {
                discard_all(&files);
                return Err(naming_file(e, &f.filename));
            }
        }
    }
    let stored = store_uploads(svc, org, &files, metas, infos).await;
    // Committed files have no temporary file any more; the others must not stay behind.
    discard_all(&files);
    let items = stored?;
    svc.store.flush().await?;
    let items: Vec<Value> = items
        .iter()
        .map(|r| to_json(&*svc.store, r))
        .collect::<Result<_>>()?;
    Ok(json!({ "total": items.len(), "items": items }))
}

/// Moves checked files into place and commits their records, in order.
async fn store_uploads(
    svc: &Services,
    org: &OrgName,
    files: &[UploadFile],
    metas: Vec<UploadMeta>,
    infos: Vec<crate::render::probe::ImageInfo>,
) -> Result<Vec<ImageRecord>> {
    let mut items = Vec::with_capacity(files.len());
    for ((f, m), info) in files.iter().zip(metas).zip(infos) {
        // Bytes already stored are taken over under the removal lock, up to their record's
        // commit, so that GC cannot unlink the file between the two (it re-checks the
        // references under the same lock). Taking over is a rename-free, fsync-free step.
        let _taken_over = if svc.blobs.exists(&f.blob.id) {
            let guard = svc.store.blob_removal_lock()?;
            svc.blobs.commit(&f.blob).map_err(Error::io)?;
            Some(guard)
        } else {
            let blobs = svc.blobs.clone();
            let blob = f.blob.clone();
            tokio::task::spawn_blocking(move || blobs.commit(&blob))
                .await
                .map_err(Error::internal)?
                .map_err(Error::io)?;
            None
        };
        let hash = match &m.hash {
            Some(kept) => kept.clone(),
            None => image_hash(&f.blob.id, &m.dynamic, m.protected),
        };
        let now_ns = match m.created {
            Some(secs) => i128::from(secs) * 1_000_000_000,
            None => time::now_unix_nanos(),
        };
        let rec = ImageRecord {
            organization: org.to_string(),
            hash: hash.clone(),
            binary_hash: f.blob.sha1.clone(),
            blob: f.blob.id.clone(),
            name: f.filename.clone(),
            format: info.format.ext().to_string(),
            mimetype: info.format.mime().to_string(),
            size: f.blob.size,
            width: info.width,
            height: info.height,
            created: time::format_unix((now_ns / 1_000_000_000) as i64),
            created_ns: now_ns,
            user_metadata: m.user.clone().unwrap_or_default(),
            dynamic_metadata: m.dynamic.clone(),
            static_metadata: info.static_metadata.clone(),
            deleted: false,
            deleted_at: None,
            protected: m.protected,
            locked: false,
            opaque: info.opaque,
            animated: info.animated,
            frames: u32::try_from(info.frames).unwrap_or(u32::MAX),
        };
        // A soft-deleted record found by the insert may be collected before the update that
        // brings it back: the insert is then made again, still under the removal lock when
        // the bytes were already stored, so they stay.
        let mut attempts = 0;
        let stored = loop {
            attempts += 1;
            match svc.store.insert_image(&rec)? {
                Inserted::Created => break rec,
                Inserted::Exists(existing) if existing.blob != rec.blob => {
                    // Only a kept hash can name other bytes.
                    return Err(Error::Conflict(format!(
                        "source image '{}' already exists with other bytes",
                        existing.hash
                    )));
                }
                Inserted::Exists(mut existing) => {
                    // Re-uploading: provided user fields are set, others kept; a deleted
                    // image comes back.
                    let mut changed = false;
                    if let Some(user) = &m.user {
                        for (k, v) in user {
                            existing.user_metadata.insert(k.clone(), v.clone());
                        }
                        changed = true;
                    }
                    if existing.deleted {
                        existing.deleted = false;
                        existing.deleted_at = None;
                        changed = true;
                    }
                    if changed && !svc.store.update_image(&existing)? {
                        if attempts < 3 {
                            continue;
                        }
                        return Err(Error::Busy {
                            message: format!(
                                "source image '{}' was being collected; upload it again",
                                existing.hash
                            ),
                            retry_after_secs: 1,
                        });
                    }
                    break *existing;
                }
            }
        };
        items.push(stored);
    }
    Ok(items)
}

/// Prefixes the message of a client error with the file it is about.
fn naming_file(e: Error, filename: &str) -> Error {
    let name = crate::model::ids::truncate(filename, 80);
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{name}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{name}: {m}")),
        Error::Unprocessable(m) => Error::Unprocessable(format!("{name}: {m}")),
        other => other,
    }
}

fn check_upload_meta(m: UploadMeta) -> Result<UploadMeta> {
    let user = m
        .user
        .map(|u| image::check_user_metadata(&u).map_err(Error::Invalid))
        .transpose()?;
    let dynamic = image::check_dynamic(&m.dynamic).map_err(Error::Invalid)?;
    Ok(UploadMeta { user, dynamic, ..m })
}

/// Loads an image for a change: write right, found, and not locked when `guard_lock`.
fn for_change(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    guard_lock: bool,
) -> Result<ImageRecord> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    let rec = find(&*svc.store, org, hash, false)?;
    if guard_lock && rec.locked {
        return Err(Error::Forbidden(format!(
            "source image '{}' is locked: unlock it (PUT …/options/locked false) before changing or deleting it",
            rec.hash
        )));
    }
    Ok(rec)
}

/// Marks an image deleted (restorable for the retention period).
/// Its renders go at once: the image's render URLs answer 404 from now on. The record changes
/// first: a purge before it would send the edge to fetch the URLs while they still render.
fn soft_delete(store: &dyn Records, mut rec: ImageRecord) -> Result<Purged> {
    rec.deleted = true;
    rec.deleted_at = Some(time::now_unix());
    store.update_image(&rec)?;
    let purged = store.purge_image_renders(&rec.organization, &rec.hash, false)?;
    // A restore sends these paths to the edge again, replacing the 404 it holds by then.
    store.keep_restore_paths(&rec.organization, &rec.hash, &purged.paths)?;
    Ok(purged)
}

/// `DELETE /sourceimages/{org}/{hash}`; with `dry_run`, only reports what would be
/// invalidated.
pub async fn delete(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    dry_run: bool,
) -> Result<Option<Value>> {
    let rec = for_change(svc, who, org, hash, true)?;
    if dry_run {
        let would = svc
            .store
            .purge_image_renders(org.as_str(), &rec.hash, true)?;
        return Ok(Some(super::purged_json(&would, true)));
    }
    soft_delete(&*svc.store, rec)?;
    svc.store.flush().await?;
    Ok(None)
}

/// `DELETE /sourceimages/{org}?binaryHash=`: every live image with these bytes. Nothing is
/// deleted when one of them is locked.
pub async fn delete_by_binary_hash(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    raw: &str,
) -> Result<()> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    let bh = parse_binary_hash(raw)
        .ok_or_else(|| Error::Invalid("binaryHash must be 40 hex characters".into()))?;
    let live: Vec<ImageRecord> = svc
        .store
        .images_by_binary(org.as_str(), &bh)?
        .into_iter()
        .filter(|r| !r.deleted)
        .collect();
    if live.is_empty() {
        return Err(Error::NotFound(format!(
            "no source image with binary hash '{bh}'"
        )));
    }
    if let Some(locked) = live.iter().find(|r| r.locked) {
        return Err(Error::Forbidden(format!(
            "source image '{}' is locked; nothing was deleted",
            locked.hash
        )));
    }
    for rec in live {
        soft_delete(&*svc.store, rec)?;
    }
    svc.store.flush().await?;
    Ok(())
}

/// `POST /sourceimages/{org}/{hash}/restore`.
pub async fn restore(svc: &Services, who: &Principal, org: &OrgName, hash: &str) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    let mut rec = find(&*svc.store, org, hash, true)?;
    if rec.deleted {
        let retention = i64::from(svc.config.images.retention_days) * 86_400;
        if rec
            .deleted_at
            .is_some_and(|at| at + retention < time::now_unix())
        {
            return Err(Error::NotFound(format!(
                "source image '{}' was deleted too long ago to restore",
                rec.hash
            )));
        }
        rec.deleted = false;
        rec.deleted_at = None;
        svc.store.update_image(&rec)?;
        svc.store.refresh_restored(org.as_str(), &rec.hash)?;
        svc.store.flush().await?;
    }
    to_json(&*svc.store, &rec)
}

/// What a download streams: the blob and how to present it.
pub struct Download {
    pub blob: String,
    pub name: String,
    pub mimetype: String,
    pub size: u64,
}

/// `GET /sourceimages/{org}/{hash}/download`.
pub fn download(svc: &Services, who: &Principal, org: &OrgName, hash: &str) -> Result<Download> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let rec = find(&*svc.store, org, hash, false)?;
    may_download(svc, who, org, &rec)?;
    Ok(Download {
        blob: rec.blob,
        name: rec.name,
        mimetype: rec.mimetype,
        size: rec.size,
    })
}

/// Whether the caller, who may read the organization's images, may also have the original
/// bytes of `rec`: a protected image's only with the right to download protected originals
/// (spec §3.3; the `sourceimages:*` roles need `sourceimages:download:protected`). The single
/// and the ZIP download both ask this.
pub(crate) fn may_download(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    rec: &ImageRecord,
) -> Result<()> {
    if rec.protected {
        authorize(&*svc.store, who, org, Right::DownloadProtected)?;
    }
    Ok(())
}

/// The bytes of a blob found through [`download`] or a `source_file` render, as a stream.
pub async fn stream_blob(svc: &Services, blob: &str) -> Result<crate::storage::ByteStream> {
    svc.blobs.stream(blob).await.map_err(Error::internal)
}

/// `PUT /sourceimages/{org}/{hash}/name` with a JSON string body.
pub async fn rename(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    body: &Value,
) -> Result<()> {
    let name = match body {
        Value::String(s) if !s.is_empty() && s.len() <= 255 && !s.contains(['/', '\0']) => {
            s.clone()
        }
        _ => {
            return Err(Error::Invalid(
                "the name must be a JSON string of 1 to 255 characters without '/'".into(),
            ))
        }
    };
    let mut rec = for_change(svc, who, org, hash, false)?;
    rec.name = name;
    svc.store.update_image(&rec)?;
    svc.store.flush().await?;
    Ok(())
}

/// `GET …/meta/user[/{field}]`.
pub fn get_user_meta(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    field: Option<&str>,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let rec = find(&*svc.store, org, hash, false)?;
    match field {
        None => Ok(Value::Object(rec.user_metadata)),
        Some(f) => {
            let key = image::normalize_meta_key(f).map_err(Error::Invalid)?;
            rec.user_metadata
                .get(&key)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("user metadata '{f}' not found")))
        }
    }
}

/// A change to user metadata.
pub enum MetaChange {
    /// `PUT …/meta/user`: replace everything.
    Replace(Value),
    /// `PATCH …/meta/user`: merge; `null` deletes a field.
    Merge(Value),
    /// `PUT …/meta/user/{field}`.
    SetField(String, Value),
    /// `DELETE …/meta/user`.
    Clear,
    /// `DELETE …/meta/user/{field}`.
    DeleteField(String),
}

/// Applies a user-metadata change; locked images refuse it.
pub async fn change_user_meta(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    change: MetaChange,
) -> Result<()> {
    let mut rec = for_change(svc, who, org, hash, true)?;
    let as_object = |v: Value| -> Result<Map<String, Value>> {
        match v {
            Value::Object(m) => Ok(m),
            Value::Array(a) if a.is_empty() => Ok(Map::new()),
            _ => Err(Error::Invalid("user metadata must be a JSON object".into())),
        }
    };
    match change {
        MetaChange::Replace(v) => {
            rec.user_metadata =
                image::check_user_metadata(&as_object(v)?).map_err(Error::Invalid)?
        }
        MetaChange::Merge(v) => {
            for (k, val) in as_object(v)? {
                let key = image::normalize_meta_key(&k).map_err(Error::Invalid)?;
                if val.is_null() {
                    rec.user_metadata.remove(&key);
                } else {
                    let checked = image::check_meta_value(&k, &val).map_err(Error::Invalid)?;
                    rec.user_metadata.insert(key, checked);
                }
            }
        }
        MetaChange::SetField(k, val) => {
            let key = image::normalize_meta_key(&k).map_err(Error::Invalid)?;
            let checked = image::check_meta_value(&k, &val).map_err(Error::Invalid)?;
            rec.user_metadata.insert(key, checked);
        }
        MetaChange::Clear => rec.user_metadata.clear(),
        MetaChange::DeleteField(k) => {
            let key = image::normalize_meta_key(&k).map_err(Error::Invalid)?;
            if rec.user_metadata.remove(&key).is_none() {
                return Err(Error::NotFound(format!("user metadata '{k}' not found")));
            }
        }
    }
    svc.store.update_image(&rec)?;
    svc.store.flush().await?;
    Ok(())
}

/// Flags of a hash-changing request.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashChangeFlags {
    pub delete_previous: bool,
    pub keep_hash: bool,
}

/// Outcome of a change that may create a new hash.
pub enum HashChange {
    /// Nothing changed.
    Unchanged(Value),
    /// A (new or existing) image under `hash`.
    Changed {
        hash: String,
        image: Value,
        kept_hash: bool,
    },
}

/// Creates (or reuses) the variant of `old` with other dynamic metadata or protection.
async fn derive_variant(
    svc: &Services,
    old: ImageRecord,
    dynamic: Map<String, Value>,
    protected: bool,
    flags: HashChangeFlags,
) -> Result<HashChange> {
    if flags.keep_hash && flags.delete_previous {
        return Err(Error::Invalid(
            "keepHash and deletePrevious cannot be combined".into(),
        ));
    }
    if old.dynamic_metadata == dynamic && old.protected == protected {
        return Ok(HashChange::Unchanged(to_json(&*svc.store, &old)?));
    }
    if flags.keep_hash {
        let mut rec = old;
        rec.dynamic_metadata = dynamic;
        rec.protected = protected;
        svc.store.update_image(&rec)?;
        svc.store.flush().await?;
        let image = to_json(&*svc.store, &rec)?;
        return Ok(HashChange::Changed {
            hash: rec.hash,
            image,
            kept_hash: true,
        });
    }
    let new_hash = image_hash(&old.blob, &dynamic, protected);
    let now_ns = time::now_unix_nanos();
    let mut rec = old.clone();
    rec.hash = new_hash.clone();
    rec.dynamic_metadata = dynamic;
    rec.protected = protected;
    rec.locked = false;
    rec.created_ns = now_ns;
    rec.created = time::format_unix((now_ns / 1_000_000_000) as i64);
    let stored = match svc.store.insert_image(&rec)? {
        Inserted::Created => rec,
        Inserted::Exists(existing) if existing.deleted => {
            let mut revived = existing;
            revived.deleted = false;
            revived.deleted_at = None;
            if svc.store.update_image(&revived)? {
                *revived
            } else {
                // Collected in between (the source's record still holds the bytes): anew.
                match svc.store.insert_image(&rec)? {
                    Inserted::Created => rec,
                    Inserted::Exists(existing) => *existing,
                }
            }
        }
        Inserted::Exists(existing) => *existing,
    };
    if flags.delete_previous && old.hash != stored.hash {
        if old.locked {
            return Err(Error::Forbidden(format!(
                "source image '{}' is locked and was not deleted",
                old.hash
            )));
        }
        soft_delete(&*svc.store, old)?;
    }
    svc.store.flush().await?;
    let image = to_json(&*svc.store, &stored)?;
    Ok(HashChange::Changed {
        hash: stored.hash,
        image,
        kept_hash: false,
    })
}

/// `PUT …/meta/dynamic/{name}` (`value` = Some) and `DELETE …/meta/dynamic/{name}` (None).
pub async fn set_dynamic_meta(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    name: &str,
    value: Option<Value>,
    flags: HashChangeFlags,
) -> Result<HashChange> {
    let old = for_change(svc, who, org, hash, false)?;
    let mut dynamic = old.dynamic_metadata.clone();
    match value {
        Some(v) => {
            let checked = image::check_dynamic_metadata(name, &v).map_err(Error::Invalid)?;
            dynamic.insert(name.to_string(), checked);
        }
        None => {
            if dynamic.remove(name).is_none() {
                return Err(Error::NotFound(format!(
                    "dynamic metadata '{name}' not set on this image"
                )));
            }
        }
    }
    let protected = old.protected;
    derive_variant(svc, old, dynamic, protected, flags).await
}

/// `PUT …/options/protected` with body `true`/`false`.
pub async fn set_protected(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    protected: bool,
    flags: HashChangeFlags,
) -> Result<HashChange> {
    let old = for_change(svc, who, org, hash, false)?;
    let dynamic = old.dynamic_metadata.clone();
    derive_variant(
        svc,
        old,
        dynamic,
        protected,
        HashChangeFlags {
            keep_hash: false,
            ..flags
        },
    )
    .await
}

/// `PUT …/options/locked` with body `true`/`false` (admin only).
pub async fn set_locked(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    locked: bool,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::Lock)?;
    let mut rec = find(&*svc.store, org, hash, false)?;
    if rec.locked != locked {
        rec.locked = locked;
        svc.store.update_image(&rec)?;
        svc.store.flush().await?;
    }
    to_json(&*svc.store, &rec)
}

/// Reads a JSON boolean body (`true`, `false`, or those as strings).
pub fn parse_bool_body(body: &Value) -> Result<bool> {
    match body {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(Error::Invalid("the body must be true or false".into())),
    }
}

/// Outcome of copying one image.
#[derive(Debug, PartialEq, Eq)]
pub enum Copied {
    Created,
    Overwritten,
    Existing,
}

fn copy_one(svc: &Services, src: &ImageRecord, dest: &OrgName, overwrite: bool) -> Result<Copied> {
    let mut rec = src.clone();
    rec.organization = dest.to_string();
    rec.locked = false;
    match svc.store.insert_image(&rec)? {
        Inserted::Created => Ok(Copied::Created),
        Inserted::Exists(existing) if overwrite => {
            let mut merged = rec;
            merged.created = existing.created;
            merged.created_ns = existing.created_ns;
            merged.locked = existing.locked;
            svc.store.update_image(&merged)?;
            Ok(Copied::Overwritten)
        }
        Inserted::Exists(_) => Ok(Copied::Existing),
    }
}

fn check_copy_rights(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    dest: &str,
) -> Result<OrgName> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let dest = OrgName::parse(dest).map_err(Error::Invalid)?;
    authorize(&*svc.store, who, &dest, Right::ImagesWrite)?;
    if svc.store.get_org(dest.as_str())?.is_none() {
        return Err(Error::Invalid(format!(
            "destination organization '{dest}' does not exist"
        )));
    }
    Ok(dest)
}

/// `COPY /sourceimages/{org}/{hash}` (`Destination`, `Overwrite: F`).
pub async fn copy(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    dest: &str,
    overwrite: bool,
) -> Result<Copied> {
    let dest = check_copy_rights(svc, who, org, dest)?;
    let src = find(&*svc.store, org, hash, false)?;
    let outcome = copy_one(svc, &src, &dest, overwrite)?;
    if outcome == Copied::Existing {
        return Err(Error::PreconditionFailed(format!(
            "source image '{}' already exists in '{dest}'",
            src.hash
        )));
    }
    svc.store.flush().await?;
    Ok(outcome)
}

/// `POST /sourceimages/{org}/copy` with a JSON array of at most 100 hashes.
pub async fn copy_many(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    body: &Value,
    dest: &str,
    overwrite: bool,
) -> Result<Value> {
    let dest = check_copy_rights(svc, who, org, dest)?;
    let hashes: Vec<&str> = match body {
        Value::Array(a) if a.len() <= 100 => a.iter().filter_map(Value::as_str).collect(),
        Value::Array(_) => {
            return Err(Error::Invalid(
                "at most 100 hashes can be copied at once".into(),
            ))
        }
        _ => {
            return Err(Error::Invalid(
                "the body must be a JSON array of hashes".into(),
            ))
        }
    };
    let (mut created, mut existing, mut notfound) = (Vec::new(), Vec::new(), Vec::new());
    for h in hashes {
        match find(&*svc.store, org, h, false) {
            Ok(src) => match copy_one(svc, &src, &dest, overwrite)? {
                Copied::Created | Copied::Overwritten => created.push(src.hash),
                Copied::Existing => existing.push(src.hash),
            },
            Err(Error::NotFound(_)) | Err(Error::Invalid(_)) => notfound.push(h.to_string()),
            Err(e) => return Err(e),
        }
    }
    svc.store.flush().await?;
    Ok(json!({ "created": created, "existing": existing, "notfound": notfound }))
}
