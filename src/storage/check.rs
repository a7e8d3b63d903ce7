//! Consistency checks and garbage candidates: recomputes every counter and reference from the
//! records themselves and compares them with what is stored (design §7). Used by
//! `darkroom admin verify`, by the tests after every data change, and by the garbage collector
//! to find orphans.
//!
//! [`verify`] and [`orphan_blobs`] work over the interfaces, so they hold on every backend;
//! each backend adds the checks of its own indexes and counters ([`Records::verify_records`]:
//! for the embedded records in `sled/check.rs`).

use super::{Bytes, Progress, Records, Result};
use std::collections::HashSet;
use std::time::Duration;

/// Whether a render's image, organization and stack revisions still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderStatus {
    Live,
    /// Its image is gone or deleted, its organization is gone, or one of its stacks was
    /// deleted or overwritten since.
    Orphan,
}

/// Blob files of one shard (`00`..`ff`, the first two hex digits of their id) that no image
/// refers to and that are older than `grace` (younger ones may belong to an upload whose record
/// is being committed). The collector visits one shard per pass.
pub fn orphan_blobs(
    records: &dyn Records,
    bytes: &dyn Bytes,
    shard: u8,
    grace: Duration,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in bytes.list_shard(shard)? {
        if records.blob_refs(&id)? == 0 && bytes.older_than(&id, grace) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Removes the render bodies of one shard that no stored render refers to and that were
/// written at least `grace` ago (a crash between a body's write and its record's commit, or
/// between a removal's commit and the body's removal); returns the bodies and bytes removed.
pub fn sweep_render_bodies(
    records: &dyn Records,
    bytes: &dyn Bytes,
    shard: u8,
    grace: Duration,
) -> Result<(u64, u64)> {
    let referenced = |key: &[u8]| {
        records
            .external_render(key)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    Ok(bytes.sweep_render_bodies(shard, grace, &referenced)?)
}

/// Checks every invariant (design §7) and lists what breaks: the backend's own indexes and
/// counters, every image's bytes present, and no blob older than `grace` left unreferenced.
///
/// The bytes are checked against one listing per shard, not one lookup per image: the
/// records' blob ids are kept as 32-byte digests while the records are read (about 50 MB for
/// a million images); only when some are missing are the records read again to name their
/// images.
pub fn verify(
    records: &dyn Records,
    bytes: &dyn Bytes,
    grace: Duration,
    progress: Progress<'_>,
) -> Result<Vec<String>> {
    let mut referenced: Vec<HashSet<[u8; 32]>> = (0..256).map(|_| HashSet::new()).collect();
    let mut unreadable = Vec::new();
    let mut seen = 0u64;
    let mut problems = records.verify_records(&mut |rec| {
        match blob_digest(&rec.blob) {
            Some(id) => {
                referenced[usize::from(id[0])].insert(id);
            }
            None => unreadable.push(format!(
                "image {}/{} refers to a blob with an unreadable id {}",
                rec.organization, rec.hash, rec.blob
            )),
        }
        seen += 1;
        if seen % 1024 == 0 {
            progress("images checked", seen, None);
        }
    })?;
    progress("images checked", seen, Some(seen));
    problems.append(&mut unreadable);
    // Removing an image for good removes its aliases; a soft-deleted image keeps them.
    for org in records.list_orgs()? {
        for alias in records.list_aliases(&org.name)? {
            if records.get_image(&org.name, &alias.hash)?.is_none() {
                problems.push(format!(
                    "alias {}/{} points to a missing image {}",
                    org.name, alias.alias, alias.hash
                ));
            }
        }
    }
    let mut missing = HashSet::new();
    for (shard, wanted) in referenced.iter_mut().enumerate() {
        let shard = u8::try_from(shard).unwrap_or(u8::MAX);
        for id in bytes.list_shard(shard)? {
            let known = blob_digest(&id).is_some_and(|d| wanted.remove(&d));
            if !known && bytes.older_than(&id, grace) {
                problems.push(format!("blob file {id} is not referenced by any image"));
            }
        }
        missing.extend(wanted.drain());
        progress("blob shards checked", u64::from(shard) + 1, Some(256));
    }
    if !missing.is_empty() {
        let mut named = Vec::new();
        records.verify_records(&mut |rec| {
            if blob_digest(&rec.blob).is_some_and(|d| missing.contains(&d)) {
                named.push(format!(
                    "image {}/{} refers to a missing blob file {}",
                    rec.organization, rec.hash, rec.blob
                ));
            }
        })?;
        problems.append(&mut named);
    }
    Ok(problems)
}

/// A blob id (64 hex digits, the BLAKE3 of the bytes) as its 32 bytes.
fn blob_digest(id: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod byte_tests {
    use super::*;
    use crate::model::image::ImageRecord;
    use crate::storage::records::*;
    use crate::storage::{blobs::put_test_blob, fixtures, FileBytes, SledStore};

    #[test]
    fn missing_and_unreferenced_blob_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8).unwrap();
        let bytes = FileBytes::open_with_headroom(dir.path(), 0).unwrap();
        store.create_org(&fixtures::org("acme")).unwrap();
        let kept = put_test_blob(&bytes, b"kept");
        let stray = put_test_blob(&bytes, b"stray");
        let gone = blake3::hash(b"gone").to_hex().to_string();
        for (hash, blob) in [("a".repeat(40), &kept), ("b".repeat(40), &gone)] {
            let rec: ImageRecord = serde_json::from_value(serde_json::json!({
                "organization": "acme", "hash": hash, "binary_hash": hash, "blob": blob,
                "name": "x.png", "format": "png", "mimetype": "image/png", "size": 4,
                "width": 1, "height": 1, "created": "2024-01-01T00:00:00+00:00",
                "created_ns": 1_700_000_000_000_000_000_i128, "opaque": true, "animated": false
            }))
            .unwrap();
            store.insert_image(&rec).unwrap();
        }
        let found = verify(&store, &bytes, Duration::ZERO, &mut |_, _, _| {})
            .unwrap()
            .join("\n");
        assert!(
            found.contains(&format!(
                "image acme/{} refers to a missing blob file {gone}",
                "b".repeat(40)
            )),
            "{found}"
        );
        assert!(
            found.contains(&format!("blob file {stray} is not referenced by any image")),
            "{found}"
        );
        assert!(!found.contains(&kept), "{found}");
        // Within the grace period an unreferenced file may belong to an upload being committed.
        let found = verify(&store, &bytes, Duration::from_secs(3600), &mut |_, _, _| {})
            .unwrap()
            .join("\n");
        assert!(!found.contains(&stray), "{found}");
    }
}
