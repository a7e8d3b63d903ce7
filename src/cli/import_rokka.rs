//! `darkroom admin import-rokka`: copies one organization from a rokka-compatible API (rokka
//! itself, or another Darkroom) into this appliance.
//!
//! Both ends are spoken to over the rokka API, so the copy goes through the same checks as any
//! upload. The target is the running service, through its API with an operator key from its
//! control socket; otherwise this process opens the data folder itself and serves its API on
//! a loopback port of its own for the length of the import.
//!
//! What is copied, in order:
//! 1. the organization (created here when missing);
//! 2. every stack, with its operations, options, variables and expressions (stacks that name a
//!    basestack not yet copied are retried once the others are in);
//! 3. every source image that is not deleted: its original bytes (the binary hash checked),
//!    user and dynamic metadata, the protected and locked flags, its name and its creation
//!    time. Each image keeps its hash (`options.hash`, root key only), so that the render URLs
//!    a site already uses keep working;
//! 4. aliases: all of them when the source lists them (`GET /sourceimages/{org}/alias`, which
//!    another Darkroom answers), else the ones named with `--alias`.
//!
//! A second run copies nothing new: images already here (same hash) only have their metadata
//! and flags brought in line, stacks and aliases are rewritten only when they differ. An
//! interrupted import is resumed by running it again. It ends with a summary and `verify`.

use crate::config::Config;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use sha1::Digest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Images copied at once: enough to overlap the two hosts' latency, few enough that the
/// buffered originals stay small.
const PARALLEL: usize = 4;

/// Images asked for per listing page.
const PAGE: usize = 100;

/// Largest JSON answer read from either host.
const MAX_JSON: usize = 64 * 1024 * 1024;

/// Where to copy from, as given on the command line.
pub struct Request {
    pub api_host: String,
    pub api_key: String,
    pub organization: String,
    pub into: Option<String>,
    pub aliases: Vec<String>,
}

/// One rokka-compatible API and the key to use on it.
struct Api {
    client: awc::Client,
    base: String,
    key: String,
}

/// An answer: status and body.
struct Answer {
    status: u16,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error message of a rokka-style error body, or the body itself.
    fn message(&self) -> String {
        let v = self.json();
        let text = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            });
        format!("{}: {text}", self.status)
    }
}

impl Api {
    fn new(base: &str, key: &str) -> Api {
        // The timeout covers one answer, whole: originals are read into memory (at most the
        // upload limit of the target), so a slow transfer must not end early.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(600))
            .finish();
        Api {
            client,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    async fn send(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<(&str, bytes::Bytes)>,
        limit: usize,
    ) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let request = self
            .client
            .request(method, &url)
            .insert_header(("Api-Key", self.key.as_str()));
        let sent = match body {
            Some((content_type, bytes)) => {
                request
                    .insert_header(("Content-Type", content_type))
                    .send_body(bytes)
                    .await
            }
            None => request.send().await,
        };
        let mut resp = sent.map_err(|e| format!("{url}: {e}"))?;
        let body = resp
            .body()
            .limit(limit)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Answer {
            status: resp.status().as_u16(),
            body,
        })
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.send(awc::http::Method::GET, path, None, MAX_JSON)
            .await
    }

    async fn put_json(&self, path: &str, body: &Value) -> Result<Answer, String> {
        let bytes = bytes::Bytes::from(body.to_string());
        self.send(
            awc::http::Method::PUT,
            path,
            Some(("application/json", bytes)),
            MAX_JSON,
        )
        .await
    }

    async fn delete(&self, path: &str) -> Result<Answer, String> {
        self.send(awc::http::Method::DELETE, path, None, MAX_JSON)
            .await
    }
}

/// Counts for the progress line and the summary.
#[derive(Default)]
struct Tally {
    images_copied: AtomicU64,
    bytes_copied: AtomicU64,
    images_present: AtomicU64,
    images_updated: AtomicU64,
    stacks_copied: AtomicU64,
    stacks_unchanged: AtomicU64,
    aliases_copied: AtomicU64,
    aliases_unchanged: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }

    fn failed(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn images_done(&self) -> u64 {
        self.images_copied.load(Ordering::Relaxed)
            + self.images_present.load(Ordering::Relaxed)
            + self.images_updated.load(Ordering::Relaxed)
    }
}

/// Runs the import and prints the summary: into the running service through its API, with
/// the operator key its control socket gave (`service`: the API address and the key), or else
/// into the data folder, opened by this process.
pub fn run(
    config: &Config,
    service: Option<(String, String)>,
    request: Request,
) -> Result<(), String> {
    actix_rt::System::new().block_on(async move {
        if let Some((addr, key)) = service {
            let target = Api::new(&format!("http://{addr}"), &key);
            let summary = import(&request, &target).await?;
            println!("{summary} into the running service");
            return verify(&target).await;
        }
        // Nothing runs on the data folder: open it here, behind a loopback listener of this
        // process, with a root key that lives as long as the import.
        let mut own = config.clone();
        own.server.api_bind = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        own.server.render_bind = own.server.api_bind;
        own.auth.root_key =
            crate::service::accounts::generate_api_key().map_err(|e| e.to_string())?;
        own.gc.interval_secs = 0;
        let app = crate::app::Application::build(own.clone())?;
        let target = Api::new(
            &format!("http://127.0.0.1:{}", app.api_port()),
            &own.auth.root_key,
        );
        let handle = app.handle();
        let server = actix_rt::spawn(app.run_until_stopped());
        // The access lines of this private listener are not the operator's concern.
        let level = log::max_level();
        log::set_max_level(log::LevelFilter::Warn);
        let outcome = match import(&request, &target).await {
            Ok(summary) => {
                println!(
                    "{summary} into the data folder {}",
                    config.storage.path.display()
                );
                verify(&target).await
            }
            Err(e) => Err(e),
        };
        handle.stop(true).await;
        let stopped = server.await;
        log::set_max_level(level);
        match stopped {
            Ok(Ok(())) => outcome,
            Ok(Err(e)) => outcome.and(Err(e.to_string())),
            Err(e) => outcome.and(Err(e.to_string())),
        }
    })
}

/// `GET /admin/verify` on the target; an error lists what disagrees.
async fn verify(target: &Api) -> Result<(), String> {
    let answer = target.get("/admin/verify").await?;
    if !answer.ok() {
        return Err(format!("verify: {}", answer.message()));
    }
    let body = answer.json();
    if body.get("ok").and_then(Value::as_bool) == Some(true) {
        println!("verify: ok");
        return Ok(());
    }
    let problems = body
        .get("problems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in &problems {
        eprintln!("{}", p.as_str().unwrap_or_default());
    }
    Err(format!("verify: {} problem(s) found", problems.len()))
}

/// Copies everything; the summary line, or an error when anything failed.
async fn import(request: &Request, target: &Api) -> Result<String, String> {
    let started = Instant::now();
    let from = crate::model::ids::OrgName::parse(&request.organization)?;
    let into = crate::model::ids::OrgName::parse(request.into.as_deref().unwrap_or(from.as_str()))?;
    let source = Api::new(&request.api_host, &request.api_key);
    let tally = Tally::default();

    let org = source.get(&format!("/organizations/{from}")).await?;
    if !org.ok() {
        return Err(format!(
            "cannot read organization '{from}' at {}: {}",
            request.api_host,
            org.message()
        ));
    }
    ensure_org(target, &into, &org.json()).await?;
    copy_stacks(&source, target, &from, &into, &tally).await?;
    copy_images(&source, target, &from, &into, &tally).await?;
    copy_aliases(&source, target, &from, &into, &request.aliases, &tally).await?;

    let summary = format!(
        "import-rokka: {from} → {into}: images {} copied ({}), {} already here, {} brought up to date; stacks {} copied, {} unchanged; aliases {} copied, {} unchanged; in {:.1}s",
        tally.images_copied.load(Ordering::Relaxed),
        indicatif::HumanBytes(tally.bytes_copied.load(Ordering::Relaxed)),
        tally.images_present.load(Ordering::Relaxed),
        tally.images_updated.load(Ordering::Relaxed),
        tally.stacks_copied.load(Ordering::Relaxed),
        tally.stacks_unchanged.load(Ordering::Relaxed),
        tally.aliases_copied.load(Ordering::Relaxed),
        tally.aliases_unchanged.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    let failures = tally.failed();
    if failures.is_empty() {
        return Ok(summary);
    }
    println!("{summary}");
    for f in &failures {
        eprintln!("not copied: {f}");
    }
    Err(format!(
        "import-rokka: {} item(s) not copied; run the import again once the cause is fixed",
        failures.len()
    ))
}

async fn ensure_org(
    target: &Api,
    into: &crate::model::ids::OrgName,
    source_org: &Value,
) -> Result<(), String> {
    let here = target.get(&format!("/organizations/{into}")).await?;
    if here.ok() {
        return Ok(());
    }
    if here.status != 404 {
        return Err(format!("organization '{into}' here: {}", here.message()));
    }
    let mut body = Map::new();
    for key in ["display_name", "billing_email"] {
        if let Some(v) = source_org.get(key).filter(|v| v.is_string()) {
            body.insert(key.into(), v.clone());
        }
    }
    let created = target
        .put_json(&format!("/organizations/{into}"), &Value::Object(body))
        .await?;
    if !created.ok() {
        return Err(format!(
            "cannot create organization '{into}': {}",
            created.message()
        ));
    }
    Ok(())
}

/// Every page of a listing at `path` (which has no query yet), following its `cursor`
/// (which rokka takes back as `offset`).
async fn each_page(
    api: &Api,
    path: &str,
    mut page: impl AsyncFnMut(Vec<Value>, Option<u64>) -> Result<(), String>,
) -> Result<(), String> {
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!(
                "?limit={PAGE}&offset={}",
                percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => format!("?limit={PAGE}"),
        };
        let answer = api.get(&format!("{path}{query}")).await?;
        if !answer.ok() {
            return Err(format!("{path}: {}", answer.message()));
        }
        let body = answer.json();
        let items = body
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = body.get("total").and_then(Value::as_u64);
        let next = body
            .get("cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        let last = items.is_empty() || next.is_none() || next == cursor;
        page(items, total).await?;
        if last {
            return Ok(());
        }
        cursor = next;
    }
}

/// A stack as sent back: its four parts (and description), in the canonical form this
/// appliance gives them, so that a source and a copy compare equal when they mean the same.
fn stack_body(stack: &Value) -> Result<Value, String> {
    let def = crate::model::stack::definition_from_value(stack).map_err(|e| e.message())?;
    let mut canonical = crate::model::stack::stack_json("", "", "", &def);
    if let Value::Object(map) = &mut canonical {
        for key in ["name", "organization", "created", "link"] {
            map.remove(key);
        }
    }
    Ok(canonical)
}

async fn copy_stacks(
    source: &Api,
    target: &Api,
    from: &crate::model::ids::OrgName,
    into: &crate::model::ids::OrgName,
    tally: &Tally,
) -> Result<(), String> {
    let mut pending: Vec<(String, Value)> = Vec::new();
    each_page(source, &format!("/stacks/{from}"), async |items, _| {
        for stack in items {
            let Some(name) = stack.get("name").and_then(Value::as_str) else {
                continue;
            };
            match stack_body(&stack) {
                Ok(body) => pending.push((name.to_string(), body)),
                Err(e) => tally.fail(format!("stack '{name}': {e}")),
            }
        }
        Ok(())
    })
    .await?;
    // A stack that names a basestack is refused until that one exists: try again while any
    // pass makes progress.
    loop {
        let before = pending.len();
        let mut refused = Vec::new();
        for (name, body) in std::mem::take(&mut pending) {
            let path = format!("/stacks/{into}/{name}");
            let here = target.get(&path).await?;
            if here.ok() && stack_body(&here.json()).ok().as_ref() == Some(&body) {
                tally.stacks_unchanged.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let put = target
                .put_json(&format!("{path}?overwrite=true"), &body)
                .await?;
            if put.ok() {
                tally.stacks_copied.fetch_add(1, Ordering::Relaxed);
            } else {
                refused.push((name, body, put.message()));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        if refused.len() == before {
            for (name, _, why) in refused {
                tally.fail(format!("stack '{name}': {why}"));
            }
            return Ok(());
        }
        pending = refused.into_iter().map(|(n, b, _)| (n, b)).collect();
    }
}

async fn copy_images(
    source: &Api,
    target: &Api,
    from: &crate::model::ids::OrgName,
    into: &crate::model::ids::OrgName,
    tally: &Tally,
) -> Result<(), String> {
    let terminal = std::cell::RefCell::new(super::Terminal::default());
    let note = |done: u64, total: u64| {
        use super::Console;
        terminal
            .borrow_mut()
            .progress("images copied", done, Some(total.max(done)));
    };
    let mut total = 0;
    each_page(
        source,
        &format!("/sourceimages/{from}"),
        async |items, t| {
            if let Some(t) = t {
                total = t;
            }
            let mut work = futures_util::stream::iter(items.into_iter().map(|item| async move {
                if let Err(e) = copy_image(source, target, from, into, &item, tally).await {
                    let hash = item.get("hash").and_then(Value::as_str).unwrap_or("?");
                    tally.fail(format!("image {hash}: {e}"));
                }
            }))
            .buffer_unordered(PARALLEL);
            while work.next().await.is_some() {
                note(tally.images_done(), total);
            }
            Ok(())
        },
    )
    .await?;
    note(tally.images_done(), tally.images_done());
    drop(terminal);
    Ok(())
}

/// One image: uploaded with its hash when missing, its metadata and flags set when it differs.
async fn copy_image(
    source: &Api,
    target: &Api,
    from: &crate::model::ids::OrgName,
    into: &crate::model::ids::OrgName,
    item: &Value,
    tally: &Tally,
) -> Result<(), String> {
    if item.get("deleted").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let hash = item
        .get("hash")
        .and_then(Value::as_str)
        .ok_or("the listing item has no hash")?;
    let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    let empty = Value::Object(Map::new());
    let user_of = |v: &Value| v.get("user_metadata").cloned().unwrap_or(empty.clone());
    let path = format!("/sourceimages/{into}/{hash}");
    let here = target.get(&path).await?;
    if here.ok() {
        let mine = here.json();
        let meta_differs = user_of(&mine) != user_of(item);
        let lock_differs = flag(&mine, "locked") != flag(item, "locked");
        if !meta_differs && !lock_differs {
            tally.images_present.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if meta_differs {
            if flag(&mine, "locked") {
                set_locked(target, &path, false).await?;
            }
            let changed = match user_of(item) {
                Value::Object(m) if m.is_empty() => {
                    target.delete(&format!("{path}/meta/user")).await?
                }
                user => target.put_json(&format!("{path}/meta/user"), &user).await?,
            };
            if !changed.ok() && changed.status != 404 {
                return Err(format!("user metadata: {}", changed.message()));
            }
        }
        if meta_differs || lock_differs {
            set_locked(target, &path, flag(item, "locked")).await?;
        }
        tally.images_updated.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if here.status != 404 {
        return Err(here.message());
    }
    let original = source
        .send(
            awc::http::Method::GET,
            &format!("/sourceimages/{from}/{hash}/download"),
            None,
            usize::MAX,
        )
        .await?;
    if !original.ok() {
        return Err(format!("download: {}", original.message()));
    }
    if let Some(expected) = item.get("binary_hash").and_then(Value::as_str) {
        let got = hex::encode(sha1::Sha1::digest(&original.body));
        if got != expected {
            return Err(format!(
                "the download's binary hash is {got}, the listing says {expected}"
            ));
        }
    }
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(hash);
    let mut options = json!({ "protected": flag(item, "protected"), "hash": hash });
    if let (Some(created), Value::Object(o)) = (item.get("created"), &mut options) {
        o.insert("created".into(), created.clone());
    }
    let mut fields = vec![("options[0]", options.to_string())];
    if let Some(user) = item.get("user_metadata").filter(|u| u.is_object()) {
        fields.push(("meta_user[0]", user.to_string()));
    }
    if let Some(dynamic) = item.get("dynamic_metadata").filter(|d| d.is_object()) {
        fields.push(("meta_dynamic[0]", dynamic.to_string()));
    }
    let size = original.body.len() as u64;
    let (content_type, body) = multipart(name, &original.body, &fields)?;
    let uploaded = target
        .send(
            awc::http::Method::POST,
            &format!("/sourceimages/{into}"),
            Some((&content_type, body)),
            MAX_JSON,
        )
        .await?;
    if !uploaded.ok() {
        return Err(format!("upload: {}", uploaded.message()));
    }
    let stored = uploaded.json();
    let stored_hash = stored.pointer("/items/0/hash").and_then(Value::as_str);
    if stored_hash != Some(hash) {
        return Err(format!(
            "stored under {} instead of its hash",
            stored_hash.unwrap_or("nothing")
        ));
    }
    if flag(item, "locked") {
        set_locked(target, &path, true).await?;
    }
    tally.images_copied.fetch_add(1, Ordering::Relaxed);
    tally.bytes_copied.fetch_add(size, Ordering::Relaxed);
    Ok(())
}

async fn set_locked(target: &Api, image: &str, locked: bool) -> Result<(), String> {
    let answer = target
        .put_json(&format!("{image}/options/locked"), &Value::Bool(locked))
        .await?;
    if answer.ok() {
        Ok(())
    } else {
        Err(format!("locked flag: {}", answer.message()))
    }
}

/// A `multipart/form-data` body with the file first (as `filedata`) and then the text
/// fields; the content type with its boundary.
fn multipart(
    filename: &str,
    file: &[u8],
    fields: &[(&str, String)],
) -> Result<(String, bytes::Bytes), String> {
    let boundary = format!(
        "darkroom-import-{}",
        crate::service::accounts::generate_id().map_err(|e| e.to_string())?
    );
    // Quotes and line breaks cannot appear in a quoted header parameter.
    let filename: String = filename
        .chars()
        .map(|c| match c {
            '"' | '\r' | '\n' | '\\' => '_',
            c => c,
        })
        .collect();
    let mut body = Vec::with_capacity(file.len() + 1024);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((
        format!("multipart/form-data; boundary={boundary}"),
        bytes::Bytes::from(body),
    ))
}

async fn copy_aliases(
    source: &Api,
    target: &Api,
    from: &crate::model::ids::OrgName,
    into: &crate::model::ids::OrgName,
    named: &[String],
    tally: &Tally,
) -> Result<(), String> {
    let listed = source.get(&format!("/sourceimages/{from}/alias")).await?;
    let mut aliases: Vec<(String, String)> = Vec::new();
    if listed.ok() {
        for item in listed
            .json()
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let (Some(a), Some(h)) = (
                item.get("alias").and_then(Value::as_str),
                item.get("hash").and_then(Value::as_str),
            ) {
                aliases.push((a.to_string(), h.to_string()));
            }
        }
    }
    for name in named {
        if aliases.iter().any(|(a, _)| a == name) {
            continue;
        }
        let one = source
            .get(&format!("/sourceimages/{from}/alias/{name}"))
            .await?;
        match one.json().get("hash").and_then(Value::as_str) {
            Some(h) if one.ok() => aliases.push((name.clone(), h.to_string())),
            _ => tally.fail(format!("alias '{name}': {}", one.message())),
        }
    }
    for (alias, hash) in aliases {
        let path = format!("/sourceimages/{into}/alias/{alias}");
        let here = target.get(&path).await?;
        if here.ok() && here.json().get("hash").and_then(Value::as_str) == Some(hash.as_str()) {
            tally.aliases_unchanged.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let put = target
            .put_json(&format!("{path}?overwrite=true"), &json!({ "hash": hash }))
            .await?;
        if put.ok() {
            tally.aliases_copied.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.fail(format!("alias '{alias}': {}", put.message()));
        }
    }
    Ok(())
}
