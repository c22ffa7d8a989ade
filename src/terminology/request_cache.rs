//! `$cache-control` caches: a client opens one (`mode=start`), sends its `tx-resource`s once
//! under the cache's id (`X-Cache-Id`), and later requests under that id see them without sending
//! them again; `mode=end` drops it. Caches are bounded: each expires after
//! [`CacheLimits::ttl`] without use, together they hold at most [`CacheLimits::max_caches`]
//! caches and [`CacheLimits::max_bytes`] bytes of resources (JSON text), and one holds at most
//! [`CacheLimits::max_resources`] resources. Starting a cache over the count bound, or adding
//! resources over the byte bound, evicts the least recently used other caches instead of
//! refusing. A cache that ends, expires or is evicted gives back its resources and the compiled
//! CodeSystems only it held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::overlay::{Overlay, Supplied};
use crate::error::FhirError;
use crate::fhir::params::ParametersOut;

/// Bounds on the `$cache-control` caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// A cache unused for this long is dropped.
    pub ttl: Duration,
    /// Most caches open at once.
    pub max_caches: usize,
    /// Most bytes (of resource JSON) all caches hold together.
    pub max_bytes: usize,
    /// Most resources in one cache.
    pub max_resources: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 60),
            max_caches: 256,
            max_bytes: 256 * 1024 * 1024,
            max_resources: 5_000,
        }
    }
}

#[derive(Debug)]
struct Cache {
    resources: Vec<Supplied>,
    bytes: usize,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct Caches {
    open: HashMap<String, Cache>,
    bytes: usize,
}

impl Caches {
    fn remove(&mut self, id: &str) -> Option<Vec<Supplied>> {
        let cache = self.open.remove(id)?;
        self.bytes -= cache.bytes;
        Some(cache.resources)
    }

    /// Drops the caches idle for longer than `ttl`; returns their resources.
    fn expire(&mut self, ttl: Duration, now: Instant) -> Vec<Supplied> {
        let idle: Vec<String> = self
            .open
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_used) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        idle.iter()
            .filter_map(|id| self.remove(id))
            .flatten()
            .collect()
    }

    /// Drops the least recently used cache other than `keep`; `None` when there is none.
    fn evict_oldest(&mut self, keep: Option<&str>) -> Option<Vec<Supplied>> {
        let oldest = self
            .open
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != keep)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(id, _)| id.clone())?;
        self.remove(&oldest)
    }
}

/// The open `$cache-control` caches (see the module docs).
#[derive(Debug)]
pub struct RequestCaches {
    limits: CacheLimits,
    caches: Mutex<Caches>,
    /// When idle caches were last looked for (ms since `epoch`).
    last_sweep: AtomicU64,
    epoch: Instant,
}

impl Default for RequestCaches {
    fn default() -> Self {
        Self::new(CacheLimits::default())
    }
}

/// How often [`RequestCaches::sweep`] looks for idle caches at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl RequestCaches {
    /// No caches yet, with these bounds.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            caches: Mutex::new(Caches::default()),
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open caches, and the bytes of resources they hold.
    pub fn stats(&self) -> (usize, usize) {
        let c = self.lock();
        (c.open.len(), c.bytes)
    }

    /// Drops idle caches (at most once a [`SWEEP_EVERY`]; every request may call it).
    pub fn sweep(&self, overlay: &Overlay) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .last_sweep
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let dropped = self.lock().expire(self.limits.ttl, Instant::now());
        overlay.release(dropped);
    }

    /// Opens a cache and returns its id; past [`CacheLimits::max_caches`] the least recently
    /// used cache is dropped.
    pub fn start(&self, overlay: &Overlay) -> String {
        let id = super::expand::new_uuid()
            .trim_start_matches("urn:uuid:")
            .to_string();
        let now = Instant::now();
        let mut dropped = Vec::new();
        {
            let mut caches = self.lock();
            dropped.extend(caches.expire(self.limits.ttl, now));
            while caches.open.len() >= self.limits.max_caches.max(1) {
                match caches.evict_oldest(None) {
                    Some(r) => dropped.extend(r),
                    None => break,
                }
            }
            caches.open.insert(
                id.clone(),
                Cache {
                    resources: Vec::new(),
                    bytes: 0,
                    last_used: now,
                },
            );
        }
        overlay.release(dropped);
        id
    }

    /// Drops a cache (404 when it is not open).
    pub fn end(&self, id: &str, overlay: &Overlay) -> Result<(), FhirError> {
        let removed = self.lock().remove(id);
        match removed {
            Some(resources) => {
                overlay.release(resources);
                Ok(())
            }
            None => Err(FhirError::NotFound(format!(
                "The cache '{id}' is not known (it ended, expired after {} s unused, or was evicted)",
                self.limits.ttl.as_secs()
            ))),
        }
    }

    /// A request under cache `id` that sent `sent`: those join the cache (evicting other caches
    /// past the byte bound), and the cache's other resources are returned, to be added to the
    /// request's. 404 when the cache is not open.
    pub fn use_cache(
        &self,
        id: &str,
        sent: &[Supplied],
        overlay: &Overlay,
    ) -> Result<Vec<Supplied>, FhirError> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let result = {
            let mut caches = self.lock();
            dropped.extend(caches.expire(self.limits.ttl, now));
            self.add(&mut caches, id, sent, now, &mut dropped)
        };
        overlay.release(dropped);
        result
    }

    fn add(
        &self,
        caches: &mut Caches,
        id: &str,
        sent: &[Supplied],
        now: Instant,
        dropped: &mut Vec<Supplied>,
    ) -> Result<Vec<Supplied>, FhirError> {
        let limits = self.limits;
        let Some(cache) = caches.open.get_mut(id) else {
            return Err(FhirError::NotFound(format!(
                "The cache '{id}' is not known (start one with $cache-control?mode=start; an unused cache expires after {} s)",
                limits.ttl.as_secs()
            )));
        };
        cache.last_used = now;
        let new: Vec<&Supplied> = sent
            .iter()
            .filter(|s| !cache.resources.iter().any(|c| c.key == s.key))
            .collect();
        let added: usize = new.iter().map(|s| s.bytes).sum();
        if cache.resources.len() + new.len() > limits.max_resources {
            return Err(FhirError::TooCostly(format!(
                "A cache holds at most {} resources",
                limits.max_resources
            )));
        }
        if cache.bytes + added > limits.max_bytes {
            return Err(FhirError::TooCostly(format!(
                "The cache would hold {} bytes of resources, more than the {} bytes all caches may hold together",
                cache.bytes + added,
                limits.max_bytes
            )));
        }
        cache.resources.extend(new.into_iter().cloned());
        cache.bytes += added;
        let others: Vec<Supplied> = cache
            .resources
            .iter()
            .filter(|c| !sent.iter().any(|s| s.key == c.key))
            .cloned()
            .collect();
        caches.bytes += added;
        while caches.bytes > limits.max_bytes {
            match caches.evict_oldest(Some(id)) {
                Some(r) => dropped.extend(r),
                None => break,
            }
        }
        Ok(others)
    }

    /// `$cache-control`: `mode=start` opens a cache and returns its id; `mode=end` drops one.
    pub fn control(
        &self,
        mode: Option<&str>,
        id: Option<&str>,
        overlay: &Overlay,
    ) -> Result<Json, FhirError> {
        let mut out = ParametersOut::new();
        match (mode, id) {
            (Some("start"), _) => {
                let id = self.start(overlay);
                out.value("cache-id", "valueString", json!(id));
            }
            (Some("end"), Some(id)) => {
                self.end(id, overlay)?;
                out.value("result", "valueBoolean", json!(true));
            }
            (Some("end"), None) => {
                return Err(FhirError::Required(
                    "mode=end needs the cache id (X-Cache-Id header or cache-id parameter)".into(),
                ));
            }
            (other, _) => {
                return Err(FhirError::Invalid(format!(
                    "$cache-control needs mode=start or mode=end, not {other:?}"
                )));
            }
        }
        Ok(out.build())
    }
}
