//! Compaction of the database file. sled 0.34 reuses the space of deleted records but never
//! gives it back to the file system; `darkroom admin compact` (service stopped) rewrites every
//! tree into a fresh database beside the old one and swaps it in.
//!
//! The swap survives a crash at any point: the new database is complete (marker file written
//! after its flush) before the old one is renamed away, and [`recover`] finishes or undoes an
//! interrupted swap at the next open.

use crate::storage::{Result, StorageError};
use std::path::Path;

const FRESH: &str = "sled.compact";
const OLD: &str = "sled.old";
const COMPLETE: &str = "COMPLETE";

/// Finishes or undoes a compaction that stopped half-way. Called before the database opens.
pub fn recover(data: &Path) -> Result<()> {
    let (live, fresh, old) = (data.join("sled"), data.join(FRESH), data.join(OLD));
    if !live.exists() && fresh.join(COMPLETE).exists() {
        std::fs::rename(&fresh, &live)?;
    }
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    let _ = std::fs::remove_file(live.join(COMPLETE));
    if live.exists() && old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Bytes of the files under `dir`.
pub fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Opens the database at `path` once the lock of a handle closed a moment ago is free: sled's
/// background flusher lets go of it a little after the handle is dropped.
fn open_when_unlocked(path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(path).open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return Ok(other?),
        }
    }
}

/// Rewrites the database of the data folder `data` into a fresh file; returns its size in
/// bytes before and after. Fails while another process (the service) holds the database.
pub fn compact(data: &Path) -> Result<(u64, u64)> {
    recover(data)?;
    let (live, fresh, old) = (data.join("sled"), data.join(FRESH), data.join(OLD));
    if !live.exists() {
        return Err(StorageError::Schema(format!(
            "{} holds no database to compact",
            data.display()
        )));
    }
    let before = folder_bytes(&live);
    // Every settled listing entry goes into a run first, so the fresh file holds the fewest
    // keys. The store's own handle is closed before the copy opens the folder again.
    {
        let store = super::SledStore::open(data, 64)?;
        store.pack_index(true)?;
        crate::storage::Records::flush_blocking(&store)?;
    }
    {
        let source = open_when_unlocked(&live)?;
        let target = sled::Config::new().path(&fresh).open()?;
        target.import(source.export());
        target.flush()?;
        let (a, b) = (source.checksum()?, target.checksum()?);
        if a != b {
            drop(target);
            std::fs::remove_dir_all(&fresh)?;
            return Err(StorageError::Schema(format!(
                "the compacted database does not match the original (checksum {a:x} against {b:x}); the original is kept"
            )));
        }
    }
    let marker = std::fs::File::create(fresh.join(COMPLETE))?;
    marker.sync_all()?;
    std::fs::rename(&live, &old)?;
    std::fs::rename(&fresh, &live)?;
    std::fs::remove_file(live.join(COMPLETE))?;
    std::fs::remove_dir_all(&old)?;
    Ok((before, folder_bytes(&live)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::image::ImageRecord;
    use crate::storage::records::*;
    use crate::storage::SledStore;

    /// Runs `f` until the folder's lock is free: sled's background flusher lets go of a
    /// dropped database a moment later, longer on a busy machine.
    fn when_unlocked<T>(f: impl Fn() -> Result<T>) -> T {
        for _ in 0..200 {
            match f() {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => return other.unwrap(),
            }
        }
        panic!("the data folder stayed locked");
    }

    fn image(i: usize) -> ImageRecord {
        serde_json::from_value(serde_json::json!({
            "organization": "acme", "hash": format!("{i:040x}"), "binary_hash": format!("{i:040}"),
            "blob": format!("{i:064x}"), "name": format!("photo-{i}.jpg"), "format": "jpg",
            "mimetype": "image/jpeg", "size": 1000 + i, "width": 640, "height": 480,
            "created": "2024-01-01T00:00:00+00:00", "created_ns": 1_700_000_000_000_000_000_i128 + i as i128,
            "deleted": false, "user_metadata": {"tag": format!("t{}", i % 10), "int:n": i},
            "opaque": true, "animated": false
        }))
        .unwrap()
    }

    #[test]
    fn compaction_gives_back_the_space_of_removed_records_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 8).unwrap();
            for i in 0..4000 {
                store.insert_image(&image(i)).unwrap();
            }
            for i in (0..4000).step_by(2) {
                store.remove_image("acme", &image(i).hash).unwrap();
            }
            store.flush_blocking().unwrap();
        }
        let (before, after) = when_unlocked(|| compact(dir.path()));
        assert!(after * 10 < before * 7, "{before} -> {after} bytes");
        let store = when_unlocked(|| SledStore::open(dir.path(), 8));
        assert!(store.get_image("acme", &image(1).hash).unwrap().is_some());
        assert!(store.get_image("acme", &image(2).hash).unwrap().is_none());
        let problems: Vec<String> = store
            .verify(std::time::Duration::ZERO)
            .unwrap()
            .into_iter()
            .filter(|p| !p.contains("blob") && !p.contains("organization"))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(store.image_count("acme", false).unwrap(), 2000);
        // Every listing entry is in a run.
        assert_eq!(store.img_index.len() + store.img_gone.len(), 0);
        assert!(store.img_runs.len() > 100);
    }

    #[test]
    fn an_interrupted_swap_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 8).unwrap();
            store.insert_image(&image(1)).unwrap();
            store.flush_blocking().unwrap();
        }
        // As if the process died between the two renames.
        when_unlocked(|| compact(dir.path()));
        std::fs::rename(dir.path().join("sled"), dir.path().join(FRESH)).unwrap();
        std::fs::File::create(dir.path().join(FRESH).join(COMPLETE)).unwrap();
        std::fs::create_dir(dir.path().join(OLD)).unwrap();
        let store = when_unlocked(|| SledStore::open(dir.path(), 8));
        assert!(store.get_image("acme", &image(1).hash).unwrap().is_some());
        assert!(!dir.path().join(OLD).exists() && !dir.path().join(FRESH).exists());
    }
}
