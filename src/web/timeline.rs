//! A register's timeline: its versions, each with its date, concept count and what changed
//! against the version before (the counts `$diff` gives). The diff of one pair of versions never
//! changes, and comparing two versions of millions of postcodes takes a tenth of a second, so
//! the counts are computed once and kept for as long as those versions are served, and the last
//! few whole diffs are kept for paging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::FhirError;
use crate::store::{CodeSystemVersion, version_start};
use crate::terminology::history::{DiffCounts, DiffIndex};

/// Pairs whose counts are kept before the cache starts afresh (a register with a release a month
/// for ten years has 120).
const COUNTS_KEPT: usize = 4096;

type Key = (usize, usize);

/// An entry kept for a pair of versions, with the versions it describes (weakly: a version no
/// longer served is not kept alive, and its entry is never mistaken for another's).
struct Kept<T> {
    old: Weak<CodeSystemVersion>,
    new: Weak<CodeSystemVersion>,
    value: T,
}

impl<T: Clone> Kept<T> {
    fn of(old: &Arc<CodeSystemVersion>, new: &Arc<CodeSystemVersion>, value: T) -> Self {
        Self {
            old: Arc::downgrade(old),
            new: Arc::downgrade(new),
            value,
        }
    }

    fn get(&self, old: &Arc<CodeSystemVersion>, new: &Arc<CodeSystemVersion>) -> Option<T> {
        let same = |w: &Weak<CodeSystemVersion>, v: &Arc<CodeSystemVersion>| {
            w.upgrade().is_some_and(|w| Arc::ptr_eq(&w, v))
        };
        (same(&self.old, old) && same(&self.new, new)).then(|| self.value.clone())
    }
}

fn key(old: &Arc<CodeSystemVersion>, new: &Arc<CodeSystemVersion>) -> Key {
    (Arc::as_ptr(old) as usize, Arc::as_ptr(new) as usize)
}

/// The diff counts of pairs of versions, and the last whole diffs asked for (for paging through
/// a diff without comparing the versions again), up to a number of concepts together.
pub struct Timelines {
    counts: Mutex<HashMap<Key, Kept<DiffCounts>>>,
    diffs: Mutex<Vec<(Key, Kept<Arc<DiffIndex>>)>>,
    max_diff_concepts: usize,
}

/// The concepts a diff holds.
fn size(d: &DiffIndex) -> usize {
    d.added.len() + d.removed.len() + d.changed.len()
}

/// One version on a register's timeline.
pub struct Step {
    /// The version.
    pub version: Arc<CodeSystemVersion>,
    /// The date it took effect (its version when that is a date).
    pub date: Option<String>,
    /// What changed against the version before (`None` for the first).
    pub counts: Option<DiffCounts>,
}

impl Timelines {
    /// Counts for every pair asked for; whole diffs of at most `max_diff_concepts` concepts
    /// together.
    pub fn new(max_diff_concepts: usize) -> Self {
        Self {
            counts: Mutex::default(),
            diffs: Mutex::default(),
            max_diff_concepts,
        }
    }

    /// The whole diff of `new` against `old` (every property), computed now or kept from before.
    pub fn diff(
        &self,
        old: &Arc<CodeSystemVersion>,
        new: &Arc<CodeSystemVersion>,
    ) -> Result<Arc<DiffIndex>, FhirError> {
        let k = key(old, new);
        {
            let diffs = self.diffs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(d) = diffs
                .iter()
                .find(|(kk, _)| *kk == k)
                .and_then(|(_, kept)| kept.get(old, new))
            {
                return Ok(d);
            }
        }
        let d = Arc::new(DiffIndex::of(old, new, &[])?);
        if size(&d) <= self.max_diff_concepts {
            let mut diffs = self.diffs.lock().unwrap_or_else(PoisonError::into_inner);
            diffs.retain(|(kk, _)| *kk != k);
            let mut held: usize = diffs.iter().map(|(_, kept)| size(&kept.value)).sum();
            while held + size(&d) > self.max_diff_concepts && !diffs.is_empty() {
                let (_, first) = diffs.remove(0);
                held -= size(&first.value);
            }
            diffs.push((k, Kept::of(old, new, d.clone())));
        }
        self.keep_counts(old, new, d.counts());
        Ok(d)
    }

    fn keep_counts(
        &self,
        old: &Arc<CodeSystemVersion>,
        new: &Arc<CodeSystemVersion>,
        c: DiffCounts,
    ) {
        let mut kept = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= COUNTS_KEPT {
            kept.retain(|_, k| k.old.strong_count() > 0 && k.new.strong_count() > 0);
            if kept.len() >= COUNTS_KEPT {
                kept.clear();
            }
        }
        kept.insert(key(old, new), Kept::of(old, new, c));
    }

    /// The counts of `new` against `old`, computed now or kept from before.
    pub fn counts(
        &self,
        old: &Arc<CodeSystemVersion>,
        new: &Arc<CodeSystemVersion>,
    ) -> Result<DiffCounts, FhirError> {
        let known = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key(old, new))
            .and_then(|k| k.get(old, new));
        match known {
            Some(c) => Ok(c),
            None => Ok(self.diff(old, new)?.counts()),
        }
    }

    /// Every version of `versions` (oldest first) with its date and counts.
    pub fn steps(&self, versions: &[Arc<CodeSystemVersion>]) -> Result<Vec<Step>, FhirError> {
        let mut out = Vec::with_capacity(versions.len());
        for (i, v) in versions.iter().enumerate() {
            let counts = match i {
                0 => None,
                _ => Some(self.counts(&versions[i - 1], v)?),
            };
            out.push(Step {
                version: v.clone(),
                date: version_date(v),
                counts,
            });
        }
        Ok(out)
    }
}

/// The date a version took effect: its version when that is a date, else the CodeSystem's
/// `date`, if it has one.
pub fn version_date(cs: &CodeSystemVersion) -> Option<String> {
    version_start(&cs.version).or_else(|| {
        cs.meta
            .extra
            .as_ref()
            .and_then(|e| e.get("date"))
            .and_then(|d| d.as_str())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CodeSystemMeta, Concept, IndexedRelease, Release, ReleaseInfo};

    fn version(v: &str, codes: &[&str]) -> Arc<CodeSystemVersion> {
        let meta = Arc::new(CodeSystemMeta {
            url: "http://example.org/cs".into(),
            ..CodeSystemMeta::default()
        });
        let info = ReleaseInfo {
            feed: "feed".into(),
            mapping: "feed".into(),
            version: v.into(),
            source: "test".into(),
            rows_read: codes.len() as u64,
            concepts: codes.len() as u64,
            mapping_hash: String::new(),
            source_hash: String::new(),
            imported_at: String::new(),
        };
        let concepts: Vec<Concept> = codes.iter().map(|c| Concept::new(*c)).collect();
        let release = IndexedRelease::new(Release {
            info,
            concepts: concepts.into(),
        });
        Arc::new(CodeSystemVersion::new(
            meta,
            v.into(),
            vec![Arc::new(release)],
        ))
    }

    /// A diff within the bound is kept (the second page reuses it); one larger is recomputed
    /// every time; the counts are kept either way; the oldest diffs go first.
    #[test]
    fn diffs_are_kept_up_to_the_concept_bound() {
        let a = version("2021-01-01", &["A", "B"]);
        let b = version("2021-02-01", &["B", "C", "D"]);
        let c = version("2021-03-01", &["D", "E"]);
        let kept = Timelines::new(3);
        let first = kept.diff(&a, &b).expect("diff");
        assert_eq!(
            first.counts(),
            DiffCounts {
                added: 2,
                removed: 1,
                changed: 0
            }
        );
        assert!(Arc::ptr_eq(&first, &kept.diff(&a, &b).expect("diff")));
        // b → c (3 concepts) pushes a → b (3) out.
        let second = kept.diff(&b, &c).expect("diff");
        assert!(Arc::ptr_eq(&second, &kept.diff(&b, &c).expect("diff")));
        assert!(!Arc::ptr_eq(&first, &kept.diff(&a, &b).expect("diff")));
        let none = Timelines::new(2);
        let d = none.diff(&a, &b).expect("diff");
        assert!(!Arc::ptr_eq(&d, &none.diff(&a, &b).expect("diff")));
        assert_eq!(none.counts(&a, &b).expect("counts").added, 2);
        let steps = none.steps(&[a, b, c]).expect("steps");
        assert_eq!(steps.len(), 3);
        assert!(steps[0].counts.is_none());
        assert_eq!(steps[2].date.as_deref(), Some("2021-03-01"));
        assert_eq!(steps[2].counts.map(|c| (c.added, c.removed)), Some((1, 2)));
    }
}
