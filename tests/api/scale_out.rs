//! Two nodes over one PostgreSQL and one bucket, both upstreams of one nginx `upstream` block
//! running the example site: one truth whichever node answers.
//!
//! Node A is a child process (so that it can be killed with `kill -9`), node B runs in the
//! test's process over the same records and bytes. Needs nginx, and the shared backend that
//! `.ci/run` starts (`DARKROOM_TEST_DATABASE_URL`, `DARKROOM_TEST_S3_*`); skipped with a
//! message without it.

use crate::edge::{reserve_port, start_nginx_for, width, DEADLINE, RENDER_HOST};
use crate::helpers::*;
use std::time::{Duration, Instant};

/// How long the readers run while the changes go in.
const READING: Duration = Duration::from_secs(5);

fn shared_backend() -> bool {
    let set = |k| std::env::var(k).is_ok_and(|v: String| !v.is_empty());
    if set("DARKROOM_TEST_DATABASE_URL") && set("DARKROOM_TEST_S3_ENDPOINT") {
        return true;
    }
    eprintln!(
        "skipped: two nodes need a shared PostgreSQL and bucket (DARKROOM_TEST_DATABASE_URL, \
         DARKROOM_TEST_S3_*; .ci/run starts both)"
    );
    false
}

/// One read of the render URL, by one of the readers.
struct Read {
    started: Instant,
    via_nginx: bool,
    status: u16,
    width: Option<u32>,
}

#[actix_rt::test]
#[ignore = "needs nginx, PostgreSQL and S3-compatible storage (.ci/run starts them)"]
async fn two_nodes_behind_nginx_serve_one_truth_and_survive_a_kill() {
    if !shared_backend() {
        return;
    }
    let render_port = reserve_port();
    let api_port = reserve_port();
    let edge = format!("http://127.0.0.1:{}", render_port.1);
    let mut b = spawn_app_with(|c| {
        c.edge.url = edge.clone();
        c.gc.interval_secs = 1;
        c.images.retention_days = 0;
    })
    .await;
    // Node A may die between storing an upload's bytes and its record: GC collects those.
    b.tolerate_orphans(Duration::from_secs(3600));
    let a_dir = tempfile::tempdir().unwrap();
    // Node B's records and bucket, node A's own data folder.
    let mut env: Vec<(String, std::ffi::OsString)> = storage_env(&b.data)
        .into_iter()
        .filter(|(k, _)| k != "DARKROOM__STORAGE__PATH")
        .collect();
    for (k, v) in [
        ("DARKROOM__EDGE__URL", edge.as_str()),
        ("DARKROOM__GC__INTERVAL_SECS", "1"),
        ("DARKROOM__IMAGES__RETENTION_DAYS", "0"),
    ] {
        env.push((k.to_string(), v.into()));
    }
    let a = Node::start(a_dir.path(), env);
    let a_api = format!("http://{}", a.api);
    let b_render = b.render.trim_start_matches("http://").to_string();
    let upstream = format!(
        "upstream darkroom_render {{ server {}; server {b_render}; keepalive 8; }}",
        a.render
    );
    let nginx = start_nginx_for(
        render_port,
        api_port,
        &a_api,
        "http://darkroom_render",
        &upstream,
        &b,
    )
    .await;

    // Everything is written through node A.
    let on_a = |path: &str| format!("{a_api}{path}");
    let created = b
        .send(
            "PUT",
            &on_a("/organizations/acme"),
            Some(ROOT_KEY),
            &[("Content-Type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert!(created.status < 300, "{}", created.text());
    let (ctype, body) = multipart(&[("filedata", "photo.jpg", &jpeg(120, 90, 1))], &[]);
    let uploaded = b
        .send(
            "POST",
            &on_a("/sourceimages/acme"),
            Some(ROOT_KEY),
            &[("Content-Type", &ctype)],
            Some(body),
        )
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    let hash = uploaded.json()["items"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let stack_url = on_a("/stacks/acme/thumb?overwrite=true");
    let put_stack = |width: u32| {
        b.send(
            "PUT",
            &stack_url,
            Some(ROOT_KEY),
            &[("Content-Type", "application/json")],
            Some(
                serde_json::json!([{"name": "resize", "options": {"width": width}}])
                    .to_string()
                    .into_bytes(),
            ),
        )
    };
    let a1 = put_stack(40).await;
    assert!(a1.status < 300, "{}", a1.text());

    // Read through node B, then through nginx (whichever node it picks).
    let path = format!("/acme/thumb/{hash}.jpg");
    let direct = b.render(&format!("/thumb/{hash}.jpg")).await;
    assert_eq!(
        direct.status,
        200,
        "node B renders what A stored: {}",
        direct.text()
    );
    assert_eq!(width(&direct), 40);
    let through = |b: &TestApp, path: String| {
        let url = format!("{}{path}", nginx.url);
        let client = b.client.clone();
        async move {
            let mut resp = client
                .get(url)
                .insert_header(("Host", RENDER_HOST))
                .send()
                .await
                .expect("nginx answers");
            let body = resp.body().limit(1 << 24).await.expect("a body").to_vec();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("x-cache-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body,
            )
        }
    };
    let (status, _, first) = through(&b, path.clone()).await;
    assert_eq!(status, 200);
    let (status, verdict, again) = through(&b, path.clone()).await;
    assert_eq!((status, verdict.as_str()), (200, "HIT"), "nginx keeps it");
    assert_eq!(first, again);

    // Readers through nginx and directly from node B while A overwrites the stack, then
    // deletes the image.
    let reads = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Read>::new()));
    let reader = {
        let reads = reads.clone();
        let client = b.client.clone();
        let nginx_url = format!("{}{path}", nginx.url);
        let direct_url = format!("{}{path}", b.render);
        actix_rt::spawn(async move {
            let until = Instant::now() + READING;
            let mut via_nginx = false;
            while Instant::now() < until {
                via_nginx = !via_nginx;
                let started = Instant::now();
                let request = if via_nginx {
                    client.get(&nginx_url).insert_header(("Host", RENDER_HOST))
                } else {
                    client.get(&direct_url)
                };
                let Ok(mut resp) = request.send().await else {
                    continue;
                };
                let status = resp.status().as_u16();
                let body = resp.body().limit(1 << 24).await.unwrap_or_default();
                let width = (status == 200)
                    .then(|| image::load_from_memory(&body).ok().map(|i| i.width()))
                    .flatten();
                reads.borrow_mut().push(Read {
                    started,
                    via_nginx,
                    status,
                    width,
                });
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    actix_rt::time::sleep(Duration::from_millis(1000)).await;
    let overwrite = put_stack(60).await;
    assert!(overwrite.status < 300, "{}", overwrite.text());
    let overwritten = Instant::now();
    actix_rt::time::sleep(Duration::from_millis(1800)).await;
    let deleting = Instant::now();
    let deleted = b
        .send(
            "DELETE",
            &on_a(&format!("/sourceimages/acme/{hash}")),
            Some(ROOT_KEY),
            &[],
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let gone = Instant::now();
    reader.await.unwrap();
    let reads = std::mem::take(&mut *reads.borrow_mut());
    let count = |nginx: bool| reads.iter().filter(|r| r.via_nginx == nginx).count();
    assert!(
        count(true) > 20 && count(false) > 20,
        "the readers read: {} through nginx, {} from node B",
        count(true),
        count(false)
    );
    for r in reads.iter() {
        let (changed, removed) = if r.via_nginx {
            (overwritten + DEADLINE, gone + DEADLINE)
        } else {
            (overwritten, gone)
        };
        let who = if r.via_nginx { "nginx" } else { "node B" };
        let at = r.started.saturating_duration_since(overwritten);
        if r.started >= removed {
            assert_eq!(
                r.status, 404,
                "{who}, {at:?} after the overwrite, after the delete"
            );
        } else if r.started >= changed && r.started < deleting {
            assert_eq!(
                (r.status, r.width),
                (200, Some(60)),
                "{who}, {at:?} after the overwrite on node A returned"
            );
        }
    }

    // kill -9 node A during uploads: every upload it acknowledged is there through node B.
    let photos: Vec<Vec<u8>> = (0..150u8)
        .map(|seed| jpeg(48, 32, seed.wrapping_add(100)))
        .collect();
    let uploader = {
        let api = a.api.clone();
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for bytes in &photos {
                let (ctype, body) = multipart(&[("filedata", "a.jpg", bytes)], &[]);
                let Some((status, answer)) =
                    http(&api, "POST", "/sourceimages/acme", &ctype, &body)
                else {
                    break;
                };
                if status != 200 {
                    break;
                }
                let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                acknowledged.push(v["items"][0]["hash"].as_str().unwrap().to_string());
            }
            acknowledged
        })
    };
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    a.kill();
    let acknowledged = actix_rt::task::spawn_blocking(move || uploader.join().unwrap())
        .await
        .unwrap();
    assert!(
        acknowledged.len() >= 3,
        "node A acknowledged {} uploads before it was killed",
        acknowledged.len()
    );
    let put = b
        .json(
            "PUT",
            "/stacks/acme/thumb?overwrite=true",
            ROOT_KEY,
            &serde_json::json!([{"name": "resize", "options": {"width": 20}}]),
        )
        .await;
    assert!(put.status < 300, "{}", put.text());
    for h in &acknowledged {
        let record = b.get(&format!("/sourceimages/acme/{h}"), ROOT_KEY).await;
        assert_eq!(record.status, 200, "acknowledged upload {h} through node B");
        let (status, _, _) = through(&b, format!("/acme/thumb/{h}.jpg")).await;
        assert_eq!(status, 200, "{h} through nginx with node A dead");
    }

    // GC and the edge queue carry on through node B.
    let warm = format!("/acme/thumb/{}.jpg", acknowledged[0]);
    let (_, verdict, _) = through(&b, warm.clone()).await;
    assert_eq!(verdict, "HIT", "{warm} is cached by nginx");
    let removed = b
        .delete(&format!("/sourceimages/acme/{}", acknowledged[0]), ROOT_KEY)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text());
    let asked = Instant::now();
    loop {
        let (status, verdict, _) = through(&b, warm.clone()).await;
        if status == 404 {
            break;
        }
        assert!(
            asked.elapsed() < DEADLINE,
            "nginx still answers {status} ({verdict}) for {warm} after the delete through B"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Retention 0: GC on node B removes the record for good.
    let until = Instant::now() + Duration::from_secs(15);
    while b
        .services
        .store
        .get_image("acme", &acknowledged[0])
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < until,
            "GC removes the deleted image for good through node B"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    drop(nginx);
}

/// The answers of one appliance that must survive a move to another backend unchanged: the
/// listing, each image with its short hash, the stacks, today's figures and the render bytes
/// of every URL form.
async fn fingerprint(app: &TestApp, key: &str, hashes: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut note = |what: String, body: Vec<u8>| out.push((what, body));
    for path in [
        "/sourceimages/acme?limit=100",
        "/sourceimages/acme?sort=size%20desc",
        "/sourceimages/acme?user:str:tag=b",
        "/stacks/acme",
        "/organizations/acme",
    ] {
        let a = app.get(path, key).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        note(path.to_string(), a.body);
    }
    let stats = app.get("/stats/acme", key).await.json();
    note(
        "stats".into(),
        serde_json::to_vec(&(
            stats["space_in_bytes"].clone(),
            stats["number_of_files"].clone(),
        ))
        .unwrap(),
    );
    for hash in hashes {
        let image = app.get(&format!("/sourceimages/acme/{hash}"), key).await;
        assert_eq!(image.status, 200);
        let short = image.json()["short_hash"].as_str().unwrap().to_string();
        note(format!("image {hash}"), image.body);
        for path in [
            format!("/thumb/{hash}.jpg"),
            format!("/thumb/{short}.webp"),
            format!("/dynamic/resize-width-17/{hash}.png"),
        ] {
            let r = app.render(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            note(path, r.body);
        }
    }
    out
}

#[actix_rt::test]
#[ignore = "needs PostgreSQL (.ci/run starts it)"]
async fn an_embedded_install_moves_up_with_export_and_import() {
    if std::env::var("DARKROOM_TEST_DATABASE_URL").is_err() {
        eprintln!("skipped: moving up needs DARKROOM_TEST_DATABASE_URL (.ci/run sets it)");
        return;
    }
    // The embedded default, whatever the environment says.
    let old = spawn_app_with(with_embedded_bytes).await;
    old.create_org("acme").await;
    let key = old.create_key("acme", &["admin"]).await;
    let mut hashes = Vec::new();
    for (i, tag) in ["a", "b", "b"].iter().enumerate() {
        let a = old
            .upload(
                "acme",
                &key,
                &[("filedata", "p.jpg", &jpeg(60 + 10 * i as u32, 40, i as u8))],
                &[("meta_user[0]", &format!("{{\"tag\":\"{tag}\"}}"))],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        hashes.push(a.json()["items"][0]["hash"].as_str().unwrap().to_string());
    }
    old.stack(
        "thumb",
        serde_json::json!({"operations": [{"name": "resize", "options": {"width": 30}}],
                           "options": {"jpg.quality": 70}}),
    )
    .await;
    let before = fingerprint(&old, &key, &hashes).await;
    let exported = old.get("/admin/export?renders=true", ROOT_KEY).await;
    assert_eq!(exported.status, 200);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup");
    std::fs::write(&file, &exported.body).unwrap();

    // The new install: records in PostgreSQL (and bytes in the bucket when one is set).
    let new_dir = tempfile::tempdir().unwrap();
    let config = test_config(new_dir.path());
    assert!(!config.storage.database_url.is_empty());
    {
        let storage = config.open_storage(0).unwrap();
        darkroom::storage::backup::import(
            &*storage.records,
            &*storage.bytes,
            &file,
            &mut |_, _, _| {},
        )
        .unwrap();
    }
    let new = start(config).await;
    let after = fingerprint(&new, &key, &hashes).await;
    assert_eq!(before.len(), after.len());
    for ((what, a), (_, b)) in before.iter().zip(&after) {
        assert!(
            a == b,
            "{what} differs after the move:\n{}\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
}
