//! Source images: upload, dedupe, read, list, delete/restore, download, metadata, copies,
//! limits and restart durability.

use crate::helpers::*;
use serde_json::json;

async fn app_with_org() -> TestApp {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app
}

#[actix_rt::test]
async fn an_upload_reports_dimensions_format_and_hashes() {
    let app = app_with_org().await;
    let bytes = jpeg(64, 48, 1);
    let img = app.upload_one("acme", ROOT_KEY, "photo.jpg", &bytes).await;
    assert_eq!(img["width"], 64);
    assert_eq!(img["height"], 48);
    assert_eq!(img["format"], "jpg");
    assert_eq!(img["mimetype"], "image/jpeg");
    assert_eq!(img["size"], bytes.len());
    assert_eq!(img["name"], "photo.jpg");
    assert_eq!(img["binary_hash"], sha1_hex(&bytes));
    assert_eq!(img["hash"].as_str().unwrap().len(), 40);
    assert_ne!(img["hash"], img["binary_hash"]);
    assert_eq!(img["short_hash"].as_str().unwrap().len(), 6);
    assert!(img["hash"]
        .as_str()
        .unwrap()
        .starts_with(img["short_hash"].as_str().unwrap()));
    assert_eq!(img["opaque"], true);
    assert_eq!(img["animated"], false);
    assert_eq!(img["protected"], false);
    assert_eq!(img["locked"], false);
    assert_eq!(
        img["link"],
        format!("/sourceimages/acme/{}", img["hash"].as_str().unwrap())
    );
}

#[actix_rt::test]
async fn uploading_the_same_bytes_twice_gives_the_same_image_once() {
    let app = app_with_org().await;
    let bytes = jpeg(40, 30, 2);
    let a = app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;
    let b = app.upload_one("acme", ROOT_KEY, "b.jpg", &bytes).await;
    assert_eq!(a["hash"], b["hash"]);
    assert_eq!(
        app.get("/sourceimages/acme", ROOT_KEY).await.json()["total"],
        1
    );
    let blobs = app.stored_blobs().await;
    assert_eq!(blobs, 1, "the bytes are stored once");
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[actix_rt::test]
async fn several_files_in_one_request_get_metadata_by_index() {
    let app = app_with_org().await;
    let a = jpeg(10, 10, 1);
    let b = png_rgba(12, 12);
    let answer = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.jpg", &a), ("f", "b.png", &b)],
            &[
                ("meta_user[1]", r#"{"title":"second"}"#),
                ("meta_dynamic[0][subject_area]", r#"{"x":1,"y":2}"#),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["dynamic_metadata"]["subject_area"]["x"], 1);
    assert_eq!(body["items"][1]["user_metadata"]["title"], "second");
    assert_eq!(body["items"][1]["opaque"], false);
    assert_eq!(body["items"][1]["format"], "png");
}

#[actix_rt::test]
async fn dynamic_metadata_at_upload_changes_the_hash_and_shares_the_bytes() {
    let app = app_with_org().await;
    let bytes = jpeg(20, 20, 5);
    let plain = app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;
    let with_area = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.jpg", &bytes)],
            &[(
                "meta_dynamic[0]",
                r#""{\"subject_area\":{\"x\":3,\"y\":4}}""#,
            )],
        )
        .await
        .json();
    assert_ne!(plain["hash"], with_area["items"][0]["hash"]);
    assert_eq!(plain["binary_hash"], with_area["items"][0]["binary_hash"]);
    assert_eq!(app.stored_blobs().await, 1);
    let by_binary = app
        .get(
            &format!("/sourceimages/acme?binaryHash={}", sha1_hex(&bytes)),
            ROOT_KEY,
        )
        .await
        .json();
    assert_eq!(by_binary["total"], 2);
    let path_form = app
        .get(
            &format!("/sourceimages/acme/binaryhash/{}", sha1_hex(&bytes)),
            ROOT_KEY,
        )
        .await
        .json();
    assert_eq!(path_form["total"], 2);
}

#[actix_rt::test]
async fn images_are_found_by_full_and_short_hash() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 9))
        .await;
    let full = img["hash"].as_str().unwrap();
    let short = img["short_hash"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{full}"), ROOT_KEY)
            .await
            .json()["hash"],
        full
    );
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{short}"), ROOT_KEY)
            .await
            .json()["hash"],
        full
    );
    assert_eq!(
        app.get("/sourceimages/acme/ffffffffff", ROOT_KEY)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/sourceimages/acme/not-a-hash", ROOT_KEY)
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn deleting_hides_an_image_and_restoring_brings_it_back() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 4))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let path = format!("/sourceimages/acme/{hash}");
    assert_eq!(app.delete(&path, ROOT_KEY).await.status, 204);
    assert_eq!(app.get(&path, ROOT_KEY).await.status, 404);
    let deleted = app
        .get(&format!("{path}?deleted=true"), ROOT_KEY)
        .await
        .json();
    assert_eq!(deleted["deleted"], true);
    assert!(deleted["deleted_date"].is_string());
    assert_eq!(
        app.get("/sourceimages/acme", ROOT_KEY).await.json()["total"],
        0
    );
    assert_eq!(
        app.get("/sourceimages/acme?deleted=true", ROOT_KEY)
            .await
            .json()["total"],
        1
    );
    let restored = app
        .send(
            "POST",
            &format!("{path}/restore"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(restored.status, 200);
    assert_eq!(restored.json()["deleted"], false);
    assert_eq!(app.get(&path, ROOT_KEY).await.status, 200);
    assert_eq!(
        app.delete("/sourceimages/acme/ffffffffffffff", ROOT_KEY)
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn deleting_by_binary_hash_deletes_every_variant() {
    let app = app_with_org().await;
    let bytes = jpeg(10, 10, 8);
    app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;
    app.upload(
        "acme",
        ROOT_KEY,
        &[("filedata", "a.jpg", &bytes)],
        &[("meta_dynamic[0][version]", r#"{"text":"v2"}"#)],
    )
    .await;
    assert_eq!(
        app.get("/sourceimages/acme", ROOT_KEY).await.json()["total"],
        2
    );
    let a = app
        .delete(
            &format!("/sourceimages/acme?binaryHash={}", sha1_hex(&bytes)),
            ROOT_KEY,
        )
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(
        app.get("/sourceimages/acme", ROOT_KEY).await.json()["total"],
        0
    );
}

#[actix_rt::test]
async fn a_download_returns_the_exact_bytes_with_the_file_name_last() {
    let app = app_with_org().await;
    let bytes = jpeg(33, 21, 6);
    let img = app
        .upload_one("acme", ROOT_KEY, "holiday photo.jpg", &bytes)
        .await;
    let a = app
        .get(
            &format!(
                "/sourceimages/acme/{}/download",
                img["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, bytes);
    assert_eq!(a.header("content-type").as_deref(), Some("image/jpeg"));
    let cd = a.header("content-disposition").unwrap();
    assert!(cd.starts_with("attachment"), "{cd}");
    assert!(cd.ends_with("filename=\"holiday photo.jpg\""), "{cd}");
}

#[actix_rt::test]
async fn renaming_changes_the_name_but_not_the_hash() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 1))
        .await;
    let path = format!("/sourceimages/acme/{}", img["hash"].as_str().unwrap());
    assert_eq!(
        app.json("PUT", &format!("{path}/name"), ROOT_KEY, &json!("b.jpg"))
            .await
            .status,
        204
    );
    assert_eq!(app.get(&path, ROOT_KEY).await.json()["name"], "b.jpg");
    assert_eq!(
        app.json("PUT", &format!("{path}/name"), ROOT_KEY, &json!(42))
            .await
            .status,
        400
    );
}

#[actix_rt::test]
async fn user_metadata_can_be_read_set_merged_and_deleted() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 1))
        .await;
    let meta = format!(
        "/sourceimages/acme/{}/meta/user",
        img["hash"].as_str().unwrap()
    );
    assert_eq!(
        app.json(
            "PUT",
            &meta,
            ROOT_KEY,
            &json!({"title": "t", "int:count": "3"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.get(&meta, ROOT_KEY).await.json(),
        json!({"title": "t", "int:count": 3})
    );
    assert_eq!(
        app.json(
            "PATCH",
            &meta,
            ROOT_KEY,
            &json!({"title": null, "str:alt": "x"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.get(&meta, ROOT_KEY).await.json(),
        json!({"int:count": 3, "alt": "x"})
    );
    assert_eq!(
        app.json(
            "PUT",
            &format!("{meta}/array:tags"),
            ROOT_KEY,
            &json!(["a", "b"])
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.get(&format!("{meta}/array:tags"), ROOT_KEY)
            .await
            .json(),
        json!(["a", "b"])
    );
    assert_eq!(
        app.delete(&format!("{meta}/alt"), ROOT_KEY).await.status,
        204
    );
    assert_eq!(app.get(&format!("{meta}/alt"), ROOT_KEY).await.status, 404);
    assert_eq!(
        app.json("PUT", &format!("{meta}/int:n"), ROOT_KEY, &json!("nope"))
            .await
            .status,
        400
    );
    assert_eq!(
        app.json("PATCH", &meta, ROOT_KEY, &json!({"Bad Key": 1}))
            .await
            .status,
        400
    );
    assert_eq!(app.delete(&meta, ROOT_KEY).await.status, 204);
    assert_eq!(app.get(&meta, ROOT_KEY).await.json(), json!({}));
    let hash = img["hash"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
            .await
            .json()["hash"],
        hash
    );
}

#[actix_rt::test]
async fn setting_a_subject_area_creates_a_new_hash_in_location() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(50, 50, 1))
        .await;
    let old = img["hash"].as_str().unwrap();
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{old}/meta/dynamic/subject_area"),
            ROOT_KEY,
            &json!({"x": 10, "y": 10, "width": 5, "height": 5}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let location = a.header("location").unwrap();
    let new = a.json()["hash"].as_str().unwrap().to_string();
    assert!(location.ends_with(&new));
    assert_ne!(new, old);
    assert_eq!(a.json()["dynamic_metadata"]["subject_area"]["width"], 5);
    // The old hash stays without deletePrevious.
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{old}"), ROOT_KEY)
            .await
            .status,
        200
    );
    // The same change again is idempotent: 204.
    let same = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{new}/meta/dynamic/subject_area"),
            ROOT_KEY,
            &json!({"x": 10, "y": 10, "width": 5, "height": 5}),
        )
        .await;
    assert_eq!(same.status, 204);
    // deletePrevious removes the old one; rokka.js sends it in a DELETE body.
    let removed = app
        .send(
            "DELETE",
            &format!("/sourceimages/acme/{new}/meta/dynamic/subject_area"),
            Some(ROOT_KEY),
            &[],
            Some(br#"{"deletePrevious":"true"}"#.to_vec()),
        )
        .await;
    assert_eq!(removed.status, 201, "{}", removed.text());
    let back = removed.json()["hash"].as_str().unwrap().to_string();
    assert_eq!(back, old, "removing the area returns to the original hash");
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{new}"), ROOT_KEY)
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn keep_hash_updates_in_place_with_a_warning() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(50, 50, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/crop_area?keepHash=true"),
            ROOT_KEY,
            &json!({"x": 0, "y": 0, "width": 10, "height": 10}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert!(a.header("location").unwrap().ends_with(hash));
    assert!(a.header("warning").unwrap().starts_with("299"));
    let both = app
        .json(
            "PUT",
            &format!(
                "/sourceimages/acme/{hash}/meta/dynamic/version?keepHash=true&deletePrevious=true"
            ),
            ROOT_KEY,
            &json!({"text": "x"}),
        )
        .await;
    assert_eq!(both.status, 400);
    let bad = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/crop_area"),
            ROOT_KEY,
            &json!({"x": 0}),
        )
        .await;
    assert_eq!(bad.status, 400);
    let unknown = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/detection_face"),
            ROOT_KEY,
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status, 400);
}

#[actix_rt::test]
async fn multi_areas_and_version_are_dynamic_metadata() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(50, 50, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let areas = json!({"square": {"crop_area": {"x": 0, "y": 0, "width": 20, "height": 20}}});
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/multi_areas"),
            ROOT_KEY,
            &areas,
        )
        .await;
    assert_eq!(a.status, 201);
    let v = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/version"),
            ROOT_KEY,
            &json!({"text": "2"}),
        )
        .await;
    assert_eq!(v.status, 201);
    assert_ne!(v.json()["hash"], a.json()["hash"]);
}

#[actix_rt::test]
async fn protection_changes_the_hash_and_locking_prevents_changes() {
    let app = app_with_org().await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(20, 20, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let p = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/options/protected?deletePrevious=true"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text());
    let protected = p.json()["hash"].as_str().unwrap().to_string();
    assert_ne!(protected, hash);
    assert_eq!(p.json()["protected"], true);
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
            .await
            .status,
        404
    );
    let l = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{protected}/options/locked"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(l.status, 200);
    assert_eq!(l.json()["locked"], true);
    let del = app
        .delete(&format!("/sourceimages/acme/{protected}"), ROOT_KEY)
        .await;
    assert_eq!(del.status, 403);
    assert!(del.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("locked"));
    let meta = app
        .json(
            "PATCH",
            &format!("/sourceimages/acme/{protected}/meta/user"),
            ROOT_KEY,
            &json!({"a": "b"}),
        )
        .await;
    assert_eq!(meta.status, 403);
    app.json(
        "PUT",
        &format!("/sourceimages/acme/{protected}/options/locked"),
        ROOT_KEY,
        &json!(false),
    )
    .await;
    assert_eq!(
        app.delete(&format!("/sourceimages/acme/{protected}"), ROOT_KEY)
            .await
            .status,
        204
    );
}

#[actix_rt::test]
async fn protected_at_upload_gives_a_different_hash() {
    let app = app_with_org().await;
    let bytes = jpeg(20, 20, 3);
    let plain = app.upload_one("acme", ROOT_KEY, "a.jpg", &bytes).await;
    let prot = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.jpg", &bytes)],
            &[("options[0]", r#""{\"protected\":true}""#)],
        )
        .await
        .json();
    assert_eq!(prot["items"][0]["protected"], true);
    assert_ne!(prot["items"][0]["hash"], plain["hash"]);
}

#[actix_rt::test]
async fn copying_to_another_organization_keeps_the_hash_and_shares_the_bytes() {
    let app = app_with_org().await;
    app.create_org("branch").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(20, 20, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let a = app
        .send(
            "COPY",
            &format!("/sourceimages/acme/{hash}"),
            Some(ROOT_KEY),
            &[("Destination", "branch")],
            None,
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(
        app.get(&format!("/sourceimages/branch/{hash}"), ROOT_KEY)
            .await
            .json()["hash"],
        hash
    );
    let again = app
        .send(
            "COPY",
            &format!("/sourceimages/acme/{hash}"),
            Some(ROOT_KEY),
            &[("Destination", "branch"), ("Overwrite", "F")],
            None,
        )
        .await;
    assert_eq!(again.status, 412);
    let overwrite = app
        .send(
            "POST",
            &format!("/sourceimages/acme/{hash}/copy"),
            Some(ROOT_KEY),
            &[("Destination", "branch")],
            None,
        )
        .await;
    assert_eq!(overwrite.status, 204);
    let missing = app
        .send(
            "COPY",
            &format!("/sourceimages/acme/{hash}"),
            Some(ROOT_KEY),
            &[("Destination", "nowhere")],
            None,
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(app.stored_blobs().await, 1);
}

#[actix_rt::test]
async fn bulk_copy_reports_created_existing_and_missing() {
    let app = app_with_org().await;
    app.create_org("branch").await;
    let a = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(20, 20, 1))
        .await;
    let b = app
        .upload_one("acme", ROOT_KEY, "b.jpg", &jpeg(20, 20, 2))
        .await;
    let (ha, hb) = (a["hash"].as_str().unwrap(), b["hash"].as_str().unwrap());
    app.send(
        "COPY",
        &format!("/sourceimages/acme/{ha}"),
        Some(ROOT_KEY),
        &[("Destination", "branch")],
        None,
    )
    .await;
    let body = json!([ha, hb, "ffffffffffffffffffffffffffffffffffffffff"]);
    let r = app
        .send(
            "POST",
            "/sourceimages/acme/copy",
            Some(ROOT_KEY),
            &[("Destination", "branch"), ("Overwrite", "F")],
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["created"], json!([hb]));
    assert_eq!(r["existing"], json!([ha]));
    assert_eq!(r["notfound"].as_array().unwrap().len(), 1);
}

#[actix_rt::test]
async fn listing_pages_sorts_and_filters() {
    let app = app_with_org().await;
    for i in 0..5u8 {
        let a = app
            .upload(
                "acme",
                ROOT_KEY,
                &[(
                    "filedata",
                    &format!("img{i}.jpg"),
                    &jpeg(10 + u32::from(i), 10, i),
                )],
                &[(
                    "meta_user[0]",
                    &format!(r#"{{"int:rank":{i},"group":"g{}"}}"#, i % 2),
                )],
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let page = app
        .get("/sourceimages/acme?limit=2&sort=width%20asc", ROOT_KEY)
        .await
        .json();
    assert_eq!(page["total"], 5);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["width"], 10);
    assert!(page["links"]["next"]["href"].is_string());
    // Follow cursors to the end.
    let mut names = Vec::new();
    let mut offset = String::new();
    for _ in 0..5 {
        let p = app
            .get(
                &format!("/sourceimages/acme?limit=2&sort=width%20desc&offset={offset}"),
                ROOT_KEY,
            )
            .await
            .json();
        let items = p["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        names.extend(
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        offset = p["cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(
        names,
        ["img4.jpg", "img3.jpg", "img2.jpg", "img1.jpg", "img0.jpg"]
    );
    let g1 = app
        .get("/sourceimages/acme?user%3Agroup=g1", ROOT_KEY)
        .await
        .json();
    assert_eq!(g1["total"], 2);
    let ranked = app
        .get(
            "/sourceimages/acme?user:int:rank=[3,}&sort=user:int:rank%20asc",
            ROOT_KEY,
        )
        .await
        .json();
    assert_eq!(ranked["total"], 2);
    assert_eq!(ranked["items"][0]["name"], "img3.jpg");
    let prefix = app
        .get("/sourceimages/acme?name=img2*", ROOT_KEY)
        .await
        .json();
    assert_eq!(prefix["total"], 1);
    let zero = app.get("/sourceimages/acme?limit=0", ROOT_KEY).await.json();
    assert_eq!(zero["total"], 5);
    assert_eq!(zero["items"], json!([]));
    assert_eq!(
        app.get("/sourceimages/acme?sort=bogus", ROOT_KEY)
            .await
            .status,
        400
    );
}

#[actix_rt::test]
async fn broken_and_unsupported_files_are_refused_and_nothing_is_stored() {
    let app = app_with_org().await;
    let good = jpeg(64, 64, 1);
    let truncated = &good[..good.len() / 2];
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("truncated.jpg", truncated.to_vec(), &[400, 422]),
        (
            "random.jpg",
            (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            &[400, 415, 422],
        ),
        (
            "text.jpg",
            b"hello, I am not an image".to_vec(),
            &[400, 415, 422],
        ),
        ("empty.jpg", Vec::new(), &[400, 415, 422]),
    ];
    for (name, bytes, allowed) in cases {
        let a = app
            .upload("acme", ROOT_KEY, &[("filedata", name, &bytes)], &[])
            .await;
        assert!(
            allowed.contains(&a.status),
            "{name}: {} {}",
            a.status,
            a.text()
        );
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(!msg.is_empty(), "{name}");
    }
    // A good file next to a broken one stores nothing either.
    let a = app
        .upload(
            "acme",
            ROOT_KEY,
            &[
                ("filedata", "ok.jpg", &good),
                ("filedata", "bad.jpg", truncated),
            ],
            &[],
        )
        .await;
    assert!(a.status >= 400 && a.status < 500);
    assert_eq!(
        app.get("/sourceimages/acme", ROOT_KEY).await.json()["total"],
        0
    );
    assert_eq!(app.stored_blobs().await, 0);
    assert_eq!(walk_files(&app.data.join("tmp")), 0);
}

#[actix_rt::test]
async fn uploads_above_the_size_limit_are_413() {
    let app = spawn_app_with(|c| c.limits.max_upload_bytes = 1000).await;
    app.create_org("acme").await;
    let a = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "big.png", &png(200, 200))],
            &[],
        )
        .await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(walk_files(&app.data.join("tmp")), 0);
}

#[actix_rt::test]
async fn images_above_the_pixel_limits_are_refused_from_the_header() {
    let app = spawn_app_with(|c| {
        c.limits.max_pixels = 1000;
        c.limits.max_dimension = 100;
    })
    .await;
    app.create_org("acme").await;
    let many_pixels = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.png", &png(40, 40))],
            &[],
        )
        .await;
    assert!(
        many_pixels.status == 422 || many_pixels.status == 400,
        "{}",
        many_pixels.text()
    );
    let too_wide = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "b.png", &png(101, 5))],
            &[],
        )
        .await;
    assert!(
        too_wide.status == 422 || too_wide.status == 400,
        "{}",
        too_wide.text()
    );
    let ok = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "c.png", &png(30, 30))],
            &[],
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[actix_rt::test]
async fn accepted_input_formats_are_recognised() {
    let app = app_with_org().await;
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 12, |x, y| {
        Rgb([x as u8 * 10, y as u8 * 10, 100])
    }));
    for (format, ext) in [
        (ImageFormat::Gif, "gif"),
        (ImageFormat::WebP, "webp"),
        (ImageFormat::Tiff, "tiff"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Png, "png"),
    ] {
        let bytes = encode(img.clone(), format);
        let a = app
            .upload(
                "acme",
                ROOT_KEY,
                &[("filedata", &format!("x.{ext}"), &bytes)],
                &[],
            )
            .await;
        assert_eq!(a.status, 200, "{ext}: {}", a.text());
        let item = &a.json()["items"][0];
        assert_eq!(item["width"], 16, "{ext}");
        assert_eq!(item["height"], 12, "{ext}");
        assert!(
            item["format"].as_str().unwrap().starts_with(&ext[..3]),
            "{ext}: {}",
            item["format"]
        );
    }
}

#[actix_rt::test]
async fn everything_survives_a_restart_with_the_same_hashes() {
    let app = app_with_org().await;
    let key = app.create_key("acme", &["write"]).await;
    let img = app
        .upload_one("acme", &key, "a.jpg", &jpeg(30, 30, 1))
        .await;
    let hash = img["hash"].as_str().unwrap().to_string();
    app.json(
        "PATCH",
        &format!("/sourceimages/acme/{hash}/meta/user"),
        &key,
        &json!({"title": "kept"}),
    )
    .await;
    let dir = app.stop().await.expect("a temporary folder");
    let mut config = test_config(dir.path());
    config.storage.path = dir.path().to_path_buf();
    let app = start(config).await;
    let got = app.get(&format!("/sourceimages/acme/{hash}"), &key).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["user_metadata"]["title"], "kept");
    let dl = app
        .get(&format!("/sourceimages/acme/{hash}/download"), &key)
        .await;
    assert_eq!(dl.body, jpeg(30, 30, 1));
    let again = app
        .upload_one("acme", &key, "a.jpg", &jpeg(30, 30, 1))
        .await;
    assert_eq!(again["hash"], hash.as_str());
}

#[actix_rt::test]
async fn the_default_listing_matches_the_general_one() {
    let app = app_with_org().await;
    for i in 0..5u8 {
        app.upload_one(
            "acme",
            ROOT_KEY,
            &format!("img{i}.jpg"),
            &jpeg(10, 10, 50 + i),
        )
        .await;
    }
    let first = app.get("/sourceimages/acme?limit=1", ROOT_KEY).await.json();
    app.delete(
        &format!(
            "/sourceimages/acme/{}",
            first["items"][0]["hash"].as_str().unwrap()
        ),
        ROOT_KEY,
    )
    .await;
    for offset in [0, 2, 4] {
        // A filter that matches everything takes the general path.
        let plain = app
            .get(
                &format!("/sourceimages/acme?limit=2&offset={offset}"),
                ROOT_KEY,
            )
            .await
            .json();
        let general = app
            .get(
                &format!("/sourceimages/acme?limit=2&offset={offset}&name=img*"),
                ROOT_KEY,
            )
            .await
            .json();
        assert_eq!(plain["total"], 4);
        assert_eq!(plain["items"], general["items"], "offset {offset}");
        assert_eq!(
            plain["links"].get("next").is_some(),
            general["links"].get("next").is_some()
        );
    }
}
