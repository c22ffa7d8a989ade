//! What syncs remember per register (`{data-dir}/sync/{register}.json`, written atomically),
//! the register's sync lock, and its downloads folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Pass, Plan, SyncSettings, rfc3339};

/// The sync folder of a data directory.
pub fn sync_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sync")
}

/// Where downloads and unpacked files wait for their import.
pub fn downloads_dir(sync_dir: &Path) -> PathBuf {
    sync_dir.join("downloads")
}

/// Removes what syncs of `register` left in the downloads folder (call under its lock).
pub fn remove_downloads(sync_dir: &Path, register: &str) {
    let prefix = format!("{register}-");
    for entry in fs::read_dir(downloads_dir(sync_dir)).into_iter().flatten() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&path).is_ok() {
                tracing::info!(file = %path.display(), bytes = size, "removed a download an interrupted sync left");
            }
        }
    }
}

/// An exclusive lock on one register's sync, across processes (released when dropped, or
/// when the process dies).
pub struct RegisterLock(#[allow(dead_code)] fs::File);

impl RegisterLock {
    /// Takes the lock, or `None` when another process holds it.
    pub fn try_take(sync_dir: &Path, register: &str) -> Result<Option<Self>, String> {
        fs::create_dir_all(downloads_dir(sync_dir))
            .map_err(|e| format!("{}: {e}", sync_dir.display()))?;
        let path = sync_dir.join(format!("{register}.lock"));
        let file = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// What syncs of one register remember.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncState {
    /// The upstream this state is about, as shown (no secrets).
    pub upstream: Option<String>,
    /// The upstream file's ETag when it was last downloaded.
    pub etag: Option<String>,
    /// Its `Last-Modified` then.
    pub last_modified: Option<String>,
    /// SHA-256 of the bytes last downloaded (upper-case hex).
    pub sha256: Option<String>,
    /// The stored version those bytes are.
    pub imported_version: Option<String>,
    /// TRUD release ids imported (or found already stored).
    pub trud_done: Vec<String>,
    /// When the upstream was last checked (RFC 3339).
    pub last_check: Option<String>,
    /// When a check last succeeded.
    pub last_success: Option<String>,
    /// `imported …`, `up to date` or `failed`.
    pub last_outcome: Option<String>,
    /// The last check's error, if it failed.
    pub last_error: Option<String>,
    /// Failed checks in a row.
    pub failures: u32,
    /// When the schedule checks next (seconds since 1970).
    pub next_check_unix: Option<u64>,
    /// Versions syncs stored, oldest sync first (the last 100).
    pub imported: Vec<String>,
}

impl SyncState {
    fn path(sync_dir: &Path, register: &str) -> PathBuf {
        sync_dir.join(format!("{register}.json"))
    }

    /// The register's state (empty when none was saved or it cannot be read).
    pub fn load(sync_dir: &Path, register: &str) -> Self {
        let path = Self::path(sync_dir, register);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "sync state unreadable; starting afresh");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, sync_dir: &Path, register: &str) -> Result<(), String> {
        let path = Self::path(sync_dir, register);
        let temp = sync_dir.join(format!(".{register}.json.tmp-{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        fs::write(&temp, text)
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&temp);
                format!("{}: {e}", path.display())
            })
    }

    /// Starts over for another upstream.
    pub fn forget_upstream(&mut self, shown: String) {
        *self = Self {
            upstream: Some(shown),
            imported: std::mem::take(&mut self.imported),
            ..Self::default()
        };
    }

    /// Records a pass's outcome and schedules the next check: `every` (with jitter) after a
    /// success; after a failure the backoff doubles from `retry_min` up to `retry_max`, and a
    /// permanent failure (a refused key) waits `retry_max` at once.
    pub(super) fn record(
        &mut self,
        now: SystemTime,
        pass: &Pass,
        plan: &Plan,
        settings: &SyncSettings,
    ) {
        self.last_check = Some(rfc3339(now));
        self.imported.extend(pass.imported.iter().cloned());
        let excess = self.imported.len().saturating_sub(100);
        self.imported.drain(..excess);
        let wait = if pass.errors.is_empty() {
            self.failures = 0;
            self.last_error = None;
            self.last_success = Some(rfc3339(now));
            self.last_outcome = Some(if pass.imported.is_empty() {
                "up to date".into()
            } else {
                format!("imported {}", pass.imported.join(", "))
            });
            jittered(plan.every)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.last_error = Some(
                pass.errors
                    .iter()
                    .map(|f| f.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            self.last_outcome = Some(if pass.imported.is_empty() {
                "failed".into()
            } else {
                format!("failed (imported {})", pass.imported.join(", "))
            });
            if pass.errors.iter().any(|f| f.permanent) {
                settings.retry_max
            } else {
                backoff(self.failures, settings.retry_min, settings.retry_max)
            }
        };
        self.next_check_unix = Some(unix(now + wait));
    }

    /// When the next check is due (now when never scheduled).
    pub fn next_check(&self) -> Option<SystemTime> {
        self.next_check_unix
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }
}

/// The wait after `failures` failures in a row: `min`, doubled for each further failure, at
/// most `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    min.saturating_mul(1u32 << doublings).min(max)
}

/// `every`, plus or minus up to a tenth of it (at most five minutes), so that feeds and
/// replicas started together do not all call their upstreams at once.
pub fn jittered(every: Duration) -> Duration {
    let spread = (every / 10).min(Duration::from_secs(300));
    if spread.is_zero() {
        return every;
    }
    let r = random_u64() % (2 * spread.as_millis() as u64 + 1);
    (every + Duration::from_millis(r)).saturating_sub(spread)
}

/// A random number from the standard library's per-process hash keys (no rand dependency).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(600));
        let waits: Vec<u64> = (1..=6).map(|f| backoff(f, min, max).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let every = Duration::from_secs(3600);
        let waits: Vec<Duration> = (0..50).map(|_| jittered(every)).collect();
        assert!(
            waits.iter().all(|w| *w >= every - Duration::from_secs(300)
                && *w <= every + Duration::from_secs(300))
        );
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "jitter varies: {waits:?}"
        );
    }
}
