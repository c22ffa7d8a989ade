//! Publishing without a restart: a new registry is built from the data directory in the
//! background (off the async workers), its latest versions' indexes are built, and it is swapped
//! in whole. Requests in flight finish on the registry they started with; the old one is freed
//! when the last of them ends.
//!
//! A release stored by another process (`fhir-registers import` or `sync` on the same data
//! directory) is noticed through the data directory's change marker
//! ([`persist::change_marker_path`]), read every `--reload-interval`: one small file, no
//! directory scan.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::mapping::MappingSet;
use crate::metrics::Metrics;
use crate::registers::{self, Live};
use crate::store::persist;

/// Rebuilds and swaps the served registry.
pub struct Publisher {
    live: Arc<Live>,
    set: Arc<MappingSet>,
    resources: Arc<Vec<(String, Json)>>,
    data_dir: PathBuf,
    /// Held while a registry is built; holds the change marker the served registry reflects.
    seen: tokio::sync::Mutex<Option<String>>,
    /// Never write to the data directory (a read-only replica): no tidying of import debris.
    read_only: bool,
    /// Where publish durations are recorded.
    metrics: Arc<Metrics>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// The registry generation now served.
    pub generation: u64,
    /// Time to build the registry and its indexes.
    pub build: Duration,
}

impl Publisher {
    /// A publisher for the registry `live` serves, built from these mappings, resources and
    /// data directory. `marker` is the change marker read before that registry was built.
    pub fn new(
        live: Arc<Live>,
        set: Arc<MappingSet>,
        resources: Arc<Vec<(String, Json)>>,
        data_dir: PathBuf,
        marker: Option<String>,
    ) -> Self {
        Self {
            live,
            set,
            resources,
            data_dir,
            seen: tokio::sync::Mutex::new(marker),
            read_only: false,
            metrics: Arc::default(),
        }
    }

    /// This publisher never writes to the data directory.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// This publisher recording its publish durations in `metrics` (the server's).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry being served.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Builds a registry from what is stored now and swaps it in. On failure the served
    /// registry stays as it is and the error is returned (and logged).
    pub async fn publish(&self) -> Result<Published, String> {
        let mut seen = self.seen.lock().await;
        self.rebuild(&mut seen).await
    }

    /// Publishes when the change marker differs from the one the served registry reflects.
    pub async fn publish_if_changed(&self) -> Result<Option<Published>, String> {
        let mut seen = self.seen.lock().await;
        let marker = read_marker(&self.data_dir).await;
        if marker == *seen {
            return Ok(None);
        }
        self.rebuild(&mut seen).await.map(Some)
    }

    async fn rebuild(&self, seen: &mut Option<String>) -> Result<Published, String> {
        let started = Instant::now();
        // Read before building: a release stored during the build changes the marker again and
        // is picked up by the next check.
        let marker = read_marker(&self.data_dir).await;
        let (set, resources, data_dir) = (
            self.set.clone(),
            self.resources.clone(),
            self.data_dir.clone(),
        );
        let previous = self.live.get();
        let tidy = !self.read_only;
        let built = tokio::task::spawn_blocking(move || {
            let registry =
                registers::rebuild_registry(&set, &data_dir, &resources, Some(&previous), tidy)?;
            drop(previous);
            registers::warm(&registry);
            Ok::<_, registers::LoadError>(registry)
        })
        .await;
        let registry = match built {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // Not retried until the data directory changes again.
                *seen = marker;
                let message = format!(
                    "the new registry cannot be built; still serving the previous one: {e}"
                );
                tracing::error!(error = %e, "publish failed; the previous registry keeps serving");
                return Err(message);
            }
            Err(e) => return Err(format!("the registry build task failed: {e}")),
        };
        let build = started.elapsed();
        let generation = self.live.replace(registry);
        self.metrics.record_publish(build);
        *seen = marker;
        tracing::info!(
            generation,
            build_ms = build.as_millis() as u64,
            "published a new registry"
        );
        Ok(Published { generation, build })
    }

    /// Publishes what other processes store, until the task is dropped: a release stored by
    /// another process is served within `interval` plus the time to build the changed register.
    /// The marker (one small file) is read four times per interval, so noticing takes at most a
    /// quarter of it.
    pub fn watch(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let period = (interval / 4).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Errors are logged by `rebuild`; the next change tries again.
                let _ = self.publish_if_changed().await;
            }
        })
    }

    /// Checks, in the background, the checksums of the records files the served registry reads
    /// in place (see [`persist::verify_pending`]): first once `ready()` (the server answers and
    /// its indexes are built, so checking does not delay either), then each second for files a
    /// publish loaded since. A damaged file is logged as an error, and the registry is published
    /// again at once without it: the releases that use it are no longer served, as when a
    /// damaged file is found at start. Runs until the task is dropped.
    pub fn check_stored_files(
        self: Arc<Self>,
        ready: impl Fn() -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !ready() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            loop {
                let damaged = tokio::task::spawn_blocking(registers::verify_stored_files)
                    .await
                    .unwrap_or(0);
                if damaged > 0 {
                    // Errors are logged by `rebuild`.
                    let _ = self.publish().await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// The data directory's change marker, read off the async workers.
pub async fn read_marker(data_dir: &std::path::Path) -> Option<String> {
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || persist::read_change_marker(&dir))
        .await
        .ok()
        .flatten()
}
