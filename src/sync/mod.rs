//! Following registers' upstreams: each mapping's `[sync]` table names where new releases of its
//! register appear (a plain http(s) file replaced in place, or an NHS TRUD item), and a sync pass
//! downloads what is new, checks it, unpacks it and imports it as a new release of the feed.
//!
//! - [`Syncer`] runs one pass for one mapping: the `sync` command, the admin API and the schedule
//!   all call it. What it learnt (ETag, content hash, TRUD releases done, last error, backoff)
//!   is kept per register in `{data-dir}/sync/{register}.json`.
//! - [`schedule::Service`] holds the mappings that have an upstream, runs one sync per feed at a
//!   time, keeps the schedule (`every`, with jitter, and exponential backoff after failures) and
//!   hands new releases to the [`publish::Publisher`].
//! - [`publish::Publisher`] builds a new registry in the background and swaps it in, after this
//!   process's syncs and when another process's import changes the data directory's marker.
//!
//! Nothing a sync does is visible until an import has stored a whole release: downloads and
//! unpacked files live in `{data-dir}/sync/downloads/` and are removed whatever happens (and, after
//! a `kill -9`, by the next sync of the register).

mod archive;
mod fetch;
pub mod publish;
pub mod schedule;
mod state;
mod trud;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::mapping::{Mapping, MappingSet};
use crate::metrics::Metrics;
use crate::registers;
use crate::source::LocalFile;
use crate::store::persist::{self, SaveOutcome};
pub use state::SyncState;

/// Default TRUD base URL (`FHIR_REGISTERS_TRUD_URL`).
pub const DEFAULT_TRUD_URL: &str = "https://isd.digital.nhs.uk";
/// How often an upstream is checked when its `[sync]` table does not say.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How syncs download and check.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Where releases (and the sync state) are stored.
    pub data_dir: PathBuf,
    /// Longest wait for a connection to an upstream.
    pub connect_timeout: Duration,
    /// Longest one request to an upstream may take, body included.
    pub timeout: Duration,
    /// Most bytes a downloaded file may unpack to (a zip or gzip member), against zip bombs.
    pub max_unpacked_bytes: u64,
    /// Wait after a first failure; doubled after each further one.
    pub retry_min: Duration,
    /// Longest wait between failing tries.
    pub retry_max: Duration,
    /// Base URL of the TRUD API.
    pub trud_url: String,
    /// The TRUD API key, when one is configured.
    pub trud_key: Option<Secret>,
}

impl SyncSettings {
    /// Defaults for a data directory (no TRUD key).
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(30 * 60),
            max_unpacked_bytes: 4 << 30,
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 3600),
            trud_url: DEFAULT_TRUD_URL.into(),
            trud_key: None,
        }
    }

    /// Text with the TRUD key (if any) replaced by `***`: every message that may carry a URL
    /// goes through this before it is logged, stored or answered.
    pub fn redact(&self, text: &str) -> String {
        match &self.trud_key {
            Some(key) if !key.0.is_empty() => text.replace(&key.0, "***"),
            _ => text.to_string(),
        }
    }
}

/// A secret that never shows in `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (surrounding whitespace, such as a file's last newline, dropped).
    pub fn new(text: &str) -> Self {
        Self(text.trim().to_string())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a register's releases come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A file at a fixed URL, replaced by each release.
    File {
        /// Its URL.
        url: String,
    },
    /// An NHS TRUD item.
    Trud {
        /// The item number.
        item: u32,
    },
}

/// A mapping's `[sync]` table, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The upstream.
    pub upstream: Upstream,
    /// The member to read from a zip (a name or a regex).
    pub member: Option<String>,
    /// How often the schedule checks.
    pub every: Duration,
}

/// The sync plan of a mapping, if it has a `[sync]` table (validated when the mapping loaded).
pub fn plan(m: &Mapping) -> Option<Plan> {
    let spec = m.spec.sync.as_ref()?;
    let upstream = match (&spec.url, spec.trud_item) {
        (Some(url), _) => Upstream::File { url: url.clone() },
        (None, Some(item)) => Upstream::Trud { item },
        (None, None) => return None,
    };
    let every = spec
        .every
        .as_deref()
        .and_then(|e| humantime::parse_duration(e).ok())
        .unwrap_or(DEFAULT_EVERY);
    Some(Plan {
        upstream,
        member: spec.member.clone(),
        every,
    })
}

impl Upstream {
    /// `url` or `trud`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "url",
            Self::Trud { .. } => "trud",
        }
    }

    /// The upstream's address as it may be shown: the TRUD key is `***`.
    pub fn shown(&self, settings: &SyncSettings) -> String {
        match self {
            Self::File { url } => settings.redact(url),
            Self::Trud { item } => format!(
                "{}/trud/api/v1/keys/***/items/{item}/releases",
                settings.trud_url.trim_end_matches('/')
            ),
        }
    }
}

/// Why a sync failed, and what the schedule should do about it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The message (no secrets in it).
    pub message: String,
    /// Retrying soon cannot help (a refused API key): wait the longest backoff.
    pub permanent: bool,
}

impl Failure {
    fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

/// What one sync of one register did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The register (mapping id).
    pub register: String,
    /// `imported`, `up to date` or `failed`.
    pub outcome: &'static str,
    /// Versions stored by this sync, in the order they were imported.
    pub imported: Vec<String>,
    /// What went wrong (a failed release of several, or the whole sync).
    pub errors: Vec<String>,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// How long the sync took, in milliseconds.
    pub millis: u64,
}

impl Report {
    /// A sync of `register` that failed before reaching its upstream.
    pub fn failure(register: String, message: String, millis: u64) -> Self {
        Self {
            register,
            outcome: "failed",
            imported: Vec::new(),
            errors: vec![message],
            downloaded_bytes: 0,
            millis,
        }
    }

    /// Whether anything failed.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The one line `fhir-registers sync` prints for it.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if !self.imported.is_empty() {
            parts.push(format!("imported {}", self.imported.join(", ")));
        }
        if !self.errors.is_empty() {
            parts.push(format!("failed: {}", self.errors.join("; ")));
        }
        if parts.is_empty() {
            parts.push("up to date".into());
        }
        format!("{}: {}", self.register, parts.join("; "))
    }
}

/// What a pass over one upstream found, before the state is written.
#[derive(Default)]
struct Pass {
    imported: Vec<String>,
    errors: Vec<Failure>,
    downloaded_bytes: u64,
}

/// Runs syncs: one HTTP client and the settings, for every mapping of a set.
pub struct Syncer {
    settings: Arc<SyncSettings>,
    client: reqwest::Client,
    served: Arc<MappingSet>,
    metrics: Arc<Metrics>,
}

impl Syncer {
    /// A syncer for the mappings of `served` (every feed's overlap with the others is checked
    /// on import, as `import` does).
    pub fn new(settings: SyncSettings, served: Arc<MappingSet>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("fhir-registers/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(Self {
            settings: Arc::new(settings),
            client,
            served,
            metrics: Arc::default(),
        })
    }

    /// This syncer recording its syncs and imports in `metrics` (the server's).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    /// The mappings synced.
    pub fn mappings(&self) -> &MappingSet {
        &self.served
    }

    /// One sync of one mapping: check the upstream, import every new release, record the
    /// outcome and the next check in the register's state (and in the metrics). Never panics,
    /// never leaves a partial release: every error is in the report.
    pub async fn sync(&self, m: &Mapping) -> Report {
        let report = self.sync_unrecorded(m).await;
        self.metrics.record_sync(&report);
        report
    }

    async fn sync_unrecorded(&self, m: &Mapping) -> Report {
        let started = std::time::Instant::now();
        let register = m.id().to_string();
        let Some(plan) = plan(m) else {
            return Report::failure(register, "the mapping has no [sync] table".into(), 0);
        };
        let dir = state::sync_dir(&self.settings.data_dir);
        let lock = match state::RegisterLock::try_take(&dir, &register) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                let message =
                    "another process is syncing this register now; try again later".to_string();
                return Report::failure(register, message, started.elapsed().as_millis() as u64);
            }
            Err(e) => return Report::failure(register, e, started.elapsed().as_millis() as u64),
        };
        // What a killed sync of this register left behind.
        state::remove_downloads(&dir, &register);
        let mut st = SyncState::load(&dir, &register);
        let shown = plan.upstream.shown(&self.settings);
        if st.upstream.as_deref() != Some(shown.as_str()) {
            // Another upstream than last time: what was learnt about the old one does not apply.
            st.forget_upstream(shown.clone());
        }
        let pass = match &plan.upstream {
            Upstream::File { url } => self.sync_file(m, &plan, url, &mut st, &dir).await,
            Upstream::Trud { item } => trud::sync(self, m, &plan, *item, &mut st, &dir).await,
        };
        let now = SystemTime::now();
        st.record(now, &pass, &plan, &self.settings);
        if let Err(e) = st.save(&dir, &register) {
            tracing::warn!(register, error = %e, "cannot save the sync state");
        }
        state::remove_downloads(&dir, &register);
        drop(lock);
        let report = Report {
            register: register.clone(),
            outcome: if !pass.errors.is_empty() {
                "failed"
            } else if pass.imported.is_empty() {
                "up to date"
            } else {
                "imported"
            },
            imported: pass.imported,
            errors: pass.errors.into_iter().map(|f| f.message).collect(),
            downloaded_bytes: pass.downloaded_bytes,
            millis: started.elapsed().as_millis() as u64,
        };
        if report.failed() {
            tracing::warn!(register, upstream = %shown, errors = ?report.errors, imported = ?report.imported, "sync failed");
        } else {
            tracing::info!(register, upstream = %shown, outcome = report.outcome, imported = ?report.imported, ms = report.millis, "synced");
        }
        report
    }

    /// A file replaced in place: a conditional GET, then unpack and import when it changed.
    async fn sync_file(
        &self,
        m: &Mapping,
        plan: &Plan,
        url: &str,
        st: &mut SyncState,
        dir: &Path,
    ) -> Pass {
        let mut pass = Pass::default();
        // Validators are sent only while the release they describe is still stored: after the
        // data directory lost it, the file is fetched again.
        let stored = stored_versions(&self.settings.data_dir, m.feed());
        let conditional = st
            .imported_version
            .as_ref()
            .is_some_and(|v| stored.contains(v));
        let validators = fetch::Validators {
            etag: st.etag.clone().filter(|_| conditional),
            last_modified: st.last_modified.clone().filter(|_| conditional),
        };
        let downloads = state::downloads_dir(dir);
        let fetched = fetch::get(
            &self.client,
            url,
            &validators,
            &downloads,
            &format!("{}-", m.id()),
            None,
            &self.settings,
        )
        .await;
        let download = match fetched {
            Ok(fetch::Fetched::NotModified) => return pass,
            Ok(fetch::Fetched::Body(d)) => d,
            Err(f) => {
                pass.errors.push(f);
                return pass;
            }
        };
        pass.downloaded_bytes = download.bytes;
        if st.sha256.as_deref() == Some(download.sha256.as_str()) && conditional {
            // The same bytes under a new ETag or date: nothing new.
            st.etag = download.etag.clone();
            st.last_modified = download.last_modified.clone();
            return pass;
        }
        let release_name = download.file_name.clone();
        let version_hint = download.last_modified_date();
        match self
            .unpack_and_import(m, plan, &download, &release_name, None, version_hint)
            .await
        {
            Ok(Some(version)) => {
                st.imported_version = Some(version.clone());
                pass.imported.push(version);
            }
            Ok(None) => {}
            Err(f) => {
                pass.errors.push(f);
                return pass;
            }
        }
        if st.imported_version.is_none() {
            // Unchanged data: remember the newest stored version as what the validators describe.
            st.imported_version = newest(&stored);
        }
        st.etag = download.etag.clone();
        st.last_modified = download.last_modified.clone();
        st.sha256 = Some(download.sha256.clone());
        pass
    }

    /// Unpacks a download and imports the register file in it as a new release. The version is
    /// `version` when given (TRUD's release date), else a date in the member's or the file's
    /// name, else `fallback` (the `Last-Modified` date). `Ok(None)`: the same data is already
    /// stored.
    async fn unpack_and_import(
        &self,
        m: &Mapping,
        plan: &Plan,
        download: &fetch::Download,
        release_name: &str,
        version: Option<String>,
        fallback: Option<String>,
    ) -> Result<Option<String>, Failure> {
        let settings = self.settings.clone();
        let served = self.served.clone();
        let mapping = m.clone();
        let member = plan.member.clone();
        let path = download.path.clone();
        let name = release_name.to_string();
        let shown = settings.redact(&download.url);
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let unpacked = archive::unpack(
                &path,
                &name,
                member.as_deref(),
                settings.max_unpacked_bytes,
            )
            .map_err(Failure::retry)?;
            let version = version
                .or_else(|| crate::mapping::version_from_name(&unpacked.member))
                .or_else(|| crate::mapping::version_from_name(&name))
                .or(fallback)
                .ok_or_else(|| {
                    Failure::retry(format!(
                        "{shown}: no release date in the file's name and no Last-Modified date: cannot tell which version it is"
                    ))
                })?;
            let display = if unpacked.member == name {
                shown.clone()
            } else {
                format!("{shown}#{}", unpacked.member)
            };
            let file = LocalFile::unpacked(unpacked.path.clone(), display);
            let started = std::time::Instant::now();
            let outcome = registers::import_file(
                &served,
                &mapping,
                &file,
                &version,
                &settings.data_dir,
                false,
                &mut |_, _| {},
            )
            .map_err(|e| {
                Failure::retry(settings.redact(&format!("{shown} ({version}): {e}")))
            })?;
            metrics.record_import(mapping.feed(), started.elapsed());
            Ok(match outcome {
                SaveOutcome::Stored(saved) => Some(saved.info.version),
                SaveOutcome::Unchanged { .. } => None,
            })
        })
        .await
        .map_err(|e| Failure::retry(format!("the import task failed: {e}")))?
    }
}

/// The versions of a feed in the data directory.
pub fn stored_versions(data_dir: &Path, feed: &str) -> Vec<String> {
    let mut versions: Vec<String> = persist::feed_release_files(data_dir, feed)
        .iter()
        .filter_map(|p| persist::read_release(p).ok())
        .map(|r| r.info.version)
        .collect();
    versions.sort_by(|a, b| crate::store::compare_versions(a, b));
    versions
}

fn newest(versions: &[String]) -> Option<String> {
    versions.last().cloned()
}

/// RFC 3339 (UTC, seconds) of a time.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Compares two strings in time that depends only on their lengths (tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
