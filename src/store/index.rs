//! Indexes over one release: code lookup (binary search over the codes in code order, and over
//! the codes case-folded), and a word-prefix text index over code and display. Built per release
//! and shared (`Arc`) by every CodeSystem version that contains the release; the folded and text
//! indexes are built on first use (or by [`IndexedRelease::warm`]), not at start-up. The concepts
//! themselves live in record segments shared between the releases of a feed (see
//! [`super::segment`]); code and display are read without decoding a record.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::concept::Concept;
use super::error::PersistError;
use super::release::{Release, ReleaseInfo};
use super::segment::Segment;
use super::view::ConceptView;

/// A release with its indexes.
#[derive(Debug)]
pub struct IndexedRelease {
    /// Provenance.
    pub info: ReleaseInfo,
    segments: Vec<Arc<Segment>>,
    /// Where each segment's records start in the numbering `members` uses.
    segment_start: Vec<u32>,
    /// The record of each concept, in code order (segment records numbered one after another);
    /// read on first use for an older release being served (see [`IndexedRelease::lazy`]).
    members: OnceLock<Order>,
    /// Reads the runs of a lazy release.
    runs_of: Option<Loader>,
    /// The first 8 bytes of every [`SAMPLE`]th code, so that a lookup narrows its binary search
    /// in this small array before reading codes from the records (fewer cache misses). Built on
    /// the first lookup, so an old version nobody asks for costs nothing.
    samples: OnceLock<Samples>,
    /// Positions in case-folded code order, `None` when that is code order already.
    folded: OnceLock<Option<Vec<u32>>>,
    text: OnceLock<WordIndex>,
    /// Per property code, built on first use by a property filter: value (as filters compare it)
    /// → positions having it, ascending.
    by_property: std::sync::Mutex<HashMap<String, Arc<PropertyIndex>>>,
}

/// Positions by property value.
type PropertyIndex = HashMap<Box<str>, Vec<u32>>;

/// Reads a release's runs (segment, first record, length) over its segments, on first use.
pub type RunsLoader =
    Box<dyn Fn(&[Arc<Segment>]) -> Result<Vec<(u16, u32, u32)>, PersistError> + Send + Sync>;

struct Loader(RunsLoader);

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunsLoader")
    }
}

const SAMPLE: usize = 64;

/// The keys ([`code_key`]) of every [`SAMPLE`]th code, and of every [`SAMPLE`]th of those: a
/// lookup finds its sample in two small searches (the top level stays in cache) rather than
/// one over the whole array.
#[derive(Debug)]
struct Samples {
    keys: Vec<u64>,
    top: Vec<u64>,
}

impl Samples {
    fn new(keys: Vec<u64>) -> Self {
        let top = keys.iter().step_by(SAMPLE).copied().collect();
        Self { keys, top }
    }

    /// `(a, b)`: the samples before `a` have a key less than `key`, those from `b` on a greater
    /// one (as two partition points over `keys` would say).
    fn around(&self, key: u64) -> (usize, usize) {
        let t = self.top.partition_point(|&k| k < key);
        // `keys[SAMPLE * (t - 1)] < key <= keys[SAMPLE * t]`: the first key not less is between.
        let lo = SAMPLE * t.saturating_sub(1);
        let hi = (SAMPLE * t).min(self.keys.len());
        let a = lo + self.keys[lo..hi].partition_point(|&k| k < key);
        // Codes sharing their first 8 bytes are few: step over them.
        let mut b = a;
        while self.keys.get(b).is_some_and(|&k| k <= key) {
            b += 1;
        }
        (a, b)
    }
}

/// The first 8 bytes of a code as a number that orders as the bytes do.
fn code_key(code: &str) -> u64 {
    bytes_key(code.as_bytes())
}

/// [`code_key`] of bytes.
fn bytes_key(bytes: &[u8]) -> u64 {
    // Loads of fixed widths (a copy of a length known only now would be a call): the first
    // and the last four of a shorter code overlap on bytes they both hold.
    let n = bytes.len();
    match (bytes.first_chunk::<8>(), bytes.first_chunk::<4>()) {
        (Some(first), _) => u64::from_be_bytes(*first),
        (None, Some(first)) => {
            let last = bytes[n - 4..]
                .first_chunk::<4>()
                .copied()
                .unwrap_or_default();
            u64::from(u32::from_be_bytes(*first)) << 32
                | u64::from(u32::from_be_bytes(last)) << (8 * (8 - n))
        }
        (None, None) => bytes
            .iter()
            .enumerate()
            .fold(0, |k, (i, &b)| k | u64::from(b) << (56 - 8 * i)),
    }
}

/// Word-prefix index over the words of code and display (not the whole code: the folded code
/// order answers prefixes of that).
#[derive(Debug, Default)]
struct WordIndex {
    /// Unique lower-cased words, sorted, one after another.
    text: String,
    /// `text[word_at[i]..word_at[i + 1]]` is word `i`.
    word_at: Vec<u32>,
    /// `postings[posting_at[i].0..posting_at[i].1]` are the positions having word `i`, ascending.
    posting_at: Vec<(u32, u32)>,
    postings: Vec<u32>,
}

impl WordIndex {
    fn word(&self, i: usize) -> &str {
        &self.text[self.word_at[i] as usize..self.word_at[i + 1] as usize]
    }

    fn len(&self) -> usize {
        self.word_at.len().saturating_sub(1)
    }
}

/// Splits text into lower-cased words for the text index and for filters. The whole code is also a
/// word, so `J45.9` matches `j45.9`, `j45` and `9`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text_words(text).map(str::to_lowercase)
}

/// Lower-cases into a reused buffer, as [`words`] does (`str::to_lowercase`: a word-final `Σ`
/// becomes `ς`); without allocating for ASCII.
fn lower_into(word: &str, buf: &mut String) {
    buf.clear();
    if word.is_ascii() {
        buf.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        buf.push_str(&word.to_lowercase());
    }
}

/// Compares `a` lower-cased with `b` (already lower-case): `Equal` when `a` lower-cased starts
/// with `b` (as a prefix test) or equals it.
fn fold_prefix_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        for (k, &y) in b.iter().enumerate() {
            match a.get(k) {
                None => return Ordering::Less,
                Some(x) => match x.to_ascii_lowercase().cmp(&y) {
                    Ordering::Equal => {}
                    o => return o,
                },
            }
        }
        return Ordering::Equal;
    }
    let a = a.to_lowercase();
    if a.starts_with(b) {
        Ordering::Equal
    } else {
        a.as_str().cmp(b)
    }
}

/// Compares two codes case-folded (ties by their exact text).
fn fold_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        let (x, y) = (a.as_bytes(), b.as_bytes());
        return x
            .iter()
            .map(u8::to_ascii_lowercase)
            .cmp(y.iter().map(u8::to_ascii_lowercase))
            .then_with(|| a.cmp(b));
    }
    a.to_lowercase()
        .cmp(&b.to_lowercase())
        .then_with(|| a.cmp(b))
}

/// The records of a release in code order: one number a concept, or, when the release shares
/// long stretches with the releases before it (a monthly release that changed 0.5 % of the
/// register), the runs of consecutive records, which cost a few bytes a *change* instead of four
/// bytes a concept.
#[derive(Debug)]
enum Order {
    /// The record (numbered across the segments) of each position.
    Dense(Vec<u32>),
    /// Run `k` covers positions `at[k]..at[k + 1]` with records `first[k]..`; `at` ends with
    /// the number of concepts.
    Runs { at: Vec<u32>, first: Vec<u32> },
}

impl Order {
    /// From runs (first record, length; each within one segment) in code order: runs when they take at most half the
    /// memory of one number a concept.
    fn from_runs(runs: impl Iterator<Item = (u32, u32)>) -> Self {
        let mut at = vec![0u32];
        let mut first = Vec::new();
        // Runs are never joined: each stays within one segment (see `same_records`).
        for (g, n) in runs.filter(|&(_, n)| n > 0) {
            let end = at[at.len() - 1];
            first.push(g);
            at.push(end + n);
        }
        let len = at[at.len() - 1] as usize;
        if first.len() * 8 <= len * 2 {
            at.shrink_to_fit();
            first.shrink_to_fit();
            return Order::Runs { at, first };
        }
        let mut dense = Vec::with_capacity(len);
        for (k, &f) in first.iter().enumerate() {
            dense.extend(f..f + (at[k + 1] - at[k]));
        }
        Order::Dense(dense)
    }

    fn len(&self) -> usize {
        match self {
            Order::Dense(d) => d.len(),
            Order::Runs { at, .. } => at[at.len() - 1] as usize,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> usize {
        match self {
            Order::Dense(d) => d.len() * 4,
            Order::Runs { at, first } => (at.len() + first.len()) * 4,
        }
    }

    /// The record at position `i`.
    fn get(&self, i: u32) -> u32 {
        let whole = match self {
            Order::Dense(d) => Window::Dense(d),
            Order::Runs { at, first } => Window::Runs { at, first },
        };
        whole.get(i)
    }

    /// Positions `lo..hi`, for many reads among them (a search in a bucket of samples): the
    /// runs that cover them are found once, so a read searches those few rather than all the
    /// runs of a release that has hundreds of thousands.
    fn window(&self, lo: u32, hi: u32) -> Window<'_> {
        match self {
            Order::Dense(d) => Window::Dense(d),
            Order::Runs { at, first } if lo < hi => {
                let k = at.partition_point(|&a| a <= lo) - 1;
                let end = k + at[k..].partition_point(|&a| a < hi);
                Window::Runs {
                    at: &at[k..=end],
                    first: &first[k..end],
                }
            }
            Order::Runs { .. } => Window::Runs {
                at: &[],
                first: &[],
            },
        }
    }

    /// Whether position `i` holds record `g`.
    fn holds(&self, i: u32, g: u32) -> bool {
        match self {
            Order::Dense(d) => d[i as usize] == g,
            Order::Runs { .. } => self.get(i) == g,
        }
    }

    /// The record at position `i` and how many positions from `i` on hold consecutive records,
    /// trying run `*hint` and the one after it first (a walk through the
    /// order in code order then finds each run without a search); `*hint` becomes the run of `i`.
    fn run_from(&self, i: u32, hint: &mut usize) -> (u32, u32) {
        match self {
            Order::Dense(d) => (d[i as usize], 1),
            Order::Runs { at, first } => {
                let within = |k: usize| k + 1 < at.len() && at[k] <= i && i < at[k + 1];
                let k = if within(*hint) {
                    *hint
                } else if within(*hint + 1) {
                    *hint + 1
                } else {
                    at.partition_point(|&a| a <= i) - 1
                };
                *hint = k;
                (first[k] + (i - at[k]), at[k + 1] - i)
            }
        }
    }
}

/// Some positions of an [`Order`] (see [`Order::window`]).
enum Window<'a> {
    Dense(&'a [u32]),
    /// The runs covering the positions: `at` has one more entry than `first`.
    Runs {
        at: &'a [u32],
        first: &'a [u32],
    },
}

impl Window<'_> {
    /// The record at position `i` (one of the window's).
    fn get(&self, i: u32) -> u32 {
        match self {
            Window::Dense(d) => d[i as usize],
            Window::Runs { at, first } => {
                let k = at.partition_point(|&a| a <= i) - 1;
                first[k] + (i - at[k])
            }
        }
    }
}

impl IndexedRelease {
    /// Indexes a freshly read release (concepts sorted by code).
    pub fn new(release: Release) -> Self {
        let n = release.concepts.len() as u32;
        let segment = Arc::new(Segment::decoded(
            String::new(),
            release.concepts.to_vec(),
            Vec::new(),
        ));
        Self::from_segments(release.info, vec![segment], [(0, 0, n)])
    }

    /// Indexes a stored release: its concepts are `runs` of consecutive records (segment, first
    /// record, number of records), in code order.
    pub fn from_segments(
        info: ReleaseInfo,
        segments: Vec<Arc<Segment>>,
        runs: impl IntoIterator<Item = (u16, u32, u32)>,
    ) -> Self {
        let mut segment_start = Vec::with_capacity(segments.len());
        let mut at = 0u32;
        for s in &segments {
            segment_start.push(at);
            at += s.len() as u32;
        }
        let members = Order::from_runs(
            runs.into_iter()
                .map(|(s, k, n)| (segment_start[s as usize] + k, n)),
        );
        Self {
            info,
            segments,
            segment_start,
            members: OnceLock::from(members),
            runs_of: None,
            samples: OnceLock::new(),
            folded: OnceLock::new(),
            text: OnceLock::new(),
            by_property: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The record segments the release reads from.
    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.segments
    }

    /// A stored release whose code order is read on first use by `runs_of` (an older release:
    /// most are never asked for). A release that cannot be read then is logged and has no
    /// concepts.
    pub fn lazy(info: ReleaseInfo, segments: Vec<Arc<Segment>>, runs_of: RunsLoader) -> Self {
        let mut segment_start = Vec::with_capacity(segments.len());
        let mut at = 0u32;
        for s in &segments {
            segment_start.push(at);
            at += s.len() as u32;
        }
        Self {
            info,
            segments,
            segment_start,
            members: OnceLock::new(),
            runs_of: Some(Loader(runs_of)),
            samples: OnceLock::new(),
            folded: OnceLock::new(),
            text: OnceLock::new(),
            by_property: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The code order, read now if it was not yet.
    fn order(&self) -> &Order {
        self.members.get_or_init(|| {
            let runs = match &self.runs_of {
                Some(Loader(load)) => load(&self.segments).unwrap_or_else(|e| {
                    tracing::error!(error = %e, feed = %self.info.feed, version = %self.info.version, "stored release cannot be read; served empty");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            let start = &self.segment_start;
            Order::from_runs(
                runs.into_iter()
                    .filter(|&(s, _, _)| (s as usize) < start.len())
                    .map(|(s, k, n)| (start[s as usize] + k, n)),
            )
        })
    }

    /// Whether the code order is in memory (an older release not yet asked for is not).
    pub fn is_loaded(&self) -> bool {
        self.members.get().is_some()
    }

    /// Bytes the code order takes in memory (for reports and tests).
    pub fn order_bytes(&self) -> usize {
        self.order().bytes()
    }

    /// How many positions from `i` here and `j` in `other` hold the very same stored records
    /// one after another (0 when the records at `i` and `j` differ): an unchanged stretch of the
    /// register is skipped whole, without reading a code.
    pub fn same_records(&self, i: u32, other: &IndexedRelease, j: u32) -> u32 {
        self.same_records_from(i, other, j, &mut [0, 0])
    }

    /// [`IndexedRelease::same_records`] for a walk through both releases in code order: `hints`
    /// keeps the runs last found in each, so that the next ones are found without a search.
    pub fn same_records_from(
        &self,
        i: u32,
        other: &IndexedRelease,
        j: u32,
        hints: &mut [usize; 2],
    ) -> u32 {
        let (ga, na) = self.order().run_from(i, &mut hints[0]);
        let (gb, nb) = other.order().run_from(j, &mut hints[1]);
        let (sa, sb) = (self.segment_of(ga), other.segment_of(gb));
        let same = std::ptr::eq(&*self.segments[sa], &*other.segments[sb])
            && ga - self.segment_start[sa] == gb - other.segment_start[sb];
        if !same {
            return 0;
        }
        // A run may go on past its segment's end in neither release: runs stay in one segment.
        let n = na.min(nb);
        if n > 1 {
            return n;
        }
        // One number a position (a release that changed much of the register): the stretch of
        // the very same records goes on while both go on through consecutive records of the
        // segment, read here in one pass rather than one call a position.
        let max = self.room_from(i, ga, sa).min(other.room_from(j, gb, sb));
        let (oa, ob) = (self.order(), other.order());
        let mut n = 1;
        while n < max && oa.holds(i + n, ga + n) && ob.holds(j + n, gb + n) {
            n += 1;
        }
        n
    }

    /// The segment that stored record `g` is in.
    fn segment_of(&self, g: u32) -> usize {
        self.segment_start.partition_point(|&st| st <= g) - 1
    }

    /// How many positions from `i` on could hold consecutive records of segment `s` from record
    /// `g` on: as many as are left in the segment, and in the order.
    fn room_from(&self, i: u32, g: u32, s: usize) -> u32 {
        let end = self
            .segment_start
            .get(s + 1)
            .copied()
            .unwrap_or(u32::MAX)
            .min(g.saturating_add(self.order().len() as u32 - i));
        end - g
    }

    /// Positions of the concepts having `property` with one of `values` (compared as filters
    /// compare them: a Coding by its code), ascending. The index of a property is built the first
    /// time a filter asks for it (one pass decoding every concept), then kept: a filtered
    /// expansion of a national register reads only its matches.
    pub fn with_property(&self, property: &str, values: &[String]) -> Vec<u32> {
        let index = self.property_index(property);
        let lists: Vec<&[u32]> = values
            .iter()
            .filter_map(|v| index.get(v.as_str()).map(Vec::as_slice))
            .collect();
        merge_sorted(lists)
    }

    /// Concepts with a value of `property` that `keep` accepts (every value, for `exists`), by
    /// the same index: `keep` runs once per distinct value, not once per concept.
    pub fn with_property_where(&self, property: &str, keep: &dyn Fn(&str) -> bool) -> Vec<u32> {
        let index = self.property_index(property);
        let lists: Vec<&[u32]> = index
            .iter()
            .filter(|(v, _)| keep(v))
            .map(|(_, l)| l.as_slice())
            .collect();
        merge_sorted(lists)
    }

    /// The value → concepts index of one property, built on first use.
    fn property_index(&self, property: &str) -> Arc<PropertyIndex> {
        let mut all = self
            .by_property
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(property.to_string())
            .or_insert_with(|| {
                let mut index = PropertyIndex::new();
                for i in 0..self.order().len() as u32 {
                    for v in self.concept(i).property(property) {
                        let list = index.entry(v.as_text().into()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                Arc::new(index)
            })
            .clone()
    }

    /// Builds the indexes otherwise built on first use.
    pub fn warm(&self) {
        self.folded();
        self.text_index();
    }

    /// The stored record at an index: its segment and number there.
    pub fn record(&self, i: u32) -> (&Segment, u32) {
        let g = self.order().get(i);
        let s = self.segment_of(g);
        (&self.segments[s], g - self.segment_start[s])
    }

    /// The concept at an index (code order).
    pub fn concept(&self, i: u32) -> Cow<'_, Concept> {
        let (s, k) = self.record(i);
        s.concept(k)
    }

    /// The concept at an index into `view`, borrowed from its records (see [`ConceptView`]):
    /// what a comparison of many concepts reads, reusing one view.
    pub fn view<'a>(&'a self, i: u32, view: &mut ConceptView<'a>) {
        let (s, k) = self.record(i);
        s.view(k, view);
    }

    /// [`IndexedRelease::view`] of a concept known to be a later version of the one `known`
    /// holds (concept `k` of `other`, read into `known` already): when its record is patched
    /// from that record, only the patches are read (see [`Segment::view_over`]).
    pub fn view_over<'a>(
        &'a self,
        i: u32,
        view: &mut ConceptView<'a>,
        other: &IndexedRelease,
        k: u32,
        known: &ConceptView<'a>,
    ) {
        let (s, r) = self.record(i);
        let (os, ok) = other.record(k);
        s.view_over(r, view, Some((os, ok, known)));
    }

    /// The code at an index, without decoding the concept.
    pub fn code(&self, i: u32) -> &str {
        let (s, k) = self.record(i);
        s.code(k)
    }

    /// The display at an index, without decoding the concept.
    pub fn display(&self, i: u32) -> Option<&str> {
        let (s, k) = self.record(i);
        s.display(k)
    }

    /// Whether any concept has parents.
    pub fn has_parents(&self) -> bool {
        self.segments.iter().any(|s| s.has_parents())
    }

    /// Identity of the stored record at an index: two releases of a feed hold the very same
    /// record exactly when this is equal (and then the concept is unchanged).
    pub fn record_id(&self, i: u32) -> (*const Segment, u32) {
        let (s, k) = self.record(i);
        (std::ptr::from_ref(s), k)
    }

    /// Number of concepts.
    pub fn len(&self) -> usize {
        self.order().len()
    }

    /// Whether the release has no concepts.
    pub fn is_empty(&self) -> bool {
        self.order().is_empty()
    }

    /// The concepts, in code order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Cow<'_, Concept>> + '_ {
        (0..self.order().len() as u32).map(|i| self.concept(i))
    }

    /// Index of a code (exact match).
    pub fn find(&self, code: &str) -> Option<u32> {
        // Sampled codes with a smaller key are before the code, those with a larger one after.
        let key = code_key(code);
        let samples = self.samples.get_or_init(|| {
            Samples::new(
                (0..self.order().len())
                    .step_by(SAMPLE)
                    .map(|i| code_key(self.code(i as u32)))
                    .collect(),
            )
        });
        let (a, b) = samples.around(key);
        let (mut lo, mut hi) = (
            a.saturating_sub(1) * SAMPLE,
            (b * SAMPLE).min(self.order().len()),
        );
        // Bytes order as text does; a record whose bytes equal `code` is text.
        let window = self.order().window(lo as u32, hi as u32);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let g = window.get(mid as u32);
            let s = self.segment_of(g);
            let probe = self.segments[s].code_bytes(g - self.segment_start[s]);
            // The first 8 bytes as a number settle most comparisons without a call.
            let order = bytes_key(probe)
                .cmp(&key)
                .then_with(|| probe.cmp(code.as_bytes()));
            match order {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    fn folded(&self) -> Option<&[u32]> {
        self.folded
            .get_or_init(|| {
                let n = self.order().len() as u32;
                let in_order =
                    (1..n).all(|i| fold_cmp(self.code(i - 1), self.code(i)) != Ordering::Greater);
                (!in_order).then(|| {
                    let mut order: Vec<u32> = (0..n).collect();
                    order.sort_by(|&a, &b| fold_cmp(self.code(a), self.code(b)));
                    order
                })
            })
            .as_deref()
    }

    /// The positions whose code, lower-cased, starts with `prefix` (lower-case), in folded order.
    fn folded_prefix(&self, prefix: &str) -> impl Iterator<Item = u32> + '_ {
        let order = self.folded();
        let at = move |k: usize| order.map_or(k as u32, |o| o[k]);
        let n = self.order().len();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if fold_prefix_cmp(self.code(at(mid)), prefix) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = lo;
        hi = n;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if fold_prefix_cmp(self.code(at(mid)), prefix) == Ordering::Greater {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (start..lo).map(at)
    }

    /// Index of a code compared case-insensitively.
    pub fn find_folded(&self, code: &str) -> Option<u32> {
        let mut lower = String::new();
        lower_into(code, &mut lower);
        let mut candidate = String::new();
        self.folded_prefix(&lower).find(|&i| {
            lower_into(self.code(i), &mut candidate);
            candidate == lower
        })
    }

    /// Calls `f` with each (lower-cased word, position) of the text index, in position order.
    fn each_word(&self, f: &mut dyn FnMut(&str, u32)) {
        let mut word = String::new();
        for i in 0..self.order().len() as u32 {
            let c = self.code(i);
            // The whole code is found through the folded code order.
            for w in text_words(c).filter(|w| w.len() != c.len()) {
                lower_into(w, &mut word);
                f(&word, i);
            }
            if let Some(d) = self.display(i) {
                for w in text_words(d) {
                    lower_into(w, &mut word);
                    f(&word, i);
                }
            }
        }
    }

    fn text_index(&self) -> &WordIndex {
        self.text.get_or_init(|| {
            // Two passes over the text (number the words and count their postings, then fill
            // one array), so building takes no more memory than the index.
            let mut ids: HashMap<String, u32> = HashMap::new();
            let mut counts: Vec<u32> = Vec::new();
            let mut last: Vec<u32> = Vec::new();
            self.each_word(&mut |w, i| {
                let id = match ids.get(w) {
                    Some(&id) => id as usize,
                    None => {
                        ids.insert(w.to_string(), counts.len() as u32);
                        counts.push(0);
                        last.push(u32::MAX);
                        counts.len() - 1
                    }
                };
                if last[id] != i {
                    last[id] = i;
                    counts[id] += 1;
                }
            });
            let mut start: Vec<u32> = Vec::with_capacity(counts.len() + 1);
            let mut at = 0u32;
            for &c in &counts {
                start.push(at);
                at += c;
            }
            start.push(at);
            drop(counts);
            let mut postings = vec![0u32; at as usize];
            let mut fill: Vec<u32> = start[..start.len() - 1].to_vec();
            last.iter_mut().for_each(|l| *l = u32::MAX);
            self.each_word(&mut |w, i| {
                let id = ids[w] as usize;
                if last[id] != i {
                    last[id] = i;
                    postings[fill[id] as usize] = i;
                    fill[id] += 1;
                }
            });
            let mut words: Vec<(String, u32)> = ids.into_iter().collect();
            words.sort_unstable();
            let mut index = WordIndex {
                postings,
                ..WordIndex::default()
            };
            for (w, id) in words {
                index.word_at.push(index.text.len() as u32);
                index.text.push_str(&w);
                index
                    .posting_at
                    .push((start[id as usize], start[id as usize + 1]));
            }
            index.word_at.push(index.text.len() as u32);
            index
        })
    }

    /// Concept indexes having a word (or a code) that starts with `prefix` (lower-case), sorted,
    /// unique.
    pub fn word_prefix(&self, prefix: &str) -> Vec<u32> {
        let index = self.text_index();
        let start = {
            let (mut lo, mut hi) = (0, index.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if index.word(mid) < prefix {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let mut lists: Vec<&[u32]> = Vec::new();
        for wi in start..index.len() {
            if !index.word(wi).starts_with(prefix) {
                break;
            }
            let (a, b) = index.posting_at[wi];
            lists.push(&index.postings[a as usize..b as usize]);
        }
        let codes: Vec<u32> = self.folded_prefix(prefix).collect();
        lists.push(&codes);
        merge_sorted(lists)
    }
}

/// The union of ascending lists, ascending and unique. Matches cluster in code order (a postcode
/// area, an ICD-10 chapter), so a bitmap over the span they cover is usually small; otherwise they
/// are sorted.
fn merge_sorted(mut lists: Vec<&[u32]>) -> Vec<u32> {
    lists.retain(|l| !l.is_empty());
    let total: usize = lists.iter().map(|l| l.len()).sum();
    match lists.len() {
        0 => return Vec::new(),
        1 => return lists[0].to_vec(),
        _ => {}
    }
    let lo = lists.iter().map(|l| l[0]).min().unwrap_or(0);
    let hi = lists.iter().map(|l| l[l.len() - 1]).max().unwrap_or(0);
    let span = (hi - lo) as usize + 1;
    if span / 64 <= total * 2 {
        let mut bits = vec![0u64; span.div_ceil(64)];
        for &i in lists.iter().flat_map(|l| l.iter()) {
            let k = (i - lo) as usize;
            bits[k / 64] |= 1 << (k % 64);
        }
        let mut out = Vec::with_capacity(total.min(span));
        for (k, &w) in bits.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                out.push(lo + (k * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        out
    } else {
        let mut out = Vec::with_capacity(total);
        for l in lists.iter() {
            out.extend_from_slice(l);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Whether a concept matches every filter word (lower-case, as [`words`] gives them) as a word
/// prefix, case-insensitively, over its code (whole, and its words) and display.
pub fn matches_words(concept: &Concept, filter_words: &[String]) -> bool {
    matches_text(&concept.code, concept.display.as_deref(), filter_words)
}

/// [`matches_words`] over a code and display. Allocation-free for ASCII text: this runs once per
/// candidate of a text filter.
pub fn matches_text(code: &str, display: Option<&str>, filter_words: &[String]) -> bool {
    filter_words.iter().all(|f| {
        word_starts_with(code, f)
            || text_words(code).any(|w| word_starts_with(w, f))
            || display.is_some_and(|d| text_words(d).any(|w| word_starts_with(w, f)))
    })
}

/// The words of a text as [`words`] splits them, not lower-cased.
fn text_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Whether `word`, lower-cased, starts with `prefix` (already lower-case).
fn word_starts_with(word: &str, prefix: &str) -> bool {
    fold_prefix_cmp(word, prefix) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::super::release::ReleaseInfo;
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
            concepts: concepts.into(),
        }
    }

    #[test]
    fn finds_codes_and_word_prefixes() {
        let r = IndexedRelease::new(release(&[
            ("A81001", "THE DENSHAM SURGERY"),
            ("A81002", "QUEENS PARK MEDICAL CENTRE"),
            ("J45.9", "Asthma, unspecified"),
            ("X1", "ΟΔΟΣ Σταδίου"),
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
        // Lower-cased as filter words are (a word-final Σ is ς).
        assert_eq!(r.word_prefix(&words("ΟΔΟΣ").collect::<String>()), [3]);
        assert_eq!(r.word_prefix("σταδ"), [3]);
        // Whole codes, case-insensitively; prefixes of them.
        assert_eq!(r.find_folded("a81002"), Some(1));
        assert_eq!(r.find_folded("j45.9"), Some(2));
        assert_eq!(r.find_folded("a8100"), None);
        assert_eq!(r.word_prefix("a8100"), [0, 1]);
        assert!(matches_words(
            &r.concept(0),
            &["dens".into(), "surg".into()]
        ));
        assert!(!matches_words(
            &r.concept(0),
            &["dens".into(), "park".into()]
        ));
        assert!(
            matches_words(&r.concept(2), &["j45.9".into()]),
            "whole code"
        );
        assert!(matches_words(&r.concept(2), &["asth".into(), "9".into()]));
        assert!(!matches_words(&r.concept(2), &["asthmatic".into()]));
        // Codes whose case-folded order is not their order; many matches (the bitmap path).
        let mixed: Vec<(String, String)> = (0..200)
            .map(|i| {
                (
                    format!("{}{i:03}", if i % 2 == 0 { "a" } else { "B" }),
                    "x".into(),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = mixed
            .iter()
            .map(|(c, d)| (c.as_str(), d.as_str()))
            .collect();
        let r = IndexedRelease::new(release(&pairs));
        // Every code is found where it is, through the sampled keys (several blocks of 64).
        for i in 0..r.len() as u32 {
            assert_eq!(r.find(r.code(i)), Some(i));
        }
        let long: Vec<(String, String)> = (0..300)
            .map(|i| (format!("urn:long:prefix:{i:04}"), "x".into()))
            .collect();
        let pairs: Vec<(&str, &str)> = long.iter().map(|(c, d)| (c.as_str(), d.as_str())).collect();
        let l = IndexedRelease::new(release(&pairs));
        for i in 0..l.len() as u32 {
            assert_eq!(
                l.find(l.code(i)),
                Some(i),
                "codes sharing their first 8 bytes"
            );
        }
        assert_eq!(l.find("urn:long:prefix:0300"), None);
        assert_eq!(r.find("B0011"), None);
        assert_eq!(r.find("0"), None);
        assert_eq!(r.find("zzz"), None);
        assert_eq!(r.find_folded("b001").map(|i| r.code(i)), Some("B001"));
        assert_eq!(r.find_folded("A198").map(|i| r.code(i)), Some("a198"));
        assert_eq!(r.word_prefix("b").len(), 100);
        assert_eq!(r.word_prefix("x").len(), 200);
        assert_eq!(r.word_prefix("a1").len(), 50);
        let mut greek = Concept::new("X1");
        greek.display = Some("ΟΔΟΣ Σταδίου".into());
        assert!(matches_words(&greek, &["οδος".into(), "στα".into()]));
    }

    /// Finding goes through two levels of samples, then compares 8-byte keys before bytes:
    /// codes long and short, many sharing their first 8 bytes (past several samples), each found
    /// at its position, and codes between them not found.
    #[test]
    fn finds_every_code_across_samples_and_shared_key_prefixes() {
        let mut codes: Vec<String> = (0..9000).map(|i| format!("P{i:05}")).collect();
        codes.extend((0..300).map(|i| format!("SHARED8B{i:04}")));
        codes.extend(["S", "SH", "SHARED8B", "SHARED8", "Z\u{e9}"].map(String::from));
        codes.extend((0..5000).map(|i| format!("{:x}", i * 7919)));
        codes.sort();
        codes.dedup();
        let pairs: Vec<(&str, &str)> = codes.iter().map(|c| (c.as_str(), "d")).collect();
        let r = IndexedRelease::new(release(&pairs));
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(r.find(code), Some(i as u32), "{code}");
        }
        for missing in [
            "",
            "P",
            "P000000",
            "SHARED8A",
            "SHARED8B0300",
            "SHARED8B00",
            "Zz",
            "~",
        ] {
            assert_eq!(r.find(missing), None, "{missing}");
        }
        // The 8-byte key orders as the bytes do, short codes padded.
        assert!(codes.windows(2).all(|w| code_key(&w[0]) <= code_key(&w[1])));
        assert_eq!(bytes_key(b"AB"), 0x4142 << 48);
        // The same release as runs over a larger segment (every other stretch of 37 codes of
        // the segment, many runs): each code found, the skipped ones not.
        let mut all: Vec<String> = codes.iter().map(|c| format!("{c}0")).collect();
        all.extend(codes.iter().cloned());
        all.sort();
        all.dedup();
        let segment = Arc::new(Segment::decoded(
            "all".into(),
            all.iter().map(|c| Concept::new(c.as_str())).collect(),
            Vec::new(),
        ));
        let runs: Vec<(u16, u32, u32)> = (0..all.len() as u32)
            .step_by(74)
            .map(|k| (0, k, 37.min(all.len() as u32 - k)))
            .collect();
        let kept: Vec<&String> = runs
            .iter()
            .flat_map(|&(_, k, n)| &all[k as usize..(k + n) as usize])
            .collect();
        let r = IndexedRelease::from_segments(release(&[]).info, vec![segment], runs);
        assert!(matches!(r.order(), Order::Runs { .. }));
        for (i, code) in kept.iter().enumerate() {
            assert_eq!(r.find(code), Some(i as u32), "{code}");
        }
        for code in all.iter().skip(37).step_by(74) {
            assert_eq!(r.find(code), None, "{code}");
        }
        for code in [
            "",
            "A",
            "AB1",
            "AB12",
            "AB12C",
            "DN320QY",
            "DN320QYZ",
            "DN320QYZ9",
        ] {
            let mut padded = [0u8; 8];
            let n = code.len().min(8);
            padded[..n].copy_from_slice(&code.as_bytes()[..n]);
            assert_eq!(
                bytes_key(code.as_bytes()),
                u64::from_be_bytes(padded),
                "{code}"
            );
        }
    }

    /// Two releases over the same two segments: `a` is segment 0 whole; `b` shares its first and
    /// last stretch and takes two records from segment 1 in between.
    #[test]
    fn code_order_as_runs_reads_as_one_number_a_concept_and_skips_shared_stretches() {
        let concepts =
            |codes: &[&str]| -> Vec<Concept> { codes.iter().map(|c| Concept::new(*c)).collect() };
        let s0 = Arc::new(Segment::decoded(
            "s0".into(),
            concepts(&["A1", "A2", "A3", "A4", "A5", "A6"]),
            Vec::new(),
        ));
        let s1 = Arc::new(Segment::decoded(
            "s1".into(),
            concepts(&["A3", "A35"]),
            Vec::new(),
        ));
        let info = release(&[]).info;
        let a = IndexedRelease::from_segments(info.clone(), vec![s0.clone()], [(0, 0, 6)]);
        let b =
            IndexedRelease::from_segments(info, vec![s0, s1], [(0, 0, 2), (1, 0, 2), (0, 3, 3)]);
        fn codes(r: &IndexedRelease) -> Vec<&str> {
            (0..r.len() as u32).map(|i| r.code(i)).collect()
        }
        assert_eq!(codes(&a), ["A1", "A2", "A3", "A4", "A5", "A6"]);
        assert_eq!(codes(&b), ["A1", "A2", "A3", "A35", "A4", "A5", "A6"]);
        for (i, code) in codes(&b).iter().enumerate() {
            assert_eq!(b.find(code), Some(i as u32));
        }
        assert_eq!(b.find("A0"), None);
        assert_eq!(b.find("A36"), None);
        // Shared stretches: A1–A2 from the start, A4–A6 later; A3 is another record in `b`.
        // (`b` is short runs, held as one number a concept: each shared stretch is still found
        // whole in one call, not one position a call.)
        assert_eq!(a.same_records(0, &b, 0), 2);
        assert_eq!(a.same_records(1, &b, 1), 1);
        assert_eq!(a.same_records(2, &b, 2), 0);
        assert_eq!(a.same_records(3, &b, 4), 3);
        assert_eq!(a.same_records(4, &b, 5), 2);
        assert_eq!(a.same_records(3, &b, 5), 0);
        assert_eq!(b.same_records(0, &a, 0), 2);
        assert_eq!(b.same_records(4, &a, 3), 3);
        // Runs take a few bytes a run, not four a concept, once the runs are long.
        let long = IndexedRelease::from_segments(
            release(&[]).info,
            vec![Arc::new(Segment::decoded(
                "big".into(),
                (0..1000)
                    .map(|i| Concept::new(format!("C{i:04}")))
                    .collect(),
                Vec::new(),
            ))],
            [(0, 0, 400), (0, 500, 500)],
        );
        assert_eq!(long.len(), 900);
        assert_eq!(long.code(400), "C0500");
        assert!(long.order_bytes() < 100, "{}", long.order_bytes());
        let whole = IndexedRelease::from_segments(
            release(&[]).info,
            long.segments().to_vec(),
            [(0, 0, 1000)],
        );
        assert_eq!(
            whole.same_records(0, &long, 0),
            400,
            "to the end of `long`'s run"
        );
        assert_eq!(whole.same_records(10, &long, 10), 390);
        assert_eq!(whole.same_records(500, &long, 400), 500);
        assert_eq!(whole.same_records(400, &long, 400), 0);
        // Walking forward with hints finds what a fresh search finds.
        let mut hints = [0, 0];
        for (i, j) in [
            (0, 0),
            (10, 10),
            (399, 399),
            (400, 400),
            (500, 400),
            (950, 850),
        ] {
            assert_eq!(
                whole.same_records_from(i, &long, j, &mut hints),
                whole.same_records(i, &long, j),
                "at {i}, {j}"
            );
        }
        // Short runs are one number a concept.
        let short = IndexedRelease::from_segments(
            release(&[]).info,
            vec![Arc::new(Segment::decoded(
                "small".into(),
                (0..10).map(|i| Concept::new(format!("C{i}"))).collect(),
                Vec::new(),
            ))],
            (0..10).step_by(2).map(|k| (0, k, 1)),
        );
        assert_eq!(short.order_bytes(), 5 * 4);
        assert_eq!(short.code(4), "C8");
    }
}
