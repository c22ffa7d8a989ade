//! The sync service `serve` runs: syncs on demand (the admin API) and on schedule (`--sync`),
//! at most one per feed at a time, each followed by a publish when it stored a release.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};

use super::publish::Publisher;
use super::{Report, SyncState, Syncer, plan, rfc3339, state, stored_versions};
use crate::mapping::Mapping;

/// Syncs of the mappings that have a `[sync]` table.
pub struct Service {
    syncer: Syncer,
    /// One lock per feed: two mappings of one feed never sync at once.
    feed_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Registers syncing now.
    running: std::sync::Mutex<Vec<String>>,
    publisher: Option<Arc<Publisher>>,
    scheduled: std::sync::atomic::AtomicBool,
}

/// No such register, or it has no upstream.
#[derive(Debug)]
pub struct NotSynced(pub String);

impl Service {
    /// A service over the syncer's mappings; new releases are published by `publisher` (none:
    /// the `sync` command, which only stores).
    pub fn new(syncer: Syncer, publisher: Option<Arc<Publisher>>) -> Self {
        let feed_locks = syncer
            .mappings()
            .mappings
            .iter()
            .map(|m| (m.feed().to_string(), Arc::default()))
            .collect();
        Self {
            syncer,
            feed_locks,
            running: std::sync::Mutex::new(Vec::new()),
            publisher,
            scheduled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The mappings with a `[sync]` table.
    pub fn synced(&self) -> impl Iterator<Item = &Mapping> {
        self.syncer
            .mappings()
            .mappings
            .iter()
            .filter(|m| m.spec.sync.is_some())
    }

    /// Syncs one register (waiting for a sync of its feed that is running) and publishes what it
    /// stored.
    pub async fn sync_one(&self, register: &str) -> Result<Report, NotSynced> {
        let m = self
            .syncer
            .mappings()
            .mapping(register)
            .ok_or_else(|| NotSynced(format!("no register {register:?} on this server")))?;
        if m.spec.sync.is_none() {
            return Err(NotSynced(format!(
                "register {register:?} has no [sync] table: it has no upstream to follow"
            )));
        }
        let report = self.sync_unpublished(m).await;
        if !report.imported.is_empty() {
            self.publish().await;
        }
        Ok(report)
    }

    /// Syncs every register with an upstream, one after another, then publishes once.
    pub async fn sync_all(&self) -> Vec<Report> {
        let mut reports = Vec::new();
        for m in self.synced() {
            reports.push(self.sync_unpublished(m).await);
        }
        if reports.iter().any(|r| !r.imported.is_empty()) {
            self.publish().await;
        }
        reports
    }

    async fn sync_unpublished(&self, m: &Mapping) -> Report {
        let lock = self.feed_locks.get(m.feed()).cloned().unwrap_or_default();
        let _feed = lock.lock().await;
        self.set_running(m.id(), true);
        let report = self.syncer.sync(m).await;
        self.set_running(m.id(), false);
        report
    }

    async fn publish(&self) {
        if let Some(p) = &self.publisher {
            // A failed publish is logged; the new release is stored and the next change or
            // start serves it.
            let _ = p.publish().await;
        }
    }

    fn set_running(&self, register: &str, on: bool) {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            running.push(register.to_string());
        } else if let Some(i) = running.iter().position(|r| r == register) {
            running.remove(i);
        }
    }

    /// Per register: upstream (no secrets), schedule, last check and outcome, last error,
    /// stored versions, next check.
    pub fn status(&self) -> Json {
        let settings = self.syncer.settings();
        let dir = state::sync_dir(&settings.data_dir);
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let scheduled = self.scheduled.load(std::sync::atomic::Ordering::Acquire);
        let registers: Vec<Json> = self
            .synced()
            .filter_map(|m| {
                let plan = plan(m)?;
                let st = SyncState::load(&dir, m.id());
                Some(json!({
                    "register": m.id(),
                    "feed": m.feed(),
                    "upstream": {
                        "kind": plan.upstream.kind(),
                        "url": plan.upstream.shown(settings),
                        "member": plan.member,
                    },
                    "every": humantime::format_duration(plan.every).to_string(),
                    "syncing": running.iter().any(|r| r == m.id()),
                    "lastCheck": st.last_check,
                    "lastSuccess": st.last_success,
                    "lastOutcome": st.last_outcome,
                    "lastError": st.last_error,
                    "failures": st.failures,
                    "versions": stored_versions(&settings.data_dir, m.feed()),
                    "nextCheck": if scheduled {
                        Some(rfc3339(st.next_check().unwrap_or_else(SystemTime::now)))
                    } else {
                        None
                    },
                }))
            })
            .collect();
        json!({
            "scheduled": scheduled,
            "registers": registers,
        })
    }

    /// Runs every register's schedule until the task is dropped: each register is checked when
    /// its state says (a first check soon after start, with jitter), then every `every` (with
    /// jitter), or after its backoff when the check failed. Registers of different feeds sync
    /// side by side; one feed's syncs run one at a time.
    pub fn run_schedule(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.scheduled
            .store(true, std::sync::atomic::Ordering::Release);
        let registers: Vec<String> = self.synced().map(|m| m.id().to_string()).collect();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for register in registers {
                let service = self.clone();
                tasks.spawn(async move { service.follow(&register).await });
            }
            while tasks.join_next().await.is_some() {}
        })
    }

    async fn follow(&self, register: &str) {
        let dir = state::sync_dir(&self.syncer.settings().data_dir);
        let Some(m) = self.syncer.mappings().mapping(register) else {
            return;
        };
        let Some(plan) = plan(m) else { return };
        // First check: when the saved state says, else soon (within a minute, jittered).
        let first = SyncState::load(&dir, register).next_check();
        if first.is_none() {
            let initial = Duration::from_millis(
                state::random_u64()
                    % plan.every.min(Duration::from_secs(60)).as_millis().max(1) as u64,
            );
            tokio::time::sleep(initial).await;
        }
        loop {
            let due = SyncState::load(&dir, register)
                .next_check()
                .unwrap_or_else(SystemTime::now);
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            let _ = self.sync_one(register).await;
            // A sync that could not take the register's lock (another process) records
            // nothing: wait a backoff step before looking again.
            let after = SyncState::load(&dir, register).next_check();
            if after.is_none_or(|t| t <= SystemTime::now()) {
                tokio::time::sleep(self.syncer.settings().retry_min).await;
            }
        }
    }
}
