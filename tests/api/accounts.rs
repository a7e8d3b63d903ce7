//! Organizations, memberships, keys and the role matrix.

use crate::helpers::*;
use serde_json::json;

#[actix_rt::test]
async fn the_root_key_creates_an_organization_and_reads_it() {
    let app = spawn_app().await;
    let org = app.create_org("acme").await;
    assert_eq!(org["name"], "acme");
    assert_eq!(org["signing_keys"].as_array().unwrap().len(), 1);
    let got = app.get("/organizations/acme", ROOT_KEY).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(got.json()["id"], org["id"]);
}

#[actix_rt::test]
async fn creating_an_existing_organization_is_a_conflict() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let again = app
        .json("PUT", "/organizations/acme", ROOT_KEY, &json!({}))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], 409);
}

#[actix_rt::test]
async fn only_the_root_key_creates_organizations() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let admin = app.create_key("acme", &["admin"]).await;
    let a = app
        .json("PUT", "/organizations/other", &admin, &json!({}))
        .await;
    assert_eq!(a.status, 403);
}

#[actix_rt::test]
async fn a_wrong_or_missing_key_is_refused_without_saying_whether_the_organization_exists() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let missing = app
        .send("GET", "/organizations/acme", None, &[], None)
        .await;
    assert_eq!(missing.status, 403);
    assert_eq!(missing.json()["invalid_authentication"], true);
    let wrong = app.get("/organizations/acme", "not-a-key").await;
    assert_eq!(wrong.status, 403);
    let key = app.create_key("acme", &["read"]).await;
    let existing_other = app.get("/organizations/nope", &key).await;
    app.create_org("other").await;
    let real_other = app.get("/organizations/other", &key).await;
    assert_eq!(existing_other.status, 403);
    assert_eq!(real_other.status, 403);
    let msg = |a: &Answer, org: &str| {
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .replace(org, "ORG")
    };
    assert_eq!(msg(&existing_other, "nope"), msg(&real_other, "other"));
}

#[actix_rt::test]
async fn a_malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    let a = app
        .send(
            "GET",
            "/user",
            None,
            &[("Authorization", "Basic abc")],
            None,
        )
        .await;
    assert_eq!(a.status, 401);
    let b = app
        .send(
            "GET",
            "/user",
            None,
            &[("Authorization", "Bearer not.a.token")],
            None,
        )
        .await;
    assert_eq!(b.status, 401);
}

#[actix_rt::test]
async fn memberships_create_a_key_that_is_shown_once_and_works() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let created = app
        .json(
            "POST",
            "/organizations/acme/memberships",
            ROOT_KEY,
            &json!({"roles": ["write"], "comment": "ci"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let body = created.json();
    let key = body["api_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert_eq!(body["roles"], json!(["write"]));
    let user_id = body["user_id"].as_str().unwrap();
    let list = app
        .get("/organizations/acme/memberships", ROOT_KEY)
        .await
        .json();
    assert_eq!(list["total"], 1);
    assert!(
        list["items"][0].get("api_key").is_none(),
        "keys are never shown again"
    );
    let one = app
        .get(
            &format!("/organizations/acme/memberships/{user_id}"),
            ROOT_KEY,
        )
        .await;
    assert_eq!(one.json()["comment"], "ci");
    assert_eq!(app.get("/organizations/acme", key).await.status, 200);
    assert_eq!(
        app.delete(
            &format!("/organizations/acme/memberships/{user_id}"),
            ROOT_KEY
        )
        .await
        .status,
        204
    );
    assert_eq!(app.get("/organizations/acme", key).await.status, 403);
}

#[actix_rt::test]
async fn unknown_roles_are_refused() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = app
        .json(
            "POST",
            "/organizations/acme/memberships",
            ROOT_KEY,
            &json!({"roles": ["superuser"]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("superuser"));
}

#[actix_rt::test]
async fn the_last_admin_cannot_be_removed() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let created = app
        .json(
            "POST",
            "/organizations/acme/memberships",
            ROOT_KEY,
            &json!({"roles": ["admin"]}),
        )
        .await
        .json();
    let user = created["user_id"].as_str().unwrap();
    let a = app
        .delete(&format!("/organizations/acme/memberships/{user}"), ROOT_KEY)
        .await;
    assert_eq!(a.status, 409);
}

#[actix_rt::test]
async fn users_manage_their_own_keys() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let key = app.create_key("acme", &["write"]).await;
    let user = app.get("/user", &key).await.json();
    assert_eq!(user["api_keys"].as_array().unwrap().len(), 1);
    let added = app
        .json("POST", "/user/apikeys", &key, &json!({"comment": "second"}))
        .await;
    assert_eq!(added.status, 200);
    let second = added.json();
    let second_key = second["api_key"].as_str().unwrap();
    assert_eq!(
        app.get("/user/apikeys", second_key)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let current = app.get("/user/apikeys/current", second_key).await.json();
    assert_eq!(current["id"], second["id"]);
    let own = app
        .delete(
            &format!("/user/apikeys/{}", second["id"].as_str().unwrap()),
            second_key,
        )
        .await;
    assert_eq!(own.status, 409, "the key in use cannot delete itself");
    let other = app
        .delete(
            &format!("/user/apikeys/{}", second["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(other.status, 204);
    assert_eq!(app.get("/user", second_key).await.status, 403);
    let memberships = app.get("/user/memberships", &key).await.json();
    assert_eq!(memberships["items"][0]["organization"], "acme");
}

#[actix_rt::test]
async fn read_and_upload_keys_cannot_manage_keys() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    for role in ["read", "upload"] {
        let key = app.create_key("acme", &[role]).await;
        assert_eq!(app.get("/user/apikeys", &key).await.status, 403, "{role}");
        assert_eq!(
            app.json("POST", "/user/apikeys", &key, &json!({}))
                .await
                .status,
            403,
            "{role}"
        );
        let user = app.get("/user", &key).await.json();
        assert!(user.get("api_keys").is_none(), "{role}");
    }
}

#[actix_rt::test]
async fn organization_options_are_set_by_admins() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let write = app.create_key("acme", &["write"]).await;
    assert_eq!(
        app.json(
            "PUT",
            "/organizations/acme/options/protect_dynamic_stack",
            &write,
            &json!(true)
        )
        .await
        .status,
        403
    );
    let a = app
        .json(
            "PUT",
            "/organizations/acme/options/protect_dynamic_stack",
            ROOT_KEY,
            &json!(true),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        app.get("/organizations/acme", ROOT_KEY).await.json()["options"]["protect_dynamic_stack"],
        true
    );
    assert_eq!(
        app.json(
            "PUT",
            "/organizations/acme/options",
            ROOT_KEY,
            &json!({"bogus": 1})
        )
        .await
        .status,
        400
    );
}

#[actix_rt::test]
async fn the_root_resource_lists_resources_for_a_valid_key() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/", ROOT_KEY).await.json()["resources"][0],
        "/operations"
    );
    assert_eq!(app.get("/", "wrong").await.status, 403);
}

#[actix_rt::test]
async fn unknown_paths_answer_json_404() {
    let app = spawn_app().await;
    let a = app.get("/no/such/thing", ROOT_KEY).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["code"], 404);
    let r = app
        .send(
            "GET",
            &format!("{}/acme/x/abcdef.jpg", app.render),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], 404);
}

/// Each role of spec §3.3 against each kind of endpoint: allowed (2xx) or 403.
#[actix_rt::test]
async fn the_role_matrix_is_enforced_on_every_endpoint() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(32, 24, 1))
        .await;
    let hash = img["hash"].as_str().unwrap().to_string();
    let p = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/options/protected"),
            ROOT_KEY,
            &json!(true),
        )
        .await;
    let protected = p.json()["hash"].as_str().unwrap().to_string();
    let mut keys = Vec::new();
    for roles in [
        "read",
        "write",
        "upload",
        "admin",
        "sourceimages:read",
        "sourceimages:write",
        "sourceimages:read+sourceimages:download:protected",
        "sourceimages:unlock",
        "billing:read",
    ] {
        let list: Vec<&str> = roles.split('+').collect();
        keys.push((roles, app.create_key("acme", &list).await));
    }
    const READERS: &[&str] = &[
        "read",
        "write",
        "admin",
        "sourceimages:read",
        "sourceimages:write",
        "sourceimages:read+sourceimages:download:protected",
    ];
    const CHANGERS: &[&str] = &["write", "admin", "sourceimages:write"];
    // (method, path, body, roles allowed)
    let cases: Vec<(&str, String, Option<serde_json::Value>, &[&str])> = vec![
        (
            "GET",
            "/organizations/acme".into(),
            None,
            &["read", "write", "admin"],
        ),
        (
            "GET",
            "/organizations/acme/memberships".into(),
            None,
            &["admin"],
        ),
        (
            "GET",
            "/stacks/acme".into(),
            None,
            &["read", "write", "admin"],
        ),
        (
            "GET",
            "/stats/acme".into(),
            None,
            &["read", "write", "admin"],
        ),
        ("GET", "/sourceimages/acme".into(), None, READERS),
        ("GET", format!("/sourceimages/acme/{hash}"), None, READERS),
        (
            "GET",
            format!("/sourceimages/acme/{hash}/download"),
            None,
            READERS,
        ),
        (
            "GET",
            format!("/sourceimages/acme/{protected}/download"),
            None,
            &[
                "read",
                "write",
                "admin",
                "sourceimages:read+sourceimages:download:protected",
            ],
        ),
        // The ZIP download follows the single one: of the open image, every reader; with the
        // protected image in it, only who may download that one.
        (
            "GET",
            format!("/sourceimages/acme/download?hash={hash}"),
            None,
            READERS,
        ),
        (
            "GET",
            "/sourceimages/acme/download".into(),
            None,
            &[
                "read",
                "write",
                "admin",
                "sourceimages:read+sourceimages:download:protected",
            ],
        ),
        (
            "GET",
            format!("/sourceimages/acme/{hash}/meta/user"),
            None,
            READERS,
        ),
        (
            "PATCH",
            format!("/sourceimages/acme/{hash}/meta/user"),
            Some(json!({"a": "b"})),
            CHANGERS,
        ),
        (
            "PUT",
            format!("/sourceimages/acme/{hash}/name"),
            Some(json!("n.jpg")),
            CHANGERS,
        ),
        // Aliases: changed by who changes images, read by who reads them.
        (
            "PUT",
            "/sourceimages/acme/alias/matrix?overwrite=true".into(),
            Some(json!({"hash": hash})),
            CHANGERS,
        ),
        (
            "GET",
            "/sourceimages/acme/alias/matrix".into(),
            None,
            READERS,
        ),
        (
            "DELETE",
            "/sourceimages/acme/alias/matrix/cache?dry_run=true".into(),
            None,
            CHANGERS,
        ),
        (
            "PUT",
            format!("/sourceimages/acme/{hash}/options/locked"),
            Some(json!(false)),
            &["admin", "sourceimages:unlock"],
        ),
        (
            "PUT",
            "/stacks/acme/s".into(),
            Some(json!([{"name": "grayscale"}])),
            &["write", "admin"],
        ),
        (
            "PUT",
            "/organizations/acme/options".into(),
            Some(json!({})),
            &["admin"],
        ),
    ];
    for (method, path, body, allowed) in &cases {
        for (role, key) in &keys {
            let path = if path.starts_with("/stacks/acme/s") {
                format!("{path}?overwrite=true")
            } else {
                path.clone()
            };
            let a = match body {
                Some(b) => app.json(method, &path, key, b).await,
                None => app.send(method, &path, Some(key), &[], None).await,
            };
            if allowed.contains(role) {
                assert!(
                    a.status < 300,
                    "{role} {method} {path}: {} {}",
                    a.status,
                    a.text()
                );
            } else {
                assert_eq!(a.status, 403, "{role} {method} {path}: {}", a.text());
            }
        }
    }
    // Upload: upload, write, admin and sourceimages:write.
    for (role, key) in &keys {
        let a = app
            .upload("acme", key, &[("filedata", "x.jpg", &jpeg(8, 8, 7))], &[])
            .await;
        let expect_ok = ["upload", "write", "admin", "sourceimages:write"].contains(role);
        assert_eq!(a.status == 200, expect_ok, "{role}: {}", a.text());
    }
    // Delete: the changers only (restored after each).
    for (role, key) in &keys {
        let a = app.delete(&format!("/sourceimages/acme/{hash}"), key).await;
        if CHANGERS.contains(role) {
            assert_eq!(a.status, 204, "{role}");
            assert_eq!(
                app.send(
                    "POST",
                    &format!("/sourceimages/acme/{hash}/restore"),
                    Some(ROOT_KEY),
                    &[],
                    None
                )
                .await
                .status,
                200
            );
        } else {
            assert_eq!(a.status, 403, "{role}");
        }
    }
    // Only write and admin keys make more keys.
    for (role, key) in &keys {
        let a = app
            .json("POST", "/user/apikeys", key, &json!({"comment": "more"}))
            .await;
        let expect_ok = ["write", "admin"].contains(role);
        assert_eq!(a.status == 200, expect_ok, "{role}: {}", a.text());
    }
}

/// A key of one organization never reads, lists or copies from another.
#[actix_rt::test]
async fn organizations_are_isolated_from_each_other() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.create_org("rival").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(16, 16, 3))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let rival = app.create_key("rival", &["admin"]).await;
    assert_eq!(app.get("/sourceimages/acme", &rival).await.status, 403);
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{hash}"), &rival)
            .await
            .status,
        403
    );
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{hash}/download"), &rival)
            .await
            .status,
        403
    );
    let copy = app
        .send(
            "COPY",
            &format!("/sourceimages/acme/{hash}"),
            Some(&rival),
            &[("Destination", "rival")],
            None,
        )
        .await;
    assert_eq!(copy.status, 403);
    // The same hash does not exist in the rival organization either.
    assert_eq!(
        app.get(&format!("/sourceimages/rival/{hash}"), &rival)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/sourceimages/rival", &rival).await.json()["total"],
        0
    );
}

#[actix_rt::test]
async fn health_and_readiness_need_no_key() {
    let app = spawn_app().await;
    let h = app.send("GET", "/healthz", None, &[], None).await;
    assert_eq!(h.status, 200);
    let r = app.send("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
}

#[actix_rt::test]
async fn readiness_fails_when_the_source_bytes_cannot_be_reached() {
    let app = spawn_app().await;
    std::fs::rename(app.data.join("blobs"), app.data.join("blobs.away")).unwrap();
    let r = app.send("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "not ready");
    std::fs::rename(app.data.join("blobs.away"), app.data.join("blobs")).unwrap();
    let r = app.send("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200);
}
