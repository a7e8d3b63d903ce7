//! API tokens (`GET /user/apikeys/token`, `Authorization: Bearer`): issued for a key, with the
//! key's rights, bound to addresses, renewable within their lifetime, and dead with their key.

use crate::helpers::{spawn_app, TestApp, ROOT_KEY};
use serde_json::Value;

async fn acme_with_key(app: &TestApp, roles: &[&str]) -> String {
    app.create_org("acme").await;
    app.create_key("acme", roles).await
}

async fn token(app: &TestApp, auth: (&str, &str), query: &str) -> crate::helpers::Answer {
    app.send(
        "GET",
        &format!("/user/apikeys/token{query}"),
        None,
        &[auth],
        None,
    )
    .await
}

async fn with_bearer(app: &TestApp, path: &str, token: &str, extra: &[(&str, &str)]) -> u16 {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    app.send("GET", path, None, &headers, None).await.status
}

fn token_of(a: &crate::helpers::Answer) -> String {
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["token"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn a_token_carries_the_rights_of_its_key() {
    let app = spawn_app().await;
    let key = acme_with_key(&app, &["read"]).await;
    let a = token(&app, ("Api-Key", &key), "").await;
    let body: Value = a.json();
    let t = token_of(&a);
    let payload = &body["payload"];
    assert_eq!(payload["expt"], 86_400);
    assert_eq!(payload["ips"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(payload["rn"], true);
    assert!(payload["id"].is_string() && payload["exp"].is_i64());
    // The JWT's own payload says the same (rokka.js decodes it).
    let middle = t.split('.').nth(1).unwrap();
    use base64::Engine;
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(middle)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded["exp"], payload["exp"]);
    assert_eq!(decoded["id"], payload["id"]);

    assert_eq!(with_bearer(&app, "/sourceimages/acme", &t, &[]).await, 200);
    assert_eq!(with_bearer(&app, "/user", &t, &[]).await, 200);
    // Read only, like the key.
    let put = app
        .send(
            "PUT",
            "/stacks/acme/thumb",
            None,
            &[("Authorization", &format!("Bearer {t}"))],
            Some(br#"[{"name":"resize","options":{"width":10}}]"#.to_vec()),
        )
        .await;
    assert_eq!(put.status, 403, "{}", put.text());
    // Forged and malformed tokens are 401, so that clients drop them.
    let forged = format!("{}x", &t[..t.len() - 1]);
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &forged, &[]).await,
        401
    );
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", "abc", &[]).await,
        401
    );
    // The root key has no user to issue a token for.
    assert_eq!(token(&app, ("Api-Key", ROOT_KEY), "").await.status, 400);
}

#[actix_rt::test]
async fn tokens_are_bound_to_addresses_and_trust_only_the_configured_proxies() {
    let app = spawn_app().await;
    let key = acme_with_key(&app, &["admin"]).await;
    let elsewhere = token_of(&token(&app, ("Api-Key", &key), "?ips=10.0.0.0/8,192.0.2.1").await);
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &elsewhere, &[]).await,
        403
    );
    // The nginx in front (loopback, trusted by default) names the client.
    assert_eq!(
        with_bearer(
            &app,
            "/sourceimages/acme",
            &elsewhere,
            &[("X-Forwarded-For", "192.0.2.1")]
        )
        .await,
        200
    );
    let mine = token_of(&token(&app, ("Api-Key", &key), "?ips=request_ip").await);
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &mine, &[]).await,
        200
    );
    let anywhere = token(&app, ("Api-Key", &key), "?no_ip_protection=true").await;
    assert_eq!(anywhere.json()["payload"]["ips"], serde_json::json!([]));
    assert_eq!(anywhere.json()["payload"]["rn"], false);

    for bad in [
        "?no_ip_protection=true&ips=127.0.0.1",
        "?ips=1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5,1.1.1.6,1.1.1.7,1.1.1.8,1.1.1.9,1.1.1.10,1.1.1.11",
        "?ips=not-an-address",
        "?expires_in=0",
        "?expires_in=soon",
        "?renewable=maybe",
    ] {
        let a = token(&app, ("Api-Key", &key), bad).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
}

#[actix_rt::test]
async fn a_renewal_never_outlives_the_lifetime_it_was_given() {
    let app = spawn_app().await;
    let key = acme_with_key(&app, &["read"]).await;
    let t = token_of(&token(&app, ("Api-Key", &key), "?expires_in=3600").await);
    let bearer = format!("Bearer {t}");
    let renewed = token(&app, ("Authorization", &bearer), "?expires_in=1800").await;
    let renewed = token_of(&renewed);
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &renewed, &[]).await,
        200
    );
    let longer = token(&app, ("Authorization", &bearer), "?expires_in=7200").await;
    assert_eq!(longer.status, 403, "{}", longer.text());

    let fixed = token_of(&token(&app, ("Api-Key", &key), "?renewable=false&expires_in=600").await);
    let again = token(&app, ("Authorization", &format!("Bearer {fixed}")), "").await;
    assert_eq!(again.status, 403, "{}", again.text());
}

#[actix_rt::test]
async fn a_token_dies_with_its_key_and_with_the_secret() {
    let app = spawn_app().await;
    let key = acme_with_key(&app, &["admin"]).await;
    let spare = app
        .json(
            "POST",
            "/user/apikeys",
            &key,
            &serde_json::json!({"comment": "spare"}),
        )
        .await;
    assert_eq!(spare.status, 200, "{}", spare.text());
    let spare_key = spare.json()["api_key"].as_str().unwrap().to_string();
    let t = token_of(&token(&app, ("Api-Key", &key), "").await);
    let other = token_of(&token(&app, ("Api-Key", &spare_key), "").await);
    let id = app.get("/user/apikeys/current", &key).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.delete(&format!("/user/apikeys/{id}"), &spare_key)
            .await
            .status,
        204
    );
    assert_eq!(with_bearer(&app, "/sourceimages/acme", &t, &[]).await, 401);
    // A token of another key lives on, until the secret is replaced.
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &other, &[]).await,
        200
    );
    app.services.store.rotate_token_secret().unwrap();
    assert_eq!(
        with_bearer(&app, "/sourceimages/acme", &other, &[]).await,
        401
    );
}
