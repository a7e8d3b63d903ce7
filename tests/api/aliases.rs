//! Aliases (spec §4.11): the alias API, renders through `-_alias_-` (the one mutable render
//! URL: short max-age, never immutable), and what re-pointing or deleting an alias, deleting
//! its image and a backup do to it.

use crate::helpers::*;
use serde_json::json;

/// Organization `acme` with two images of different sizes and a stack `thumb`; returns their
/// hashes.
async fn setup(app: &TestApp) -> (String, String) {
    let first = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    let second = app
        .upload_one("acme", ROOT_KEY, "second.jpg", &jpeg(60, 80, 2))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    (first, second)
}

impl TestApp {
    async fn put_alias(&self, name: &str, hash: &str, overwrite: bool) -> Answer {
        let query = if overwrite { "?overwrite=true" } else { "" };
        self.json(
            "PUT",
            &format!("/sourceimages/acme/alias/{name}{query}"),
            ROOT_KEY,
            &json!({ "hash": hash }),
        )
        .await
    }
}

#[actix_rt::test]
async fn an_alias_is_created_read_re_pointed_only_with_overwrite_and_deleted() {
    let app = spawn_app().await;
    let (first, second) = setup(&app).await;

    let created = app.put_alias("hero", &first, false).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.json(),
        json!({"organization": "acme", "alias": "hero", "hash": first})
    );
    let got = app.get("/sourceimages/acme/alias/hero", ROOT_KEY).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created.json());

    let refused = app.put_alias("hero", &second, false).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("overwrite"));

    // A short hash names the image as well as the full one.
    let replaced = app.put_alias("hero", &second[..8], true).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(replaced.json()["hash"], second.as_str());

    let deleted = app.delete("/sourceimages/acme/alias/hero", ROOT_KEY).await;
    assert_eq!(deleted.status, 204);
    for (method, path) in [
        ("GET", "/sourceimages/acme/alias/hero"),
        ("DELETE", "/sourceimages/acme/alias/hero"),
    ] {
        let a = app.send(method, path, Some(ROOT_KEY), &[], None).await;
        assert_eq!(a.status, 404, "{method} {path}");
    }
}

#[actix_rt::test]
async fn names_outside_letters_digits_and_underscores_and_missing_images_are_not_found() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    for name in ["with-dash", "dot.ted", &"a".repeat(129)] {
        let a = app.put_alias(name, &first, false).await;
        assert_eq!(a.status, 404, "{name}: {}", a.text());
        let render = app.render(&format!("/thumb/-_{name}_-.jpg")).await;
        assert_eq!(render.status, 404, "{name}");
    }
    let missing = app.put_alias("hero", &"0".repeat(40), false).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    app.delete(&format!("/sourceimages/acme/{first}"), ROOT_KEY)
        .await;
    let deleted = app.put_alias("hero", &first, false).await;
    assert_eq!(deleted.status, 404, "a deleted image cannot be aliased");
    let no_hash = app
        .json(
            "PUT",
            "/sourceimages/acme/alias/hero",
            ROOT_KEY,
            &json!({"hash": 5}),
        )
        .await;
    assert_eq!(no_hash.status, 400);
}

#[actix_rt::test]
async fn a_render_through_an_alias_equals_the_hash_render_but_is_not_immutable() {
    let app = spawn_app_with(|c| c.render.alias_max_age_secs = 17).await;
    let (first, _) = setup(&app).await;
    assert_eq!(app.put_alias("hero", &first, false).await.status, 201);

    for (by_hash, by_alias) in [
        (
            format!("/thumb/{first}.jpg"),
            "/thumb/-_hero_-.jpg".to_string(),
        ),
        (
            format!("/dynamic/resize-width-30/{first}.png"),
            "/dynamic/resize-width-30/-_hero_-.png".to_string(),
        ),
        (
            format!("/thumb/resize-width-20/{first}/a-slug-v2.webp"),
            "/thumb/resize-width-20/-_hero_-/a-slug-v2.webp".to_string(),
        ),
    ] {
        let hash_answer = app.render(&by_hash).await;
        assert_eq!(hash_answer.status, 200, "{by_hash}");
        assert_eq!(
            hash_answer.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        let alias_answer = app.render(&by_alias).await;
        assert_eq!(
            alias_answer.status,
            200,
            "{by_alias}: {}",
            alias_answer.text()
        );
        assert_eq!(
            alias_answer.header("cache-control").as_deref(),
            Some("public, max-age=17"),
            "{by_alias}"
        );
        assert_eq!(alias_answer.body, hash_answer.body, "{by_alias}");
        assert_eq!(
            alias_answer.header("x-darkroom-render").as_deref(),
            Some("hit"),
            "the alias URL shares the stored render of the hash URL"
        );
        let etag = alias_answer.header("etag").unwrap();
        assert_eq!(Some(etag.clone()), hash_answer.header("etag"));
        let again = app
            .send(
                "GET",
                &format!("{}/acme{by_alias}", app.render),
                None,
                &[("If-None-Match", &etag)],
                None,
            )
            .await;
        assert_eq!(again.status, 304);
        assert_eq!(
            again.header("cache-control").as_deref(),
            Some("public, max-age=17"),
            "the remembered URL keeps the short max-age"
        );
    }
}

#[actix_rt::test]
async fn re_pointing_an_alias_changes_the_answer_of_the_same_url_at_once() {
    let app = spawn_app().await;
    let (first, second) = setup(&app).await;
    app.put_alias("hero", &first, false).await;
    let url = "/dynamic/resize-width-30/-_hero_-.png";
    let before = app.render(url).await;
    // Asked twice, so that the URL is remembered and the second answer came from memory.
    assert_eq!(app.render(url).await.body, before.body);

    assert_eq!(app.put_alias("hero", &second, true).await.status, 200);
    let after = app.render(url).await;
    assert_eq!(after.status, 200);
    let expected = app
        .render(&format!("/dynamic/resize-width-30/{second}.png"))
        .await;
    assert_eq!(after.body, expected.body);
    assert_ne!(after.body, before.body);
}

#[actix_rt::test]
async fn deleting_the_alias_makes_its_urls_answer_404_with_the_short_not_found_max_age() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    app.put_alias("hero", &first, false).await;
    assert_eq!(app.render("/thumb/-_hero_-.jpg").await.status, 200);
    assert_eq!(
        app.delete("/sourceimages/acme/alias/hero", ROOT_KEY)
            .await
            .status,
        204
    );
    let gone = app.render("/thumb/-_hero_-.jpg").await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    assert_eq!(app.render(&format!("/thumb/{first}.jpg")).await.status, 200);
}

#[actix_rt::test]
async fn deleting_the_image_makes_the_alias_url_404_and_its_invalidation_names_the_alias_url() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    app.put_alias("hero", &first, false).await;
    assert_eq!(app.render("/thumb/-_hero_-.jpg").await.status, 200);

    let dry = app
        .delete(
            &format!("/sourceimages/acme/{first}?dry_run=true"),
            ROOT_KEY,
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    let items: Vec<String> = dry.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        items.iter().any(|p| p == "/acme/thumb/-_hero_-.jpg"),
        "the image's render paths include the alias URL: {items:?}"
    );

    app.delete(&format!("/sourceimages/acme/{first}"), ROOT_KEY)
        .await;
    assert_eq!(app.render("/thumb/-_hero_-.jpg").await.status, 404);
    // The alias stays with a deleted image, and works again once the image is restored.
    let alias = app.get("/sourceimages/acme/alias/hero", ROOT_KEY).await;
    assert_eq!(alias.status, 200);
    app.send(
        "POST",
        &format!("/sourceimages/acme/{first}/restore"),
        Some(ROOT_KEY),
        &[],
        None,
    )
    .await;
    assert_eq!(app.render("/thumb/-_hero_-.jpg").await.status, 200);
}

#[actix_rt::test]
async fn a_protected_image_behind_an_alias_needs_the_signature() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    let p = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{first}/options/protected"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    let protected = p.json()["hash"].as_str().unwrap().to_string();
    app.put_alias("secret", &protected, false).await;
    let key = app.get("/organizations/acme", ROOT_KEY).await.json()["signing_keys"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = "/dynamic/resize-width-20/-_secret_-.jpg";
    assert_eq!(app.render(path).await.status, 403);
    let sig = darkroom::url::sign(path, &key);
    let signed = app.render(&format!("{path}?sig={sig}")).await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    assert_eq!(
        signed.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
}

#[actix_rt::test]
async fn the_alias_cache_purge_lists_the_urls_it_was_served_under() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    app.put_alias("hero", &first, false).await;
    app.render("/thumb/-_hero_-.jpg").await;
    app.render("/dynamic/resize-width-30/-_hero_-.png?x=1")
        .await;
    let dry = app
        .delete("/sourceimages/acme/alias/hero/cache?dry_run=true", ROOT_KEY)
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(
        dry.json()["items"],
        json!([
            "/acme/thumb/-_hero_-.jpg",
            "/acme/dynamic/resize-width-30/-_hero_-.png?x=1"
        ])
    );
    let done = app
        .delete("/sourceimages/acme/alias/hero/cache", ROOT_KEY)
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["paths"], 2);
    assert_eq!(
        app.delete("/sourceimages/acme/alias/nobody/cache", ROOT_KEY)
            .await
            .status,
        404
    );
}

#[actix_rt::test]
async fn a_backup_keeps_aliases() {
    let app = spawn_app().await;
    let (first, _) = setup(&app).await;
    app.put_alias("hero", &first, false).await;
    let exported = app.get("/admin/export", ROOT_KEY).await;
    assert_eq!(exported.status, 200);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup");
    std::fs::write(&file, &exported.body).unwrap();

    let restored = tempfile::tempdir().unwrap();
    {
        let storage = test_config(restored.path()).open_storage(0).unwrap();
        let imported = darkroom::storage::backup::import(
            &*storage.records,
            &*storage.bytes,
            &file,
            &mut |_, _, _| {},
        )
        .unwrap();
        assert_eq!(imported.counts.aliases, 1);
    }
    let again = start(test_config(restored.path())).await;
    let alias = again.get("/sourceimages/acme/alias/hero", ROOT_KEY).await;
    assert_eq!(alias.status, 200, "{}", alias.text());
    assert_eq!(alias.json()["hash"], first.as_str());
    assert_eq!(again.render("/thumb/-_hero_-.jpg").await.status, 200);
}
