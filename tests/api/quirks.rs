//! The client quirks of spec §11 that concern accounts and source images.

use crate::helpers::*;
use serde_json::json;

#[actix_rt::test]
async fn json_answers_have_exactly_the_application_json_content_type() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    for path in [
        "/organizations/acme",
        "/sourceimages/acme",
        "/user",
        "/nowhere",
    ] {
        let a = app.get(path, ROOT_KEY).await;
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
    }
}

#[actix_rt::test]
async fn json_bodies_are_read_whatever_their_content_type() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 1))
        .await;
    let path = format!(
        "/sourceimages/acme/{}/meta/user",
        img["hash"].as_str().unwrap()
    );
    let body = json!({"a": "b"}).to_string().into_bytes();
    for ct in [
        "text/plain;charset=UTF-8",
        "application/json",
        "application/x-www-form-urlencoded",
    ] {
        let a = app
            .send(
                "PUT",
                &path,
                Some(ROOT_KEY),
                &[("Content-Type", ct)],
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, 204, "{ct}: {}", a.text());
    }
    let bad = app
        .send(
            "PUT",
            &path,
            Some(ROOT_KEY),
            &[],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("JSON"));
}

#[actix_rt::test]
async fn lists_are_wrapped_and_single_objects_are_not() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let up = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filedata", "a.jpg", &jpeg(10, 10, 1))],
            &[],
        )
        .await
        .json();
    assert!(up["total"].is_number() && up["items"].is_array());
    let list = app.get("/sourceimages/acme", ROOT_KEY).await.json();
    assert!(list["total"].is_number() && list["items"].is_array() && list["links"].is_object());
    let one = app
        .get(
            &format!(
                "/sourceimages/acme/{}",
                up["items"][0]["hash"].as_str().unwrap()
            ),
            ROOT_KEY,
        )
        .await
        .json();
    assert!(one.get("items").is_none());
    for field in [
        "organization",
        "binary_hash",
        "hash",
        "short_hash",
        "name",
        "format",
        "mimetype",
        "size",
        "width",
        "height",
        "created",
        "link",
        "protected",
        "locked",
    ] {
        assert!(one.get(field).is_some(), "{field} is always present");
    }
    let created = one["created"].as_str().unwrap();
    assert!(created.ends_with("+00:00"), "{created}");
}

#[actix_rt::test]
async fn empty_query_values_are_treated_as_absent() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 1))
        .await;
    let a = app
        .get(
            "/sourceimages/acme?limit=&offset=&sort=&binaryHash=",
            ROOT_KEY,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["total"], 1);
}

#[actix_rt::test]
async fn percent_encoded_query_keys_are_understood() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    app.upload(
        "acme",
        ROOT_KEY,
        &[("filedata", "a.jpg", &jpeg(10, 10, 1))],
        &[("meta_user[0]", r#"{"int:id":7}"#)],
    )
    .await;
    app.upload_one("acme", ROOT_KEY, "b.jpg", &jpeg(10, 10, 2))
        .await;
    let a = app
        .get("/sourceimages/acme?user%3Aint%3Aid=7", ROOT_KEY)
        .await
        .json();
    assert_eq!(a["total"], 1);
    assert_eq!(a["items"][0]["name"], "a.jpg");
}

#[actix_rt::test]
async fn the_go_client_upload_form_is_understood() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = app
        .upload(
            "acme",
            ROOT_KEY,
            &[("filename", "go.jpg", &jpeg(12, 12, 1))],
            &[("meta_dynamic[0][subject_area]", r#"{"x":1,"y":1}"#)],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["items"][0]["dynamic_metadata"]["subject_area"]["width"],
        1
    );
}

#[actix_rt::test]
async fn deletes_and_metadata_writes_answer_204_with_an_empty_body() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let img = app
        .upload_one("acme", ROOT_KEY, "a.jpg", &jpeg(10, 10, 1))
        .await;
    let hash = img["hash"].as_str().unwrap();
    let a = app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{hash}/meta/user/title"),
            ROOT_KEY,
            &json!("t"),
        )
        .await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    let d = app
        .delete(&format!("/sourceimages/acme/{hash}"), ROOT_KEY)
        .await;
    assert_eq!(d.status, 204);
    assert!(d.body.is_empty());
}

#[actix_rt::test]
async fn importing_from_a_url_is_refused_clearly() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = app
        .upload(
            "acme",
            ROOT_KEY,
            &[],
            &[("url[0]", "http://example.com/a.jpg")],
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("URL"));
}

#[actix_rt::test]
async fn a_request_that_is_not_multipart_is_refused() {
    let app = spawn_app().await;
    app.create_org("acme").await;
    let a = app
        .send(
            "POST",
            "/sourceimages/acme",
            Some(ROOT_KEY),
            &[("Content-Type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
}
