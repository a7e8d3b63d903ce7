//! `composition.secondary_stack`: a composition's layer is another stack's render of the same
//! image or of `secondary_image`. Cycles are refused when a stack is saved, and a render that
//! uses another stack is invalidated when that stack changes.

use crate::helpers::*;
use serde_json::json;

/// A stack that turns any image into a 10×10 square of `color` (a variable).
fn square(color: &str) -> serde_json::Value {
    json!({
        "operations": [
            {"name": "resize", "options": {"width": 10, "height": 10, "mode": "absolute"}},
            {"name": "composition", "options": {"mode": "background", "secondary_color": "$c",
                                                "width": 10, "height": 10}}
        ],
        "variables": {"c": color}
    })
}

/// The photo resized to 60 px wide with the layer of `layer_options` in its top-left corner.
fn branded(layer_options: serde_json::Value) -> serde_json::Value {
    let mut options = json!({"mode": "background", "anchor": "left_top"});
    for (k, v) in layer_options.as_object().unwrap() {
        options[k] = v.clone();
    }
    json!([
        {"name": "resize", "options": {"width": 60}},
        {"name": "composition", "options": options}
    ])
}

fn pixel(a: &Answer, x: u32, y: u32) -> [u8; 3] {
    let img = image::load_from_memory(&a.body)
        .unwrap_or_else(|e| panic!("not an image ({e}): {}", a.text()))
        .to_rgb8();
    img.get_pixel(x, y).0
}

#[actix_rt::test]
async fn a_layer_is_another_stacks_render_and_follows_that_stack() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    app.stack("badge", square("00FF00")).await;
    app.stack("branded", branded(json!({"secondary_stack": "badge"})))
        .await;

    let path = format!("/branded/{hash}.png");
    let first = app.render(&path).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let img = image::load_from_memory(&first.body).unwrap();
    assert_eq!((img.width(), img.height()), (60, 45));
    assert_eq!(pixel(&first, 2, 2), [0, 255, 0], "the badge's square");
    assert_ne!(pixel(&first, 40, 30), [0, 255, 0], "the photo around it");
    assert_eq!(app.render(&path).await.body, first.body, "stable bytes");

    // Overwriting the layer's stack reports and invalidates the renders made with it.
    let dry = app
        .json(
            "PUT",
            "/stacks/acme/badge?overwrite=true&dry_run=true",
            ROOT_KEY,
            &square("0000FF"),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    assert_eq!(
        dry.json()["items"],
        json!([format!("/acme{path}")]),
        "{}",
        dry.text()
    );
    let before = app.stored_renders().await;
    app.stack("badge", square("0000FF")).await;
    assert!(app.stored_renders().await < before);
    let after = app.render(&path).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(pixel(&after, 2, 2), [0, 0, 255], "the new badge");

    // Without its layer's stack, the render is a clear client error.
    assert_eq!(app.delete("/stacks/acme/badge", ROOT_KEY).await.status, 204);
    let gone = app.render(&path).await;
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert!(gone.text().contains("badge"), "{}", gone.text());
}

#[actix_rt::test]
async fn a_layer_runs_on_the_secondary_image_with_its_variables() {
    let app = spawn_app().await;
    let hash = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    let other = app
        .upload_one("acme", ROOT_KEY, "other.png", &png(50, 50))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    app.stack("badge", square("00FF00")).await;
    app.stack(
        "blue",
        branded(json!({"secondary_stack": "badge", "secondary_image": other,
                       "secondary_stack_variables": "c=0000FF"})),
    )
    .await;
    let blue = app.render(&format!("/blue/{hash}.png")).await;
    assert_eq!(blue.status, 200, "{}", blue.text());
    assert_eq!(pixel(&blue, 2, 2), [0, 0, 255]);

    // The same through a dynamic URL; a missing secondary image is a 400 naming it.
    let dynamic = app
        .render(&format!(
            "/dynamic/resize-width-60--composition-mode-background-anchor-left_top-secondary_stack-badge/{hash}.png"
        ))
        .await;
    assert_eq!(dynamic.status, 200, "{}", dynamic.text());
    assert_eq!(pixel(&dynamic, 2, 2), [0, 255, 0]);
    let missing = app
        .render(&format!(
            "/dynamic/composition-secondary_stack-badge-secondary_image-{}/{hash}.png",
            "0".repeat(40)
        ))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.text());
}

#[actix_rt::test]
async fn missing_layer_stacks_and_cycles_are_refused_when_a_stack_is_saved() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let put = |name: &'static str, body: serde_json::Value, overwrite: bool| {
        let app = &app;
        async move {
            let query = if overwrite { "?overwrite=true" } else { "" };
            app.json(
                "PUT",
                &format!("/stacks/acme/{name}{query}"),
                ROOT_KEY,
                &body,
            )
            .await
        }
    };
    let uses = |other: &str| branded(json!({ "secondary_stack": other }));

    let missing = put("a", uses("b"), false).await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(
        missing.text().contains("'b' does not exist"),
        "{}",
        missing.text()
    );

    let own = put("self", uses("self"), false).await;
    assert_eq!(own.status, 400, "{}", own.text());
    assert!(own.text().contains("cycle"), "{}", own.text());

    assert_eq!(put("b", square("00FF00"), false).await.status, 201);
    assert_eq!(put("a", uses("b"), false).await.status, 201);
    // b → a → b, also through a basestack.
    let cycle = put("b", uses("a"), true).await;
    assert_eq!(cycle.status, 400, "{}", cycle.text());
    assert!(cycle.text().contains("cycle"), "{}", cycle.text());
    assert_eq!(
        put(
            "c",
            json!({"operations": [], "options": {"basestack": "a"}}),
            false
        )
        .await
        .status,
        201
    );
    let through_base = put("b", uses("c"), true).await;
    assert_eq!(through_base.status, 400, "{}", through_base.text());

    // A name from a variable is checked when it renders.
    let looped = json!({"operations": uses("$s"), "variables": {"s": "loop"}});
    assert_eq!(put("loop", looped, false).await.status, 201);
    let hash = app
        .upload_one("acme", ROOT_KEY, "p.jpg", &jpeg(40, 30, 1))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let render = app.render(&format!("/loop/{hash}.png")).await;
    assert_eq!(render.status, 400, "{}", render.text());
    assert!(render.text().contains("cycle"), "{}", render.text());
}
