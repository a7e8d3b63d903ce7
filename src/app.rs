//! Start-up: open the store, build the CPU pool, bind the API and render listeners (port 0 in
//! tests) and run both servers until they stop.

use crate::config::{Config, LogFormat};
use crate::pool::CpuPool;
use crate::service::Services;
use actix_web::dev::{Server, Service as _};
use actix_web::{middleware, web, App, HttpServer};
use std::net::TcpListener;
use std::time::Duration;

/// How often access times are written and the render store budget enforced.
const CACHE_MAINTENANCE: Duration = Duration::from_secs(5);

/// How often the free space of the data folder is looked at.
const SPACE_WATCH: Duration = Duration::from_secs(1);

/// How long a stop waits for mezzanines still being stored before it flushes the store.
const MEZZANINE_WAIT: Duration = Duration::from_secs(5);

/// One line per request: listener, status, bytes, time, method and path, as text or as a
/// JSON object (`log.format`, see [`crate::logging`]). The query string is left out on
/// purpose: it carries URL signatures, which must never reach a log.
///
/// Off when the logger would drop the line (a level above `info` for its target): the
/// middleware still times and formats every request, a few percent of a warm hit.
fn access_log(
    listener: &str,
    format: LogFormat,
    exclude: &[&str],
) -> middleware::Condition<middleware::Logger> {
    let enabled = log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info);
    let logger = match format {
        LogFormat::Text => {
            middleware::Logger::new(&format!("{listener} %s %b %Dms %{{method}}xi %U"))
        }
        LogFormat::Json => middleware::Logger::new(&format!(
            r#"{{"listener":"{listener}","status":%s,"bytes":%b,"ms":%D,"method":%{{method}}xi,"path":%{{path}}xi}}"#
        )),
    };
    let quoted = format == LogFormat::Json;
    let logger = logger
        .custom_request_replace("method", move |req| {
            text_field(req.method().as_str(), quoted)
        })
        .custom_request_replace("path", move |req| text_field(req.path(), quoted));
    let logger = exclude.iter().fold(logger, |l, path| l.exclude(*path));
    middleware::Condition::new(enabled, logger)
}

/// A request field for the access line: as it is, or as a JSON string.
fn text_field(value: &str, quoted: bool) -> String {
    if quoted {
        serde_json::Value::from(value).to_string()
    } else {
        value.to_string()
    }
}

/// Stops a running appliance.
#[derive(Clone)]
pub struct AppHandle {
    api: actix_web::dev::ServerHandle,
    render: actix_web::dev::ServerHandle,
}

impl AppHandle {
    /// Stops accepting connections and, when `graceful`, waits for in-flight requests.
    pub async fn stop(&self, graceful: bool) {
        futures_util::future::join(self.api.stop(graceful), self.render.stop(graceful)).await;
    }
}

/// A built, bound, not yet running appliance.
pub struct Application {
    api_port: u16,
    render_port: u16,
    api: Server,
    render: Server,
    services: web::Data<Services>,
}

impl Application {
    /// Opens the data folder and binds both listeners.
    pub fn build(config: Config) -> Result<Application, String> {
        let storage = config
            .open_storage(config.min_free_bytes())
            .map_err(|e| e.to_string())?;
        let store = &storage.records;
        if storage.bytes.space().is_low() {
            log::warn!("started below storage.min_free_mb: read-only until there is room");
        }
        store.enable_edge(!config.edge.url.is_empty());
        if config.edge.url.is_empty() {
            match store.clear_edge_queue() {
                Ok(0) => {}
                Ok(n) => log::warn!("edge.url is not set: dropped {n} queued edge requests"),
                Err(e) => return Err(e.to_string()),
            }
        }
        let pool = CpuPool::new(
            config.render_threads(),
            config.render.queue,
            Duration::from_millis(config.render.timeout_ms),
        )?;
        let services = web::Data::new(Services::new(config.clone(), storage, pool));
        // Renders made by an earlier renderer would answer other bytes than a render now.
        match crate::service::renders::retire_older_renders(&*services.store) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "removed {n} renders made by an earlier renderer; they are made again on request and their URLs refreshed at the edge"
            ),
            Err(e) => log::warn!("could not retire renders of an earlier renderer: {e}"),
        }
        let workers = if config.server.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.server.workers
        };
        let bind =
            |addr| TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"));
        let api_listener = bind(config.server.api_bind)?;
        let render_listener = bind(config.server.render_bind)?;
        let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
        let (api_port, render_port) = (port(&api_listener)?, port(&render_listener)?);
        let timeout = config.server.shutdown_timeout_secs;

        let body_limits = crate::http::body::BodyLimits {
            timeout: Duration::from_secs(config.server.body_timeout_secs),
            min_rate: config.server.min_body_rate_bytes_per_sec,
            max_bytes: config
                .limits
                .max_upload_bytes
                .saturating_add(crate::http::images::FORM_OVERHEAD),
        };
        let data = services.clone();
        let api = HttpServer::new(move || {
            let metrics = data.metrics.clone();
            App::new()
                // Innermost: every request body is held to the timeout and minimum rate.
                .wrap_fn(move |mut req, srv| {
                    crate::http::body::guard_request(&mut req, body_limits);
                    srv.call(req)
                })
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let answer = srv.call(req);
                    async move {
                        let res = answer.await?;
                        let route = res.request().match_pattern();
                        metrics.request(route, res.status().as_u16());
                        Ok(res)
                    }
                })
                .wrap(access_log("api", data.config.log.format, &["/healthz"]))
                .app_data(data.clone())
                .configure(crate::http::api::routes)
        })
        .on_connect(crate::http::render::on_connect)
        .workers(workers)
        .shutdown_timeout(timeout)
        // Signals are handled once for both servers (see `run_until_stopped`): actix's own
        // handler would stop the whole runtime as soon as the idle server had stopped,
        // cutting off requests the other one was still finishing.
        .disable_signals()
        .listen(api_listener)
        .map_err(|e| e.to_string())?
        .run();

        let data = services.clone();
        let render = HttpServer::new(move || {
            let metrics = data.metrics.clone();
            App::new()
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let answer = srv.call(req);
                    async move {
                        let res = answer.await?;
                        metrics.render_request(res.status().as_u16());
                        Ok(res)
                    }
                })
                .wrap(access_log("render", data.config.log.format, &[]))
                .app_data(data.clone())
                .configure(crate::http::render::routes)
        })
        .on_connect(crate::http::render::on_connect)
        .workers(workers)
        .shutdown_timeout(timeout)
        // Signals are handled once for both servers (see `run_until_stopped`): actix's own
        // handler would stop the whole runtime as soon as the idle server had stopped,
        // cutting off requests the other one was still finishing.
        .disable_signals()
        .listen(render_listener)
        .map_err(|e| e.to_string())?
        .run();

        Ok(Application {
            api_port,
            render_port,
            api,
            render,
            services,
        })
    }

    /// The bound port of the API listener.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The bound port of the render listener.
    pub fn render_port(&self) -> u16 {
        self.render_port
    }

    /// A handle that stops both servers (used by tests and the shutdown path).
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            api: self.api.handle(),
            render: self.render.handle(),
        }
    }

    /// The shared services (store, pool, render state), for in-process checks.
    pub fn services(&self) -> web::Data<Services> {
        self.services.clone()
    }

    /// Runs both servers until both stop (SIGTERM or SIGINT), then flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let config = &self.services.config;
        let gc = (config.gc.interval_secs > 0).then(|| {
            let services = self.services.clone();
            let settings = crate::gc::GcSettings::from_config(config);
            crate::jobs::every(
                "gc",
                Duration::from_secs(config.gc.interval_secs),
                move || {
                    crate::gc::pass(
                        &*services.store,
                        &*services.blobs,
                        &settings,
                        &services.metrics,
                    )
                },
            )
        });
        let edge = (!config.edge.url.is_empty()).then(|| {
            crate::jobs::edge::spawn(
                self.services.store.clone(),
                config.edge.clone(),
                self.services.edge.clone(),
            )
        });
        // With a render store budget, access times are written and renders evicted every few
        // seconds, off the request path.
        let cache = (config.render_cache.max_bytes > 0).then(|| {
            let services = self.services.clone();
            crate::jobs::every("render store", CACHE_MAINTENANCE, move || {
                match crate::service::renders::maintain_cache(&services) {
                    Ok(p) if p.entries() > 0 => {
                        let m = &services.metrics;
                        m.renders_evicted.inc_by(p.renders);
                        m.render_bytes_evicted.inc_by(p.bytes);
                        m.mezzanines_evicted.inc_by(p.mezzanines);
                        m.mezzanine_bytes_evicted.inc_by(p.mezzanine_bytes);
                        log::info!(
                            "render store budget: evicted {} renders ({} bytes) and {} mezzanines ({} bytes)",
                            p.renders,
                            p.bytes,
                            p.mezzanines,
                            p.mezzanine_bytes
                        )
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("render store maintenance failed: {e}"),
                }
            })
        });
        let watchdog = crate::jobs::systemd::watchdog(self.services.clone().into_inner());
        // The free space is looked at every second, so writes stop before the disk fills and
        // resume as soon as there is room again.
        let space = (config.storage.min_free_mb > 0).then(|| {
            let blobs = self.services.blobs.clone();
            crate::jobs::every("free space", SPACE_WATCH, move || {
                if blobs.space().refresh() {
                    // Another program may go on filling the disk: the reserve gives the
                    // database room for the small writes still under way.
                    if let Err(e) = blobs.space().release_reserve_if_full() {
                        log::warn!("the reserve file was not removed: {e}");
                    }
                } else {
                    // Put the reserve file back once there is room.
                    blobs.space().keep_reserve();
                }
            })
        });
        // The records' own upkeep (the embedded store packs settled listing entries).
        let services = self.services.clone();
        let tidy = crate::jobs::every("records upkeep", Duration::from_secs(5), move || {
            if services.blobs.space().is_low() {
                return;
            }
            match services.store.tidy() {
                Ok(0) => {}
                Ok(n) => log::debug!("records upkeep: {n} listing entries packed"),
                Err(e) => log::warn!("records upkeep failed: {e}"),
            }
        });
        // Freed memory goes back to the system (glibc keeps it otherwise).
        let memory = crate::jobs::every(
            "memory",
            crate::jobs::memory::INTERVAL,
            crate::jobs::memory::give_back,
        );
        // Traffic counters are written every few seconds, not once per request; below the
        // headroom they wait in memory.
        let services = self.services.clone();
        let traffic = crate::jobs::every("traffic", Duration::from_secs(10), move || {
            if services.blobs.space().is_low() {
                return;
            }
            if let Err(e) = services.traffic.flush(&*services.store) {
                log::warn!("traffic counters were not written: {e}");
            }
        });
        let handle = self.handle();
        let timeout = config.server.shutdown_timeout_secs;
        let signals = actix_rt::spawn(async move {
            let name = shutdown_signal().await;
            crate::jobs::systemd::stopping("finishing requests in flight");
            log::info!(
                "{name} received: no new connections; finishing requests in flight (up to {timeout}s)"
            );
            handle.stop(true).await;
        });
        let (a, r) = futures_util::future::join(self.api, self.render).await;
        signals.abort();
        log::info!("stopped serving; flushing the store");
        traffic.abort();
        let _ = traffic.await;
        tidy.abort();
        let _ = tidy.await;
        // Wait for the background loops to be gone so that their handles on the store are
        // released. Queued edge requests stay in the store for the next start.
        for task in [gc, edge, cache, space, watchdog, Some(memory)]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = self.services.traffic.flush(&*self.services.store) {
            log::warn!("traffic counters were not written: {e}");
        }
        // Mezzanines still being stored are cache: wait for them a little, not for ever.
        let waited = std::time::Instant::now();
        while crate::service::mezzanine::storing(&self.services.renders)
            && waited.elapsed() < MEZZANINE_WAIT
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = crate::service::renders::maintain_cache(&self.services) {
            log::warn!("render access times were not written: {e}");
        }
        let flushed = self.services.store.flush().await;
        a?;
        r?;
        flushed.map_err(std::io::Error::other)
    }
}

/// Waits for SIGTERM (systemd's stop) or SIGINT (Ctrl-C) and names it. Without signal support
/// it waits forever: the servers are then stopped through their handle only.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot listen for SIGTERM/SIGINT: {e}");
            std::future::pending().await
        }
    }
}
