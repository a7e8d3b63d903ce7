//! Prometheus metrics (`GET /metrics` on the API listener, text format 0.0.4), written by
//! `prometheus-client`. Counters live in memory since start; gauges (queue, stored renders,
//! edge queue, source bytes) are read from the pool and the store when scraped, into a
//! registry built for that scrape.
//!
//! The render path takes no lock: its request counters are reached through one slot per
//! status, filled once, and its latency histogram is a row of atomics (the library's own
//! histogram locks on every observation); the library writes both out. An API request finds
//! its counter under the family's read lock.

use crate::service::Services;
use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

/// A latency histogram with fixed buckets, observed with atomics only.
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

/// The render latency histograms, one series per [`Outcome`] (label `served`).
#[derive(Debug, Default, Clone)]
struct RenderLatency(std::sync::Arc<[Histogram; 4]>);

impl EncodeMetric for RenderLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (outcome, h) in Outcome::ALL.iter().zip(self.0.iter()) {
            let counts = h.counts.iter().map(|c| c.load(Ordering::Relaxed));
            let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
            let count = buckets.iter().map(|(_, n)| n).sum();
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            encoder
                .encode_family(&[("served", outcome.label())])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A route pattern as actix writes it (`{name}` segments), exposed with `:name` as Prometheus
/// users expect. Never the raw path, which would make a series per image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Route(Cow<'static, str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0.replace('{', ":").replace('}', ""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OrgLabels {
    organization: String,
}

/// Statuses a response can carry (`http::StatusCode`: 100 to 999).
const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// Counters gathered while serving.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    /// The render listener's counters of `requests`, by status, so that counting a render
    /// takes no lock once its status has been seen.
    render_requests: Box<[OnceLock<Counter>]>,
    render_latency: RenderLatency,
    pub gc_runs: Counter,
    pub gc_bytes_freed: Counter,
    pub gc_renders_removed: Counter,
    pub renders_evicted: Counter,
    pub render_bytes_evicted: Counter,
    pub mezzanines_evicted: Counter,
    pub mezzanine_bytes_evicted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            render_requests: STATUSES.map(|_| OnceLock::new()).collect(),
            render_latency: RenderLatency::default(),
            gc_runs: Counter::default(),
            gc_bytes_freed: Counter::default(),
            gc_renders_removed: Counter::default(),
            renders_evicted: Counter::default(),
            render_bytes_evicted: Counter::default(),
            mezzanines_evicted: Counter::default(),
            mezzanine_bytes_evicted: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request on the API listener. `route` is the matched pattern.
    pub fn request(&self, route: Option<String>, status: u16) {
        let route = Route(route.map_or(Cow::Borrowed("unmatched"), Cow::Owned));
        self.requests
            .get_or_create(&RequestLabels {
                listener: "api",
                route,
                status,
            })
            .inc();
    }

    /// Counts one answered request on the render listener.
    pub fn render_request(&self, status: u16) {
        let labels = || RequestLabels {
            listener: "render",
            route: Route(Cow::Borrowed("render")),
            status,
        };
        let slot = status
            .checked_sub(*STATUSES.start())
            .and_then(|i| self.render_requests.get(usize::from(i)));
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create_owned(&labels()))
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }

    /// Records how long a render request took.
    pub fn render_took(&self, outcome: Outcome, d: Duration) {
        if let Some(h) = self.render_latency.0.get(outcome as usize) {
            h.observe(d);
        }
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
            "mezzanines": usage.iter().map(|(_, u)| u.mezzanines).sum::<u64>(),
            "mezzanine_bytes": usage.iter().map(|(_, u)| u.mezzanine_bytes).sum::<u64>(),
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

/// Registers a family under `name` (without `_total`: the encoder adds it to counters).
/// `help` is written as given; the registry adds the closing period.
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

/// The whole exposition.
pub fn render(svc: &Services) -> crate::error::Result<String> {
    let m = &svc.metrics;
    let pool = &svc.pool;
    let state = &svc.renders;
    let usage = svc.store.usage_by_org()?;
    let counter = |a: &AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
    let gauge = |v: u64| ConstGauge::new(v);
    let per_org = |value: fn(&crate::storage::OrgUsage) -> u64| {
        let family = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        for (org, u) in &usage {
            family
                .get_or_create(&OrgLabels {
                    organization: org.clone(),
                })
                .set(value(u));
        }
        family
    };

    let mut r = Registry::default();
    register(
        &mut r,
        "darkroom_http_requests",
        "HTTP requests answered, by listener, route pattern and status.",
        m.requests.clone(),
    );
    register(
        &mut r,
        "darkroom_render_duration_seconds",
        "Time to answer a render URL, by how it was served (hit, miss, joined, error).",
        m.render_latency.clone(),
    );
    register(
        &mut r,
        "darkroom_render_queue_depth",
        "CPU jobs (renders, upload checks) waiting for a thread.",
        gauge(pool.queued() as u64),
    );
    register(
        &mut r,
        "darkroom_render_jobs_in_flight",
        "CPU jobs admitted and not finished.",
        gauge(pool.in_flight() as u64),
    );
    register(
        &mut r,
        "darkroom_render_rejected",
        "CPU jobs refused with 503 because the pool and its queue were full.",
        ConstCounter::new(pool.rejected()),
    );
    register(
        &mut r,
        "darkroom_renders_cancelled",
        "Renders stopped before they finished: past their timeout, or nobody waited any more.",
        counter(&state.cancelled),
    );
    register(
        &mut r,
        "darkroom_render_cache_hits",
        "Render requests answered from the render store.",
        counter(&state.hits),
    );
    register(
        &mut r,
        "darkroom_render_cache_misses",
        "Renders computed (misses that ran the pipeline).",
        counter(&state.rendered),
    );
    register(
        &mut r,
        "darkroom_mezzanine_decodes",
        "Sources decoded at reduced size to build a mezzanine shared by the renders of an image.",
        counter(&state.mezzanine_decodes),
    );
    register(
        &mut r,
        "darkroom_mezzanine_reads",
        "Renders that started from a mezzanine (stored, or kept in memory) instead of decoding the source again.",
        counter(&state.mezzanine_reads),
    );
    register(
        &mut r,
        "darkroom_renders_stored",
        "Renders in the render store.",
        gauge(usage.iter().map(|(_, u)| u.renders).sum()),
    );
    register(
        &mut r,
        "darkroom_render_bytes_stored",
        "Bytes of the renders in the render store (cache: never billed).",
        gauge(usage.iter().map(|(_, u)| u.render_bytes).sum()),
    );
    register(
        &mut r,
        "darkroom_mezzanines_stored",
        "Mezzanines (decoded sources shared by renders) in the render store; not renders.",
        gauge(usage.iter().map(|(_, u)| u.mezzanines).sum()),
    );
    register(
        &mut r,
        "darkroom_mezzanine_bytes_stored",
        "Bytes of the mezzanines in the render store (cache: never billed, in the budget).",
        gauge(usage.iter().map(|(_, u)| u.mezzanine_bytes).sum()),
    );
    register(
        &mut r,
        "darkroom_render_cache_max_bytes",
        "Byte budget of the render store, renders and mezzanines (render_cache.max_bytes; 0 = unlimited).",
        gauge(svc.config.render_cache.max_bytes),
    );
    register(
        &mut r,
        "darkroom_renders_evicted",
        "Renders evicted to keep the render store within its budget.",
        m.renders_evicted.clone(),
    );
    register(
        &mut r,
        "darkroom_render_bytes_evicted",
        "Bytes of the renders evicted for the budget.",
        m.render_bytes_evicted.clone(),
    );
    register(
        &mut r,
        "darkroom_mezzanines_evicted",
        "Mezzanines evicted to keep the render store within its budget.",
        m.mezzanines_evicted.clone(),
    );
    register(
        &mut r,
        "darkroom_mezzanine_bytes_evicted",
        "Bytes of the mezzanines evicted for the budget.",
        m.mezzanine_bytes_evicted.clone(),
    );
    register(
        &mut r,
        "darkroom_gc_runs",
        "Garbage-collection passes run by the background loop.",
        m.gc_runs.clone(),
    );
    register(
        &mut r,
        "darkroom_gc_bytes_freed",
        "Bytes freed by garbage collection (renders and source files).",
        m.gc_bytes_freed.clone(),
    );
    register(
        &mut r,
        "darkroom_gc_renders_removed",
        "Orphan renders removed by garbage collection.",
        m.gc_renders_removed.clone(),
    );
    register(
        &mut r,
        "darkroom_edge_pending",
        "Edge refreshes or purges waiting in the queue (including retries).",
        gauge(svc.store.edge_pending() as u64),
    );
    register(
        &mut r,
        "darkroom_edge_sent",
        "Edge refreshes or purges answered by the edge.",
        counter(&svc.edge.sent),
    );
    register(
        &mut r,
        "darkroom_edge_retries",
        "Failed edge requests queued again.",
        counter(&svc.edge.retried),
    );
    register(
        &mut r,
        "darkroom_edge_failed",
        "Edge requests given up after edge.max_attempts.",
        counter(&svc.edge.failed),
    );
    register(
        &mut r,
        "darkroom_source_bytes",
        "Billable storage of an organization: each distinct source file of its live images once.",
        per_org(|u| u.space_in_bytes),
    );
    register(
        &mut r,
        "darkroom_source_images",
        "Live source images of an organization.",
        per_org(|u| u.number_of_files),
    );

    let mut out = String::with_capacity(8 * 1024);
    prometheus_text::encode(&mut out, &r)
        .map_err(|_| crate::error::Error::internal("metrics exposition"))?;
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
    fn requests_are_written_by_listener_route_pattern_and_status() {
        let m = Metrics::default();
        m.render_request(200);
        m.render_request(200);
        m.render_request(404);
        m.request(Some("/sourceimages/{org}/{hash}".into()), 200);
        m.request(None, 404);
        let mut r = Registry::default();
        register(&mut r, "requests", "Requests.", m.requests.clone());
        let mut out = String::new();
        prometheus_text::encode(&mut out, &r).unwrap();
        for line in [
            "# HELP requests_total Requests.\n",
            "# TYPE requests_total counter\n",
            "requests_total{listener=\"render\",route=\"render\",status=\"200\"} 2\n",
            "requests_total{listener=\"render\",route=\"render\",status=\"404\"} 1\n",
            "requests_total{listener=\"api\",route=\"/sourceimages/:org/:hash\",status=\"200\"} 1\n",
            "requests_total{listener=\"api\",route=\"unmatched\",status=\"404\"} 1\n",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }
}
