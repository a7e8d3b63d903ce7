//! The records interface: everything small and structured that the appliance keeps, as a few
//! traits that a backend implements. `service`, `jobs`, the command line and the checks see
//! only these traits (through `dyn Records`); the embedded default is sled
//! ([`super::SledStore`]), and a second backend is a second `impl`.
//!
//! The traits are split by what they hold, so that each sits on one screen with its
//! invariants: accounts, image records, the listing index, stacks, aliases
//! ([`super::aliases`]), the render index and the edge queue. [`Records`] gathers them with what spans all of them: the change generation,
//! durability and readiness.
//!
//! What crosses the seam is plain data: model types, strings, encoded index positions
//! ([`super::index`]) and opaque keys. Nothing names the backend (no sled value, no file path,
//! no in-process notifier): a change that several processes must see is a method here.

use super::aliases::AliasRecords;
use super::check::RenderStatus;
use super::edge::QueuedEdgeJob;
use super::index::{IndexField, Position};
use super::query::Span;
use super::renders::{Purged, RenderMeta, StoredRender};
use super::stacks::StoredStack;
use super::{DayStats, Inserted, OrgUsage, Result, ServedPath};
use crate::model::account::{ApiKey, Membership, Organization, User};
use crate::model::image::ImageRecord;
use futures_util::future::BoxFuture;

/// Organizations, users, API keys, memberships, usage figures and the token secret.
pub trait Accounts {
    /// Creates an organization; `false` when the name is taken.
    fn create_org(&self, org: &Organization) -> Result<bool>;
    fn get_org(&self, name: &str) -> Result<Option<Organization>>;
    fn put_org(&self, org: &Organization) -> Result<()>;
    /// Every organization, by name.
    fn list_orgs(&self) -> Result<Vec<Organization>>;

    /// Adds bytes served for an organization to a day's figures (`YYYY-MM-DD`).
    fn add_downloaded(&self, org: &str, day: &str, bytes: u64) -> Result<()>;
    /// The daily figures of an organization, oldest first.
    fn day_stats(&self, org: &str) -> Result<Vec<(String, DayStats)>>;
    /// The usage counters of every organization, by name.
    fn usage_by_org(&self) -> Result<Vec<(String, OrgUsage)>>;
    /// Billable usage counters of an organization (zero when it has none).
    fn org_usage(&self, org: &str) -> Result<OrgUsage>;

    /// Replaces the figures of one day (`YYYY-MM-DD`) of an organization, as a backup had
    /// them; today's are kept up to date by the changes themselves.
    fn put_day_stats(&self, org: &str, day: &str, stats: &DayStats) -> Result<()>;

    fn put_user(&self, user: &User) -> Result<()>;
    fn get_user(&self, id: &str) -> Result<Option<User>>;
    /// Every user, by id.
    fn list_users(&self) -> Result<Vec<User>>;
    /// Stores a key under the digest of its secret.
    fn put_key(&self, digest: &str, key: &ApiKey) -> Result<()>;
    /// Looks a key up by the digest of its secret.
    fn get_key(&self, digest: &str) -> Result<Option<ApiKey>>;
    /// Keys of a user with their digests, oldest first.
    fn user_keys(&self, user_id: &str) -> Result<Vec<(String, ApiKey)>>;
    /// Deletes a key of a user; `false` if there is no such key.
    fn delete_key(&self, user_id: &str, key_id: &str) -> Result<bool>;
    /// Every key with the digest of its secret, by digest.
    fn list_keys(&self) -> Result<Vec<(String, ApiKey)>>;
    fn put_membership(&self, m: &Membership) -> Result<()>;
    fn get_membership(&self, org: &str, user_id: &str) -> Result<Option<Membership>>;
    fn delete_membership(&self, org: &str, user_id: &str) -> Result<bool>;
    fn org_memberships(&self, org: &str) -> Result<Vec<Membership>>;
    fn user_memberships(&self, user_id: &str) -> Result<Vec<Membership>>;
    /// Every membership, by organization and user.
    fn list_memberships(&self) -> Result<Vec<Membership>>;

    /// The secret that signs API tokens, made on first use and kept in the records so that
    /// every process over them (and every restart) agrees on it.
    fn token_secret(&self) -> Result<Vec<u8>>;
    /// Replaces the token secret: every token issued so far stops working.
    fn rotate_token_secret(&self) -> Result<()>;
}

/// Source-image records, with their binary-hash index, blob references and usage counters
/// kept in the same transaction as the record.
pub trait ImageRecords {
    fn get_image(&self, org: &str, hash: &str) -> Result<Option<ImageRecord>>;
    /// The records of `hashes`, in their order (`None` where there is none): what a listing
    /// page reads, in one round trip on a database server.
    fn get_images(&self, org: &str, hashes: &[String]) -> Result<Vec<Option<ImageRecord>>> {
        hashes.iter().map(|h| self.get_image(org, h)).collect()
    }
    /// Full hashes of the organization's images that start with `prefix` (at most `max`).
    fn hashes_with_prefix(&self, org: &str, prefix: &str, max: usize) -> Result<Vec<String>>;
    /// The shortest prefix of `hash`, at least 6 characters, that no other image of the
    /// organization shares.
    fn short_hash(&self, org: &str, hash: &str) -> Result<String>;
    /// [`ImageRecords::short_hash`] of each of `hashes`, in their order: the short hashes of
    /// a listing page, in one round trip on a database server.
    fn short_hashes(&self, org: &str, hashes: &[String]) -> Result<Vec<String>> {
        hashes.iter().map(|h| self.short_hash(org, h)).collect()
    }
    /// Image records of an organization with this SHA-1.
    fn images_by_binary(&self, org: &str, binary_hash: &str) -> Result<Vec<ImageRecord>>;
    /// Inserts a new image record with its indexes, blob reference and usage counters, in one
    /// transaction. An existing record with the same hash is returned instead.
    fn insert_image(&self, rec: &ImageRecord) -> Result<Inserted>;
    /// Replaces the record of an existing image whose identity (hash, blob) is unchanged, and
    /// keeps the counters in step with its `deleted` flag; `false` when there is no record.
    fn update_image(&self, rec: &ImageRecord) -> Result<bool>;
    /// Removes an image record for good, then every alias that points to it (an alias never
    /// names an image that is gone for good). Returns the blob id when no record of any
    /// organization refers to it any more, so the caller can remove the bytes.
    fn remove_image(&self, org: &str, hash: &str) -> Result<Option<String>>;
    /// [`ImageRecords::remove_image`], only if the record is still soft-deleted and was
    /// deleted before `cutoff` (unix seconds), checked in the removal's own transaction: GC
    /// picks expired images first and removes them after, and an upload of the same bytes
    /// may bring one back in between.
    fn remove_expired_image(&self, org: &str, hash: &str, cutoff: i64) -> Result<Option<String>>;
    /// Number of image records (of every organization, deleted or not) referring to a blob.
    fn blob_refs(&self, blob: &str) -> Result<u64>;
    /// Every image record, for offline passes (verify, export).
    fn all_images(&self) -> Box<dyn Iterator<Item = Result<ImageRecord>> + '_>;
    /// Soft-deleted images whose retention ended before `cutoff` (Unix seconds), at most
    /// `limit`: work in proportion to what has expired.
    fn expired_images(&self, cutoff: i64, limit: usize) -> Result<Vec<(String, String)>>;
}

/// The listing index: one ordered entry per (field, value) of every image and counters per
/// value, written with the record. Positions are the encoded values of [`super::index`], so a
/// cursor is exact on every backend.
pub trait ImageIndex {
    /// Number of live (or soft-deleted) images of an organization.
    fn image_count(&self, org: &str, deleted: bool) -> Result<u64>;
    /// Number of images with this encoded value of a counted field ([`IndexField::counted`]).
    fn value_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        value: &[u8],
    ) -> Result<u64>;
    /// The positions of one field's entries within `span`, in order or in reverse.
    fn index_walk<'a>(
        &'a self,
        org: &str,
        deleted: bool,
        field: &'a IndexField,
        span: &Span,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Result<Position>> + 'a>;
    /// Number of entries in `span`, counting at most `cap`.
    fn index_count(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        span: &Span,
        cap: usize,
    ) -> Result<usize>;
    /// Which of these entries of one field exist (`suffixes` are positions'
    /// [`super::index::Position::suffix`]), one answer per suffix, in order.
    fn index_has(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        suffixes: &[Vec<u8>],
    ) -> Result<Vec<bool>> {
        suffixes
            .iter()
            .map(|from| {
                let mut to = from.clone();
                to.push(0);
                let span = Span {
                    from: from.clone(),
                    to: Some(to),
                };
                Ok(self.index_count(org, deleted, field, &span, 1)? > 0)
            })
            .collect()
    }
    /// The string values of a counted field with their image counts, most frequent first, at
    /// most `max` (reading at most `scan` distinct values).
    fn facet_values(
        &self,
        org: &str,
        deleted: bool,
        field: &IndexField,
        max: usize,
        scan: usize,
    ) -> Result<Vec<(String, u64)>>;
}

/// Stack definitions. Each overwrite bumps the stack's revision.
pub trait StackRecords {
    fn get_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>>;
    /// Creates a stack; `false` when the name is taken.
    fn create_stack(&self, stack: &StoredStack) -> Result<bool>;
    /// Replaces a stack.
    fn put_stack(&self, stack: &StoredStack) -> Result<()>;
    /// Deletes a stack and returns what it was.
    fn delete_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>>;
    /// Stacks of an organization, by name.
    fn list_stacks(&self, org: &str) -> Result<Vec<StoredStack>>;
}

/// Stored renders and their indexes: by image, by stack, by served path and by recency.
/// Every removal queues the render's served paths for the edge in the same transaction.
pub trait RenderRecords {
    /// Looks a render up by key; one whose bytes are gone is not found (it is made again).
    fn get_render(&self, key: &[u8]) -> Result<Option<StoredRender>>;
    /// The bytes of a stored render, for a caller that knows its header already (a hit of a
    /// remembered URL): a store may skip decoding the header.
    fn get_render_body(&self, key: &[u8]) -> Result<Option<bytes::Bytes>> {
        Ok(self.get_render(key)?.map(StoredRender::into_body))
    }
    /// Stores a render with its indexes, unless its organization, image or one of its stacks
    /// changed since it was resolved (the render is then returned but not kept).
    /// The bytes are taken as they are: the answer shares them rather than copying them.
    fn put_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: bytes::Bytes,
        served: &ServedPath,
    ) -> Result<StoredRender>;
    /// Remembers another URL a stored render was served under (bounded per render).
    fn note_served_path(&self, key: &[u8], served: &ServedPath) -> Result<()>;
    /// The URLs a stored render was served under.
    fn served_paths(&self, key: &[u8]) -> Result<Vec<ServedPath>>;
    /// Stores a render from a backup with the URLs it was served under, without the
    /// reachability check of [`RenderRecords::put_render`] (the caller checks it).
    fn restore_render(
        &self,
        key: &[u8],
        meta: &RenderMeta,
        bytes: &[u8],
        paths: &[ServedPath],
    ) -> Result<()>;
    /// Removes (or, in a dry run, lists) every render of an image, and its mezzanines.
    fn purge_image_renders(&self, org: &str, image: &str, dry_run: bool) -> Result<Purged>;
    /// Removes every render of a stack, or those of its revisions below `below_revision`.
    fn purge_stack_renders(
        &self,
        org: &str,
        stack: &str,
        below_revision: Option<u64>,
        dry_run: bool,
    ) -> Result<Purged>;
    /// Removes every render of an organization.
    fn purge_org_renders(&self, org: &str, dry_run: bool) -> Result<Purged>;
    /// Records access times (ms since the epoch) for the recency index.
    fn touch_renders(&self, accessed: &[([u8; 32], u64)]) -> Result<()>;
    /// Bytes of every stored render and mezzanine: what the render-store budget bounds.
    fn render_bytes(&self) -> Result<u64>;
    /// Number of stored entries, renders and mezzanines.
    fn render_count(&self) -> usize;
    /// Removes least recently used renders and mezzanines until at most `max_bytes` are
    /// stored, at most `limit` of them.
    fn evict_renders(&self, max_bytes: u64, limit: usize) -> Result<Purged>;
    /// Render keys with their headers in key order, after `after`, at most `limit`: bounded,
    /// resumable passes.
    fn render_headers(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, RenderMeta)>>;
    /// Whether a render's organization, image and stack revisions still exist.
    fn render_status(&self, meta: &RenderMeta) -> Result<RenderStatus>;
    /// Removes one render (GC of an orphan); returns the bytes freed.
    fn remove_render(&self, key: &[u8]) -> Result<u64>;
    /// Whether a stored render keeps its bytes in the [`super::Bytes`] beside the records
    /// (large renders), rather than in its record.
    fn external_render(&self, key: &[u8]) -> Result<bool>;
}

/// The durable edge queue: URL paths whose cached copies at the edge must be refreshed.
pub trait EdgeQueue {
    /// Turns queueing on (with `edge.url` set). Off, invalidations queue nothing.
    fn enable_edge(&self, on: bool);
    fn edge_enabled(&self) -> bool;
    /// Resolves when jobs may have been queued since the call (the sender also polls, so a
    /// backend may resolve late; never resolving early is not required).
    fn edge_queued(&self) -> BoxFuture<'_, ()>;
    /// Queues paths for the edge (outside any other change).
    fn enqueue_edge(&self, paths: &[ServedPath]) -> Result<()>;
    /// Jobs due at `now_ms`, oldest first, at most `limit`.
    fn due_edge_jobs(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedEdgeJob>>;
    /// When the next job is due (ms since the epoch), if any is queued.
    fn next_edge_due(&self) -> Result<Option<u64>>;
    /// Removes a job that was sent (or given up).
    fn finish_edge_job(&self, queued: &QueuedEdgeJob) -> Result<()>;
    /// Moves a failed job to `due_ms` with one more attempt counted.
    fn retry_edge_job(&self, queued: &QueuedEdgeJob, due_ms: u64) -> Result<()>;
    /// Number of queued jobs.
    fn edge_pending(&self) -> usize;
    /// Drops every queued job (the edge was switched off); returns how many there were.
    fn clear_edge_queue(&self) -> Result<usize>;
    /// Keeps the paths of a deleted image for its restore (merged, bounded).
    fn keep_restore_paths(&self, org: &str, hash: &str, paths: &[ServedPath]) -> Result<()>;
    /// Takes the kept paths of a restored image and queues them; returns how many.
    fn refresh_restored(&self, org: &str, hash: &str) -> Result<usize>;
    /// Forgets the kept paths of an image removed for good.
    fn drop_restore_paths(&self, org: &str, hash: &str) -> Result<()>;
    /// Kept restore paths whose image is gone or live again (for the verifier and GC).
    fn stale_restore_paths(&self) -> Result<Vec<(String, String)>>;
}

/// A lock kept by the records, held until dropped. The embedded backend holds a mutex of the
/// one process that opens its folder; a shared backend holds a lock every node sees (a
/// database advisory lock held by one of its connections).
pub struct RecordsLock<'a>(#[allow(dead_code)] Box<dyn Held + 'a>);

/// Whatever keeps a [`RecordsLock`] held.
pub trait Held {}
impl<T> Held for T {}

impl<'a> RecordsLock<'a> {
    /// Wraps what keeps a lock held (released when it is dropped).
    pub fn new(held: impl Held + 'a) -> Self {
        Self(Box::new(held))
    }
}

/// Every record the appliance keeps, and what spans them.
pub trait Records:
    Accounts
    + ImageRecords
    + ImageIndex
    + StackRecords
    + AliasRecords
    + RenderRecords
    + EdgeQueue
    + Send
    + Sync
{
    /// A number that moves after every committed change to an organization, an image, a stack
    /// or an alias, and after every removal of a render, as seen by every process over these
    /// records. Anything derived from them while it read `g` (taken *before* the reads) is
    /// still true while it reads `g`: the remembered-URL shortcut rests on this. A shared
    /// backend reads it from the records (or from what they notify), so it can fail.
    ///
    /// Inserting a new image moves it only when another image of the organization shares
    /// the first [`SHORTEST_PREFIX`](crate::model::ids::SHORTEST_PREFIX) characters of its hash: nothing resolved before a new
    /// image stops being true except what a hash prefix names, and a prefix a URL may use
    /// can only come to name two images if they share that much. Uploads, the most frequent
    /// change, so leave every node's remembered URLs and cached renders in place (and on a
    /// shared backend do not wait for the other nodes). Of two such images inserted at once,
    /// the later one to look must see the other: the embedded store looks after the commit,
    /// a shared backend in the transaction under a lock per prefix.
    fn generation(&self) -> Result<u64>;
    /// Serialises "is this blob still unreferenced? then remove its bytes" (GC) with "these
    /// bytes are stored, so refer to them" (an upload of bytes already stored): without it, GC
    /// could remove a blob between an upload's check and its record's commit. It lives in the
    /// records because every process that writes them must take the same lock. Both sides
    /// hold it only for short steps.
    fn blob_removal_lock(&self) -> Result<RecordsLock<'_>>;
    /// A lock named `name` that one process over these records holds at a time, taken
    /// without waiting: `None` while another holds it. Background passes that must not run
    /// twice at once (the collector, the render-budget eviction, the retirement of older
    /// renders) take it and skip their turn when refused; a shared backend releases it when
    /// the process holding it dies, so another takes over at its next turn.
    fn exclusive(&self, name: &str) -> Result<Option<RecordsLock<'_>>>;
    /// Makes every write so far durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;
    /// Blocking variant of [`Records::flush`], for the command line and shutdown.
    fn flush_blocking(&self) -> Result<()>;
    /// For readiness probes, in constant work: the records can be written and read, and the
    /// free-space headroom holds.
    fn probe_ready(&self) -> Result<()>;
    /// The layout version the records were written with, if any.
    fn schema_version(&self) -> Result<Option<u32>>;
    /// Upkeep of the records' own structures, run in the background every few seconds: the
    /// embedded store packs settled listing entries into runs ([`super::sled`]). Returns how
    /// many entries it moved.
    fn tidy(&self) -> Result<u64> {
        Ok(0)
    }
    /// Where the collector's rolling sweeps stand (renders after this key; the next shard),
    /// kept in the records so that they survive restarts.
    fn sweep_position(&self) -> Result<(Option<Vec<u8>>, u8)>;
    fn set_sweep_position(&self, renders: Option<&[u8]>, shard: u8) -> Result<()>;
    /// The renderer generation the stored renders were made by (0 when never set): a renderer
    /// that encodes the same pipeline to other bytes retires the older renders.
    fn render_epoch(&self) -> Result<u32>;
    fn set_render_epoch(&self, epoch: u32) -> Result<()>;
    /// What the records hold, as counted phrases ("3 organizations"); empty when they hold
    /// nothing (a backup is restored into empty records only).
    fn contents(&self) -> Result<Vec<String>>;
    /// Removes every record (after a failed restore into empty records), durably.
    fn clear(&self) -> Result<()>;
    /// Recomputes the backend's own indexes and counters from its records and lists what
    /// disagrees; the checks that span records and bytes are [`super::verify`], which sees
    /// every image record through `each_image` in the same pass.
    fn verify_records(&self, each_image: &mut dyn FnMut(&ImageRecord)) -> Result<Vec<String>>;
}
