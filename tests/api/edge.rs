//! The appliance behind a real nginx running the example site `systemd/nginx-darkroom.conf`:
//! every invalidation trigger must reach nginx's render cache (`edge.url`) as a refresh, so a
//! client going through nginx sees the new answer (a 404, a new render, a restored render)
//! within a second instead of a cached copy for up to a year.
//!
//! These tests need nginx (Debian: `apt-get install nginx-light`) and are ignored by default:
//! `cargo test --test api edge -- --include-ignored --nocapture` runs them and prints a short
//! transcript (what nginx answered, the trigger, the refresh in nginx's access log).

use crate::helpers::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example site, rewritten by plain text substitution on the lines it documents.
const SITE: &str = include_str!("../../systemd/nginx-darkroom.conf");

/// The Host clients send to nginx: the render server's `server_name` in the example site. Not
/// a loopback name, so a refresh only lands on the cached copy if the appliance sends it with
/// the Host it saw when it served the render (nginx's cache key is `$host$request_uri`).
pub(crate) const RENDER_HOST: &str = "img.example.com";

/// How long after the trigger's answer nginx must have the fresh answer.
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);

const POLL: Duration = Duration::from_millis(20);

/// A running nginx with the example site, in its own temporary folder (cache, logs, pid).
pub(crate) struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:{port}`: the render server.
    pub(crate) url: String,
}

impl Nginx {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The render server's access log (log format `darkroom`).
    fn render_log(&self) -> String {
        std::fs::read_to_string(self.path("darkroom-render.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["darkroom-render.log", "darkroom-error.log", "error.log"] {
                let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
                eprintln!("---- nginx {name} ----\n{text}");
            }
        }
        // SIGTERM: the master stops its workers and exits; SIGKILL only if it does not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holds a free loopback port until nginx is about to bind it, so that the appliance (which
/// binds port 0) cannot be given it in between.
pub(crate) fn reserve_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn nginx_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("nginx is required (apt-get install nginx-light)"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Replaces `from` by `to`, one replacement per occurrence, in order; `from` must occur
/// exactly `to.len()` times, so that the site file and this test cannot drift apart.
fn substitute(site: String, from: &str, to: &[&str]) -> String {
    let found = site.matches(from).count();
    assert_eq!(
        found,
        to.len(),
        "systemd/nginx-darkroom.conf: expected `{from}` {} time(s) outside comments, found it \
         {found} time(s); the test substitutes it, update one or the other",
        to.len()
    );
    let mut parts = site.split(from);
    let mut out = parts.next().unwrap_or_default().to_string();
    for (part, to) in parts.zip(to) {
        out.push_str(to);
        out.push_str(part);
    }
    out
}

/// The example site with its site-specific values pointed at these upstreams (`http://…`, or
/// the name of an `upstream` block) and `dir`.
fn site(api_port: u16, render_port: u16, api_up: &str, render_up: &str, dir: &Path) -> String {
    // Whole-line comments repeat the substituted values as documentation; drop them.
    let site: String = SITE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = dir.display().to_string();
    let api = format!("listen 127.0.0.1:{api_port};");
    let render = format!("listen 127.0.0.1:{render_port};");
    let api_upstream = format!("proxy_pass {api_up};");
    let render_upstream = format!("proxy_pass {render_up};");
    let cache = format!("{dir}/cache");
    let logs = format!("{dir}/darkroom-");
    let site = substitute(site, "listen 80;", &[&api, &render]);
    let site = substitute(site, "proxy_pass http://127.0.0.1:8080;", &[&api_upstream]);
    let site = substitute(
        site,
        "proxy_pass http://127.0.0.1:8081;",
        &[&render_upstream],
    );
    let site = substitute(site, "/var/cache/nginx/darkroom", &[&cache]);
    let site = substitute(
        site,
        "/var/log/nginx/darkroom-",
        &[&logs, &logs, &logs, &logs],
    );
    assert!(
        !site.contains("/var/"),
        "systemd/nginx-darkroom.conf has a system path the test does not substitute:\n{site}"
    );
    site
}

/// Starts nginx with the example site in front of `app`: the render server on the port
/// `render` holds, the API server on the one `api` holds.
async fn start_nginx(
    render: (std::net::TcpListener, u16),
    api: (std::net::TcpListener, u16),
    app: &TestApp,
) -> Nginx {
    start_nginx_for(render, api, &app.api, &app.render, "", app).await
}

/// Starts nginx with the example site, its API server proxying to `api_up` and its render
/// server to `render_up` (URLs, or names of upstream blocks defined in `http_extra`); `app`
/// sends the requests that check it answers.
pub(crate) async fn start_nginx_for(
    render: (std::net::TcpListener, u16),
    api: (std::net::TcpListener, u16),
    api_up: &str,
    render_up: &str,
    http_extra: &str,
    app: &TestApp,
) -> Nginx {
    let nginx = nginx_binary();
    let port = render.1;
    let dir = tempfile::tempdir().expect("a temporary folder for nginx");
    let d = dir.path().display().to_string();
    let site_path = dir.path().join("darkroom-site.conf");
    std::fs::write(&site_path, site(api.1, port, api_up, render_up, dir.path())).unwrap();
    // As root, workers would run as `nobody`, which cannot enter the 0700 temporary folder.
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    let main = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n    \
         client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n    \
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
         scgi_temp_path {d}/scgi;\n    {http_extra}\n    include {};\n}}\n",
        site_path.display()
    );
    let main_path = dir.path().join("nginx.conf");
    std::fs::write(&main_path, main).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    drop((render, api));
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&main_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", nginx.display()));
    let mut nginx = Nginx {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let read = |n| std::fs::read_to_string(nginx.path(n)).unwrap_or_default();
            panic!(
                "nginx exited ({status}):\n{}{}",
                read("stderr.log"),
                read("error.log")
            );
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Whatever answers must be this nginx, not another process that took the port.
            let a = app
                .send("GET", &format!("{}/", nginx.url), None, &[], None)
                .await;
            let server = a.header("server").unwrap_or_default();
            assert!(
                server.starts_with("nginx"),
                "port {port} is not answered by the nginx just started (Server: {server:?}); \
                 another process took it, run again"
            );
            return nginx;
        }
        assert!(
            Instant::now() < until,
            "nginx does not accept connections on port {port}"
        );
        actix_rt::time::sleep(POLL).await;
    }
}

/// The appliance with `edge.url` pointing at an nginx in front of it, organization `acme`, a
/// 120×90 JPEG and stack `thumb` (resize to width 40).
struct Edge {
    // Fields drop in order: nginx stops before the appliance.
    nginx: Nginx,
    app: TestApp,
    hash: String,
}

async fn spawn_edge() -> Edge {
    let render = reserve_port();
    let api = reserve_port();
    let port = render.1;
    let app = spawn_app_with(|c| c.edge.url = format!("http://127.0.0.1:{port}")).await;
    let nginx = start_nginx(render, api, &app).await;
    let hash = app.acme_with_thumb(&jpeg(120, 90, 1), 40).await;
    Edge { nginx, app, hash }
}

pub(crate) fn cache_status(a: &Answer) -> String {
    a.header("x-cache-status").unwrap_or_default()
}

pub(crate) fn width(a: &Answer) -> u32 {
    image::load_from_memory(&a.body)
        .unwrap_or_else(|e| panic!("not an image ({e}): {}", a.text()))
        .width()
}

impl Edge {
    /// A plain client GET of a render path (`/acme/…`) through nginx.
    async fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.nginx.url);
        let a = self
            .app
            .send("GET", &url, None, &[("Host", RENDER_HOST)], None)
            .await;
        println!(
            "  GET {path} -> {} X-Cache-Status: {}",
            a.status,
            cache_status(&a)
        );
        a
    }

    /// Fetches `path` through nginx twice: a miss that nginx stores, then a hit from its cache.
    async fn warm(&self, path: &str) -> Answer {
        let miss = self.get(path).await;
        assert_eq!(miss.status, 200, "{path}: {}", miss.text());
        assert_eq!(
            cache_status(&miss),
            "MISS",
            "{path}: first fetch through nginx"
        );
        let hit = self.get(path).await;
        assert_eq!(hit.status, 200, "{path}: {}", hit.text());
        assert_eq!(
            cache_status(&hit),
            "HIT",
            "{path}: nginx stores the render and answers the second fetch from its cache"
        );
        assert_eq!(hit.body, miss.body, "{path}: the cached render");
        hit
    }

    /// Sends a trigger to the API and prints it.
    async fn trigger(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
        let a = self
            .app
            .send(
                method,
                path,
                Some(ROOT_KEY),
                &[],
                body.map(|b| b.to_string().into_bytes()),
            )
            .await;
        println!("  trigger: {method} {path} -> {}", a.status);
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.text());
        a
    }

    /// Polls `path` through nginx (plain GETs, no refresh header) until `done` accepts the
    /// answer; fails after [`DEADLINE`]. Quiet while polling, prints the final answer.
    async fn poll(&self, path: &str, what: &str, done: impl Fn(&Answer) -> bool) -> Answer {
        let start = Instant::now();
        let mut tries = 0;
        loop {
            let url = format!("{}{path}", self.nginx.url);
            let a = self
                .app
                .send("GET", &url, None, &[("Host", RENDER_HOST)], None)
                .await;
            tries += 1;
            if done(&a) {
                println!(
                    "  GET {path} -> {} X-Cache-Status: {} ({what}, after {} ms, {tries} polls)",
                    a.status,
                    cache_status(&a),
                    start.elapsed().as_millis()
                );
                // The old entry was valid for a year: a plain GET cannot have replaced it, the
                // appliance's refresh did and nginx answers from what it stored.
                assert_eq!(
                    cache_status(&a),
                    "HIT",
                    "{path}: {what} comes from nginx's cache"
                );
                return a;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{path}: expected {what} through nginx within {DEADLINE:?} of the trigger; \
                 still {} X-Cache-Status: {} after {tries} polls",
                a.status,
                cache_status(&a)
            );
            actix_rt::time::sleep(POLL).await;
        }
    }

    /// Waits until nginx's access log has, after byte `since`, the appliance's refresh of `path`:
    /// a GET that bypassed the cache (`cache=BYPASS`) because it carried the refresh header from
    /// loopback (`refresh=1`). Returns the line.
    async fn refreshed(&self, path: &str, since: usize) -> String {
        let start = Instant::now();
        let request = format!("\"GET {path} HTTP/1.1\"");
        loop {
            let log = self.nginx.render_log();
            let line = log.get(since..).unwrap_or_default().lines().find(|l| {
                l.contains(&request) && l.contains("cache=BYPASS") && l.contains("refresh=1")
            });
            if let Some(line) = line {
                println!("  nginx log: {line}");
                return line.to_string();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{path}: no refresh (cache=BYPASS refresh=1) in nginx's access log within \
                 {DEADLINE:?} of the trigger; log since the trigger:\n{}",
                log.get(since..).unwrap_or_default()
            );
            actix_rt::time::sleep(POLL).await;
        }
    }

    fn log_len(&self) -> usize {
        self.nginx.render_log().len()
    }
}

/// Runs without the feature: nginx starts with the example site, stores renders and 404s
/// and answers repeats from its cache; a refresh header from loopback bypasses the cache.
#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn nginx_with_the_example_site_caches_renders() {
    let e = spawn_edge().await;
    println!("nginx caches renders:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    let hit = e.warm(&path).await;
    assert_eq!(width(&hit), 40);
    assert_eq!(
        hit.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let missing = "/acme/thumb/0000000000000000000000000000000000000000.jpg";
    let first = e.get(missing).await;
    assert_eq!((first.status, cache_status(&first).as_str()), (404, "MISS"));
    assert_eq!(
        first.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    let second = e.get(missing).await;
    assert_eq!(
        (second.status, cache_status(&second).as_str()),
        (404, "HIT"),
        "nginx stores render 404s for their max-age"
    );
    // What the appliance sends on an invalidation, sent by hand.
    let since = e.log_len();
    let refresh = e
        .app
        .send(
            "GET",
            &format!("{}{path}", e.nginx.url),
            None,
            &[("Host", RENDER_HOST), ("X-Darkroom-Refresh", "1")],
            None,
        )
        .await;
    println!("  GET {path} + X-Darkroom-Refresh: 1 -> {}", refresh.status);
    assert_eq!(refresh.status, 200);
    assert_eq!(cache_status(&refresh), "BYPASS");
    e.refreshed(&path, since).await;
    assert_eq!(cache_status(&e.get(&path).await), "HIT");
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn deleting_and_restoring_an_image_refreshes_nginx() {
    let e = spawn_edge().await;
    println!("image delete and restore:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    let before = e.warm(&path).await;
    let since = e.log_len();
    e.trigger("DELETE", &format!("/sourceimages/acme/{}", e.hash), None)
        .await;
    e.poll(&path, "404", |a| a.status == 404).await;
    e.refreshed(&path, since).await;
    let since = e.log_len();
    e.trigger(
        "POST",
        &format!("/sourceimages/acme/{}/restore", e.hash),
        None,
    )
    .await;
    let after = e.poll(&path, "200 again", |a| a.status == 200).await;
    e.refreshed(&path, since).await;
    assert_eq!(width(&after), 40);
    assert_eq!(after.body, before.body, "renders are deterministic");
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn deleting_by_binary_hash_refreshes_every_variant_in_nginx() {
    let e = spawn_edge().await;
    println!("delete by binary hash:");
    let v = e
        .app
        .json(
            "PUT",
            &format!("/sourceimages/acme/{}/meta/dynamic/version", e.hash),
            ROOT_KEY,
            &json!({"text": "2"}),
        )
        .await;
    assert!(v.status < 300, "{}", v.text());
    let variant = v.json()["hash"].as_str().unwrap().to_string();
    assert_ne!(variant, e.hash);
    let paths = [
        format!("/acme/thumb/{}.jpg", e.hash),
        format!("/acme/thumb/{variant}.jpg"),
    ];
    for p in &paths {
        e.warm(p).await;
    }
    let since = e.log_len();
    let binary = sha1_hex(&jpeg(120, 90, 1));
    e.trigger(
        "DELETE",
        &format!("/sourceimages/acme?binaryHash={binary}"),
        None,
    )
    .await;
    for p in &paths {
        e.poll(p, "404", |a| a.status == 404).await;
        e.refreshed(p, since).await;
    }
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn delete_previous_refreshes_the_old_hash_in_nginx() {
    let e = spawn_edge().await;
    println!("dynamic metadata with deletePrevious:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    e.warm(&path).await;
    let since = e.log_len();
    let a = e
        .trigger(
            "PUT",
            &format!(
                "/sourceimages/acme/{}/meta/dynamic/subject_area?deletePrevious=true",
                e.hash
            ),
            Some(json!({"x": 1, "y": 1})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_ne!(a.json()["hash"].as_str(), Some(e.hash.as_str()));
    e.poll(&path, "404", |a| a.status == 404).await;
    e.refreshed(&path, since).await;
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn overwriting_a_stack_refreshes_nginx_with_the_new_render() {
    let e = spawn_edge().await;
    println!("stack overwrite:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    let old = e.warm(&path).await;
    assert_eq!(width(&old), 40);
    let since = e.log_len();
    e.trigger(
        "PUT",
        "/stacks/acme/thumb?overwrite=true",
        Some(json!([{"name": "resize", "options": {"width": 20}}])),
    )
    .await;
    let new = e
        .poll(&path, "the new render (width 20)", |a| {
            a.status == 200 && width(a) == 20
        })
        .await;
    assert_ne!(new.body, old.body);
    e.refreshed(&path, since).await;
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn deleting_a_stack_refreshes_nginx() {
    let e = spawn_edge().await;
    println!("stack delete:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    e.warm(&path).await;
    let since = e.log_len();
    e.trigger("DELETE", "/stacks/acme/thumb", None).await;
    e.poll(&path, "404", |a| a.status == 404).await;
    e.refreshed(&path, since).await;
}

/// A purge removes stored renders; the fresh render is byte-identical, so the evidence is
/// the refresh in nginx's access log, for every path the render was served under.
async fn purge_refreshes(trigger: &str, paths: &[String]) {
    let e = spawn_edge().await;
    println!("purge {trigger}:");
    let paths: Vec<String> = paths
        .iter()
        .map(|p| {
            p.replace("{hash}", &e.hash)
                .replace("{short}", &e.hash[..6])
        })
        .collect();
    let mut cached = Vec::new();
    for p in &paths {
        cached.push(e.warm(p).await.body);
    }
    let since = e.log_len();
    let trigger = trigger.replace("{hash}", &e.hash);
    e.trigger("DELETE", &trigger, None).await;
    for (p, body) in paths.iter().zip(&cached) {
        e.refreshed(p, since).await;
        let after = e.get(p).await;
        assert_eq!(after.status, 200);
        assert_eq!(
            cache_status(&after),
            "HIT",
            "{p}: nginx stored the refreshed render"
        );
        assert_eq!(&after.body, body, "{p}: renders are deterministic");
    }
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn purging_an_image_refreshes_every_path_it_was_served_under_in_nginx() {
    purge_refreshes(
        "/sourceimages/acme/{hash}/cache",
        &[
            "/acme/thumb/{hash}.jpg".into(),
            "/acme/thumb/{short}/nice.jpg".into(),
            "/acme/dynamic/resize-width-40/{hash}.jpg".into(),
        ],
    )
    .await;
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn purging_a_stack_refreshes_nginx() {
    purge_refreshes(
        "/stacks/acme/thumb/cache",
        &["/acme/thumb/{hash}.jpg".into()],
    )
    .await;
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn purging_an_organization_refreshes_nginx() {
    purge_refreshes(
        "/organizations/acme/cache",
        &[
            "/acme/thumb/{hash}.jpg".into(),
            "/acme/dynamic/resize-width-10/{hash}.jpg".into(),
        ],
    )
    .await;
}

/// A stack overwritten to autoformat: the new answers vary on `Accept`. The refresh answer
/// (sent without Accept) replaces the cached copy, and browsers that accept WebP get the new
/// WebP render from the appliance.
#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn overwriting_a_stack_to_autoformat_replaces_the_cached_render() {
    let e = spawn_edge().await;
    println!("stack overwrite to autoformat:");
    let path = format!("/acme/thumb/{}.jpg", e.hash);
    let old = e.warm(&path).await;
    assert_eq!(width(&old), 40);
    let since = e.log_len();
    e.trigger(
        "PUT",
        "/stacks/acme/thumb?overwrite=true",
        Some(json!({
            "operations": [{"name": "resize", "options": {"width": 20}}],
            "options": {"autoformat": true}
        })),
    )
    .await;
    e.refreshed(&path, since).await;
    let start = Instant::now();
    loop {
        let url = format!("{}{path}", e.nginx.url);
        let plain = e
            .app
            .send("GET", &url, None, &[("Host", RENDER_HOST)], None)
            .await;
        let browser = e
            .app
            .send(
                "GET",
                &url,
                None,
                &[("Host", RENDER_HOST), ("Accept", "image/webp,*/*")],
                None,
            )
            .await;
        let plain_new = plain.status == 200 && width(&plain) == 20;
        let browser_new = browser.status == 200
            && browser.header("content-type").as_deref() == Some("image/webp");
        if plain_new && browser_new {
            println!(
                "  plain GET -> {} {} X-Cache-Status: {}; browser GET -> {} X-Cache-Status: {}",
                plain.status,
                plain.header("content-type").unwrap_or_default(),
                cache_status(&plain),
                browser.header("content-type").unwrap_or_default(),
                cache_status(&browser)
            );
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "still the old render: plain {} {:?} {}, browser {} {:?} {}",
            plain.status,
            plain.header("content-type"),
            cache_status(&plain),
            browser.status,
            browser.header("content-type"),
            cache_status(&browser)
        );
        actix_rt::time::sleep(POLL).await;
    }
}

#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn re_pointing_an_alias_refreshes_nginx_with_the_other_image() {
    let e = spawn_edge().await;
    println!("alias re-pointed:");
    let other = e
        .app
        .upload_one("acme", ROOT_KEY, "tall.jpg", &jpeg(60, 80, 2))
        .await["hash"]
        .as_str()
        .unwrap()
        .to_string();
    e.trigger(
        "PUT",
        "/sourceimages/acme/alias/hero",
        Some(json!({"hash": e.hash})),
    )
    .await;
    let path = "/acme/thumb/-_hero_-.jpg";
    let old = e.warm(path).await;
    let height = |a: &Answer| image::load_from_memory(&a.body).map_or(0, |i| i.height());
    assert_eq!(height(&old), 30);
    assert_eq!(
        old.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    let since = e.log_len();
    e.trigger(
        "PUT",
        "/sourceimages/acme/alias/hero?overwrite=true",
        Some(json!({"hash": other})),
    )
    .await;
    let new = e
        .poll(path, "the other image (height 53)", |a| {
            a.status == 200 && height(a) == 53
        })
        .await;
    assert_ne!(new.body, old.body);
    e.refreshed(path, since).await;
}

/// A stack that reads `request.headers.save_data` answers two variants under one URL, with
/// `Vary: Save-Data`. Through nginx each client gets its own variant, before and after the
/// edge is refreshed: the refresh (sent without Save-Data) stores the plain variant, and a
/// `Save-Data: on` client is still answered the light one.
#[actix_web::test]
#[ignore = "needs nginx (apt-get install nginx-light); run with --include-ignored"]
async fn save_data_variants_are_never_crossed_in_nginx() {
    let e = spawn_edge().await;
    println!("Save-Data variants:");
    e.app
        .stack(
            "lite",
            json!({
                "operations": [{"name": "resize", "options": {"width": 60}}],
                "options": {"jpg.quality": 95},
                "expressions": [{"expression": "request.headers.save_data == 'on'",
                                 "overrides": {"options": {"jpg.quality": 10}}}]
            }),
        )
        .await;
    let path = format!("/acme/lite/{}.jpg", e.hash);
    let (e, path) = (&e, path.as_str());
    let direct = |save: bool| {
        let url = format!("{}{path}", e.app.render);
        let headers: &[(&str, &str)] = if save { &[("Save-Data", "on")] } else { &[] };
        async move { e.app.send("GET", &url, None, headers, None).await }
    };
    let (plain, light) = (direct(false).await, direct(true).await);
    assert_eq!((plain.status, light.status), (200, 200));
    assert_ne!(plain.body, light.body, "the two variants differ");
    for a in [&plain, &light] {
        assert!(
            a.header("vary").unwrap_or_default().contains("Save-Data"),
            "{:?}",
            a.header("vary")
        );
    }
    let through = |save: bool| {
        let url = format!("{}{path}", e.nginx.url);
        let headers: &[(&str, &str)] = if save {
            &[("Host", RENDER_HOST), ("Save-Data", "on")]
        } else {
            &[("Host", RENDER_HOST)]
        };
        async move {
            let a = e.app.send("GET", &url, None, headers, None).await;
            println!(
                "  GET {path}{} -> {} X-Cache-Status: {}",
                if save { " + Save-Data: on" } else { "" },
                a.status,
                cache_status(&a)
            );
            a
        }
    };
    for _ in 0..3 {
        assert_eq!(through(true).await.body, light.body, "Save-Data client");
        assert_eq!(through(false).await.body, plain.body, "plain client");
    }
    let since = e.log_len();
    e.trigger(
        "DELETE",
        &format!("/sourceimages/acme/{}/cache", e.hash),
        None,
    )
    .await;
    e.refreshed(path, since).await;
    let stored = through(false).await;
    assert_eq!(stored.body, plain.body, "plain client after the refresh");
    assert_eq!(
        cache_status(&stored),
        "HIT",
        "the refresh stored the plain variant"
    );
    for _ in 0..2 {
        let a = through(true).await;
        assert_eq!(a.body, light.body, "Save-Data client after the refresh");
        assert_ne!(cache_status(&a), "HIT");
    }
}
