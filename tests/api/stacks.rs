//! The stacks API and the schemas behind it.

use crate::helpers::*;
use serde_json::json;

#[actix_rt::test]
async fn a_stack_is_created_read_listed_and_deleted() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let body = json!({"operations": [{"name": "resize", "options": {"width": 200}}], "options": {"jpg.quality": 77}});
    let created = app.json("PUT", "/stacks/acme/thumb", ROOT_KEY, &body).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let s = created.json();
    assert_eq!(s["name"], "thumb");
    assert_eq!(s["organization"], "acme");
    assert!(s["created"].is_string());
    assert_eq!(s["stack_operations"][0]["name"], "resize");
    assert_eq!(s["stack_operations"][0]["options"]["width"], 200);
    assert_eq!(s["stack_options"]["jpg.quality"], 77);
    assert_eq!(
        app.get("/stacks/acme/thumb", ROOT_KEY).await.json()["name"],
        "thumb"
    );
    let list = app.get("/stacks/acme", ROOT_KEY).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.delete("/stacks/acme/thumb", ROOT_KEY).await.status, 204);
    assert_eq!(app.get("/stacks/acme/thumb", ROOT_KEY).await.status, 404);
    assert_eq!(app.delete("/stacks/acme/thumb", ROOT_KEY).await.status, 404);
}

#[actix_rt::test]
async fn every_body_shape_is_accepted_and_operations_always_have_options() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let shapes = [
        json!([{"name": "grayscale"}]),
        json!({"operations": [{"name": "grayscale"}], "options": [], "expressions": [], "variables": []}),
        json!({"stack_operations": [{"name": "grayscale", "options": {}}], "stack_options": {}}),
    ];
    for (i, body) in shapes.iter().enumerate() {
        let a = app
            .json("PUT", &format!("/stacks/acme/s{i}"), ROOT_KEY, body)
            .await;
        assert_eq!(a.status, 201, "shape {i}: {}", a.text());
        assert_eq!(
            a.json()["stack_operations"][0]["options"],
            json!({}),
            "shape {i}"
        );
    }
}

#[actix_rt::test]
async fn an_existing_stack_needs_overwrite() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let v1 = json!([{"name": "resize", "options": {"width": 100}}]);
    let v2 = json!([{"name": "resize", "options": {"width": 50}}]);
    assert_eq!(
        app.json("PUT", "/stacks/acme/s", ROOT_KEY, &v1)
            .await
            .status,
        201
    );
    assert_eq!(
        app.json("PUT", "/stacks/acme/s", ROOT_KEY, &v2)
            .await
            .status,
        409
    );
    assert_eq!(
        app.json("PUT", "/stacks/acme/s?overwrite=false", ROOT_KEY, &v2)
            .await
            .status,
        409
    );
    let ok = app
        .json("PUT", "/stacks/acme/s?overwrite=true", ROOT_KEY, &v2)
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["stack_operations"][0]["options"]["width"], 50);
}

#[actix_rt::test]
async fn invalid_stacks_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let cases = [
        (json!([{"name": "explode"}]), "explode"),
        (
            json!([{"name": "resize", "options": {"width": 10001}}]),
            "resize.width",
        ),
        (
            json!([{"name": "resize", "options": {"width": "wide"}}]),
            "resize.width",
        ),
        (
            json!([{"name": "resize", "options": {"colour": 1}}]),
            "colour",
        ),
        (json!([{"name": "resize", "options": {}}]), "resize"),
        (
            json!({"operations": [], "options": {"jpg.quality": 101}}),
            "jpg.quality",
        ),
        (
            json!({"operations": [], "options": {"no.such": 1}}),
            "no.such",
        ),
    ];
    for (body, field) in cases {
        let a = app.json("PUT", "/stacks/acme/bad", ROOT_KEY, &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text());
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(field), "{body}: {msg}");
    }
    let not_json = app
        .send(
            "PUT",
            "/stacks/acme/bad",
            Some(ROOT_KEY),
            &[],
            Some(b"[{".to_vec()),
        )
        .await;
    assert_eq!(not_json.status, 400);
}

#[actix_rt::test]
async fn reserved_stack_names_are_refused() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    for name in ["dynamic", "_secret"] {
        let a = app
            .json("PUT", &format!("/stacks/acme/{name}"), ROOT_KEY, &json!([]))
            .await;
        assert_eq!(a.status, 400, "{name}");
    }
}

#[actix_rt::test]
async fn basestacks_must_exist_and_must_not_form_a_cycle() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let missing = app
        .json(
            "PUT",
            "/stacks/acme/a",
            ROOT_KEY,
            &json!({"operations": [], "options": {"basestack": "nope"}}),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        app.json(
            "PUT",
            "/stacks/acme/a",
            ROOT_KEY,
            &json!([{"name": "grayscale"}])
        )
        .await
        .status,
        201
    );
    let b = json!({"operations": [{"name": "blur"}], "options": {"basestack": "a"}});
    assert_eq!(
        app.json("PUT", "/stacks/acme/b", ROOT_KEY, &b).await.status,
        201
    );
    let cycle = json!({"operations": [], "options": {"basestack": "b"}});
    let a = app
        .json("PUT", "/stacks/acme/a?overwrite=true", ROOT_KEY, &cycle)
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cycle"));
}

#[actix_rt::test]
async fn the_schemas_are_public_and_describe_what_validation_enforces() {
    let app = spawn_app().await;
    let ops = app.send("GET", "/operations", None, &[], None).await;
    assert_eq!(ops.status, 200);
    let ops = ops.json();
    assert_eq!(ops["resize"]["properties"]["width"]["maximum"], 10000);
    for name in [
        "resize",
        "crop",
        "rotate",
        "autorotate",
        "blur",
        "grayscale",
        "sepia",
        "trim",
        "noop",
        "alpha",
        "modulate",
        "multiply",
        "sharpen",
        "circlemask",
        "dropshadow",
        "composition",
    ] {
        assert!(ops.get(name).is_some(), "{name}");
    }
    let opts = app
        .send("GET", "/stackoptions", None, &[], None)
        .await
        .json();
    assert_eq!(opts["properties"]["jpg.quality"]["maximum"], 100);
}

#[actix_rt::test]
async fn stacks_need_write_to_change_and_read_to_see() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let read = app.create_key("acme", &["read"]).await;
    let upload = app.create_key("acme", &["upload"]).await;
    assert_eq!(
        app.json("PUT", "/stacks/acme/s", &read, &json!([]))
            .await
            .status,
        403
    );
    assert_eq!(
        app.json("PUT", "/stacks/acme/s", ROOT_KEY, &json!([]))
            .await
            .status,
        201
    );
    assert_eq!(app.get("/stacks/acme/s", &read).await.status, 200);
    assert_eq!(app.get("/stacks/acme/s", &upload).await.status, 403);
    assert_eq!(app.delete("/stacks/acme/s", &read).await.status, 403);
}
