//! Garbage collection: `run_once(now)` removes what nothing may reach any more — images whose
//! soft-delete retention ended (and their blob files once no image of any organization refers
//! to them), renders whose image, organization or stack revision is gone, and blob or
//! temporary files left by interrupted uploads. Each pass does bounded work and only
//! idempotent steps, so a crash mid-pass is finished by the next one; a thin loop runs it
//! every `gc.interval_secs`.

use crate::storage::{Bytes, Records, RenderStatus};
use std::time::Duration;

/// How old an unreferenced blob file must be before it is collected: younger ones may belong
/// to an upload whose metadata is being committed right now.
pub const BLOB_GRACE: Duration = Duration::from_secs(3600);

/// Limits of one pass.
#[derive(Debug, Clone, Copy)]
pub struct GcSettings {
    pub retention_days: u32,
    /// Most items (images, renders, files) one pass removes.
    pub max_work: usize,
    pub blob_grace: Duration,
    /// Look at every stored render and blob file for orphans in this pass (`darkroom admin
    /// gc`). Otherwise a pass looks at the next [`SWEEP_RENDERS`] renders and the next blob
    /// shard only, so that a pass costs the same on any size of store.
    pub full_sweep: bool,
}

impl GcSettings {
    /// The background passes' settings.
    pub fn from_config(config: &crate::config::Config) -> GcSettings {
        GcSettings {
            retention_days: config.images.retention_days,
            max_work: config.gc.max_work.max(1),
            blob_grace: BLOB_GRACE,
            full_sweep: false,
        }
    }
}

/// Renders a background pass examines for orphans (they arise only from crashes: deletes
/// and purges remove their renders at once).
pub const SWEEP_RENDERS: usize = 1024;

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub expired_images: u64,
    pub blobs_removed: u64,
    pub orphan_renders: u64,
    /// Mezzanines of images that are gone, counted apart from renders.
    pub orphan_mezzanines: u64,
    pub bytes_freed: u64,
    /// The pass stopped at its work bound; another pass will continue.
    pub incomplete: bool,
    /// Another process over the records was collecting: this pass did nothing.
    pub busy: bool,
}

/// One bounded pass at time `now` (Unix seconds).
pub fn run_once(
    store: &dyn Records,
    blobs: &dyn Bytes,
    now: i64,
    settings: &GcSettings,
) -> crate::storage::Result<GcReport> {
    run_once_reporting(store, blobs, now, settings, &mut |_, _, _| {})
}

/// [`run_once`], saying how far it got (`darkroom admin gc` shows it).
pub fn run_once_reporting(
    store: &dyn Records,
    blobs: &dyn Bytes,
    now: i64,
    settings: &GcSettings,
    progress: crate::storage::Progress<'_>,
) -> crate::storage::Result<GcReport> {
    let mut report = GcReport::default();
    // One collector at a time over shared records; another takes over if its holder dies.
    let Some(_collector) = store.exclusive("gc")? else {
        report.busy = true;
        return Ok(report);
    };
    let mut budget = settings.max_work;

    // 1. Soft deletes past their retention become hard deletes; a blob file goes with the
    //    last record of any organization that refers to it. The removals are made durable
    //    before any file is unlinked: sled writes reach the disk only at a flush, so a crash
    //    between an unlink and the next flush would bring back a record whose file is gone
    //    (design §1b). The other order leaves at worst an orphan file, which step 4 collects.
    let cutoff = now - i64::from(settings.retention_days) * 86_400;
    let mut unreferenced = Vec::new();
    for (org, hash) in store.expired_images(cutoff, budget)? {
        report.bytes_freed += store.purge_image_renders(&org, &hash, false)?.store_bytes();
        store.drop_restore_paths(&org, &hash)?;
        // Only if still expired: an upload of the same bytes may have brought it back.
        if let Some(blob) = store.remove_expired_image(&org, &hash, cutoff)? {
            unreferenced.push(blob);
        }
        report.expired_images += 1;
        budget = budget.saturating_sub(1);
    }
    if !unreferenced.is_empty() {
        store.flush_blocking()?;
    }
    for blob in unreferenced {
        remove_unreferenced_blob(store, blobs, &blob, Duration::ZERO, &mut report)?;
    }

    // 2. Renders nothing can reach any more.
    // Orphan renders and blob files: a rolling sweep that resumes where the last pass
    // stopped, or the whole store for a full sweep.
    let (mut after, mut shard) = store.sweep_position()?;
    let mut examined = 0;
    while budget > 0 && (settings.full_sweep || examined < SWEEP_RENDERS) {
        let batch = store.render_headers(after.as_deref(), 256)?;
        let Some((last, _)) = batch.last() else {
            after = None;
            break;
        };
        after = Some(last.clone());
        for (key, meta) in &batch {
            if budget == 0 {
                break;
            }
            examined += 1;
            if examined % 1024 == 0 {
                progress("renders examined", examined as u64, None);
            }
            if store.render_status(meta)? == RenderStatus::Orphan {
                report.bytes_freed += store.remove_render(key)?;
                if meta.is_mezzanine() {
                    report.orphan_mezzanines += 1;
                } else {
                    report.orphan_renders += 1;
                }
                budget -= 1;
            }
        }
    }

    for (org, hash) in store.stale_restore_paths()? {
        if budget == 0 {
            break;
        }
        store.drop_restore_paths(&org, &hash)?;
        budget -= 1;
    }

    let shards: Vec<u8> = if settings.full_sweep {
        (0..=255).collect()
    } else {
        vec![shard]
    };
    let shard_count = shards.len() as u64;
    for (n, s) in shards.into_iter().enumerate() {
        progress("file shards swept", n as u64, Some(shard_count));
        let (files, bytes) =
            crate::storage::check::sweep_render_bodies(store, blobs, s, settings.blob_grace)?;
        report.orphan_renders += files;
        report.bytes_freed += bytes;
        for id in crate::storage::check::orphan_blobs(store, blobs, s, settings.blob_grace)? {
            if budget == 0 {
                break;
            }
            if remove_unreferenced_blob(store, blobs, &id, settings.blob_grace, &mut report)? {
                budget -= 1;
            }
        }
    }
    progress("file shards swept", shard_count, Some(shard_count));
    if budget > 0 && !settings.full_sweep {
        shard = shard.wrapping_add(1);
    }
    store.set_sweep_position(after.as_deref(), shard)?;
    report.incomplete = budget == 0;
    store.flush_blocking()?;
    Ok(report)
}

/// Removes a blob that no image refers to and that was last written at least `grace` ago,
/// and counts it; returns whether it did. An upload of the same bytes may have referred to the
/// blob since it was found; under the removal lock none can start referring to it until it is
/// gone, so both are checked again there.
fn remove_unreferenced_blob(
    store: &dyn Records,
    blobs: &dyn Bytes,
    id: &str,
    grace: Duration,
    report: &mut GcReport,
) -> crate::storage::Result<bool> {
    let _lock = store.blob_removal_lock()?;
    if store.blob_refs(id)? > 0 || (!grace.is_zero() && !blobs.older_than(id, grace)) {
        return Ok(false);
    }
    let size = blobs.size(id)?.unwrap_or(0);
    blobs.remove(id)?;
    report.blobs_removed += 1;
    report.bytes_freed += size;
    Ok(true)
}

/// One background pass: runs [`run_once`] now, counts it in the metrics and logs what it did.
pub fn pass(
    store: &dyn Records,
    blobs: &dyn Bytes,
    settings: &GcSettings,
    metrics: &crate::metrics::Metrics,
) {
    match run_once(store, blobs, crate::model::time::now_unix(), settings) {
        Ok(r) => {
            metrics.gc_runs.inc();
            metrics.gc_bytes_freed.inc_by(r.bytes_freed);
            metrics.gc_renders_removed.inc_by(r.orphan_renders);
            if r != GcReport::default() {
                log::info!("gc: {r:?}");
            }
        }
        Err(e) => log::warn!("gc pass failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::image::ImageRecord;
    use crate::storage::{FileBytes, ImageRecords, SledStore, Storage};
    use std::path::Path;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// What a crash at this moment would leave: the files as they are, without a flush, opened
    /// as a new store.
    fn as_after_a_crash(live: &Path, copy: &Path) -> SledStore {
        copy_dir(live, copy);
        SledStore::open(copy, 8).unwrap()
    }

    #[test]
    fn the_removal_of_an_expired_image_is_durable_before_its_blob_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let storage = Storage::open_embedded(&live, 8, 0).unwrap();
        let store = &*storage.records;
        let bytes = b"source bytes";
        let id = crate::storage::blobs::put_test_blob(&*storage.bytes, bytes);
        let rec: ImageRecord = serde_json::from_value(serde_json::json!({
            "organization": "acme", "hash": "a".repeat(40), "binary_hash": "b".repeat(40),
            "blob": id, "name": "a.jpg", "format": "jpg", "mimetype": "image/jpeg",
            "size": bytes.len(), "width": 1, "height": 1,
            "created": "2024-01-01T00:00:00+00:00",
            "created_ns": 1_700_000_000_000_000_000_i128, "deleted": true, "deleted_at": 1,
            "user_metadata": {}, "opaque": true, "animated": false
        }))
        .unwrap();
        let org: crate::model::account::Organization = serde_json::from_value(serde_json::json!({
            "id": "id-acme", "name": "acme", "display_name": "", "billing_email": "",
            "created": "2024-01-01", "master_organization": "", "signing_keys": []
        }))
        .unwrap();
        store.create_org(&org).unwrap();
        store.insert_image(&rec).unwrap();
        store.flush_blocking().unwrap();
        // The blob's place is taken by a folder, so the unlink fails and the pass stops right
        // there: whatever the pass made durable before touching the file is now on disk.
        let blob = FileBytes::open(&live).unwrap().path(&id);
        std::fs::remove_file(&blob).unwrap();
        std::fs::create_dir(&blob).unwrap();
        std::fs::write(blob.join("keep"), b"x").unwrap();
        let settings = GcSettings {
            retention_days: 0,
            max_work: 100,
            blob_grace: Duration::ZERO,
            full_sweep: true,
        };
        assert!(run_once(store, &*storage.bytes, 1_000, &settings).is_err());

        let crashed = as_after_a_crash(&live, &dir.path().join("crashed"));
        assert_eq!(
            crashed.get_image("acme", &rec.hash).unwrap(),
            None,
            "the record was gone on disk before the file was unlinked"
        );
    }
}
