//! Invalidation: deletes, overwrites and purges remove stored renders and report their paths.

use crate::helpers::*;
use serde_json::{json, Value};

async fn setup() -> (TestApp, String) {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    (app, hash)
}

fn items(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

#[actix_rt::test]
async fn deleting_a_source_image_removes_its_renders_and_restoring_renders_again() {
    let (app, hash) = setup().await;
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    assert_eq!(
        app.render(&format!("/dynamic/resize-width-10/{hash}.png"))
            .await
            .status,
        200
    );
    assert_eq!(app.stored_renders().await, 2);
    let dry = app
        .send(
            "DELETE",
            &format!("/sourceimages/acme/{hash}?dry_run=true"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(dry.status, 200);
    assert_eq!(dry.json()["renders"], 2);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(
        app.get(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
            .await
            .status,
        200,
        "a dry run deletes nothing"
    );
    assert_eq!(
        app.delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
            .await
            .status,
        204
    );
    assert_eq!(app.stored_renders().await, 0);
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 404);
    app.send(
        "POST",
        &format!("/sourceimages/acme/{hash}/restore"),
        Some(ROOT_KEY),
        &[],
        None,
    )
    .await;
    let again = app.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-darkroom-render").as_deref(), Some("miss"));
}

#[actix_rt::test]
async fn deleting_by_binary_hash_removes_the_renders_of_every_variant() {
    let (app, hash) = setup().await;
    let v = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/version"),
            ROOT_KEY,
            &json!({"text": "2"}),
        )
        .await;
    let variant = v.json()["hash"].as_str().unwrap().to_string();
    app.render(&format!("/thumb/{hash}.jpg")).await;
    app.render(&format!("/thumb/{variant}.jpg")).await;
    assert_eq!(app.stored_renders().await, 2);
    let a = app
        .delete(
            &format!(
                "/sourceimages/acme?binaryHash={}",
                sha1_hex(&jpeg(120, 90, 1))
            ),
            ROOT_KEY,
        )
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(app.stored_renders().await, 0);
    assert_eq!(
        app.render(&format!("/thumb/{variant}.jpg")).await.status,
        404
    );
}

#[actix_rt::test]
async fn delete_previous_removes_the_old_hash_renders() {
    let (app, hash) = setup().await;
    app.render(&format!("/thumb/{hash}.jpg")).await;
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/dynamic/subject_area?deletePrevious=true"),
            ROOT_KEY,
            &json!({"x": 1, "y": 1}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(app.stored_renders().await, 0);
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 404);
}

#[actix_rt::test]
async fn overwriting_a_stack_collects_the_renders_of_the_old_definition() {
    let (app, hash) = setup().await;
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 200);
    assert_eq!(
        app.render(&format!("/thumb/{hash}/other-name.png"))
            .await
            .status,
        200
    );
    let dry = app
        .json(
            "PUT",
            "/stacks/acme/thumb?overwrite=true&dry_run=true",
            ROOT_KEY,
            &json!([{"name": "resize", "options": {"width": 20}}]),
        )
        .await;
    assert_eq!(dry.status, 200);
    assert_eq!(dry.json()["renders"], 2);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(
        app.get("/stacks/acme/thumb", ROOT_KEY).await.json()["stack_operations"][0]["options"]
            ["width"],
        40
    );
    assert_eq!(app.stored_renders().await, 2);
    let ok = app
        .json(
            "PUT",
            "/stacks/acme/thumb?overwrite=true",
            ROOT_KEY,
            &json!([{"name": "resize", "options": {"width": 20}}]),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.stored_renders().await, 0);
    let img =
        image::load_from_memory(&app.render(&format!("/thumb/{hash}.jpg")).await.body).unwrap();
    assert_eq!(img.width(), 20);
}

#[actix_rt::test]
async fn overwriting_a_basestack_collects_the_renders_built_on_it() {
    let (app, hash) = setup().await;
    app.json(
        "PUT",
        "/stacks/acme/base",
        ROOT_KEY,
        &json!([{"name": "grayscale"}]),
    )
    .await;
    app.json("PUT", "/stacks/acme/derived", ROOT_KEY, &json!({"operations": [{"name": "resize", "options": {"width": 30}}], "options": {"basestack": "base"}})).await;
    assert_eq!(
        app.render(&format!("/derived/{hash}.jpg")).await.status,
        200
    );
    assert_eq!(app.stored_renders().await, 1);
    app.json(
        "PUT",
        "/stacks/acme/base?overwrite=true",
        ROOT_KEY,
        &json!([{"name": "sepia"}]),
    )
    .await;
    assert_eq!(app.stored_renders().await, 0);
}

#[actix_rt::test]
async fn deleting_a_stack_collects_its_renders_and_its_urls_answer_404() {
    let (app, hash) = setup().await;
    app.render(&format!("/thumb/{hash}.jpg")).await;
    let dry = app
        .send(
            "DELETE",
            "/stacks/acme/thumb?dry_run=true",
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(dry.json()["renders"], 1);
    assert_eq!(app.get("/stacks/acme/thumb", ROOT_KEY).await.status, 200);
    assert_eq!(app.delete("/stacks/acme/thumb", ROOT_KEY).await.status, 204);
    assert_eq!(app.stored_renders().await, 0);
    assert_eq!(app.render(&format!("/thumb/{hash}.jpg")).await.status, 404);
}

#[actix_rt::test]
async fn purging_an_image_lists_every_path_it_was_served_under() {
    let (app, hash) = setup().await;
    let short = &hash[..6];
    app.render(&format!("/thumb/{hash}.jpg")).await;
    app.render(&format!("/thumb/{short}/nice.jpg")).await;
    app.render(&format!("/dynamic/resize-width-40/{hash}.jpg"))
        .await;
    let dry = app
        .send(
            "DELETE",
            &format!("/sourceimages/acme/{hash}/cache?dry_run=true"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await
        .json();
    assert_eq!(dry["renders"], 1, "the three URLs share one render");
    let purged = app
        .send(
            "DELETE",
            &format!("/sourceimages/acme/{hash}/cache"),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(purged.status, 200);
    let mut paths = items(&purged.json());
    paths.sort();
    let mut expected = vec![
        format!("/acme/thumb/{hash}.jpg"),
        format!("/acme/thumb/{short}/nice.jpg"),
        format!("/acme/dynamic/resize-width-40/{hash}.jpg"),
    ];
    expected.sort();
    assert_eq!(paths, expected);
    assert_eq!(
        app.render(&format!("/thumb/{hash}.jpg"))
            .await
            .header("x-darkroom-render")
            .as_deref(),
        Some("miss")
    );
    // Purging is free and unlimited.
    for _ in 0..10 {
        assert_eq!(
            app.send(
                "DELETE",
                &format!("/sourceimages/acme/{hash}/cache"),
                Some(ROOT_KEY),
                &[],
                None
            )
            .await
            .status,
            200
        );
    }
}

#[actix_rt::test]
async fn purging_a_stack_or_an_organization_removes_their_renders() {
    let (app, hash) = setup().await;
    app.render(&format!("/thumb/{hash}.jpg")).await;
    app.render(&format!("/dynamic/resize-width-10/{hash}.jpg"))
        .await;
    let stack = app
        .send(
            "DELETE",
            "/stacks/acme/thumb/cache",
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(stack.status, 200);
    assert_eq!(stack.json()["status"], "ok");
    assert_eq!(items(&stack.json()), [format!("/acme/thumb/{hash}.jpg")]);
    assert_eq!(app.stored_renders().await, 1);
    let org = app
        .send(
            "DELETE",
            "/organizations/acme/cache",
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(
        items(&org.json()),
        [format!("/acme/dynamic/resize-width-10/{hash}.jpg")]
    );
    assert_eq!(app.stored_renders().await, 0);
    let reader = app.create_key("acme", &["read"]).await;
    assert_eq!(
        app.send(
            "DELETE",
            "/organizations/acme/cache",
            Some(&reader),
            &[],
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.send(
            "DELETE",
            "/stacks/acme/thumb/cache",
            Some(&reader),
            &[],
            None
        )
        .await
        .status,
        403
    );
}
