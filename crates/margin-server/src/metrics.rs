//! Prometheus metrics of the server, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route pattern, e.g. `/v1/documents/{id}` (never the raw path).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels naming a route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route pattern.
    pub route: String,
}

/// Labels naming a stage of answering.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// retrieve, queue, prefill, decode, rescore or attribute.
    pub stage: &'static str,
}

/// Labels of an ingested file's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// indexed or failed.
    pub outcome: &'static str,
}

type Seconds<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer a request (to the first byte, for streams).
    pub request_seconds: Seconds<RouteLabels>,
    /// Where answering time goes.
    pub ask_stage_seconds: Seconds<StageLabels>,
    /// Questions per generator batch.
    pub ask_batch: Histogram,
    /// Questions waiting for the generator.
    pub ask_queue_depth: Gauge,
    /// Uploaded files, by outcome.
    pub ingest_files: Family<OutcomeLabels, Counter>,
    /// Passages embedded and stored by upload jobs.
    pub ingest_passages: Counter,
    /// Documents in the index.
    pub documents: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("margin");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds =
            Seconds::<RouteLabels>::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (streams: to the first byte)",
            request_seconds.clone(),
        );
        let ask_stage_seconds =
            Seconds::<StageLabels>::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "ask_stage_seconds",
            "Time per stage of answering a question",
            ask_stage_seconds.clone(),
        );
        let ask_batch = Histogram::new(linear_buckets(1.0, 1.0, 16));
        registry.register(
            "ask_batch_questions",
            "Questions decoded in one generator batch",
            ask_batch.clone(),
        );
        let ask_queue_depth = Gauge::default();
        registry.register(
            "ask_queue_depth",
            "Questions waiting for the generator",
            ask_queue_depth.clone(),
        );
        let ingest_files = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ingest_files",
            "Uploaded files, by outcome",
            ingest_files.clone(),
        );
        let ingest_passages = Counter::default();
        registry.register(
            "ingest_passages",
            "Passages embedded and stored from uploads",
            ingest_passages.clone(),
        );
        let documents = Gauge::default();
        registry.register("documents", "Documents in the index", documents.clone());
        Metrics {
            registry,
            requests,
            request_seconds,
            ask_stage_seconds,
            ask_batch,
            ask_queue_depth,
            ingest_files,
            ingest_passages,
            documents,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Records how long `stage` of answering took.
    pub fn stage(&self, stage: &'static str, took: std::time::Duration) {
        self.ask_stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(took.as_secs_f64());
    }
}
