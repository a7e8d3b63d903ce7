//! Garbage collection: expired soft deletes, blob lifetime across organizations, orphans.

use crate::helpers::*;
use darkroom::gc::{run_once, GcSettings};
use std::time::Duration;

fn settings() -> GcSettings {
    GcSettings {
        retention_days: 30,
        max_work: 1000,
        blob_grace: Duration::ZERO,
        full_sweep: true,
    }
}

fn days(n: i64) -> i64 {
    darkroom::model::time::now_unix() + n * 86_400
}

#[actix_rt::test]
async fn a_deleted_image_is_removed_for_good_after_the_retention_and_its_blob_with_it() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(40, 30, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    app.delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    let store = &app.services.store;
    let early = run_once(&**store, &*app.services.blobs, days(29), &settings()).unwrap();
    assert_eq!(early.expired_images, 0, "still restorable");
    assert_eq!(app.stored_blobs().await, 1);
    let late = run_once(&**store, &*app.services.blobs, days(31), &settings()).unwrap();
    assert_eq!(late.expired_images, 1);
    assert_eq!(late.blobs_removed, 1);
    assert!(late.bytes_freed >= jpeg(40, 30, 1).len() as u64);
    assert_eq!(
        app.stored_blobs().await,
        0,
        "the data folder shrinks, not only the counters"
    );
    let restore = app
        .send(
            "POST",
            &format!("/sourceimages/acme/{hash}/restore"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(restore.status, 404);
}

#[actix_rt::test]
async fn a_blob_shared_with_another_organization_outlives_one_deletion() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.create_org("branch").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(40, 30, 2))
        .await;
    let hash = img["hash"].as_str().unwrap();
    app.send(
        "COPY",
        &format!("/sourceimages/acme/{hash}"),
        Some(ROOT_KEY),
        &[("Destination", "branch")],
        None,
    )
    .await;
    app.delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    let r = run_once(
        &*app.services.store,
        &*app.services.blobs,
        days(31),
        &settings(),
    )
    .unwrap();
    assert_eq!((r.expired_images, r.blobs_removed), (1, 0));
    let dl = app
        .get(&format!("/sourceimages/branch/{hash}/download"), ROOT_KEY)
        .await;
    assert_eq!(dl.body, jpeg(40, 30, 2));
}

#[actix_rt::test]
async fn orphan_blob_files_and_renders_are_collected() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(40, 30, 3))
        .await;
    let hash = img["hash"].as_str().unwrap();
    // Bytes left by a crash between committing them and committing the record.
    let store = &app.services.store;
    let stray = {
        use std::io::Write;
        let mut staged = app.services.blobs.stage().unwrap();
        staged.write_all(b"left behind").unwrap();
        let received = staged.finish().unwrap();
        app.services.blobs.commit(&received).unwrap();
        received.id
    };
    // A render stored under a stack revision that no longer exists (a crash between a stack
    // overwrite and the purge of its renders): stored while the revision was current, then
    // the stack is overwritten behind the service's back.
    let a = app
        .json(
            "PUT",
            "/stacks/acme/gone",
            ROOT_KEY,
            &serde_json::json!([{"name": "resize", "options": {"width": 10}}]),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let meta = darkroom::storage::RenderMeta {
        content_type: "image/jpeg".into(),
        etag: "\"x\"".into(),
        organization: "acme".into(),
        image: hash.to_string(),
        stacks: vec![darkroom::storage::StackRevision {
            name: "gone".into(),
            revision: 1,
        }],
    };
    let served = darkroom::storage::ServedPath {
        host: String::new(),
        path: "/acme/gone/x.jpg".into(),
    };
    store
        .put_render(
            &[5; 32],
            &meta,
            bytes::Bytes::from_static(b"bytes"),
            &served,
        )
        .unwrap();
    let mut stack = store.get_stack("acme", "gone").unwrap().unwrap();
    stack.revision += 1;
    store.put_stack(&stack).unwrap();
    assert!(
        !app.services.verify(Duration::ZERO).unwrap().is_empty(),
        "the verifier sees both orphans"
    );
    let r = run_once(&**store, &*app.services.blobs, days(0), &settings()).unwrap();
    assert_eq!(r.orphan_renders, 1);
    assert_eq!(r.blobs_removed, 1);
    assert!(!app.services.blobs.exists(&stray));
    assert!(store.get_render(&[5; 32]).unwrap().is_none());
}

#[actix_rt::test]
async fn a_pass_does_bounded_work_and_the_next_one_continues() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    for i in 0..3u8 {
        let img = app
            .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(20, 20, 10 + i))
            .await;
        app.delete(
            &format!("/sourceimages/acme/{}", img["hash"].as_str().unwrap()),
            ROOT_KEY,
        )
        .await;
    }
    let small = GcSettings {
        max_work: 2,
        ..settings()
    };
    let first = run_once(&*app.services.store, &*app.services.blobs, days(31), &small).unwrap();
    assert_eq!(first.expired_images, 2);
    assert!(first.incomplete);
    let second = run_once(&*app.services.store, &*app.services.blobs, days(31), &small).unwrap();
    assert_eq!(second.expired_images, 1);
    assert_eq!(app.stored_blobs().await, 0);
}
