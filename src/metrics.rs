//! Operational metrics, exposed at `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4): what the server answered (per operation and status, with latencies), what
//! it serves (counted from the registry snapshot at scrape time), and what its syncs, imports
//! and publishes did.
//!
//! [`Metrics`] owns the metric families and is shared (`Arc`) by the HTTP layer, the sync
//! service and the publisher; it knows nothing of HTTP. Every label has a bounded set of
//! values: operations are short fixed names, statuses are HTTP codes, registers, feeds and
//! CodeSystems come from the mappings.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry as Families;

use crate::store::Registry;
use crate::sync::Report;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request-latency buckets: a `$lookup` takes tens of
/// microseconds, a large `$expand` or batch seconds.
const REQUEST_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the import and publish buckets: a small register imports in well
/// under a second, the national postcodes in minutes.
const BUILD_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Upper bounds (seconds) of the sync buckets: a check that finds nothing new takes a round
/// trip, a new release a download and an import.
const SYNC_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    register: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegisterLabel {
    register: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeSystemLabel {
    code_system: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metric families (counters, gauges and histograms updated as things happen).
/// Registry contents are not kept here: [`Metrics::render`] counts them from the snapshot it is
/// given.
#[derive(Debug)]
pub struct Metrics {
    families: Families,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<OperationLabel>,
    syncs: Family<SyncLabels, Counter>,
    sync_last_success: Family<RegisterLabel, Gauge<f64, AtomicU64>>,
    sync_seconds: HistogramFamily<RegisterLabel>,
    import_seconds: HistogramFamily<FeedLabel>,
    publish_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds: HistogramFamily<OperationLabel> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        let syncs = Family::<SyncLabels, Counter>::default();
        let sync_last_success = Family::<RegisterLabel, Gauge<f64, AtomicU64>>::default();
        let sync_seconds: HistogramFamily<RegisterLabel> =
            Family::new_with_constructor(|| Histogram::new(SYNC_BUCKETS));
        let import_seconds: HistogramFamily<FeedLabel> =
            Family::new_with_constructor(|| Histogram::new(BUILD_BUCKETS));
        let publish_seconds = Histogram::new(BUILD_BUCKETS);

        let mut families = Families::default();
        families.register(
            "fhir_registers_build",
            "The server's version (always 1)",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        families.register(
            "fhir_registers_http_requests",
            "HTTP requests answered, by operation (from the matched route) and status code",
            requests.clone(),
        );
        families.register(
            "fhir_registers_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by operation",
            request_seconds.clone(),
        );
        families.register(
            "fhir_registers_sync",
            "Syncs of a register's upstream, by outcome (imported, up to date, failed)",
            syncs.clone(),
        );
        families.register(
            "fhir_registers_sync_last_success_timestamp_seconds",
            "Unix time of the register's last sync that did not fail",
            sync_last_success.clone(),
        );
        families.register(
            "fhir_registers_sync_duration_seconds",
            "Time one sync of a register took (check, download, import)",
            sync_seconds.clone(),
        );
        families.register(
            "fhir_registers_import_duration_seconds",
            "Time to read, convert and store one release, by feed (syncs and start-up imports)",
            import_seconds.clone(),
        );
        families.register(
            "fhir_registers_publish_duration_seconds",
            "Time to build a new registry and its indexes before it is swapped in",
            publish_seconds.clone(),
        );
        Self {
            families,
            requests,
            request_seconds,
            syncs,
            sync_last_success,
            sync_seconds,
            import_seconds,
            publish_seconds,
        }
    }
}

impl Metrics {
    /// Counts one answered request: `operation` is a short fixed name (`lookup`, `expand`, …),
    /// `status` its HTTP status code, `elapsed` the time to its response head.
    pub fn record_request(&self, operation: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.request_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one sync by its outcome, times it, and notes when it did not fail.
    pub fn record_sync(&self, report: &Report) {
        self.syncs
            .get_or_create(&SyncLabels {
                register: report.register.clone(),
                outcome: report.outcome,
            })
            .inc();
        let register = RegisterLabel {
            register: report.register.clone(),
        };
        self.sync_seconds
            .get_or_create(&register)
            .observe(report.millis as f64 / 1000.0);
        if !report.failed() {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.sync_last_success
                .get_or_create(&register)
                .set(now.as_secs_f64());
        }
    }

    /// Times one import of a release of `feed`.
    pub fn record_import(&self, feed: &str, elapsed: Duration) {
        self.import_seconds
            .get_or_create(&FeedLabel {
                feed: feed.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Times one publish (a registry built and swapped in).
    pub fn record_publish(&self, build: Duration) {
        self.publish_seconds.observe(build.as_secs_f64());
    }

    /// Every metric in the Prometheus text format: the families above, then what `registry`
    /// holds (CodeSystems, their versions, ValueSets, each CodeSystem's concepts in its latest
    /// version), its `generation` and whether the server is `ready`.
    pub fn render(
        &self,
        registry: &Registry,
        ready: bool,
        generation: u64,
    ) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.families)?;
        prometheus_client::encoding::prometheus_text::encode(
            &mut text,
            &snapshot(registry, ready, generation),
        )?;
        Ok(text)
    }
}

/// Gauges of what a registry snapshot holds, made for one scrape.
fn snapshot(registry: &Registry, ready: bool, generation: u64) -> Families {
    let mut families = Families::default();
    let gauge = |value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        g
    };
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    families.register(
        "fhir_registers_code_systems",
        "CodeSystems served (canonical URLs)",
        gauge(count(registry.latest_code_systems().count())),
    );
    families.register(
        "fhir_registers_code_system_versions",
        "CodeSystem versions served",
        gauge(count(registry.all_code_systems().count())),
    );
    families.register(
        "fhir_registers_value_sets",
        "ValueSets served (every version)",
        gauge(count(registry.all_value_sets().count())),
    );
    let concepts = Family::<CodeSystemLabel, Gauge>::default();
    for cs in registry.latest_code_systems() {
        concepts
            .get_or_create(&CodeSystemLabel {
                code_system: cs.meta.url.clone(),
            })
            .set(count(cs.len()));
    }
    families.register(
        "fhir_registers_concepts",
        "Concepts in the latest version of each CodeSystem",
        concepts,
    );
    families.register(
        "fhir_registers_registry_generation",
        "Registries published since start (0: the one built at start)",
        gauge(i64::try_from(generation).unwrap_or(i64::MAX)),
    );
    families.register(
        "fhir_registers_ready",
        "1 once the latest versions' indexes are built (as GET /ready), else 0",
        gauge(i64::from(ready)),
    );
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(register: &str, outcome: &'static str, errors: Vec<String>) -> Report {
        Report {
            register: register.into(),
            outcome,
            imported: Vec::new(),
            errors,
            downloaded_bytes: 0,
            millis: 1500,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn syncs_are_counted_by_outcome_and_only_successes_are_dated() {
        let metrics = Metrics::default();
        metrics.record_sync(&report("ods-etr", "up to date", Vec::new()));
        metrics.record_sync(&report("ods-etr", "up to date", Vec::new()));
        metrics.record_sync(&report("ods-eccg", "failed", vec!["503".into()]));
        let text = metrics
            .render(&Registry::default(), false, 0)
            .expect("renders");
        assert_eq!(
            line(
                &text,
                r#"fhir_registers_sync_total{register="ods-etr",outcome="up to date"}"#
            ),
            Some(r#"fhir_registers_sync_total{register="ods-etr",outcome="up to date"} 2"#),
            "{text}"
        );
        assert!(
            line(
                &text,
                r#"fhir_registers_sync_total{register="ods-eccg",outcome="failed"} 1"#
            )
            .is_some(),
            "{text}"
        );
        let stamp: f64 = line(
            &text,
            r#"fhir_registers_sync_last_success_timestamp_seconds{register="ods-etr"}"#,
        )
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a last-success time for ods-etr");
        assert!(stamp > 1.7e9, "{stamp}");
        assert!(
            line(
                &text,
                r#"fhir_registers_sync_last_success_timestamp_seconds{register="ods-eccg"}"#
            )
            .is_none(),
            "a failed sync is no success: {text}"
        );
        assert!(
            text.contains(
                r#"fhir_registers_sync_duration_seconds_bucket{register="ods-etr",le="1"} 0"#
            ) && text.contains(
                r#"fhir_registers_sync_duration_seconds_bucket{register="ods-etr",le="5"} 2"#
            ),
            "1.5 s syncs fall in the 5 s bucket: {text}"
        );
        assert!(text.contains("fhir_registers_ready 0"), "{text}");
        assert!(
            text.contains(&format!(
                r#"fhir_registers_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
