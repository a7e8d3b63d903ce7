//! Every method of [`ObjectBytes`] against a real S3-compatible server (`.ci/garage` prints
//! the `DARKROOM_TEST_S3_*` variables these tests read). Each test keeps its objects below a
//! prefix of its own, so tests run in parallel on one bucket.

use super::{ObjectBytes, ObjectSettings, MULTIPART_THRESHOLD};
use crate::storage::blobs::{Bytes, FileBytes};
use futures_util::StreamExt;
use std::io::{Read, Write};
use std::time::Duration;

/// The settings of the test server, or `None` (with a message) when they are not set.
fn settings(test: &str) -> Option<ObjectSettings> {
    let var = |name: &str| std::env::var(format!("DARKROOM_TEST_S3_{name}")).ok();
    let (Some(endpoint), Some(bucket), Some(key), Some(secret)) = (
        var("ENDPOINT"),
        var("BUCKET"),
        var("ACCESS_KEY_ID"),
        var("SECRET_ACCESS_KEY"),
    ) else {
        eprintln!(
            "{test}: skipped, DARKROOM_TEST_S3_* are not set (start a Garage with .ci/garage)"
        );
        return None;
    };
    Some(ObjectSettings {
        bucket,
        endpoint,
        region: var("REGION").unwrap_or_default(),
        access_key_id: key,
        secret_access_key: secret,
        prefix: format!(
            "unit/{test}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ),
        cache_bytes: 0,
    })
}

/// A client of the test bucket over a fresh prefix, receiving uploads in a temporary folder.
fn open(test: &str) -> Option<(tempfile::TempDir, ObjectBytes)> {
    let settings = settings(test)?;
    let dir = tempfile::tempdir().unwrap();
    let local = FileBytes::open(dir.path()).unwrap();
    Some((dir, ObjectBytes::open(local, &settings).unwrap()))
}

/// Stages `data` through the synchronous upload path and commits it; returns the id.
fn put(bytes: &ObjectBytes, data: &[u8]) -> String {
    let mut staged = bytes.stage().unwrap();
    staged.write_all(data).unwrap();
    let received = staged.finish().unwrap();
    bytes.commit(&received).unwrap();
    assert!(
        !received.temp_path().exists(),
        "the temporary file is removed once committed"
    );
    received.id
}

fn temp_files(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("tmp")).unwrap().count()
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn stream_all(bytes: &ObjectBytes, id: &str) -> std::io::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stream = bytes.stream(id).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    })
}

#[test]
#[ignore = "needs an S3 server in DARKROOM_TEST_S3_* (.ci/garage)"]
fn a_committed_blob_is_read_streamed_listed_and_removed() {
    let Some((dir, bytes)) = open("blob") else {
        return;
    };
    let data = noise(300_000, 1);
    let id = put(&bytes, &data);
    assert_eq!(temp_files(&dir), 0);

    assert!(bytes.exists(&id));
    assert_eq!(bytes.size(&id).unwrap(), Some(data.len() as u64));
    assert_eq!(bytes.read(&id).unwrap(), data);
    assert_eq!(stream_all(&bytes, &id).unwrap(), data);
    let (size, mut reader) = bytes.reader(&id).unwrap().unwrap();
    assert_eq!(size, data.len() as u64);
    let mut read_back = Vec::new();
    reader.read_to_end(&mut read_back).unwrap();
    assert_eq!(read_back, data);
    assert!(bytes.older_than(&id, Duration::ZERO));
    assert!(!bytes.older_than(&id, Duration::from_secs(3600)));

    let shard = u8::from_str_radix(&id[0..2], 16).unwrap();
    assert_eq!(bytes.list_shard(shard).unwrap(), vec![id.clone()]);
    assert!(bytes.list_shard(shard.wrapping_add(1)).unwrap().is_empty());

    // The same bytes again: nothing written, the temporary file still removed.
    assert_eq!(put(&bytes, &data), id);
    assert_eq!(temp_files(&dir), 0);

    bytes.remove(&id).unwrap();
    bytes.remove(&id).unwrap();
    assert!(!bytes.exists(&id));
    assert_eq!(bytes.size(&id).unwrap(), None);
    assert!(bytes.reader(&id).unwrap().is_none());
    assert!(!bytes.older_than(&id, Duration::ZERO));
    assert_eq!(
        bytes.read(&id).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        stream_all(&bytes, &id).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(bytes.list_shard(shard).unwrap().is_empty());
}

#[test]
#[ignore = "needs an S3 server in DARKROOM_TEST_S3_* (.ci/garage)"]
fn a_large_blob_goes_up_in_parts_and_streams_back_byte_for_byte() {
    let Some((_dir, bytes)) = open("multipart") else {
        return;
    };
    let data = noise(20 * 1024 * 1024 + 12_345, 2);
    assert!(data.len() as u64 > MULTIPART_THRESHOLD);
    let id = put(&bytes, &data);
    let meta = bytes.head(bytes.blob_path(&id)).unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    // S3 gives a multipart object the ETag `<digest>-<number of parts>`.
    assert!(
        meta.e_tag
            .as_deref()
            .is_some_and(|t| t.trim_matches('"').ends_with("-3")),
        "three parts of 8 MiB: {:?}",
        meta.e_tag
    );
    let streamed = stream_all(&bytes, &id).unwrap();
    assert_eq!(streamed.len(), data.len());
    assert!(
        streamed == data,
        "the streamed bytes equal the uploaded ones"
    );
    let (_, mut reader) = bytes.reader(&id).unwrap().unwrap();
    let mut read_back = Vec::new();
    reader.read_to_end(&mut read_back).unwrap();
    assert!(read_back == data);
    bytes.remove(&id).unwrap();
}

#[test]
#[ignore = "needs an S3 server in DARKROOM_TEST_S3_* (.ci/garage)"]
fn an_upload_received_asynchronously_is_committed() {
    let Some((dir, bytes)) = open("begin") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = noise(100_000, 3);
    let received = rt.block_on(async {
        let mut upload = bytes.begin().await.unwrap();
        for chunk in data.chunks(7_000) {
            upload.write(chunk).await.unwrap();
        }
        upload.finish().await.unwrap()
    });
    assert_eq!(received.size, data.len() as u64);
    bytes.commit(&received).unwrap();
    assert_eq!(temp_files(&dir), 0);
    assert_eq!(bytes.read(&received.id).unwrap(), data);

    // An upload given up removes its temporary file and stores nothing.
    rt.block_on(async {
        let mut upload = bytes.begin().await.unwrap();
        upload.write(b"half").await.unwrap();
        upload.abort().await;
    });
    assert_eq!(temp_files(&dir), 0);
}

#[test]
#[ignore = "needs an S3 server in DARKROOM_TEST_S3_* (.ci/garage)"]
fn render_bodies_are_stored_read_removed_and_swept() {
    let Some((_dir, bytes)) = open("renders") else {
        return;
    };
    let kept = [0xab, 0xcd, 1];
    let stray = [0xab, 0xcd, 2];
    let other_shard = [0x01, 0x02, 3];
    bytes.put_render_body(&kept, b"kept body").unwrap();
    bytes.put_render_body(&stray, b"stray").unwrap();
    bytes.put_render_body(&other_shard, b"other").unwrap();
    assert_eq!(bytes.render_body(&kept).unwrap().unwrap(), b"kept body");
    // A second put of the same key replaces it whole.
    bytes.put_render_body(&kept, b"kept").unwrap();
    assert_eq!(bytes.render_body(&kept).unwrap().unwrap(), b"kept");

    let referenced = |key: &[u8]| Ok(key == kept);
    assert_eq!(
        bytes
            .sweep_render_bodies(0xab, Duration::from_secs(3600), &referenced)
            .unwrap(),
        (0, 0),
        "nothing young is swept"
    );
    assert_eq!(
        bytes
            .sweep_render_bodies(0xab, Duration::ZERO, &referenced)
            .unwrap(),
        (1, 5)
    );
    assert!(bytes.render_body(&stray).unwrap().is_none());
    assert!(bytes.render_body(&kept).unwrap().is_some());
    assert!(
        bytes.render_body(&other_shard).unwrap().is_some(),
        "other shards are left alone"
    );

    bytes.remove_render_body(&kept).unwrap();
    bytes.remove_render_body(&kept).unwrap();
    assert!(bytes.render_body(&kept).unwrap().is_none());
    bytes.remove_render_body(&other_shard).unwrap();
}

#[test]
#[ignore = "needs an S3 server in DARKROOM_TEST_S3_* (.ci/garage)"]
fn the_readiness_probe_fails_with_wrong_credentials() {
    let Some(mut settings) = settings("probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let good = ObjectBytes::open(FileBytes::open(dir.path()).unwrap(), &settings).unwrap();
    good.probe_ready().unwrap();
    settings.secret_access_key = "0".repeat(64);
    let bad = ObjectBytes::open(FileBytes::open(dir.path()).unwrap(), &settings).unwrap();
    assert!(bad.probe_ready().is_err());
    assert!(!bad.exists("00"), "an unreachable blob is not there");
}
