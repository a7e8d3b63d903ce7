//! Handlers for `/admin`: operator tasks that must run inside the service because sled lets
//! one process open the data folder. `GET /admin/export` streams a backup
//! (`storage::backup`) written by a blocking task through a bounded channel, so neither the
//! backup nor a blob ever sits whole in memory and a slow client slows the export down.

use super::{principal, query_pairs, query_value};
use crate::error::{Error, Result};
use crate::service::accounts::Principal;
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};
use std::io;
use tokio::sync::mpsc;

type Svc = web::Data<Services>;

/// Bytes sent to the client per chunk.
const CHUNK: usize = 256 * 1024;

/// A `Write` that hands full chunks to the response stream; fails once the client is gone,
/// which stops the export.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<web::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `GET /admin/export[?renders=true]` (root key only): a backup of everything, streamed. A
/// failure midway ends the connection before the trailer, so a client never mistakes a
/// partial backup for a whole one.
pub async fn export(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    if principal(&req, &svc)? != Principal::Root {
        return Err(Error::Forbidden(
            "only the root key can export backups".into(),
        ));
    }
    let renders = query_value(&query_pairs(&req), "renders").is_some_and(|v| v == "true");
    // Bytes served so far belong in the day figures the backup carries.
    svc.traffic.flush(&*svc.store)?;
    let (tx, rx) = mpsc::channel::<io::Result<web::Bytes>>(8);
    let services = svc.clone().into_inner();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match services.export(&mut out, renders) {
            Ok(done) => log::info!(
                "export: {} ({} images left out: removed meanwhile) in {:.2}s",
                done.counts,
                done.skipped_images,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                log::warn!("export failed: {e}");
                let _ = tx.blocking_send(Err(io::Error::other("the export failed")));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let day = crate::model::time::day_of(crate::model::time::now_unix());
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/octet-stream");
    if let Some(v) = super::attachment(&format!("darkroom-{day}.backup")) {
        resp.insert_header((actix_web::http::header::CONTENT_DISPOSITION, v));
    }
    Ok(resp.streaming(body))
}

/// `GET /admin/verify` (root key only): recomputes every counter and reference, as
/// `darkroom admin verify` does on a stopped folder. `{"ok": bool, "problems": [...]}`.
pub async fn verify(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    if principal(&req, &svc)? != Principal::Root {
        return Err(Error::Forbidden("only the root key can run verify".into()));
    }
    let services = svc.clone().into_inner();
    let problems = tokio::task::spawn_blocking(move || services.verify(crate::gc::BLOB_GRACE))
        .await
        .map_err(Error::internal)??;
    Ok(super::json_response(
        200,
        &serde_json::json!({ "ok": problems.is_empty(), "problems": problems }),
    ))
}
