//! Test harness: each test starts the real appliance on port 0 over its own temporary data
//! folder and talks HTTP to it.

use awc::Client;
use darkroom::app::{AppHandle, Application};
use darkroom::config::Config;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::Value;
use std::io::Cursor;
use std::path::{Path, PathBuf};

pub const ROOT_KEY: &str = "test-root-key-0123456789";

/// A running appliance.
pub struct TestApp {
    pub services: actix_web::web::Data<darkroom::service::Services>,
    pub api: String,
    pub render: String,
    pub client: Client,
    pub handle: AppHandle,
    pub data: PathBuf,
    /// The control socket, as the service opens it: `darkroom admin` reaches this appliance.
    control: Option<darkroom::cli::control::Control>,
    /// Unreferenced bytes younger than this are not reported by the closing check (a test
    /// that kills a process mid-upload may leave some, for GC to collect).
    orphan_grace: std::time::Duration,
    _dir: Option<tempfile::TempDir>,
}

/// An HTTP answer with its body read.
pub struct Answer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

pub fn test_config(data: &Path) -> Config {
    let mut config = Config::default();
    config.server.api_bind = "127.0.0.1:0".parse().unwrap();
    config.server.render_bind = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 1;
    config.server.shutdown_timeout_secs = 5;
    config.storage.path = data.to_path_buf();
    config.auth.root_key = ROOT_KEY.to_string();
    config.render.threads = 2;
    // A small headroom: its reserve file is written at every start, and the tests must not
    // fail on a machine with little free disk.
    config.storage.min_free_mb = 8;
    use_test_storage(&mut config, data);
    config
}

/// With `DARKROOM_TEST_DATABASE_URL` set (`.ci/run` sets it), every appliance of the tests
/// keeps its records in that PostgreSQL instead of the embedded database: in a schema of its
/// own, named after its data folder, so that tests run side by side and an appliance started
/// again on the same folder finds its records again.
pub fn test_database_url(data: &Path) -> Option<String> {
    let base = std::env::var("DARKROOM_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let digest = blake3::hash(data.as_os_str().as_encoded_bytes()).to_hex();
    let schema = format!("t_{}", &digest[..24]);
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    let url = base.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("DARKROOM_TEST_DATABASE_URL: {e}"));
            let connection = tokio::spawn(connection);
            client.batch_execute(&create).await.unwrap();
            drop(client);
            let _ = connection.await;
        });
    })
    .join()
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}

/// The `[storage]` keys, beyond its folder, of the test appliance over `data`: its records in
/// PostgreSQL ([`test_database_url`]) and its bytes in a bucket ([`test_object_storage`]) when
/// the environment names them; none on the embedded default.
pub fn test_storage(data: &Path) -> Vec<(&'static str, String)> {
    let mut keys = test_object_storage(data);
    if let Some(url) = test_database_url(data) {
        keys.push(("database_url", url));
    }
    keys
}

/// With the `DARKROOM_TEST_S3_*` variables set (`.ci/garage` prints them), the `[storage]`
/// keys that put the bytes of the appliance over `data` into that bucket, below a prefix named
/// after the data folder's path: each appliance sees only its own objects, and one started again over
/// the same folder (in this process or as a child) finds them. Without them, none: the tests
/// run on the embedded default.
pub fn test_object_storage(data: &Path) -> Vec<(&'static str, String)> {
    let var = |name: &str| std::env::var(format!("DARKROOM_TEST_S3_{name}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        return Vec::new();
    };
    // The whole path: several tests name their data folder "data" inside folders of their own.
    let folder: String = data
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    vec![
        (
            "object_store_url",
            format!("s3://{}", var("BUCKET").expect("DARKROOM_TEST_S3_BUCKET")),
        ),
        ("s3_endpoint", endpoint),
        ("s3_region", var("REGION").unwrap_or_default()),
        (
            "s3_access_key_id",
            var("ACCESS_KEY_ID").expect("DARKROOM_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "s3_secret_access_key",
            var("SECRET_ACCESS_KEY").expect("DARKROOM_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("s3_prefix", format!("api/{}/{folder}", std::process::id())),
    ]
}

fn use_test_storage(config: &mut Config, data: &Path) {
    let s = &mut config.storage;
    for (key, value) in test_storage(data) {
        let field = match key {
            "object_store_url" => &mut s.object_store_url,
            "s3_endpoint" => &mut s.s3_endpoint,
            "s3_region" => &mut s.s3_region,
            "s3_access_key_id" => &mut s.s3_access_key_id,
            "s3_secret_access_key" => &mut s.s3_secret_access_key,
            "database_url" => &mut s.database_url,
            _ => &mut s.s3_prefix,
        };
        *field = value;
    }
}

/// The environment that gives a child `darkroom` the storage of the test appliance over
/// `data`: the data folder, and the database and the bucket when the tests run on them.
pub fn storage_env(data: impl AsRef<Path>) -> Vec<(String, std::ffi::OsString)> {
    let data = data.as_ref();
    let mut env = vec![(
        "DARKROOM__STORAGE__PATH".to_string(),
        data.as_os_str().to_owned(),
    )];
    for (key, value) in test_storage(data) {
        env.push((
            format!("DARKROOM__STORAGE__{}", key.to_uppercase()),
            value.into(),
        ));
    }
    env
}

/// The same as `[storage]` lines of an `appliance.toml` (after `path`).
pub fn storage_toml(data: &Path) -> String {
    test_storage(data)
        .into_iter()
        .map(|(key, value)| format!("{key} = \"{value}\"\n"))
        .collect()
}

/// Opens the storage of the test appliance over `data` in this process, as `darkroom admin`
/// does (the appliance must be stopped): sled lets go of a folder's lock shortly after.
pub async fn open_test_storage(data: &Path) -> darkroom::storage::Storage {
    let config = test_config(data);
    let mut attempt = 0;
    loop {
        match config.open_storage(0) {
            Ok(storage) => return storage,
            Err(e) if e.to_string().contains("could not acquire lock") && attempt < 100 => {
                attempt += 1;
                actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Keeps the bytes in the data folder's files whatever the environment says (a test over a
/// data folder written by an earlier version, with its blob files).
pub fn with_embedded_bytes(config: &mut Config) {
    let path = config.storage.path.clone();
    let min_free_mb = config.storage.min_free_mb;
    config.storage = darkroom::config::StorageConfig {
        path,
        min_free_mb,
        ..Default::default()
    };
}

/// Starts an appliance over a new temporary data folder.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts an appliance over a new temporary data folder, with a configuration tweak.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let mut app = start(config).await;
    app._dir = Some(dir);
    app
}

/// Starts an appliance with exactly this configuration.
pub async fn start(config: Config) -> TestApp {
    let data = config.storage.path.clone();
    // sled releases its file lock shortly after the previous appliance on this folder let go
    // of it; retry for a few seconds.
    let mut attempt = 0;
    let app = loop {
        match Application::build(config.clone()) {
            Ok(app) => break app,
            Err(e) if e.contains("could not acquire lock") && attempt < 100 => {
                attempt += 1;
                actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the appliance starts: {e}"),
        }
    };
    let api = format!("http://127.0.0.1:{}", app.api_port());
    let render = format!("http://127.0.0.1:{}", app.render_port());
    let handle = app.handle();
    let services = app.services();
    let control = darkroom::cli::control::listen(services.clone().into_inner(), app.api_port())
        .expect("the control socket opens");
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        services,
        api,
        render,
        client: Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .finish(),
        handle,
        data,
        control: Some(control),
        orphan_grace: std::time::Duration::ZERO,
        _dir: None,
    }
}

/// Every test ends by checking the store's invariants: counters equal recomputed values, no
/// dangling references, no orphans.
impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let problems = self
            .services
            .verify(self.orphan_grace)
            .expect("the store can be verified");
        assert!(problems.is_empty(), "verify found problems: {problems:#?}");
    }
}

impl TestApp {
    /// The closing check tolerates unreferenced bytes younger than `grace`.
    pub fn tolerate_orphans(&mut self, grace: std::time::Duration) {
        self.orphan_grace = grace;
    }

    /// How many source blobs the appliance holds, through its bytes interface: the data
    /// folder's files or the bucket, whichever the appliance runs on. Counted off the test's
    /// thread, which keeps driving the client's connections meanwhile.
    pub async fn stored_blobs(&self) -> usize {
        let blobs = self.services.blobs.clone();
        actix_rt::task::spawn_blocking(move || {
            (0..=255u8)
                .map(|shard| blobs.list_shard(shard).unwrap().len())
                .sum()
        })
        .await
        .unwrap()
    }

    /// Whether the bytes are in object storage (`DARKROOM_TEST_S3_*` set): tests that damage
    /// the data folder's blob files behind the appliance's back have nothing to damage then.
    pub fn bytes_in_object_storage(&self) -> bool {
        self.services
            .config
            .storage
            .object_store_url
            .starts_with("s3://")
    }

    /// Stops the appliance and returns its temporary folder so another can start on it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(control) = self.control.take() {
            control.stop();
        }
        self.handle.stop(true).await;
        // Wait until nothing but this harness holds the store, then let it go.
        for _ in 0..250 {
            if std::sync::Arc::strong_count(&self.services.store) <= 1 {
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let dir = self._dir.take();
        drop(self);
        dir
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.api, path)
        };
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, url);
        if let Some(k) = key {
            req = req.insert_header(("Api-Key", k));
        }
        for (h, v) in headers {
            req = req.insert_header((*h, *v));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .expect("the request is answered");
        let body = resp
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .expect("a body")
            .to_vec();
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body,
        }
    }

    /// GETs a render URL of organization `acme` (`path` starts after the organization).
    pub async fn render(&self, path: &str) -> Answer {
        self.send(
            "GET",
            &format!("{}/acme{path}", self.render),
            None,
            &[],
            None,
        )
        .await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.send("GET", path, Some(key), &[], None).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Answer {
        self.send("DELETE", path, Some(key), &[], None).await
    }

    /// Sends JSON without a Content-Type, as rokka.js does.
    pub async fn json(&self, method: &str, path: &str, key: &str, body: &Value) -> Answer {
        self.send(
            method,
            path,
            Some(key),
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// Creates an organization with the root key.
    pub async fn create_org(&self, name: &str) -> Value {
        let a = self
            .json(
                "PUT",
                &format!("/organizations/{name}"),
                ROOT_KEY,
                &serde_json::json!({"billing_email": "ops@example.com"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    }

    /// Creates a key with these roles on `org` and returns it.
    pub async fn create_key(&self, org: &str, roles: &[&str]) -> String {
        let a = self
            .json(
                "POST",
                &format!("/organizations/{org}/memberships"),
                ROOT_KEY,
                &serde_json::json!({"roles": roles}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text());
        a.json()["api_key"].as_str().unwrap().to_string()
    }

    /// Uploads files with extra form fields; each file is (field name, file name, bytes).
    pub async fn upload(
        &self,
        org: &str,
        key: &str,
        files: &[(&str, &str, &[u8])],
        fields: &[(&str, &str)],
    ) -> Answer {
        let (content_type, body) = multipart(files, fields);
        self.send(
            "POST",
            &format!("/sourceimages/{org}"),
            Some(key),
            &[("Content-Type", &content_type)],
            Some(body),
        )
        .await
    }

    /// Creates organization `acme`, uploads `photo` and a stack `thumb` that resizes to
    /// `width`; returns the image hash. The starting point of the invalidation tests.
    pub async fn acme_with_thumb(&self, photo: &[u8], width: u32) -> String {
        self.create_org("acme").await;
        let img = self.upload_one("acme", ROOT_KEY, "photo.jpg", photo).await;
        let a = self
            .json(
                "PUT",
                "/stacks/acme/thumb",
                ROOT_KEY,
                &serde_json::json!([{"name": "resize", "options": {"width": width}}]),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text());
        img["hash"].as_str().unwrap().to_string()
    }

    /// Creates or overwrites stack `name` of organization `acme`.
    pub async fn stack(&self, name: &str, body: Value) {
        let a = self
            .json(
                "PUT",
                &format!("/stacks/acme/{name}?overwrite=true"),
                ROOT_KEY,
                &body,
            )
            .await;
        assert!(a.status == 201 || a.status == 200, "{}", a.text());
    }

    /// Waits until the mezzanines this appliance built are stored: a render stores the one it
    /// built while it goes on, so a check of the store right after it must wait for that.
    pub async fn mezzanines_stored(&self) {
        let started = std::time::Instant::now();
        while darkroom::service::mezzanine::storing(&self.services.renders) {
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// How many renders organization `acme` has stored (a dry-run purge changes nothing).
    pub async fn stored_renders(&self) -> u64 {
        let a = self
            .send(
                "DELETE",
                "/organizations/acme/cache?dry_run=true",
                Some(ROOT_KEY),
                &[],
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["renders"].as_u64().unwrap()
    }

    /// Uploads one file as rokka.js does (`filedata`) and returns the image JSON.
    pub async fn upload_one(&self, org: &str, key: &str, name: &str, bytes: &[u8]) -> Value {
        let a = self
            .upload(org, key, &[("filedata", name, bytes)], &[])
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["items"][0].clone()
    }
}

/// Builds a multipart/form-data body.
pub fn multipart(files: &[(&str, &str, &[u8])], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "----darkroomtestboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    for (field, filename, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A JPEG of a colour gradient; `seed` changes the bytes.
pub fn jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8 ^ seed,
            (y * 255 / height.max(1)) as u8,
            seed,
        ])
    });
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

/// A PNG with transparency.
pub fn png_rgba(width: u32, height: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(width, height, |x, _| {
        Rgba([200, 10, 10, if x < width / 2 { 255 } else { 0 }])
    });
    encode(DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

/// An opaque PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 128]));
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

pub fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// SHA-1 hex of bytes, as rokka clients compute binary hashes.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(bytes))
}

/// The release-like binary as a child process over `data`, on port 0, with its log on a pipe
/// (`child.stderr`) and these extra environment variables.
pub fn start_binary(
    data: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_darkroom"));
    command
        .envs(storage_env(data))
        .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
        .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
        .env("DARKROOM__SERVER__WORKERS", "1")
        .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
        .env("DARKROOM__GC__INTERVAL_SECS", "0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("darkroom starts")
}

/// A raw `GET` over TCP; the status code (0 when there is no answer).
pub fn get_status(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A child process killed when the test ends, whether it passed or not.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The appliance as a child process on port 0 (`darkroom serve` of the built binary) over
/// `data` and its records, with `env` on top of the test defaults.
pub struct Node {
    pub child: std::process::Child,
    /// `127.0.0.1:port` of the API listener.
    pub api: String,
    /// `127.0.0.1:port` of the render listener.
    pub render: String,
}

impl Node {
    pub fn start<K, V>(data: &Path, env: impl IntoIterator<Item = (K, V)>) -> Node
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .envs(storage_env(data))
            .env("DARKROOM__SERVER__API_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__RENDER_BIND", "127.0.0.1:0")
            .env("DARKROOM__SERVER__WORKERS", "1")
            .env("DARKROOM__AUTH__ROOT_KEY", ROOT_KEY)
            .env("RUST_LOG", "info")
            .envs(env)
            .current_dir(data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("darkroom starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let (api, render) = loop {
            let line = lines
                .next()
                .expect("the appliance logs its ports before anything else")
                .expect("stderr is readable");
            if let Some(rest) = line.split(" serving the API on ").nth(1) {
                let api = rest.split(' ').next().expect("an address").to_string();
                let render = rest
                    .split(" and renders on ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .expect("a render address")
                    .to_string();
                break (api, render);
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Node { child, api, render }
    }

    /// `kill -9`: no flush, no shutdown.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        self.child.wait().expect("the child is reaped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 exchange with the root key; `None` when nothing answers.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nApi-Key: {ROOT_KEY}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&raw[..end])
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, raw[end + 4..].to_vec()))
}
