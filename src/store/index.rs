//! In-memory indexes over one release: code lookup (binary search over the concepts in code
//! order) and a word-prefix text index over code and display. Built once per release and shared
//! (`Arc`) by every CodeSystem version that contains the release. The concepts themselves live in
//! record segments shared between the releases of a feed (see [`super::persist`]).

use std::sync::Arc;

use super::concept::{Concept, Release, ReleaseInfo};
use super::persist::Segment;

/// A release with its indexes.
#[derive(Debug)]
pub struct IndexedRelease {
    /// Provenance.
    pub info: ReleaseInfo,
    segments: Vec<Arc<Segment>>,
    /// (segment, record) per concept, in code order.
    members: Vec<(u16, u32)>,
    /// The text index, built on first use (or by [`IndexedRelease::warm`]), not at start-up.
    text: std::sync::OnceLock<WordIndex>,
}

/// Word-prefix index over code and display.
#[derive(Debug, Default)]
struct WordIndex {
    /// Unique lower-cased words, sorted.
    words: Vec<Box<str>>,
    /// `postings[word_start[i]..word_start[i+1]]` are the concept indexes containing word `i`.
    word_start: Vec<u32>,
    postings: Vec<u32>,
}

/// Splits text into lower-cased words for the text index and for filters. The whole code is also a
/// word, so `J45.9` matches `j45.9`, `j45` and `9`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl IndexedRelease {
    /// Indexes a freshly read release (concepts sorted by code).
    pub fn new(release: Release) -> Self {
        let n = release.concepts.len() as u32;
        let segment = Arc::new(Segment {
            name: String::new(),
            concepts: release.concepts,
            bases: Vec::new(),
        });
        Self::from_segments(
            release.info,
            vec![segment],
            (0..n).map(|i| (0, i)).collect(),
        )
    }

    /// Indexes a stored release: its concepts are `members` (segment, record), in code order.
    pub fn from_segments(
        info: ReleaseInfo,
        segments: Vec<Arc<Segment>>,
        members: Vec<(u16, u32)>,
    ) -> Self {
        Self {
            info,
            segments,
            members,
            text: std::sync::OnceLock::new(),
        }
    }

    /// Builds the text index now rather than on the first text search.
    pub fn warm(&self) {
        self.text_index();
    }

    fn text_index(&self) -> &WordIndex {
        self.text.get_or_init(|| {
            let mut pairs: Vec<(String, u32)> = Vec::with_capacity(self.members.len() * 3);
            for (i, c) in self.iter().enumerate() {
                let i = i as u32;
                pairs.push((c.code.to_lowercase(), i));
                pairs.extend(words(&c.code).map(|w| (w, i)));
                if let Some(d) = &c.display {
                    pairs.extend(words(d).map(|w| (w, i)));
                }
            }
            pairs.sort_unstable();
            pairs.dedup();
            let mut index = WordIndex {
                postings: Vec::with_capacity(pairs.len()),
                ..WordIndex::default()
            };
            for (w, i) in pairs {
                if index.words.last().map(AsRef::as_ref) != Some(w.as_str()) {
                    index.words.push(w.into_boxed_str());
                    index.word_start.push(index.postings.len() as u32);
                }
                index.postings.push(i);
            }
            index.word_start.push(index.postings.len() as u32);
            index
        })
    }

    /// The concept at an index (code order).
    pub fn concept(&self, i: u32) -> &Concept {
        let (s, k) = self.members[i as usize];
        &self.segments[s as usize].concepts[k as usize]
    }

    /// Identity of the stored record at an index: two releases of a feed hold the very same
    /// record exactly when this is equal (and then the concept is unchanged).
    pub fn record_id(&self, i: u32) -> (*const Segment, u32) {
        let (s, k) = self.members[i as usize];
        (Arc::as_ptr(&self.segments[s as usize]), k)
    }

    /// Number of concepts.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the release has no concepts.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The concepts, in code order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Concept> + '_ {
        self.members
            .iter()
            .map(|&(s, k)| &self.segments[s as usize].concepts[k as usize])
    }

    /// Index of a code (exact match).
    pub fn find(&self, code: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.members.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match (*self.concept(mid as u32).code).cmp(code) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// Concept indexes having a word that starts with `prefix` (lower-case), sorted, unique.
    pub fn word_prefix(&self, prefix: &str) -> Vec<u32> {
        let index = self.text_index();
        let start = index.words.partition_point(|w| &**w < prefix);
        let mut out = Vec::new();
        for (wi, w) in index.words[start..].iter().enumerate() {
            if !w.starts_with(prefix) {
                break;
            }
            let wi = start + wi;
            let (a, b) = (
                index.word_start[wi] as usize,
                index.word_start[wi + 1] as usize,
            );
            out.extend_from_slice(&index.postings[a..b]);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Whether a concept matches every filter word (lower-case, as [`words`] gives them) as a word
/// prefix, case-insensitively, over its code (whole, and its words) and display. Allocation-free
/// for ASCII text: this runs once per candidate of a text filter.
pub fn matches_words(concept: &Concept, filter_words: &[String]) -> bool {
    filter_words.iter().all(|f| {
        word_starts_with(&concept.code, f)
            || text_words(&concept.code).any(|w| word_starts_with(w, f))
            || concept
                .display
                .as_deref()
                .is_some_and(|d| text_words(d).any(|w| word_starts_with(w, f)))
    })
}

/// The words of a text as [`words`] splits them, not lower-cased.
fn text_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Whether `word`, lower-cased, starts with `prefix` (already lower-case).
fn word_starts_with(word: &str, prefix: &str) -> bool {
    if word.is_ascii() {
        word.len() >= prefix.len()
            && word.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    } else {
        word.to_lowercase().starts_with(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::super::concept::ReleaseInfo;
    use super::*;

    fn release(concepts: &[(&str, &str)]) -> Release {
        let mut concepts: Vec<Concept> = concepts
            .iter()
            .map(|(c, d)| {
                let mut k = Concept::new(*c);
                k.display = Some((*d).into());
                k
            })
            .collect();
        concepts.sort_by(|a, b| a.code.cmp(&b.code));
        Release {
            info: ReleaseInfo {
                feed: "t".into(),
                mapping: "t".into(),
                version: "1".into(),
                source: "test".into(),
                rows_read: 0,
                concepts: concepts.len() as u64,
                mapping_hash: String::new(),
                source_hash: String::new(),
                imported_at: String::new(),
            },
            concepts,
        }
    }

    #[test]
    fn finds_codes_and_word_prefixes() {
        let r = IndexedRelease::new(release(&[
            ("A81001", "THE DENSHAM SURGERY"),
            ("A81002", "QUEENS PARK MEDICAL CENTRE"),
            ("J45.9", "Asthma, unspecified"),
        ]));
        assert_eq!(r.find("A81002"), Some(1));
        assert_eq!(r.find("A8100"), None);
        let dens = r.word_prefix("dens");
        assert_eq!(dens.len(), 1);
        assert_eq!(&*r.concept(dens[0]).code, "A81001");
        assert_eq!(r.word_prefix("a81").len(), 2);
        assert_eq!(r.word_prefix("j45.9").len(), 1);
        assert_eq!(r.word_prefix("unspec").len(), 1);
        assert!(r.word_prefix("zzz").is_empty());
        assert!(matches_words(r.concept(0), &["dens".into(), "surg".into()]));
        assert!(!matches_words(
            r.concept(0),
            &["dens".into(), "park".into()]
        ));
        assert!(matches_words(r.concept(2), &["j45.9".into()]), "whole code");
        assert!(matches_words(r.concept(2), &["asth".into(), "9".into()]));
        assert!(!matches_words(r.concept(2), &["asthmatic".into()]));
        let mut greek = Concept::new("X1");
        greek.display = Some("ΟΔΟΣ Σταδίου".into());
        assert!(matches_words(&greek, &["οδος".into(), "στα".into()]));
    }
}
