//! ZIP archives of originals, `GET /sourceimages/{org}/download` (spec §4.4): the images that
//! the listing with the same query selects (its filters, sort, `limit`, `offset` or cursor,
//! `deleted`, or `binaryHash`), as one archive written while their bytes are read.
//!
//! [`plan`] does everything that may refuse the request, before its first byte: the rights of
//! a listing, the selection through [`super::listing`] (the one query path, so the archive
//! holds exactly the page the list would show and bad parameters get the list's 400), the
//! protected-image rule of the single download ([`super::images::may_download`]) and the
//! `limits.max_zip_images` and `limits.max_zip_bytes` bounds. [`stream`] then writes the
//! archive chunk by chunk from each original's own stream ([`crate::storage::Bytes::stream`]):
//! neither the archive nor a whole original is held in memory, and the bytes handed out count
//! as the organization's traffic, as single downloads do. Entry names are the images' names,
//! made safe to unpack and unique within the archive ([`unique_names`]).

use super::accounts::{authorize, Principal};
use super::images::{binary_hash_param, live_by_binary_hash, may_download};
use super::listing::ListQuery;
use super::Services;
use crate::error::{Error, Result};
use crate::model::account::Right;
use crate::model::ids::OrgName;
use crate::model::image::ImageRecord;
use crate::storage::ByteStream;
use futures_util::stream::{BoxStream, StreamExt};
use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipWriter};

/// One file of an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name inside the archive: safe to unpack and unique within the archive.
    pub name: String,
    blob: String,
    size: u64,
    created_secs: i64,
}

/// What [`plan`] selected: the entries in the listing's order and the bytes of their
/// originals.
#[derive(Debug)]
pub struct Archive {
    pub entries: Vec<Entry>,
    pub bytes: u64,
}

/// Selects and checks the images of a ZIP download: the caller may read the organization's
/// images; the page the listing with `query` selects (or every live image of a `binaryHash`)
/// is within `limits.max_zip_images` and `limits.max_zip_bytes` (413 otherwise); and when it
/// holds a protected image, the caller may download protected originals. A caller who may
/// not is refused the whole archive (403 naming the first such image) rather than given one
/// with images silently left out, which would look complete.
pub fn plan(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    query: &[(String, String)],
) -> Result<Archive> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let records = match binary_hash_param(query) {
        Some(bh) => live_by_binary_hash(svc, org, &bh)?,
        None => ListQuery::parse(query)?.records(&*svc.store, org.as_str())?,
    };
    let limits = &svc.config.limits;
    let max_images = limits.max_zip_images;
    if max_images > 0 && records.len() > max_images {
        return Err(Error::TooLarge(format!(
            "the archive would hold {} images, more than limits.max_zip_images allows ({max_images}); \
             narrow it with filters (as for GET /sourceimages/{org}) or a limit of at most {max_images}, \
             and page on with offset or the listing's cursor",
            records.len()
        )));
    }
    if let Some(protected) = records.iter().find(|r| r.protected) {
        may_download(svc, who, org, protected).map_err(|e| match e {
            Error::Forbidden(_) => Error::Forbidden(format!(
                "source image '{}' is protected and this key may not download protected originals \
                 of organization '{org}' (that needs the role sourceimages:download:protected); \
                 narrow the selection with filters so that it holds no protected image",
                protected.hash
            )),
            other => other,
        })?;
    }
    let bytes = records
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.size));
    let max_bytes = limits.max_zip_bytes;
    if max_bytes > 0 && bytes > max_bytes {
        return Err(Error::TooLarge(format!(
            "the archive would hold {bytes} bytes of originals, more than limits.max_zip_bytes \
             allows ({max_bytes}); narrow it with filters (as for GET /sourceimages/{org}) or a \
             smaller limit, and page on with offset or the listing's cursor"
        )));
    }
    let names = unique_names(&records, |r| {
        Ok(svc.store.short_hash(org.as_str(), &r.hash)?)
    })?;
    let entries = records
        .into_iter()
        .zip(names)
        .map(|(r, name)| Entry {
            name,
            blob: r.blob,
            size: r.size,
            created_secs: i64::try_from(r.created_ns / 1_000_000_000).unwrap_or(0),
        })
        .collect();
    Ok(Archive { entries, bytes })
}

/// The archive of `archive`'s entries, in order, as a stream of chunks: each original is read
/// through its own stream and written as it arrives, so memory holds one chunk and a few
/// headers whatever the archive's size. Every chunk handed out counts as `org`'s traffic. A
/// read that fails midway is logged and ends the stream with an error, which cuts the answer
/// short (the client sees a broken transfer, never a complete-looking archive).
pub fn stream(
    svc: Arc<Services>,
    org: &OrgName,
    archive: Archive,
) -> BoxStream<'static, Result<bytes::Bytes>> {
    let out = Pending::default();
    let writer = Writer {
        svc,
        org: org.to_string(),
        zip: Some(ZipWriter::new_stream(out.clone())),
        out,
        entries: archive.entries.into_iter(),
        current: None,
    };
    futures_util::stream::unfold(Some(writer), |state| async move {
        let mut writer = state?;
        match writer.next_chunk().await {
            Ok(Some(chunk)) => {
                writer.svc.traffic.add(&writer.org, chunk.len() as u64);
                Some((Ok(chunk), Some(writer)))
            }
            Ok(None) => None,
            Err(e) => {
                log::error!(
                    "the ZIP download of organization '{}' stopped: {e}",
                    writer.org
                );
                Some((Err(e), None))
            }
        }
    })
    .boxed()
}

/// The archive's bytes between two chunks handed out: the ZIP writer appends to it and the
/// stream takes what it holds. Shared behind a mutex (never contended: one stream uses it)
/// rather than a `RefCell` so that the stream can be sent between threads.
#[derive(Debug, Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> io::Result<Vec<u8>> {
        let mut held = self
            .0
            .lock()
            .map_err(|_| io::Error::other("the archive buffer is poisoned"))?;
        Ok(std::mem::take(&mut *held))
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("the archive buffer is poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The state of an archive being written.
struct Writer {
    svc: Arc<Services>,
    org: String,
    /// `None` once the central directory was written.
    zip: Option<ZipWriter<StreamWriter<Pending>>>,
    out: Pending,
    entries: std::vec::IntoIter<Entry>,
    /// The original being copied into the current entry.
    current: Option<(String, ByteStream)>,
}

impl Writer {
    /// The next piece of the archive, or `None` after its end. A piece is the headers written
    /// since the last one and one chunk of an original, or the archive's tail.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        loop {
            if let Some((name, original)) = self.current.as_mut() {
                match original.next().await {
                    Some(Ok(chunk)) => {
                        let zip = self
                            .zip
                            .as_mut()
                            .ok_or_else(|| Error::internal("the archive was already finished"))?;
                        zip.write_all(&chunk).map_err(|e| {
                            Error::internal(format!("writing '{name}' into the archive: {e}"))
                        })?;
                        return Ok(Some(self.out.take().map_err(Error::internal)?.into()));
                    }
                    Some(Err(e)) => {
                        return Err(Error::internal(format!(
                            "reading the original of '{name}': {e}"
                        )))
                    }
                    None => self.current = None,
                }
                continue;
            }
            let Some(zip) = self.zip.as_mut() else {
                return Ok(None);
            };
            match self.entries.next() {
                Some(entry) => {
                    zip.start_file(entry.name.as_str(), entry_options(&entry))
                        .map_err(|e| {
                            Error::internal(format!(
                                "starting '{}' in the archive: {e}",
                                entry.name
                            ))
                        })?;
                    let original = super::images::stream_blob(&self.svc, &entry.blob).await?;
                    self.current = Some((entry.name, original));
                }
                None => {
                    if let Some(zip) = self.zip.take() {
                        zip.finish()
                            .map_err(|e| Error::internal(format!("finishing the archive: {e}")))?;
                    }
                    let tail = self.out.take().map_err(Error::internal)?;
                    return Ok((!tail.is_empty()).then(|| tail.into()));
                }
            }
        }
    }
}

/// How an entry is written. Stored, not deflated: JPEG, PNG, WebP, AVIF and GIF are
/// compressed already, so deflate would spend CPU on the request's worker for a few percent at
/// best; and a stored entry's bytes are the original's bytes, byte for byte. Sizes from 4 GiB
/// on need ZIP64 fields, which must be asked for before the entry's first byte.
fn entry_options(entry: &Entry) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .unix_permissions(0o644)
        .last_modified_time(zip_time(entry.created_secs))
        .large_file(entry.size >= u64::from(u32::MAX))
}

/// The image's creation time as a ZIP timestamp (UTC; ZIP times have no zone and start in
/// 1980, earlier times become 1980-01-01).
fn zip_time(secs: i64) -> DateTime {
    crate::model::time::utc_fields(secs)
        .and_then(|(year, month, day, hour, minute, second)| {
            let year = u16::try_from(year).ok()?;
            DateTime::from_date_and_time(year, month, day, hour, minute, second).ok()
        })
        .unwrap_or_default()
}

/// Longest name (in bytes) kept from an image's name, leaving room for a hash suffix within
/// the 255 bytes most file systems allow.
const MAX_NAME_BYTES: usize = 200;

/// Characters no entry name keeps: path separators (`/`, `\`), which would place the file
/// elsewhere when unpacked, and those Windows refuses in file names (`:` also names a drive).
const REPLACED: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

/// A file name that unpacks inside the target folder everywhere: control characters dropped,
/// [`REPLACED`] characters turned into `_`, runs of dots shortened to one (no `..`), leading
/// dots and spaces dropped (no hidden file, no `.`), trailing ones too (Windows drops them,
/// which could make two names one), and at most [`MAX_NAME_BYTES`] with the extension kept.
/// A name with nothing left becomes `{hash}.{format}`.
pub fn safe_name(raw: &str, hash: &str, format: &str) -> String {
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars().filter(|c| !c.is_control()) {
        if c == '.' && name.ends_with('.') {
            continue;
        }
        name.push(if REPLACED.contains(&c) { '_' } else { c });
    }
    let name = name
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    let name = shorten(name, MAX_NAME_BYTES);
    if name.is_empty() {
        format!("{hash}.{format}")
    } else {
        name
    }
}

/// `name` cut to at most `max` bytes on a character boundary, its extension kept when short.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = split_extension(name);
    let ext = if ext.len() < 16 { ext } else { "" };
    let room = max.saturating_sub(ext.len());
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// A name's stem and its extension with the dot (`"photo.jpg"` → `("photo", ".jpg")`); a
/// leading dot starts no extension.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// `name` with `-{suffix}` before its extension (`photo.jpg` → `photo-1a2b3c.jpg`).
fn with_suffix(name: &str, suffix: &str) -> String {
    let (stem, ext) = split_extension(name);
    format!("{stem}-{suffix}{ext}")
}

/// Archive names for `records`, in order: each image's [`safe_name`]. A name met before gets
/// the image's short hash before its extension (`photo-1a2b3c.jpg`), or its full hash if even
/// that is taken. Names are compared without case, as the file systems of macOS and Windows,
/// where archives are often unpacked, compare them.
pub fn unique_names(
    records: &[ImageRecord],
    short_hash: impl Fn(&ImageRecord) -> Result<String>,
) -> Result<Vec<String>> {
    let mut taken: HashSet<String> = HashSet::with_capacity(records.len());
    let mut names = Vec::with_capacity(records.len());
    for rec in records {
        let base = safe_name(&rec.name, &rec.hash, &rec.format);
        let mut name = base.clone();
        if taken.contains(&name.to_lowercase()) {
            name = with_suffix(&base, &short_hash(rec)?);
        }
        let mut n = 1;
        while taken.contains(&name.to_lowercase()) {
            name = if n == 1 {
                with_suffix(&base, &rec.hash)
            } else {
                with_suffix(&base, &format!("{}-{n}", rec.hash))
            };
            n += 1;
        }
        taken.insert(name.to_lowercase());
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(hash: &str, name: &str) -> ImageRecord {
        ImageRecord {
            organization: "o".into(),
            name: name.into(),
            ..crate::storage::fixtures::image(hash, "x")
        }
    }

    fn short(r: &ImageRecord) -> Result<String> {
        Ok(r.hash[..6].to_string())
    }

    #[test]
    fn names_lose_path_separators_parent_steps_and_control_characters() {
        let n = |raw: &str| safe_name(raw, "abc", "jpg");
        assert_eq!(n("photo.jpg"), "photo.jpg");
        assert_eq!(n("../../etc/passwd"), "_._etc_passwd");
        assert_eq!(n("/abs/path.png"), "_abs_path.png");
        assert_eq!(n("a\\b..c.jpg"), "a_b.c.jpg");
        assert_eq!(n("C:evil.jpg"), "C_evil.jpg");
        assert_eq!(n("tab\there\u{7}.jpg"), "tabhere.jpg");
        assert_eq!(n(".hidden.jpg"), "hidden.jpg");
        assert_eq!(n("Grüße.jpg"), "Grüße.jpg");
        assert_eq!(n(".."), "abc.jpg");
        assert_eq!(n("\u{0}"), "abc.jpg");
        for raw in ["../x", "..", "a/../b", "/..", "..\\..\\x", ". . /x"] {
            let safe = n(raw);
            assert!(!safe.contains(['/', '\\']), "{raw} → {safe}");
            assert!(!safe.contains(".."), "{raw} → {safe}");
            assert!(!safe.starts_with('.'), "{raw} → {safe}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let long = format!("{}.jpeg", "é".repeat(300));
        let safe = safe_name(&long, "abc", "jpg");
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with("é.jpeg"), "{safe}");
    }

    #[test]
    fn a_clashing_name_gets_the_short_hash_before_its_extension() {
        let records = [
            rec("1a2b3c4d", "photo.jpg"),
            rec("5e6f7a8b", "photo.jpg"),
            rec("9c0d1e2f", "PHOTO.jpg"),
            rec("77777777", "README"),
            rec("88888888", "README"),
        ];
        let names = unique_names(&records, short).unwrap();
        assert_eq!(
            names,
            [
                "photo.jpg",
                "photo-5e6f7a.jpg",
                "PHOTO-9c0d1e.jpg",
                "README",
                "README-888888"
            ]
        );
    }

    #[test]
    fn a_suffixed_name_that_is_taken_falls_back_to_the_full_hash() {
        let records = [
            rec("1a2b3c4d", "photo-5e6f7a.jpg"),
            rec("2a2b3c4d", "photo.jpg"),
            rec("5e6f7a8b", "photo.jpg"),
        ];
        let names = unique_names(&records, short).unwrap();
        assert_eq!(
            names,
            ["photo-5e6f7a.jpg", "photo.jpg", "photo-5e6f7a8b.jpg"]
        );
    }

    #[test]
    fn zip_times_are_the_utc_creation_time_and_start_in_1980() {
        let t = zip_time(1_575_976_404);
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2019, 12, 10, 11, 13, 24)
        );
        assert_eq!(zip_time(0), DateTime::default());
    }
}
