//! Prometheus metrics (`GET /metrics` on the API listener, text format 0.0.4). Counters live in
//! memory since start; gauges (queue, stored renders, edge queue, source bytes) are read from
//! the pool and the store when scraped.

use crate::service::Services;
use crate::storage::OrgUsage;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the render latency buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a render request ended, for the latency histogram (the discriminant is its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit = 0,
    Miss = 1,
    Joined = 2,
    Error = 3,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Joined, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Joined => "joined",
            Outcome::Error => "error",
        }
    }
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Requests by route pattern as actix writes it (`{name}` segments).
type RouteCounts = HashMap<Box<str>, u64>;

/// Counters gathered while serving.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (listener, status) → requests by route; keyed so that counting an existing series
    /// allocates nothing.
    requests: Mutex<HashMap<(&'static str, u16), RouteCounts>>,
    render_latency: [Histogram; 4],
    pub gc_runs: AtomicU64,
    pub gc_bytes_freed: AtomicU64,
    pub gc_renders_removed: AtomicU64,
    pub renders_evicted: AtomicU64,
    pub render_bytes_evicted: AtomicU64,
}

impl Metrics {
    /// Counts one answered request. `route` is the matched pattern, never the raw path (which
    /// would make a series per image).
    pub fn request(&self, listener: &'static str, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            let routes = map.entry((listener, status)).or_default();
            match routes.get_mut(route) {
                Some(n) => *n += 1,
                None => {
                    routes.insert(route.into(), 1);
                }
            }
        }
    }

    /// Records how long a render request took.
    pub fn render_took(&self, outcome: Outcome, d: Duration) {
        if let Some(h) = self.render_latency.get(outcome as usize) {
            h.observe(d);
        }
    }
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A gauge with one series per organization.
fn per_org(
    out: &mut String,
    name: &str,
    help: &str,
    usage: &[(String, OrgUsage)],
    value: impl Fn(&OrgUsage) -> u64,
) {
    family(out, name, "gauge", help);
    for (org, u) in usage {
        let _ = writeln!(
            out,
            "{name}{{organization=\"{}\"}} {}",
            label(org),
            value(u)
        );
    }
}

/// The appliance's state at a glance, as JSON for the dashboard's status panel: the same
/// figures as the exposition below (which a browser page cannot read without the metrics
/// token), plus readiness, version and codecs.
pub fn status(svc: &Services) -> crate::error::Result<serde_json::Value> {
    let ready = svc.ready();
    let usage = svc.store.usage_by_org()?;
    let mut lines = crate::cli::long_version()
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into_iter();
    let version = lines.next().unwrap_or_default();
    let codecs: Vec<String> = lines.collect();
    Ok(serde_json::json!({
        "ready": ready.is_ok(),
        "ready_message": match &ready {
            Ok(()) => "ready".to_string(),
            Err(e) if e.is_no_space() => e.to_string(),
            Err(_) => "the store is not writable".to_string(),
        },
        "version": version,
        "codecs": codecs,
        // Where the render listener is bound; the dashboard builds render URLs from its port.
        "render_listener": svc.config.server.render_bind.to_string(),
        "render": {
            "threads": svc.config.render_threads(),
            "queue_capacity": svc.config.render.queue,
            "queued": svc.pool.queued(),
            "in_flight": svc.pool.in_flight(),
            "rejected": svc.pool.rejected(),
            "hits": svc.renders.hits.load(Ordering::Relaxed),
            "rendered": svc.renders.rendered.load(Ordering::Relaxed),
            "mezzanine": svc.config.render.mezzanine,
            "mezzanine_decodes": svc.renders.mezzanine_decodes.load(Ordering::Relaxed),
            "mezzanine_reads": svc.renders.mezzanine_reads.load(Ordering::Relaxed),
        },
        "render_cache": {
            "renders": usage.iter().map(|(_, u)| u.renders).sum::<u64>(),
            "bytes": usage.iter().map(|(_, u)| u.render_bytes).sum::<u64>(),
            "max_bytes": svc.config.render_cache.max_bytes,
        },
        "edge": {
            "enabled": svc.store.edge_enabled(),
            "pending": svc.store.edge_pending(),
            "sent": svc.edge.sent.load(Ordering::Relaxed),
            "retries": svc.edge.retried.load(Ordering::Relaxed),
            "failed": svc.edge.failed.load(Ordering::Relaxed),
        },
    }))
}

/// The whole exposition.
pub fn render(svc: &Services) -> crate::error::Result<String> {
    let m = &svc.metrics;
    let mut out = String::with_capacity(8 * 1024);

    family(
        &mut out,
        "darkroom_http_requests_total",
        "counter",
        "HTTP requests answered, by listener, route pattern and status.",
    );
    // Patterns are written with `:name` for `{name}`, as Prometheus users expect.
    let mut rows: Vec<((&str, String, u16), u64)> = match m.requests.lock() {
        Ok(map) => map
            .iter()
            .flat_map(|(&(listener, status), routes)| {
                routes.iter().map(move |(route, n)| {
                    let route = route.replace('{', ":").replace('}', "");
                    ((listener, route, status), *n)
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    rows.sort();
    for ((listener, route, status), n) in rows {
        let _ = writeln!(
            out,
            "darkroom_http_requests_total{{listener=\"{listener}\",route=\"{}\",status=\"{status}\"}} {n}",
            label(&route)
        );
    }

    family(
        &mut out,
        "darkroom_render_duration_seconds",
        "histogram",
        "Time to answer a render URL, by how it was served (hit, miss, joined, error).",
    );
    for (outcome, h) in Outcome::ALL.iter().zip(&m.render_latency) {
        let served = outcome.label();
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "darkroom_render_duration_seconds_bucket{{served=\"{served}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += h
            .counts
            .get(BUCKETS.len())
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "darkroom_render_duration_seconds_bucket{{served=\"{served}\",le=\"+Inf\"}} {cumulative}"
        );
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "darkroom_render_duration_seconds_sum{{served=\"{served}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "darkroom_render_duration_seconds_count{{served=\"{served}\"}} {cumulative}"
        );
    }

    let pool = &svc.pool;
    single(
        &mut out,
        "darkroom_render_queue_depth",
        "gauge",
        "CPU jobs (renders, upload checks) waiting for a thread.",
        pool.queued() as u64,
    );
    single(
        &mut out,
        "darkroom_render_jobs_in_flight",
        "gauge",
        "CPU jobs admitted and not finished.",
        pool.in_flight() as u64,
    );
    single(
        &mut out,
        "darkroom_render_rejected_total",
        "counter",
        "CPU jobs refused with 503 because the pool and its queue were full.",
        pool.rejected(),
    );
    let state = &svc.renders;
    single(
        &mut out,
        "darkroom_renders_cancelled_total",
        "counter",
        "Renders stopped before they finished: past their timeout, or nobody waited any more.",
        state.cancelled.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_render_cache_hits_total",
        "counter",
        "Render requests answered from the render store.",
        state.hits.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_render_cache_misses_total",
        "counter",
        "Renders computed (misses that ran the pipeline).",
        state.rendered.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_mezzanine_decodes_total",
        "counter",
        "Sources decoded at reduced size to build a mezzanine shared by the renders of an image.",
        state.mezzanine_decodes.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_mezzanine_reads_total",
        "counter",
        "Mezzanines read back from the render store instead of decoding the source again.",
        state.mezzanine_reads.load(Ordering::Relaxed),
    );

    let usage = svc.store.usage_by_org()?;
    single(
        &mut out,
        "darkroom_renders_stored",
        "gauge",
        "Renders in the render store.",
        usage.iter().map(|(_, u)| u.renders).sum(),
    );
    single(
        &mut out,
        "darkroom_render_bytes_stored",
        "gauge",
        "Bytes of the renders in the render store (cache: never billed).",
        usage.iter().map(|(_, u)| u.render_bytes).sum(),
    );
    single(
        &mut out,
        "darkroom_render_cache_max_bytes",
        "gauge",
        "Byte budget of the render store (render_cache.max_bytes; 0 = unlimited).",
        svc.config.render_cache.max_bytes,
    );
    single(
        &mut out,
        "darkroom_renders_evicted_total",
        "counter",
        "Renders evicted to keep the render store within its budget.",
        m.renders_evicted.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_render_bytes_evicted_total",
        "counter",
        "Bytes of the renders evicted for the budget.",
        m.render_bytes_evicted.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_gc_runs_total",
        "counter",
        "Garbage-collection passes run by the background loop.",
        m.gc_runs.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_gc_bytes_freed_total",
        "counter",
        "Bytes freed by garbage collection (renders and source files).",
        m.gc_bytes_freed.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_gc_renders_removed_total",
        "counter",
        "Orphan renders removed by garbage collection.",
        m.gc_renders_removed.load(Ordering::Relaxed),
    );

    single(
        &mut out,
        "darkroom_edge_pending",
        "gauge",
        "Edge refreshes or purges waiting in the queue (including retries).",
        svc.store.edge_pending() as u64,
    );
    single(
        &mut out,
        "darkroom_edge_sent_total",
        "counter",
        "Edge refreshes or purges answered by the edge.",
        svc.edge.sent.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_edge_retries_total",
        "counter",
        "Failed edge requests queued again.",
        svc.edge.retried.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "darkroom_edge_failed_total",
        "counter",
        "Edge requests given up after edge.max_attempts.",
        svc.edge.failed.load(Ordering::Relaxed),
    );

    per_org(
        &mut out,
        "darkroom_source_bytes",
        "Billable storage of an organization: each distinct source file of its live images once.",
        &usage,
        |u| u.space_in_bytes,
    );
    per_org(
        &mut out,
        "darkroom_source_images",
        "Live source images of an organization.",
        &usage,
        |u| u.number_of_files,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1, "0.3 ms ≤ 0.5 ms");
        assert_eq!(counts[3], 1, "3 ms ≤ 5 ms");
        assert_eq!(counts[BUCKETS.len()], 1, "60 s is above every bound");
        assert_eq!(h.sum_micros.load(Ordering::Relaxed), 60_003_300);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
