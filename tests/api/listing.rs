//! Listings answered from the indexes: a store of the previous layout is migrated on open,
//! and cursor walks stay exact while images come and go.

use crate::helpers::*;
use std::collections::HashSet;
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn hashes(v: &serde_json::Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["hash"].as_str().unwrap().to_string())
        .collect()
}

/// `tests/fixtures/store-v1` was written by the schema-1 layout (a creation-time index only):
/// five PNGs with user metadata `tag`, `int:n` and `array:labels`, the fifth soft-deleted, and
/// one stored render.
#[actix_rt::test]
async fn a_store_of_the_previous_layout_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1"),
        dir.path(),
    );
    // The fixture's blob files are part of the folder it was written as.
    let mut config = test_config(dir.path());
    with_embedded_bytes(&mut config);
    let app = start(config).await;
    assert_eq!(
        app.services.store.schema_version().unwrap(),
        Some(darkroom::storage::SCHEMA_VERSION)
    );
    let problems = app.services.verify(std::time::Duration::ZERO).unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    let list = |q: &'static str| {
        let app = &app;
        async move {
            let a = app.get(&format!("/sourceimages/acme?{q}"), ROOT_KEY).await;
            assert_eq!(a.status, 200, "{q}: {}", a.text());
            a.json()
        }
    };
    let all = list("").await;
    assert_eq!(all["total"], 4);
    let by_n = list("sort=user:int:n%20desc").await;
    let names: Vec<&str> = by_n["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["img3.png", "img2.png", "img1.png", "img0.png"]);
    assert_eq!(list("user:str:tag=t0").await["total"], 2);
    assert_eq!(list("user:str:tag=t0&deleted=true").await["total"], 1);
    assert_eq!(
        list("user:array:labels=b1").await["items"][0]["name"],
        "img1.png"
    );
    let facets = list("facets=user:array:labels&limit=0").await;
    assert_eq!(facets["facets"]["user:array:labels"][0]["value"], "a");
    assert_eq!(facets["facets"]["user:array:labels"][0]["count"], 4);
    // The stored render and the source bytes survived.
    let first = &all["items"][3]["hash"];
    assert_eq!(first, "6e4e3ca4798fddf1a9488b5a9f7991cde3bc053e");
    let r = app
        .render(&format!(
            "/dynamic/resize-width-2/{}.png",
            first.as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Every image present for the whole walk is listed exactly once, however images are added
/// and deleted between pages, in every sort order.
#[actix_rt::test]
async fn cursor_walks_are_exact_while_images_come_and_go() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let mut stable = Vec::new();
    for i in 0..40u8 {
        let meta = format!(r#"{{"int:n": {}, "tag": "t{}"}}"#, i % 5, i % 3);
        let a = app
            .upload(
                "acme",
                ROOT_KEY,
                &[("filedata", &format!("i{i}.png"), &png_seeded(i))],
                &[("meta_user[0]", &meta)],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        stable.push(a.json()["items"][0]["hash"].as_str().unwrap().to_string());
    }
    let mut fresh = 100u8;
    for sort in [
        "created%20desc",
        "created%20asc",
        "size%20desc",
        "user:int:n%20asc",
        "name",
        "user:tag%20desc",
    ] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        let mut transient = Vec::new();
        loop {
            let a = app
                .get(
                    &format!("/sourceimages/acme?sort={sort}&limit=6&offset={cursor}"),
                    ROOT_KEY,
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text());
            let v = a.json();
            let page = hashes(&v);
            seen.extend(page.iter().cloned());
            if page.len() < 6 {
                break;
            }
            cursor = v["cursor"].as_str().unwrap().to_string();
            // Between pages: one image arrives, one that arrived earlier goes.
            let up = app
                .upload_one("acme", ROOT_KEY, "new.png", &png_seeded(fresh))
                .await;
            fresh = fresh.wrapping_add(1);
            transient.push(up["hash"].as_str().unwrap().to_string());
            if transient.len() > 1 {
                let gone = transient.remove(0);
                assert_eq!(
                    app.delete(&format!("/sourceimages/acme/{gone}"), ROOT_KEY)
                        .await
                        .status,
                    204
                );
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{sort}: an image was listed twice"
        );
        for h in &stable {
            assert!(unique.contains(h), "{sort}: {h} was never listed");
        }
        for h in transient {
            app.delete(&format!("/sourceimages/acme/{h}"), ROOT_KEY)
                .await;
        }
    }
}

/// A distinct small PNG per seed.
fn png_seeded(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(
        3 + u32::from(seed % 7),
        2 + u32::from(seed / 7 % 5),
        |x, y| image::Rgb([seed, x as u8, y as u8]),
    );
    encode(image::DynamicImage::ImageRgb8(img), image::ImageFormat::Png)
}
