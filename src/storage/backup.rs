//! Logical backups of a data folder. [`export`] writes the primary records and the
//! source bytes they refer to as one self-describing stream, while the service runs;
//! [`import`] restores such a stream into an empty data folder. Nothing derived is
//! exported: indexes, blob reference counts, usage counters and render recency are rebuilt on
//! import through the same store methods the API uses (`insert_image`, `put_render`, …), so a
//! restored folder passes `verify` by construction. Both read and write only through the
//! storage interfaces, so a backup moves between backends. The edge queue and the paths kept for
//! restoring deleted images are dropped: they concern the cache in front of the old machine.
//!
//! # Format (version 2)
//! Integers are big-endian. The file starts with the magic `DRKRMBK\0` and the format version
//! (u32), followed by frames: kind (u8), key length (u32), key, value length (u64), value.
//!
//! | kind | key | value |
//! |---|---|---|
//! | 1 info (first, once) | empty | JSON [`BackupInfo`] |
//! | 2 organization | name | JSON `Organization` |
//! | 3 user | id | JSON `User` |
//! | 4 API key | digest of the secret | JSON `ApiKey` |
//! | 5 membership | `org \0 user` | JSON `Membership` |
//! | 6 stack | `org \0 name` | JSON `StoredStack` (with its revision) |
//! | 7 day figures | `org \0 YYYY-MM-DD` | JSON `DayStats` |
//! | 8 blob | BLAKE3 hex | the source bytes |
//! | 9 image | `org \0 hash` | JSON `ImageRecord` |
//! | 10 render | render key | u32 length, JSON served paths, stored render value |
//! | 11 alias | `org \0 alias` | JSON `StoredAlias` |
//! | 255 trailer (last) | BLAKE3 of every byte before it | JSON [`BackupCounts`] |
//!
//! Frames come in that order, except that blobs and images interleave: each blob comes just
//! before the first image that refers to it, so an import never stores a reference before its
//! file (design §1b). Nothing may follow the trailer.
//!
//! Version 1 is version 2 without alias frames (and without `aliases` in the trailer); this
//! binary reads both. Aliases come last, after every image they may point to; the served
//! paths of an alias are not exported, like the edge queue.
//!
//! # Consistency while the service runs
//! sled iteration is not a snapshot across trees, so the export orders its reads instead:
//! organizations, users and keys first, then records that refer to them (kept only when what
//! they refer to was exported), then images, each with its blob file opened before the
//! record is written (blob files are immutable; an image whose file vanished because GC
//! removed it meanwhile is left out), and renders last, kept only when their image, its live
//! state and every stack revision they went through are in the backup.

use super::aliases::{AliasPut, StoredAlias};
use super::renders::{parse_stored, StoredRender};
use super::stacks::StoredStack;
use super::ServedPath;
use super::{encode, key2, Bytes, DayStats, Records, Result, StorageError};
use crate::model::account::{ApiKey, Membership, Organization, User};
use crate::model::image::ImageRecord;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"DRKRMBK\0";
/// The format this binary writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// Longest key of a frame: keys are names and ids.
const MAX_KEY: u32 = 4096;
/// Largest value read into memory (records and renders; blobs are streamed).
const MAX_RECORD: u64 = 512 * 1024 * 1024;
/// I/O buffer of the file and stream sides.
const BUFFER: usize = 256 * 1024;

/// What a backup says about itself, in its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Version of the Darkroom that wrote it.
    pub darkroom: String,
    /// Data layout of the records ([`super::SCHEMA_VERSION`] of the writer).
    pub schema: u32,
    /// When the export started (RFC 3339).
    pub created: String,
    /// Whether stored renders were included.
    pub renders: bool,
    /// The renderer generation of those renders ([`Records::render_epoch`] of the source); 0
    /// in backups written before it was recorded. The restored records take it over, so a
    /// newer renderer retires renders of an older one at start-up.
    #[serde(default)]
    pub render_epoch: u32,
}

/// How many of each record a backup holds (its trailer), or an import restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCounts {
    pub organizations: u64,
    pub users: u64,
    pub keys: u64,
    pub memberships: u64,
    pub stacks: u64,
    pub days: u64,
    pub images: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub renders: u64,
    pub render_bytes: u64,
    /// Absent from version 1 backups, which hold no aliases.
    #[serde(default)]
    pub aliases: u64,
}

impl std::fmt::Display for BackupCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} organizations, {} users, {} keys, {} memberships, {} stacks, {} days of figures, \
             {} images, {} blobs ({} bytes), {} renders ({} bytes), {} aliases",
            self.organizations,
            self.users,
            self.keys,
            self.memberships,
            self.stacks,
            self.days,
            self.images,
            self.blobs,
            self.blob_bytes,
            self.renders,
            self.render_bytes,
            self.aliases
        )
    }
}

/// What an export wrote and what it left out because it changed meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub counts: BackupCounts,
    /// Images whose blob file was removed (by GC) while the export ran.
    pub skipped_images: u64,
}

/// What an import restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub counts: BackupCounts,
    /// Renders in the backup whose image or stack revision it does not hold (none from a
    /// backup written by [`export`]).
    pub skipped_renders: u64,
}

/// Frame kinds; the discriminant is the byte on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Info = 1,
    Org = 2,
    User = 3,
    Key = 4,
    Member = 5,
    Stack = 6,
    Day = 7,
    Blob = 8,
    Image = 9,
    Render = 10,
    Alias = 11,
    Trailer = 255,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Info,
            2 => Kind::Org,
            3 => Kind::User,
            4 => Kind::Key,
            5 => Kind::Member,
            6 => Kind::Stack,
            7 => Kind::Day,
            8 => Kind::Blob,
            9 => Kind::Image,
            10 => Kind::Render,
            11 => Kind::Alias,
            255 => Kind::Trailer,
            _ => return None,
        })
    }

    /// Frames must come in non-decreasing phase; blobs and images share one.
    fn phase(self) -> u8 {
        match self {
            Kind::Image => Kind::Blob as u8,
            k => k as u8,
        }
    }
}

fn invalid(message: impl Into<String>) -> StorageError {
    StorageError::Backup(message.into())
}

// ---- writing ----

/// Writes frames and hashes every byte of them for the trailer.
struct FrameWriter<W: Write> {
    out: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> FrameWriter<W> {
    fn new(out: W) -> io::Result<FrameWriter<W>> {
        let mut w = FrameWriter {
            out,
            hash: blake3::Hasher::new(),
        };
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_be_bytes())?;
        Ok(w)
    }

    fn head(&mut self, kind: Kind, key: &[u8], value_len: u64) -> io::Result<()> {
        self.write_all(&[kind as u8])?;
        self.write_all(&(key.len() as u32).to_be_bytes())?;
        self.write_all(key)?;
        self.write_all(&value_len.to_be_bytes())
    }

    fn frame(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.head(kind, key, value.len() as u64)?;
        self.write_all(value)
    }

    /// Writes the trailer (not part of its own hash) and returns the output.
    fn finish(mut self, counts: &BackupCounts) -> io::Result<W> {
        let digest = *self.hash.finalize().as_bytes();
        let value = encode(counts);
        self.out.write_all(&[Kind::Trailer as u8])?;
        self.out.write_all(&(digest.len() as u32).to_be_bytes())?;
        self.out.write_all(&digest)?;
        self.out.write_all(&(value.len() as u64).to_be_bytes())?;
        self.out.write_all(&value)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a backup of everything in `records` and `bytes` to `out` (see the module
/// documentation), with the stored renders when `renders`. Safe while the service runs; holds
/// one record (and one render) in memory at a time, and streams blobs. Works on every
/// backend: it reads only through the interfaces.
pub fn export(
    records: &dyn Records,
    bytes: &dyn Bytes,
    out: impl Write,
    renders: bool,
) -> Result<Exported> {
    let mut w = FrameWriter::new(BufWriter::with_capacity(BUFFER, out))?;
    let mut c = BackupCounts::default();
    let info = BackupInfo {
        darkroom: env!("CARGO_PKG_VERSION").to_string(),
        schema: super::SCHEMA_VERSION,
        created: crate::model::time::format_unix(crate::model::time::now_unix()),
        renders,
        render_epoch: records.render_epoch()?,
    };
    w.frame(Kind::Info, b"", &encode(&info))?;

    let all_orgs = records.list_orgs()?;
    let mut orgs = HashSet::new();
    for org in &all_orgs {
        w.frame(Kind::Org, org.name.as_bytes(), &encode(org))?;
        c.organizations += 1;
        orgs.insert(org.name.clone());
    }
    let mut users = HashSet::new();
    for user in records.list_users()? {
        w.frame(Kind::User, user.id.as_bytes(), &encode(&user))?;
        c.users += 1;
        users.insert(user.id);
    }
    for (digest, key) in records.list_keys()? {
        if users.contains(&key.user_id) {
            w.frame(Kind::Key, digest.as_bytes(), &encode(&key))?;
            c.keys += 1;
        }
    }
    for m in records.list_memberships()? {
        if orgs.contains(&m.organization) && users.contains(&m.user_id) {
            w.frame(
                Kind::Member,
                &key2(&m.organization, &m.user_id),
                &encode(&m),
            )?;
            c.memberships += 1;
        }
    }
    let mut stacks = HashMap::new();
    for org in &all_orgs {
        for s in records.list_stacks(&org.name)? {
            let k = key2(&s.organization, &s.name);
            w.frame(Kind::Stack, &k, &encode(&s))?;
            c.stacks += 1;
            stacks.insert(k, s.revision);
        }
    }
    for org in &all_orgs {
        for (day, stats) in records.day_stats(&org.name)? {
            w.frame(Kind::Day, &key2(&org.name, &day), &encode(&stats))?;
            c.days += 1;
        }
    }

    let mut blobs = HashSet::new();
    let mut exported_images = HashSet::new();
    let mut live = HashSet::new();
    let mut skipped_images = 0;
    for rec in records.all_images() {
        let rec = rec?;
        if !orgs.contains(&rec.organization) {
            continue;
        }
        if !blobs.contains(&rec.blob) {
            // Opened before the record is written: once open, the bytes stay readable even
            // if GC removes the blob now. One removed before is left out with its image.
            let Some((len, mut reader)) = bytes.reader(&rec.blob)? else {
                skipped_images += 1;
                continue;
            };
            w.head(Kind::Blob, rec.blob.as_bytes(), len)?;
            let copied = io::copy(&mut (&mut reader).take(len), &mut w)?;
            if copied != len {
                return Err(invalid(format!(
                    "blob {} shrank while it was exported",
                    rec.blob
                )));
            }
            c.blobs += 1;
            c.blob_bytes += len;
            blobs.insert(rec.blob.clone());
        }
        let k = key2(&rec.organization, &rec.hash);
        w.frame(Kind::Image, &k, &encode(&rec))?;
        c.images += 1;
        exported_images.insert(k.clone());
        if !rec.deleted {
            live.insert(k);
        }
    }

    if renders {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = records.render_headers(after.as_deref(), 256)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, meta) in batch {
                let reachable = live.contains(&key2(&meta.organization, &meta.image))
                    && meta.stacks.iter().all(|s| {
                        stacks.get(&key2(&meta.organization, &s.name)) == Some(&s.revision)
                    });
                if !reachable {
                    continue;
                }
                // A render removed meanwhile, or whose bytes are gone, is a render to make
                // again, not part of the backup.
                let Some(render) = records.get_render(&k)? else {
                    continue;
                };
                let paths = encode(&records.served_paths(&k)?);
                let v = super::renders::inline_value(&render.meta, render.bytes());
                let len = 4 + paths.len() as u64 + v.len() as u64;
                w.head(Kind::Render, &k, len)?;
                w.write_all(&(paths.len() as u32).to_be_bytes())?;
                w.write_all(&paths)?;
                w.write_all(&v)?;
                c.renders += 1;
                c.render_bytes += render.size();
            }
        }
    }
    // Last: an alias made after its image was exported points to an image in the backup;
    // one whose image was left out (or made after the image pass) is left out too.
    for org in &all_orgs {
        for alias in records.list_aliases(&org.name)? {
            if exported_images.contains(&key2(&alias.organization, &alias.hash)) {
                w.frame(
                    Kind::Alias,
                    &key2(&alias.organization, &alias.alias),
                    &encode(&alias),
                )?;
                c.aliases += 1;
            }
        }
    }
    w.finish(&c)?;
    Ok(Exported {
        counts: c,
        skipped_images,
    })
}

// ---- reading ----

/// Reads frames, hashing every byte before the trailer.
struct FrameReader<R: Read> {
    inner: R,
    hash: blake3::Hasher,
}

/// What comes next in a backup.
enum Next {
    Frame {
        kind: Kind,
        key: Vec<u8>,
        len: u64,
    },
    /// The trailer, its hash verified and nothing after it.
    End(BackupCounts),
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl<R: Read> FrameReader<R> {
    fn open(inner: R) -> Result<FrameReader<R>> {
        let mut r = FrameReader {
            inner,
            hash: blake3::Hasher::new(),
        };
        let mut head = [0u8; 12];
        r.read_exact(&mut head).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("this is not a Darkroom backup (too short)"),
            _ => e.into(),
        })?;
        if head.get(..8) != Some(MAGIC.as_slice()) {
            return Err(invalid("this is not a Darkroom backup (wrong magic bytes)"));
        }
        let version = u32::from_be_bytes(
            head.get(8..12)
                .and_then(|v| v.try_into().ok())
                .unwrap_or([0xff; 4]),
        );
        if version > FORMAT_VERSION {
            return Err(invalid(format!(
                "this backup has format version {version}; this binary reads up to {FORMAT_VERSION}: upgrade it"
            )));
        }
        Ok(r)
    }

    fn u32(mut from: impl Read) -> io::Result<u32> {
        let mut b = [0u8; 4];
        from.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(mut from: impl Read) -> io::Result<u64> {
        let mut b = [0u8; 8];
        from.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn next(&mut self) -> Result<Next> {
        // The kind byte is read unhashed: the trailer's own bytes are not part of its hash.
        let mut kind = [0u8; 1];
        self.inner.read_exact(&mut kind)?;
        let kind = Kind::from_byte(kind[0])
            .ok_or_else(|| invalid(format!("unknown frame kind {}", kind[0])))?;
        if kind == Kind::Trailer {
            let expected = *self.hash.finalize().as_bytes();
            if Self::u32(&mut self.inner)? != 32 {
                return Err(invalid("the backup's trailer is damaged"));
            }
            let mut digest = [0u8; 32];
            self.inner.read_exact(&mut digest)?;
            if digest != expected {
                return Err(invalid(
                    "the backup's checksum does not match its contents: the file is damaged",
                ));
            }
            let len = Self::u64(&mut self.inner)?;
            if len > 1 << 20 {
                return Err(invalid("the backup's trailer is damaged"));
            }
            let value = read_value(&mut self.inner, len)?;
            let counts: BackupCounts = serde_json::from_slice(&value)
                .map_err(|e| invalid(format!("unreadable trailer: {e}")))?;
            if self.inner.read(&mut [0u8; 1])? != 0 {
                return Err(invalid("the backup has bytes after its trailer"));
            }
            return Ok(Next::End(counts));
        }
        self.hash.update(&[kind as u8]);
        let key_len = Self::u32(&mut *self)?;
        if key_len > MAX_KEY {
            return Err(invalid(format!("a frame key of {key_len} bytes")));
        }
        let mut key = vec![0u8; key_len as usize];
        self.read_exact(&mut key)?;
        let len = Self::u64(&mut *self)?;
        Ok(Next::Frame { kind, key, len })
    }
}

/// Reads exactly `len` bytes into memory, growing with the data actually read (a damaged
/// length cannot allocate more than the file holds).
fn read_value(from: impl Read, len: u64) -> Result<Vec<u8>> {
    if len > MAX_RECORD {
        return Err(invalid(format!("a record of {len} bytes")));
    }
    let mut out = Vec::new();
    from.take(len).read_to_end(&mut out)?;
    if (out.len() as u64) < len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(out)
}

/// The bytes of a blob frame: exactly `remaining` bytes, an early end being an error.
struct BlobBytes<'a, R: Read> {
    inner: &'a mut R,
    remaining: u64,
}

impl<R: Read> Read for BlobBytes<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..max).unwrap_or_default())?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// One record of a backup, decoded.
enum Record {
    Org(Organization),
    User(User),
    Key(String, ApiKey),
    Member(Membership),
    Stack(StoredStack),
    Day {
        org: String,
        day: String,
        stats: DayStats,
    },
    Image(ImageRecord),
    Render {
        key: Vec<u8>,
        paths: Vec<ServedPath>,
        render: StoredRender,
    },
    Alias(StoredAlias),
}

/// What a pass over a backup does with each record and blob.
trait Visitor {
    fn info(&mut self, info: BackupInfo) -> Result<()>;
    fn record(&mut self, record: Record) -> Result<()>;
    /// Must read `bytes` to its end.
    fn blob(&mut self, id: &str, bytes: &mut dyn Read) -> Result<()>;
}

fn json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("unreadable {what} record: {e}")))
}

fn text(what: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("a {what} key is not UTF-8")))
}

/// Reads a whole backup, handing each record to `visitor`; returns the counts once the
/// trailer verified. Every error names what is wrong with the file.
fn walk(input: impl Read, visitor: &mut dyn Visitor) -> Result<BackupCounts> {
    walk_frames(input, visitor).map_err(|e| match e {
        StorageError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            invalid("the backup ends early: the file is truncated")
        }
        other => other,
    })
}

fn walk_frames(input: impl Read, visitor: &mut dyn Visitor) -> Result<BackupCounts> {
    let mut r = FrameReader::open(input)?;
    let mut c = BackupCounts::default();
    let mut phase = 0;
    loop {
        let (kind, key, len) = match r.next()? {
            Next::Frame { kind, key, len } => (kind, key, len),
            Next::End(_) if phase == 0 => return Err(invalid("the backup has no info frame")),
            Next::End(trailer) => {
                if trailer != c {
                    return Err(invalid(format!(
                        "the backup's trailer counts {trailer}, its frames hold {c}"
                    )));
                }
                return Ok(c);
            }
        };
        if (phase == 0) != (kind == Kind::Info) || kind.phase() < phase {
            return Err(invalid(format!("a {kind:?} frame out of order")));
        }
        phase = kind.phase();
        if kind == Kind::Blob {
            let id = text("blob", &key)?;
            if id.len() != 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(format!("a blob id that is not BLAKE3 hex: {id:?}")));
            }
            let mut bytes = BlobBytes {
                inner: &mut r,
                remaining: len,
            };
            visitor.blob(&id, &mut bytes)?;
            io::copy(&mut bytes, &mut io::sink())?;
            c.blobs += 1;
            c.blob_bytes += len;
            continue;
        }
        let value = read_value(&mut r, len)?;
        let record = match kind {
            Kind::Info => {
                let info: BackupInfo = json("info", &value)?;
                if info.schema > super::SCHEMA_VERSION {
                    return Err(invalid(format!(
                        "the backup was written by Darkroom {} (schema {}); this binary reads up to schema {}: upgrade it",
                        info.darkroom, info.schema, super::SCHEMA_VERSION
                    )));
                }
                visitor.info(info)?;
                continue;
            }
            Kind::Org => {
                c.organizations += 1;
                Record::Org(json("organization", &value)?)
            }
            Kind::User => {
                c.users += 1;
                Record::User(json("user", &value)?)
            }
            Kind::Key => {
                c.keys += 1;
                Record::Key(text("key", &key)?, json("key", &value)?)
            }
            Kind::Member => {
                c.memberships += 1;
                Record::Member(json("membership", &value)?)
            }
            Kind::Stack => {
                c.stacks += 1;
                Record::Stack(json("stack", &value)?)
            }
            Kind::Day => {
                c.days += 1;
                let k = text("day", &key)?;
                let (org, day) = k
                    .split_once('\0')
                    .ok_or_else(|| invalid(format!("a day key without a day: {k:?}")))?;
                Record::Day {
                    org: org.to_string(),
                    day: day.to_string(),
                    stats: json("day", &value)?,
                }
            }
            Kind::Image => {
                c.images += 1;
                Record::Image(json("image", &value)?)
            }
            Kind::Render => {
                let paths_len = value
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| invalid("a render frame without paths"))?
                    as usize;
                let paths = value
                    .get(4..4 + paths_len)
                    .ok_or_else(|| invalid("a render frame with short paths"))?;
                let paths: Vec<ServedPath> = json("render paths", paths)?;
                let stored = value.get(4 + paths_len..).unwrap_or_default();
                let render = parse_stored(stored.to_vec())
                    .map_err(|e| invalid(format!("unreadable render: {e}")))?;
                c.renders += 1;
                c.render_bytes += render.bytes().len() as u64;
                Record::Render { key, paths, render }
            }
            Kind::Alias => {
                c.aliases += 1;
                Record::Alias(json("alias", &value)?)
            }
            Kind::Blob | Kind::Trailer => return Err(invalid("unexpected frame")),
        };
        visitor.record(record)?;
    }
}

/// A reader that reports how many bytes went through it, every MiB.
struct Counting<'a, R> {
    inner: R,
    step: &'static str,
    total: Option<u64>,
    done: u64,
    reported: u64,
    progress: super::Progress<'a>,
}

impl<'a, R: Read> Counting<'a, R> {
    fn new(
        inner: R,
        step: &'static str,
        total: Option<u64>,
        progress: super::Progress<'a>,
    ) -> Self {
        Counting {
            inner,
            step,
            total,
            done: 0,
            reported: 0,
            progress,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= 1 << 20 {
            self.reported = self.done;
            (self.progress)(self.step, self.done, self.total);
        }
        Ok(n)
    }
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>> {
    let file = std::fs::File::open(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    Ok(BufReader::with_capacity(BUFFER, file))
}

/// The first pass of an import, and the check of a fresh export: the whole file is read,
/// every record decoded, every blob hashed against its id, the trailer verified, and the
/// references between records checked, without writing anything.
#[derive(Default)]
struct Check {
    orgs: HashSet<String>,
    /// `org \0 hash` of every image, for the aliases that point to them.
    images: HashSet<Vec<u8>>,
    blobs: HashSet<String>,
    referenced: HashSet<String>,
}

impl Visitor for Check {
    fn info(&mut self, _: BackupInfo) -> Result<()> {
        Ok(())
    }

    fn record(&mut self, record: Record) -> Result<()> {
        match record {
            Record::Org(org) => {
                self.orgs.insert(org.name);
            }
            Record::Day { org, .. } if !self.orgs.contains(&org) => {
                return Err(invalid(format!(
                    "day figures of {org}, an organization the backup does not hold"
                )));
            }
            Record::Image(rec) => {
                if !self.orgs.contains(&rec.organization) {
                    return Err(invalid(format!(
                        "image {}/{} belongs to an organization the backup does not hold",
                        rec.organization, rec.hash
                    )));
                }
                if !self.blobs.contains(&rec.blob) {
                    return Err(invalid(format!(
                        "image {}/{} comes before its blob {}",
                        rec.organization, rec.hash, rec.blob
                    )));
                }
                self.referenced.insert(rec.blob);
                self.images.insert(key2(&rec.organization, &rec.hash));
            }
            Record::Alias(a) if !self.images.contains(&key2(&a.organization, &a.hash)) => {
                return Err(invalid(format!(
                    "alias {}/{} points to an image the backup does not hold",
                    a.organization, a.alias
                )));
            }
            _ => {}
        }
        Ok(())
    }

    fn blob(&mut self, id: &str, bytes: &mut dyn Read) -> Result<()> {
        let mut hasher = blake3::Hasher::new();
        io::copy(bytes, &mut hasher)?;
        if hasher.finalize().to_hex().as_str() != id {
            return Err(invalid(format!(
                "blob {id} does not match its bytes: the file is damaged"
            )));
        }
        self.blobs.insert(id.to_string());
        Ok(())
    }
}

/// Reads and checks a whole backup file without writing anything; returns its counts.
pub fn check_file(path: &Path) -> Result<BackupCounts> {
    check(open(path)?)
}

fn check(input: impl Read) -> Result<BackupCounts> {
    let mut check = Check::default();
    let counts = walk(input, &mut check)?;
    if let Some(id) = check.blobs.difference(&check.referenced).next() {
        return Err(invalid(format!("blob {id} is referred to by no image")));
    }
    Ok(counts)
}

/// The second pass of an import: writes every record through the interfaces' own methods.
struct Apply<'a> {
    records: &'a dyn Records,
    bytes: &'a dyn Bytes,
    skipped_renders: u64,
}

impl Visitor for Apply<'_> {
    fn info(&mut self, info: BackupInfo) -> Result<()> {
        self.records.set_render_epoch(info.render_epoch)
    }

    fn record(&mut self, record: Record) -> Result<()> {
        let records = self.records;
        match record {
            Record::Org(org) => records.put_org(&org),
            Record::User(user) => records.put_user(&user),
            Record::Key(digest, key) => records.put_key(&digest, &key),
            Record::Member(m) => records.put_membership(&m),
            Record::Stack(s) => records.put_stack(&s),
            // History as it was; the images inserted next update today's figures.
            Record::Day { org, day, stats } => records.put_day_stats(&org, &day, &stats),
            Record::Image(rec) => {
                if !self.bytes.exists(&rec.blob) {
                    return Err(invalid(format!(
                        "image {}/{} comes before its blob",
                        rec.organization, rec.hash
                    )));
                }
                // The upload path: indexes, reference counts and usage in one transaction.
                records.insert_image(&rec).map(|_| ())
            }
            Record::Render { key, paths, render } => {
                if records.render_status(&render.meta)? != super::RenderStatus::Live {
                    self.skipped_renders += 1;
                    return Ok(());
                }
                records.restore_render(&key, &render.meta, render.bytes(), &paths)
            }
            Record::Alias(a) => match records.put_alias(&a, false)? {
                AliasPut::Created => Ok(()),
                _ => Err(invalid(format!(
                    "alias {}/{} is in the backup twice or points to a missing image",
                    a.organization, a.alias
                ))),
            },
        }
    }

    fn blob(&mut self, id: &str, bytes: &mut dyn Read) -> Result<()> {
        let mut staged = self.bytes.stage()?;
        io::copy(bytes, &mut staged)?;
        let received = staged.finish()?;
        if received.id != id {
            received.discard();
            return Err(invalid(format!(
                "blob {id} does not match its bytes: the file is damaged"
            )));
        }
        // Durable before any record refers to it, as for an upload.
        self.bytes.commit(&received)?;
        Ok(())
    }
}

/// Restores the backup at `path` into `records` and `bytes`, which must hold nothing. The file
/// is checked completely first (nothing is written for a damaged or truncated file); should
/// the import itself fail, everything it wrote is removed again. Ends with a flush and a
/// `verify` pass, and fails if that finds anything. Works on every backend.
pub fn import(
    records: &dyn Records,
    bytes: &dyn Bytes,
    path: &Path,
    progress: super::Progress<'_>,
) -> Result<Imported> {
    bytes.space().check()?;
    ensure_empty(records, bytes)?;
    let size = std::fs::metadata(path).map(|m| m.len()).ok();
    check(Counting::new(
        open(path)?,
        "bytes checked",
        size,
        &mut *progress,
    ))?;
    let mut apply = Apply {
        records,
        bytes,
        skipped_renders: 0,
    };
    let applied = open(path)
        .and_then(|input| {
            walk(
                Counting::new(input, "bytes restored", size, &mut *progress),
                &mut apply,
            )
        })
        .and_then(|counts| records.flush_blocking().map(|()| counts));
    let counts = match applied {
        Ok(counts) => counts,
        Err(e) => {
            return Err(match wipe(records, bytes) {
                Ok(()) => e,
                Err(w) => invalid(format!(
                    "{e}; removing the partial import failed too ({w}): clear the data by hand"
                )),
            })
        }
    };
    let problems = super::check::verify(records, bytes, std::time::Duration::ZERO, progress)?;
    if !problems.is_empty() {
        return Err(invalid(format!(
            "the imported data fails verify ({} problems; it is left as imported, for inspection): {}",
            problems.len(),
            problems.iter().take(10).cloned().collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(Imported {
        counts,
        skipped_renders: apply.skipped_renders,
    })
}

/// Every blob id, shard by shard.
fn all_blobs(bytes: &dyn Bytes) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for shard in 0..=255u8 {
        out.extend(bytes.list_shard(shard)?);
    }
    Ok(out)
}

/// Fails unless the records and the bytes hold nothing.
fn ensure_empty(records: &dyn Records, bytes: &dyn Bytes) -> Result<()> {
    let mut found = records.contents()?;
    let blobs = all_blobs(bytes)?.len();
    if blobs > 0 {
        found.push(format!("{blobs} blob files"));
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "the target is not empty ({}): a backup is imported into an empty data folder only",
        found.join(", ")
    )))
}

/// Removes every record and blob (after a failed import into empty storage). The cleared
/// records are durable before the blobs go (design §1b).
fn wipe(records: &dyn Records, bytes: &dyn Bytes) -> Result<()> {
    records.clear()?;
    for id in all_blobs(bytes)? {
        bytes.remove(&id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::*;
    use crate::storage::renders::{RenderMeta, StackRevision};
    use crate::storage::AliasRecords;
    use crate::storage::SledStore;
    use std::io::Cursor;

    fn put_blob(store: &SledStore, bytes: &[u8]) -> String {
        crate::storage::blobs::put_test_blob(&store.blobs, bytes)
    }

    fn image(org: &str, hash: &str, blob: &str, size: u64, deleted: bool) -> ImageRecord {
        serde_json::from_value(serde_json::json!({
            "organization": org, "hash": hash, "binary_hash": "b".repeat(40), "blob": blob,
            "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg", "size": size,
            "width": 1, "height": 1, "created": "2024-01-01T00:00:00+00:00",
            "created_ns": 1_700_000_000_000_000_000_i128, "deleted": deleted,
            "user_metadata": {"title": "x"}, "opaque": true, "animated": false
        }))
        .unwrap()
    }

    /// A store with one of everything: two organizations sharing a blob, a deleted image, an
    /// overwritten stack, a render and day figures.
    fn sample(dir: &Path) -> SledStore {
        let store = SledStore::open(dir, 8).unwrap();
        for name in ["acme", "beta"] {
            store
                .put_org(
                    &serde_json::from_value(serde_json::json!({
                        "id": format!("id-{name}"), "name": name, "display_name": "", "billing_email": "",
                        "created": "2024-01-01", "master_organization": "", "signing_keys": ["k"]
                    }))
                    .unwrap(),
                )
                .unwrap();
        }
        let user = User {
            id: "u1".into(),
            email: None,
            created: "2024-01-01".into(),
        };
        store.put_user(&user).unwrap();
        let key = ApiKey {
            id: "k1".into(),
            user_id: "u1".into(),
            comment: String::new(),
            created: "2024-01-01".into(),
        };
        store.put_key("digest1", &key).unwrap();
        store
            .put_membership(&Membership {
                organization: "acme".into(),
                organization_id: "id-acme".into(),
                user_id: "u1".into(),
                roles: vec![crate::model::account::Role::Admin],
                active: true,
                created: "2024-01-01".into(),
                comment: None,
            })
            .unwrap();
        store
            .put_stack(&StoredStack {
                organization: "acme".into(),
                name: "thumb".into(),
                created: "2024-01-01".into(),
                revision: 3,
                definition: Default::default(),
            })
            .unwrap();
        let shared = put_blob(&store, b"shared bytes");
        let other = put_blob(&store, b"other bytes");
        store
            .insert_image(&image("acme", "h1", &shared, 12, false))
            .unwrap();
        store
            .insert_image(&image("beta", "h1", &shared, 12, false))
            .unwrap();
        store
            .insert_image(&image("acme", "h2", &other, 11, true))
            .unwrap();
        store.add_downloaded("acme", "2020-02-02", 1234).unwrap();
        let meta = RenderMeta {
            content_type: "image/jpeg".into(),
            etag: "\"e\"".into(),
            organization: "acme".into(),
            image: "h1".into(),
            stacks: vec![StackRevision {
                name: "thumb".into(),
                revision: 3,
            }],
        };
        let served = |p: &str| ServedPath {
            host: String::new(),
            path: p.into(),
        };
        store
            .put_render(
                &[7; 32],
                &meta,
                bytes::Bytes::from_static(b"RENDERBYTES"),
                &served("/acme/thumb/h1.jpg"),
            )
            .unwrap();
        store
            .note_served_path(&[7; 32], &served("/acme/thumb/h1.png"))
            .unwrap();
        // An orphan render (old stack revision) is not exported.
        let old = RenderMeta {
            stacks: vec![StackRevision {
                name: "thumb".into(),
                revision: 2,
            }],
            ..meta
        };
        store
            .put_render_unchecked(&[8; 32], &old, b"old", &served("/old"))
            .unwrap();
        // Aliases to a live and to a deleted image; both go into the backup.
        for (name, hash) in [("hero", "h1"), ("gone", "h2")] {
            let alias = StoredAlias {
                organization: "acme".into(),
                alias: name.into(),
                hash: hash.into(),
                created: "2024-01-01T00:00:00+00:00".into(),
            };
            assert_eq!(store.put_alias(&alias, false).unwrap(), AliasPut::Created);
        }
        store
    }

    /// The same backup as format version 1 wrote it: no alias frames, no `aliases` count.
    fn as_version_1(store: &SledStore) -> Vec<u8> {
        for alias in store.list_aliases("acme").unwrap() {
            store.delete_alias("acme", &alias.alias).unwrap();
        }
        let bytes = export(store, true);
        let counts = check(Cursor::new(bytes.clone())).unwrap();
        let trailer_len = 1 + 4 + 32 + 8 + encode(&counts).len();
        let mut body = bytes[..bytes.len() - trailer_len].to_vec();
        body[8..12].copy_from_slice(&1u32.to_be_bytes());
        let mut v1_counts = serde_json::to_value(counts).unwrap();
        v1_counts.as_object_mut().unwrap().remove("aliases");
        let value = serde_json::to_vec(&v1_counts).unwrap();
        let digest = blake3::hash(&body);
        body.push(Kind::Trailer as u8);
        body.extend_from_slice(&32u32.to_be_bytes());
        body.extend_from_slice(digest.as_bytes());
        body.extend_from_slice(&(value.len() as u64).to_be_bytes());
        body.extend_from_slice(&value);
        body
    }

    #[test]
    fn a_version_1_backup_without_aliases_is_still_imported() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bytes = as_version_1(&sample(a.path()));
        assert_eq!(&bytes[8..12], &[0, 0, 0, 1]);
        let file = a.path().join("backup-v1");
        std::fs::write(&file, &bytes).unwrap();
        let target = SledStore::open(b.path(), 8).unwrap();
        let done = import(&target, &target.blobs, &file, &mut |_, _, _| {}).unwrap();
        assert_eq!((done.counts.images, done.counts.aliases), (3, 0));
        assert!(target.list_aliases("acme").unwrap().is_empty());
    }

    #[test]
    fn an_alias_to_an_image_the_backup_does_not_hold_is_refused() {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        let info = BackupInfo {
            darkroom: "test".into(),
            schema: crate::storage::SCHEMA_VERSION,
            created: "2024-01-01T00:00:00+00:00".into(),
            renders: false,
            render_epoch: 0,
        };
        w.frame(Kind::Info, b"", &encode(&info)).unwrap();
        w.frame(Kind::Org, b"acme", br#"{"id":"id-acme","name":"acme","display_name":"","billing_email":"","created":"2024-01-01","master_organization":"","signing_keys":[]}"#).unwrap();
        let alias = StoredAlias {
            organization: "acme".into(),
            alias: "hero".into(),
            hash: "h9".into(),
            created: "2024-01-01T00:00:00+00:00".into(),
        };
        w.frame(Kind::Alias, &key2("acme", "hero"), &encode(&alias))
            .unwrap();
        let out = w
            .finish(&BackupCounts {
                organizations: 1,
                aliases: 1,
                ..Default::default()
            })
            .unwrap();
        let err = check(Cursor::new(out)).unwrap_err().to_string();
        assert!(err.contains("does not hold"), "{err}");
    }

    fn export(store: &SledStore, renders: bool) -> Vec<u8> {
        let mut out = Vec::new();
        super::export(store, &store.blobs, &mut out, renders).unwrap();
        out
    }

    #[test]
    fn a_store_round_trips_through_a_backup_and_verifies() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = sample(a.path());
        let bytes = export(&source, true);
        let file = a.path().join("backup");
        std::fs::write(&file, &bytes).unwrap();

        let target = SledStore::open(b.path(), 8).unwrap();
        let done = import(&target, &target.blobs, &file, &mut |_, _, _| {}).unwrap();
        assert_eq!(done.counts.organizations, 2);
        assert_eq!(done.counts.images, 3);
        assert_eq!(done.counts.blobs, 2, "a shared blob is written once");
        assert_eq!(done.counts.renders, 1, "the orphan render is left out");
        assert_eq!(done.counts.aliases, 2);
        assert_eq!(
            target.list_aliases("acme").unwrap(),
            source.list_aliases("acme").unwrap()
        );
        assert_eq!(done.skipped_renders, 0);
        assert!(target.verify(std::time::Duration::ZERO).unwrap().is_empty());

        assert_eq!(target.list_orgs().unwrap(), source.list_orgs().unwrap());
        for org in ["acme", "beta"] {
            let all = |s: &SledStore| -> Vec<ImageRecord> {
                s.all_images()
                    .map(Result::unwrap)
                    .filter(|r| r.organization == org)
                    .collect()
            };
            assert_eq!(all(&target), all(&source));
            assert_eq!(
                target.org_usage(org).unwrap().space_in_bytes,
                source.org_usage(org).unwrap().space_in_bytes
            );
        }
        assert_eq!(
            target.get_stack("acme", "thumb").unwrap().unwrap().revision,
            3
        );
        assert_eq!(
            target.user_keys("u1").unwrap(),
            source.user_keys("u1").unwrap()
        );
        assert_eq!(
            target.org_memberships("acme").unwrap(),
            source.org_memberships("acme").unwrap()
        );
        assert_eq!(
            target
                .blob_refs(&blake3::hash(b"shared bytes").to_hex())
                .unwrap(),
            2
        );
        let render = target.get_render(&[7; 32]).unwrap().unwrap();
        assert_eq!(render.bytes(), b"RENDERBYTES");
        let purged = target.purge_image_renders("acme", "h1", true).unwrap();
        assert_eq!(purged.paths.len(), 2, "every served path is kept");
        let days = target.day_stats("acme").unwrap();
        assert_eq!(
            days.first().map(|(d, s)| (d.as_str(), s.bytes_downloaded)),
            Some(("2020-02-02", 1234))
        );
    }

    #[test]
    fn renders_are_left_out_unless_asked_for() {
        let a = tempfile::tempdir().unwrap();
        let counts = check(Cursor::new(export(&sample(a.path()), false))).unwrap();
        assert_eq!((counts.renders, counts.images), (0, 3));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let bytes = export(&sample(a.path()), true);
        assert!(check(Cursor::new(bytes.clone())).is_ok());
        for len in 0..bytes.len() {
            let short = bytes.get(..len).unwrap().to_vec();
            assert!(check(Cursor::new(short)).is_err(), "cut at {len}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(check(Cursor::new(bad)).is_err(), "flipped byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = check(Cursor::new(longer)).unwrap_err().to_string();
        assert!(err.contains("after its trailer"), "{err}");
    }

    #[test]
    fn damage_is_named_clearly() {
        let a = tempfile::tempdir().unwrap();
        let bytes = export(&sample(a.path()), false);
        let err = |b: Vec<u8>| check(Cursor::new(b)).unwrap_err().to_string();
        assert!(err(b"PK\x03\x04 a zip file".to_vec()).contains("not a Darkroom backup"));
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
        assert!(err(newer).contains("upgrade"));
        assert!(err(bytes[..bytes.len() / 2].to_vec()).contains("truncated"));
        // A flipped byte inside a blob's bytes.
        let pos = bytes
            .windows(12)
            .position(|w| w == b"shared bytes")
            .unwrap();
        let mut bad = bytes.clone();
        bad[pos] ^= 1;
        assert!(err(bad).contains("does not match its bytes"));
        // A flipped byte inside a record changes the checksum.
        let pos = bytes.windows(8).position(|w| w == b"id-beta\"").unwrap();
        let mut bad = bytes.clone();
        bad[pos + 3] = b'x';
        assert!(err(bad).contains("checksum"));
    }

    #[test]
    fn frames_are_length_prefixed_big_endian() {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.frame(Kind::Org, b"acme", b"{}").unwrap();
        let out = w.finish(&BackupCounts::default()).unwrap();
        assert_eq!(&out[..8], MAGIC);
        assert_eq!(&out[8..12], &[0, 0, 0, 2]);
        assert_eq!(out[12], 2, "kind");
        assert_eq!(&out[13..17], &[0, 0, 0, 4], "key length");
        assert_eq!(&out[17..21], b"acme");
        assert_eq!(&out[21..29], &[0, 0, 0, 0, 0, 0, 0, 2], "value length");
        assert_eq!(&out[29..31], b"{}");
        assert_eq!(out[31], 255, "trailer");
        assert_eq!(&out[32..36], &[0, 0, 0, 32]);
        assert_eq!(&out[36..68], blake3::hash(&out[..31]).as_bytes());
        // Without an info frame first, a reader refuses it.
        let err = check(Cursor::new(out)).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
    }

    #[test]
    fn import_refuses_a_store_with_data() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = sample(a.path());
        let file = b.path().join("backup");
        std::fs::write(&file, export(&source, false)).unwrap();
        let err = import(&source, &source.blobs, &file, &mut |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("not empty") && err.contains("images"), "{err}");
    }

    #[test]
    fn a_failing_import_removes_what_it_wrote() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut bytes = export(&sample(a.path()), true);
        // Damage the last render's bytes: the check pass would refuse this file, so apply it
        // directly, as if the file had changed between the passes.
        let pos = bytes.windows(11).position(|w| w == b"RENDERBYTES").unwrap();
        bytes[pos] = b'r';
        let target = SledStore::open(b.path(), 8).unwrap();
        let mut apply = Apply {
            records: &target,
            bytes: &target.blobs,
            skipped_renders: 0,
        };
        assert!(walk(Cursor::new(bytes), &mut apply).is_err());
        assert!(
            !target.images.is_empty(),
            "the records went in before the damage was seen"
        );
        wipe(&target, &target.blobs).unwrap();
        assert!(ensure_empty(&target, &target.blobs).is_ok());
        assert!(target.verify(std::time::Duration::ZERO).unwrap().is_empty());
    }
}
