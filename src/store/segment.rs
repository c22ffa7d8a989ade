//! One records file, read in place (mapped): the server does not decode a concept until a
//! request needs it.
//!
//! A records file holds, for each record, its code and display as plain text (so code lookup and
//! text search never decode a record) and the rest of the concept in a compact binary form:
//! property codes, Coding systems and every value that repeats are written once in the file's
//! dictionary and referred to by number. A record is either whole or a [`Patch`] of a record of an
//! earlier segment (its *base*), rebuilt when read.
//!
//! ```text
//! "FHIRREC6"
//! u32 header length, header (postcard): bases, dictionary, record count, section lengths
//! key offsets    (2n+1) × u32   code i = keys[o[2i]..o[2i+1]], display = keys[o[2i+1]..o[2i+2]]
//!                               (bit 31 of o[2i+1]: the record has a display)
//! keys           UTF-8 text
//! record offsets (n+1) × u32
//! records        per record: 0 + concept fields | 1 + base, index, patch (fields that changed)
//! u32            CRC-32 (IEEE) of every byte before it
//! ```
//!
//! The file is read in place through a memory map ([`FileBytes`]): loading one reads its header
//! and checks that the sizes it gives add up to the file's length, and a file whose sizes do not
//! is refused with its path. Offsets are checked when a record is read, so a damaged file gives
//! an error (logged, once per file), never a panic or another file's bytes. The checksum is
//! checked at load when the file is loaded to import or check ([`Checksum::AtLoad`]), and refused
//! there; `serve` checks it after it is ready ([`Checksum::Deferred`], [`Segment::verify`]), so
//! that starting does not read every page of every file.
//!
//! Small segments (up to [`decode_limit`] records) are decoded whole when loaded, as the registers
//! of a few thousand codes are fastest that way; large ones stay packed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::codec::{Reader, Writer};
use super::concept::Concept;
use super::error::PersistError;
use super::mapped::FileBytes;
use super::patch::{Patch, apply_written};
use super::view::ConceptView;

/// File header of a records file.
pub const RECORDS_MAGIC: &[u8; 8] = b"FHIRREC6";

/// Bytes of the CRC-32 that ends a records file.
const CHECKSUM_LEN: u64 = 4;

const HAS_DISPLAY: u32 = 1 << 31;
const OFFSET: u32 = HAS_DISPLAY - 1;

static DECODE_LIMIT: AtomicUsize = AtomicUsize::new(100_000);

/// Segments of at most this many records are decoded whole when loaded; larger ones are read in
/// place. 100,000 unless [`set_decode_limit`] says otherwise.
pub fn decode_limit() -> usize {
    DECODE_LIMIT.load(Ordering::Relaxed)
}

/// Sets [`decode_limit`] for segments loaded from now on (`0`: every segment stays packed).
pub fn set_decode_limit(records: usize) {
    DECODE_LIMIT.store(records, Ordering::Relaxed);
}

/// When a records file's checksum is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// When the file is loaded, which refuses a damaged file (imports, `check`).
    AtLoad,
    /// Later, by [`Segment::verify`] (`serve`, once it is ready). A segment decoded whole when
    /// loaded is read whole anyway, and checked at load.
    Deferred,
}

/// [`Segment::verify`] has not run on a segment loaded with [`Checksum::Deferred`].
const CHECK_PENDING: u8 = 0;
/// The checksum matched (or was checked at load).
const CHECK_PASSED: u8 = 1;
/// The checksum did not match, or the file could not be read to check it.
const CHECK_FAILED: u8 = 2;

/// One records file, loaded: records in the order their import first saw them (code order).
#[derive(Debug)]
pub struct Segment {
    /// File stem.
    pub name: String,
    /// Segments its patched records are made from (kept while this one is).
    pub bases: Vec<String>,
    body: Body,
    /// Where its checksum check is: `CHECK_PENDING`, `CHECK_PASSED` or `CHECK_FAILED`.
    check: AtomicU8,
}

#[derive(Debug)]
enum Body {
    Decoded(Vec<Concept>),
    Packed(Box<Packed>),
}

/// A records file read in place: where its sections start in the file's bytes.
#[derive(Debug)]
struct Packed {
    file: FileBytes,
    /// Number of records.
    count: usize,
    key_offsets: usize,
    keys: usize,
    keys_len: usize,
    record_offsets: usize,
    records: usize,
    records_len: usize,
    dict: Vec<Box<str>>,
    bases: Vec<Arc<Segment>>,
    has_parents: bool,
    path: String,
    /// Whether damage found reading a record was logged (it is logged once per file).
    reported: AtomicBool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    bases: Vec<String>,
    dict: Vec<String>,
    count: u32,
    keys_len: u64,
    records_len: u64,
    has_parents: bool,
}

impl Segment {
    /// A segment of decoded concepts (a fresh import, a request-supplied CodeSystem).
    pub fn decoded(name: String, concepts: Vec<Concept>, bases: Vec<String>) -> Self {
        Self {
            name,
            bases,
            body: Body::Decoded(concepts),
            check: AtomicU8::new(CHECK_PASSED),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Decoded(c) => c.len(),
            Body::Packed(p) => p.count,
        }
    }

    /// Whether the segment has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the records are read in place (not decoded at load).
    pub fn is_packed(&self) -> bool {
        matches!(self.body, Body::Packed(_))
    }

    /// The code of record `i`.
    pub fn code(&self, i: u32) -> &str {
        match &self.body {
            Body::Decoded(c) => &c[i as usize].code,
            Body::Packed(p) => p.code(i as usize),
        }
    }

    /// The bytes of the code of record `i`, for comparing: not checked as text, so a damaged
    /// record compares as its bytes (or as empty) rather than being reported.
    pub fn code_bytes(&self, i: u32) -> &[u8] {
        match &self.body {
            Body::Decoded(c) => c[i as usize].code.as_bytes(),
            Body::Packed(p) => p.code_bytes(i as usize),
        }
    }

    /// The display of record `i`.
    pub fn display(&self, i: u32) -> Option<&str> {
        match &self.body {
            Body::Decoded(c) => c[i as usize].display.as_deref(),
            Body::Packed(p) => p.display(i as usize),
        }
    }

    /// Whether any record has parents (a hierarchy to index).
    pub fn has_parents(&self) -> bool {
        match &self.body {
            Body::Decoded(c) => c.iter().any(|c| !c.parents.is_empty()),
            Body::Packed(p) => p.has_parents,
        }
    }

    /// Record `i`, whole: borrowed when decoded, decoded now when packed. A record that cannot be
    /// decoded (a damaged file) is logged and read as its code and display alone.
    pub fn concept(&self, i: u32) -> Cow<'_, Concept> {
        match &self.body {
            Body::Decoded(c) => Cow::Borrowed(&c[i as usize]),
            Body::Packed(p) => Cow::Owned(p.decode(i).unwrap_or_else(|e| {
                tracing::error!(file = %p.path, record = i, error = %e, "damaged record");
                let mut c = Concept::new(self.code(i));
                c.display = self.display(i).map(Into::into);
                c
            })),
        }
    }

    /// Record `i` into `view`, its fields borrowed from the segment (and its bases): no
    /// allocation once the view's lists have grown (see [`ConceptView`]). A record that cannot be
    /// read is logged and read as its code and display alone, as [`Segment::concept`] reads it.
    pub fn view<'a>(&'a self, i: u32, view: &mut ConceptView<'a>) {
        self.view_over(i, view, None);
    }

    /// [`Segment::view`], with a record read already: when record `i` is that record, or is
    /// patched from it (however many patches on), its fields are copied from `known` (the
    /// segment, the record's number there, and its view) instead of being read again, and only
    /// the patches after it are applied. Comparing a record with its own earlier version (what
    /// `$diff` does for most changed codes) then reads the older record once, not twice.
    pub fn view_over<'a>(
        &'a self,
        i: u32,
        view: &mut ConceptView<'a>,
        known: Option<(&Segment, u32, &ConceptView<'a>)>,
    ) {
        if let Some((segment, k, known)) = known
            && std::ptr::eq(self, segment)
            && k == i
        {
            view.copy_from(known);
            return;
        }
        match &self.body {
            Body::Decoded(c) => view.set(&c[i as usize]),
            Body::Packed(p) => {
                if let Err(e) = p.view(i, view, known) {
                    tracing::error!(file = %p.path, record = i, error = %e, "damaged record");
                    view.reset(self.code(i), self.display(i));
                }
            }
        }
    }

    /// The names of the segments a records file's patches are made from, read from its header
    /// alone (for deciding which files are in use without loading them).
    pub fn read_bases(path: &Path) -> Result<Vec<String>, PersistError> {
        let shown = path.display().to_string();
        let io = |source| PersistError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let (_, header) = read_header(&mut std::io::BufReader::new(file), size, &shown)?;
        Ok(header.bases)
    }

    /// Loads a records file, read in place (mapped; read into memory where it cannot be).
    /// Bases are looked up by name (already loaded). A segment of at most [`decode_limit`]
    /// records is decoded whole when `may_decode` (its feed is that small too: the monthly
    /// changes of a national register stay packed, or sixty of them would hold hundreds of
    /// thousands of decoded concepts). `checksum` says when the file's checksum is checked.
    pub fn load(
        path: &Path,
        name: &str,
        base_of: &mut dyn FnMut(&str) -> Option<Arc<Segment>>,
        may_decode: bool,
        checksum: Checksum,
    ) -> Result<Self, PersistError> {
        let shown = path.display().to_string();
        let file = FileBytes::map(path).map_err(|source| PersistError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(file, shown, name, base_of, may_decode, checksum)
    }

    /// [`Segment::load`] of a file's bytes (`shown`: its path, for errors).
    fn from_bytes(
        file: FileBytes,
        shown: String,
        name: &str,
        base_of: &mut dyn FnMut(&str) -> Option<Arc<Segment>>,
        may_decode: bool,
        checksum: Checksum,
    ) -> Result<Self, PersistError> {
        let corrupt = |message: String| PersistError::Corrupt {
            path: shown.clone(),
            message,
        };
        let size = file.len() as u64;
        let (header_len, header) = read_header(&mut &file[..], size, &shown)?;
        let n = u64::from(header.count);
        // The sizes the header gives must add up to the file's: no section is read past its end.
        let sections = [
            RECORDS_MAGIC.len() as u64 + 4 + header_len,
            4 * (2 * n + 1),
            header.keys_len,
            4 * (n + 1),
            header.records_len,
            CHECKSUM_LEN,
        ];
        let expected = sections.into_iter().try_fold(0u64, u64::checked_add);
        if expected != Some(size) {
            return Err(corrupt(format!(
                "{size} bytes where its header says {}: the file is damaged or truncated",
                expected.map_or_else(|| "more than can be".into(), |e| e.to_string())
            )));
        }
        // Where each section starts (they add up to the file's length, so each fits a usize).
        let mut at = [0usize; 6];
        for k in 1..at.len() {
            at[k] = at[k - 1] + sections[k - 1] as usize;
        }
        let decode = may_decode && (n as usize) <= decode_limit();
        // A segment decoded whole is read whole now: its checksum costs little more.
        if checksum == Checksum::AtLoad || decode {
            check_crc(&file, &shown)?;
        }
        let mut bases = Vec::with_capacity(header.bases.len());
        for b in &header.bases {
            bases.push(base_of(b).ok_or_else(|| {
                corrupt(format!(
                    "its records are made from {b}, which cannot be read"
                ))
            })?);
        }
        let packed = Packed {
            file,
            count: n as usize,
            key_offsets: at[1],
            keys: at[2],
            keys_len: header.keys_len as usize,
            record_offsets: at[3],
            records: at[4],
            records_len: header.records_len as usize,
            dict: header.dict.into_iter().map(Into::into).collect(),
            bases,
            has_parents: header.has_parents,
            path: shown.clone(),
            reported: AtomicBool::new(false),
        };
        let (body, check) = if decode {
            let mut concepts = Vec::with_capacity(n as usize);
            for i in 0..n as u32 {
                concepts.push(
                    packed
                        .decode(i)
                        .and_then(|c| packed.check_keys(i as usize, &c).map(|()| c))
                        .map_err(|e| corrupt(format!("record {i}: {e}")))?,
                );
            }
            (Body::Decoded(concepts), CHECK_PASSED)
        } else {
            let check = match checksum {
                Checksum::AtLoad => CHECK_PASSED,
                Checksum::Deferred => CHECK_PENDING,
            };
            (Body::Packed(Box::new(packed)), check)
        };
        Ok(Self {
            name: name.to_string(),
            bases: header.bases,
            body,
            check: AtomicU8::new(check),
        })
    }

    /// Whether the file's checksum is still to be checked ([`Checksum::Deferred`]).
    pub fn check_pending(&self) -> bool {
        self.check.load(Ordering::Acquire) == CHECK_PENDING
    }

    /// Whether the file failed its checksum check.
    pub fn check_failed(&self) -> bool {
        self.check.load(Ordering::Acquire) == CHECK_FAILED
    }

    /// Checks the file's checksum, if it was not checked at load, reading the file (not through
    /// its map: see [`FileBytes::trailing_crc`]). The outcome is kept: a segment is checked once.
    pub fn verify(&self) -> Result<(), PersistError> {
        let Body::Packed(p) = &self.body else {
            return Ok(());
        };
        match self.check.load(Ordering::Acquire) {
            CHECK_PASSED => return Ok(()),
            CHECK_FAILED => {
                return Err(PersistError::Corrupt {
                    path: p.path.clone(),
                    message: "checksum mismatch: the file is damaged".into(),
                });
            }
            _ => {}
        }
        let outcome = check_crc(&p.file, &p.path);
        let state = if outcome.is_ok() {
            CHECK_PASSED
        } else {
            CHECK_FAILED
        };
        self.check.store(state, Ordering::Release);
        outcome
    }
}

/// Checks the CRC-32 a records file ends with.
fn check_crc(file: &FileBytes, shown: &str) -> Result<(), PersistError> {
    let (stored, computed) = file.trailing_crc().map_err(|source| PersistError::Io {
        path: shown.to_string(),
        source,
    })?;
    if stored != computed {
        return Err(PersistError::Corrupt {
            path: shown.to_string(),
            message: format!(
                "checksum mismatch (stored CRC-32 {stored:08x}, contents {computed:08x}): the file is damaged"
            ),
        });
    }
    Ok(())
}

/// A writer that computes the CRC-32 of what passes through it.
struct Crc32Writer<'w> {
    inner: &'w mut dyn Write,
    crc: crc32fast::Hasher,
}

impl Write for Crc32Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a records file's magic, header length and header (the start of the file).
fn read_header(r: &mut impl Read, size: u64, shown: &str) -> Result<(u64, Header), PersistError> {
    let corrupt = |message: String| PersistError::Corrupt {
        path: shown.to_string(),
        message,
    };
    let io = |source| PersistError::Io {
        path: shown.to_string(),
        source,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != RECORDS_MAGIC {
        return Err(corrupt(match magic.strip_prefix(b"FHIRREC") {
            Some(_) => format!(
                "records format {} is not this server's ({}): re-import the release",
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(RECORDS_MAGIC)
            ),
            None => "not a records file".into(),
        }));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io)?;
    let header_len = u64::from(u32::from_le_bytes(len));
    if header_len > size {
        return Err(corrupt(format!(
            "its header is {header_len} bytes long in a file of {size}: the file is damaged"
        )));
    }
    let header_bytes = read_vec(r, header_len).map_err(io)?;
    let header: Header =
        postcard::from_bytes(&header_bytes).map_err(|e| corrupt(format!("damaged header: {e}")))?;
    Ok((header_len, header))
}

fn read_vec(r: &mut impl Read, len: u64) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(len).read_to_end(&mut v)?;
    if v.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(v)
}

impl Packed {
    /// The little-endian `u32` at byte `at` of the file.
    fn word(&self, at: usize) -> Option<u32> {
        let bytes = self.file.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Key offset `k` (of `2n + 1`).
    fn key_offset(&self, k: usize) -> Option<u32> {
        (k <= 2 * self.count).then(|| self.word(self.key_offsets + 4 * k))?
    }

    /// Record offset `k` (of `n + 1`).
    fn record_offset(&self, k: usize) -> Option<usize> {
        (k <= self.count)
            .then(|| self.word(self.record_offsets + 4 * k))?
            .map(|o| o as usize)
    }

    /// The text of the keys between two key offsets: `None` when they are out of order or
    /// bounds, or the text is not UTF-8 (a damaged file).
    fn key_text(&self, from: u32, to: u32) -> Option<&str> {
        std::str::from_utf8(self.key_bytes(from, to)?).ok()
    }

    /// The bytes of the keys between two key offsets (`None` out of order or bounds).
    fn key_bytes(&self, from: u32, to: u32) -> Option<&[u8]> {
        let keys = self.file.get(self.keys..self.keys + self.keys_len)?;
        keys.get((from & OFFSET) as usize..(to & OFFSET) as usize)
    }

    /// Logs, once per file, that record `i` cannot be read as it should.
    fn damaged(&self, i: usize, what: &str) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            tracing::error!(file = %self.path, record = i, "damaged records file: {what} cannot be read");
        }
    }

    /// The bytes of record `i`'s code, unchecked (empty when its offsets are damaged): what a
    /// search compares, where a code equal to a valid one is valid too.
    fn code_bytes(&self, i: usize) -> &[u8] {
        self.key_offset(2 * i)
            .zip(self.key_offset(2 * i + 1))
            .and_then(|(a, b)| self.key_bytes(a, b))
            .unwrap_or_default()
    }

    fn code(&self, i: usize) -> &str {
        let text = self
            .key_offset(2 * i)
            .zip(self.key_offset(2 * i + 1))
            .and_then(|(a, b)| self.key_text(a, b));
        text.unwrap_or_else(|| {
            self.damaged(i, "its code");
            ""
        })
    }

    fn display(&self, i: usize) -> Option<&str> {
        let a = self.key_offset(2 * i + 1)?;
        if a & HAS_DISPLAY == 0 {
            return None;
        }
        let text = self.key_offset(2 * i + 2).and_then(|b| self.key_text(a, b));
        if text.is_none() {
            self.damaged(i, "its display");
        }
        text
    }

    /// Whether record `i`'s code and display read as text (decoding it whole checks them).
    fn check_keys(&self, i: usize, c: &Concept) -> Result<(), String> {
        let flagged = self
            .key_offset(2 * i + 1)
            .is_some_and(|a| a & HAS_DISPLAY != 0);
        if c.code.is_empty() || flagged != c.display.is_some() {
            return Err("its code or display cannot be read".into());
        }
        Ok(())
    }

    fn decode(&self, i: u32) -> Result<Concept, String> {
        let mut view = ConceptView::default();
        self.view(i, &mut view, None)?;
        Ok(view.to_concept())
    }

    /// Record `i` into `c`: a whole record read in place, a patched one by reading its base
    /// into `c` and applying the patch there.
    fn view<'a>(
        &'a self,
        i: u32,
        c: &mut ConceptView<'a>,
        known: Option<(&Segment, u32, &ConceptView<'a>)>,
    ) -> Result<(), String> {
        let i = i as usize;
        let (from, to) = self
            .record_offset(i)
            .zip(self.record_offset(i + 1))
            .ok_or("its record offsets are out of range")?;
        let bytes = self
            .file
            .get(self.records..self.records + self.records_len)
            .and_then(|records| records.get(from..to))
            .ok_or("its record offsets are out of order")?;
        let mut r = Reader { b: bytes, at: 0 };
        match r.byte()? {
            0 => {
                c.reset(self.code(i), self.display(i));
                r.view_fields(c, &self.dict)
            }
            1 => {
                let base = r.varint()? as usize;
                let index = r.varint()? as u32;
                let base = self
                    .bases
                    .get(base)
                    .filter(|s| (index as usize) < s.len())
                    .ok_or("made from a record that does not exist")?;
                base.view_over(index, c, known);
                apply_written(&mut r, &self.dict, c)
            }
            t => Err(format!("unknown record kind {t}")),
        }
    }
}

/// A record to write.
pub enum Rec {
    /// The whole concept.
    Full(Concept),
    /// The concept as a patch of record `index` of base `base`.
    Patch {
        /// Index into the file's bases.
        base: u16,
        /// Record in that base.
        index: u32,
        /// The fields that differ.
        patch: Box<Patch>,
        /// The concept the patch makes (its code and display are written as keys; it is written
        /// whole where that is smaller).
        concept: Concept,
    },
}

impl Rec {
    fn concept(&self) -> &Concept {
        match self {
            Self::Full(c) | Self::Patch { concept: c, .. } => c,
        }
    }
}

/// A records file, encoded in memory (the sections are small next to the concepts they come
/// from), ready to be written.
pub struct Encoded {
    header: Vec<u8>,
    key_offsets: Vec<u32>,
    keys: Vec<u8>,
    record_offsets: Vec<u32>,
    records: Vec<u8>,
    patches: usize,
}

impl Encoded {
    /// Encodes `n` records, `record(k)` giving record `k` (it is asked for each twice: once to
    /// choose the dictionary, once to write), so the records need not all be held at once.
    pub fn build(
        bases: Vec<String>,
        n: usize,
        record: &mut dyn FnMut(usize) -> Result<Rec, String>,
    ) -> Result<Self, String> {
        // The dictionary: strings that occur more than once, most frequent first. They are
        // counted by writing each record with nothing interned, so exactly the strings the
        // encoding writes are counted.
        let mut counts: HashMap<Box<str>, u32> = HashMap::new();
        let mut has_parents = false;
        let mut scratch = Vec::new();
        for k in 0..n {
            let r = record(k)?;
            has_parents |= !r.concept().parents.is_empty();
            let mut count = |s: &str| {
                match counts.get_mut(s) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(s.into(), 1);
                    }
                }
                None
            };
            scratch.clear();
            Writer {
                out: &mut scratch,
                intern: &mut count,
            }
            .concept_fields(r.concept());
        }
        let mut strings: Vec<(Box<str>, u32)> =
            counts.into_iter().filter(|&(_, c)| c > 1).collect();
        strings.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let strings: Vec<Box<str>> = strings.into_iter().map(|(s, _)| s).collect();
        let ids: HashMap<&str, u32> = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (&**s, i as u32))
            .collect();
        let mut intern = |s: &str| ids.get(s).copied();
        let mut out = Vec::new();
        let mut w = Writer {
            out: &mut out,
            intern: &mut intern,
        };
        let mut keys = Vec::new();
        let mut key_offsets = Vec::with_capacity(n * 2 + 1);
        let mut record_offsets = Vec::with_capacity(n + 1);
        let mut patches = 0;
        let too_big = || "a records file over 2 GiB of codes or 4 GiB of records".to_string();
        let key_at = |keys: &Vec<u8>| {
            u32::try_from(keys.len())
                .ok()
                .filter(|&a| a < HAS_DISPLAY)
                .ok_or_else(too_big)
        };
        for k in 0..n {
            let r = record(k)?;
            let c = r.concept();
            key_offsets.push(key_at(&keys)?);
            keys.extend_from_slice(c.code.as_bytes());
            let at = key_at(&keys)?;
            match &c.display {
                Some(d) => {
                    key_offsets.push(at | HAS_DISPLAY);
                    keys.extend_from_slice(d.as_bytes());
                }
                None => key_offsets.push(at),
            }
            let start = w.out.len();
            record_offsets.push(u32::try_from(start).map_err(|_| too_big())?);
            w.out.push(0);
            w.concept_fields(c);
            if let Rec::Patch {
                base, index, patch, ..
            } = &r
            {
                // A patch only where it is smaller than the whole record.
                let full = w.out.len() - start;
                w.out.push(1);
                w.varint(u64::from(*base));
                w.varint(u64::from(*index));
                patch.write(&mut w);
                let patched = w.out.len() - start - full;
                if patched < full {
                    w.out.copy_within(start + full.., start);
                    w.out.truncate(start + patched);
                    patches += 1;
                } else {
                    w.out.truncate(start + full);
                }
            }
        }
        key_offsets.push(key_at(&keys)?);
        record_offsets.push(u32::try_from(out.len()).map_err(|_| too_big())?);
        let header = Header {
            bases,
            dict: strings.iter().map(|s| s.to_string()).collect(),
            count: n as u32,
            keys_len: keys.len() as u64,
            records_len: out.len() as u64,
            has_parents,
        };
        Ok(Self {
            header: postcard::to_allocvec(&header).map_err(|e| e.to_string())?,
            key_offsets,
            keys,
            record_offsets,
            records: out,
            patches,
        })
    }

    /// How many records are stored as patches.
    pub fn patches(&self) -> usize {
        self.patches
    }

    /// Bytes the file takes.
    pub fn size(&self) -> u64 {
        (RECORDS_MAGIC.len()
            + 4
            + self.header.len()
            + 4 * self.key_offsets.len()
            + self.keys.len()
            + 4 * self.record_offsets.len()
            + self.records.len()) as u64
            + CHECKSUM_LEN
    }

    /// Writes the file, its CRC-32 last.
    pub fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut w = Crc32Writer {
            inner: w,
            crc: crc32fast::Hasher::new(),
        };
        w.write_all(RECORDS_MAGIC)?;
        w.write_all(&(self.header.len() as u32).to_le_bytes())?;
        w.write_all(&self.header)?;
        for o in &self.key_offsets {
            w.write_all(&o.to_le_bytes())?;
        }
        w.write_all(&self.keys)?;
        for o in &self.record_offsets {
            w.write_all(&o.to_le_bytes())?;
        }
        w.write_all(&self.records)?;
        let crc = w.crc.finalize();
        w.inner.write_all(&crc.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::concept::{Designation, DesignationUse, Value};
    use super::*;

    fn sample() -> Vec<Concept> {
        let mut a = Concept::new("A81001");
        a.display = Some("THE DENSHAM SURGERY".into());
        a.status = Some("active".into());
        a.valid_from = Some("1974-04-01".into());
        a.properties = vec![
            (
                "role".into(),
                Value::Coding {
                    system: "https://x/roles".into(),
                    code: "RO76".into(),
                    display: Some("GP PRACTICE".into()),
                },
            ),
            ("eastings".into(), Value::Integer(-451234)),
            ("open".into(), Value::Boolean(true)),
            ("town".into(), Value::String("STOCKTON".into())),
            ("ratio".into(), Value::Decimal("0.50".into())),
        ];
        a.designations.push(Designation {
            language: Some("cy".into()),
            use_: Some(DesignationUse {
                system: "http://snomed.info/sct".into(),
                code: "900000000000013009".into(),
                display: None,
            }),
            value: "Meddygfa".into(),
            extensions: Some(r#"[{"url":"http://example.org/x","valueId":"2"}]"#.into()),
        });
        let mut b = Concept::new("A81002");
        b.inactive = true;
        b.not_selectable = true;
        b.definition = Some("défini".into());
        b.parents = vec!["A81001".into()];
        b.valid_to = Some("2019-03-31".into());
        b.properties = vec![
            ("town".into(), Value::String("STOCKTON".into())),
            ("role".into(), Value::Code("RO76".into())),
            ("when".into(), Value::DateTime("2020-01".into())),
        ];
        vec![a, b]
    }

    /// Writes `recs` as a records file made from `bases` and loads it packed.
    fn packed_from(dir: &Path, name: &str, bases: &[Arc<Segment>], recs: Vec<Rec>) -> Arc<Segment> {
        let enc = Encoded::build(
            bases.iter().map(|b| b.name.clone()).collect(),
            recs.len(),
            &mut |k| {
                Ok(match &recs[k] {
                    Rec::Full(c) => Rec::Full(c.clone()),
                    Rec::Patch {
                        base,
                        index,
                        patch,
                        concept,
                    } => Rec::Patch {
                        base: *base,
                        index: *index,
                        patch: patch.clone(),
                        concept: concept.clone(),
                    },
                })
            },
        )
        .expect("encodes");
        let patches = recs
            .iter()
            .filter(|r| matches!(r, Rec::Patch { .. }))
            .count();
        assert_eq!(enc.patches(), patches, "each patch is written as one");
        let path = dir.join(format!("{name}.records"));
        let mut bytes = Vec::new();
        enc.write_to(&mut bytes).expect("writes");
        std::fs::write(&path, &bytes).expect("write");
        let s = Segment::load(
            &path,
            name,
            &mut |b| bases.iter().find(|s| s.name == b).cloned(),
            false,
            Checksum::AtLoad,
        )
        .expect("loads");
        assert!(s.is_packed());
        Arc::new(s)
    }

    /// Records patched from patched records (three files, each made from the one before) read
    /// in place, into one reused view, give exactly the concepts that were written, field for
    /// field as the decoded concepts' views do.
    #[test]
    fn patch_chains_read_in_place_into_a_reused_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = sample();
        let mut second = first.clone();
        second[0].properties[1].1 = Value::Integer(-451_000);
        second[0]
            .properties
            .push(("new".into(), Value::Code("N".into())));
        second[0].display = Some("THE DENSHAM SURGERY (MOVED)".into());
        second[1].properties.remove(0);
        second[1].parents.push("A81000".into());
        let mut third = second.clone();
        third[0].properties.remove(0);
        third[0].properties[0].1 = Value::Integer(7);
        third[0].designations.clear();
        third[1].inactive = false;
        third[1].valid_to = None;
        third[1]
            .properties
            .insert(0, ("town".into(), Value::String("STOCKTON-ON-TEES".into())));
        let patches = |older: &[Concept], newer: &[Concept]| -> Vec<Rec> {
            older
                .iter()
                .zip(newer)
                .enumerate()
                .map(|(k, (o, n))| Rec::Patch {
                    base: 0,
                    index: k as u32,
                    patch: Box::new(Patch::between(o, n)),
                    concept: n.clone(),
                })
                .collect()
        };
        let a = packed_from(
            dir.path(),
            "a",
            &[],
            first.iter().cloned().map(Rec::Full).collect(),
        );
        let b = packed_from(
            dir.path(),
            "b",
            std::slice::from_ref(&a),
            patches(&first, &second),
        );
        let c = packed_from(
            dir.path(),
            "c",
            std::slice::from_ref(&b),
            patches(&second, &third),
        );
        let mut view = ConceptView::default();
        for (segment, expected) in [(&a, &first), (&b, &second), (&c, &third)] {
            for (k, concept) in expected.iter().enumerate() {
                segment.view(k as u32, &mut view);
                assert_eq!(
                    view,
                    ConceptView::of(concept),
                    "{} record {k}",
                    segment.name
                );
                assert_eq!(&*segment.concept(k as u32), concept);
            }
        }
        // Read over an older record already read: its own ancestor (only the patches after it
        // are read), or another record (read whole), gives the same.
        let mut older = ConceptView::default();
        for (segment, expected) in [(&b, &second), (&c, &third)] {
            for (k, concept) in expected.iter().enumerate() {
                for (base, at) in [(&a, k), (&b, k), (&a, 1 - k)] {
                    base.view(at as u32, &mut older);
                    segment.view_over(k as u32, &mut view, Some((base, at as u32, &older)));
                    assert_eq!(
                        view,
                        ConceptView::of(concept),
                        "{} record {k}",
                        segment.name
                    );
                }
            }
        }
    }

    #[test]
    fn packed_records_read_back_exactly_in_place_or_decoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let concepts = sample();
        let enc = Encoded::build(Vec::new(), concepts.len(), &mut |k| {
            Ok(Rec::Full(concepts[k].clone()))
        })
        .expect("encodes");
        let path = dir.path().join("x.records");
        let mut bytes = Vec::new();
        enc.write_to(&mut bytes).expect("writes");
        assert_eq!(bytes.len() as u64, enc.size());
        std::fs::write(&path, &bytes).expect("write");
        for limit in [0, 10] {
            set_decode_limit(limit);
            let s =
                Segment::load(&path, "x", &mut |_| None, true, Checksum::AtLoad).expect("loads");
            set_decode_limit(100_000);
            assert_eq!(s.is_packed(), limit == 0);
            assert_eq!(s.len(), 2);
            assert!(s.has_parents());
            assert_eq!(s.code(1), "A81002");
            assert_eq!(s.display(0), Some("THE DENSHAM SURGERY"));
            assert_eq!(s.display(1), None);
            assert_eq!(&*s.concept(0), &concepts[0]);
            assert_eq!(&*s.concept(1), &concepts[1]);
        }
        // A damaged file is refused with its path, not read wrongly.
        let mut bad = bytes.clone();
        let at = bad.len() - enc.records.len() - 3;
        bad[at] = 0xff;
        std::fs::write(&path, &bad).expect("write");
        let err =
            Segment::load(&path, "x", &mut |_| None, true, Checksum::AtLoad).expect_err("refused");
        assert!(err.to_string().contains("x.records"), "{err}");
        // A truncated file, and one of the previous format, are refused before anything is
        // allocated for them.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        let err =
            Segment::load(&path, "x", &mut |_| None, true, Checksum::AtLoad).expect_err("refused");
        assert!(err.to_string().contains("damaged or truncated"), "{err}");
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"FHIRREC5");
        std::fs::write(&path, &old).expect("write");
        let err =
            Segment::load(&path, "x", &mut |_| None, true, Checksum::AtLoad).expect_err("refused");
        assert!(err.to_string().contains("re-import the release"), "{err}");
    }

    /// A packed segment of `sample()` written to `dir/x.records`: its bytes and the encoding.
    fn written(dir: &Path) -> (std::path::PathBuf, Vec<u8>, Encoded) {
        let concepts = sample();
        let enc = Encoded::build(Vec::new(), concepts.len(), &mut |k| {
            Ok(Rec::Full(concepts[k].clone()))
        })
        .expect("encodes");
        let mut bytes = Vec::new();
        enc.write_to(&mut bytes).expect("writes");
        let path = dir.join("x.records");
        std::fs::write(&path, &bytes).expect("write");
        (path, bytes, enc)
    }

    fn packed(file: FileBytes, path: &Path, checksum: Checksum) -> Result<Segment, PersistError> {
        let shown = path.display().to_string();
        Segment::from_bytes(file, shown, "x", &mut |_| None, false, checksum)
    }

    #[test]
    fn a_mapped_segment_reads_as_one_read_into_memory_and_checks_its_checksum_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes, _) = written(dir.path());
        let mapped = FileBytes::map(&path).expect("maps");
        assert!(mapped.is_mapped());
        let mapped = packed(mapped, &path, Checksum::Deferred).expect("loads");
        let read = FileBytes::read(&path).expect("reads");
        let read = packed(read, &path, Checksum::AtLoad).expect("loads");
        assert!(mapped.is_packed() && read.is_packed());
        assert_eq!(mapped.len(), read.len());
        for i in 0..2 {
            assert_eq!(mapped.code(i), read.code(i));
            assert_eq!(mapped.display(i), read.display(i));
            assert_eq!(mapped.concept(i), read.concept(i));
        }
        assert_eq!(&*mapped.concept(0), &sample()[0]);
        assert!(mapped.check_pending() && !read.check_pending());
        mapped.verify().expect("the file is whole");
        assert!(!mapped.check_pending() && !mapped.check_failed());

        // One letter of a display changed: the sizes add up, so the file loads and is read, and
        // only the deferred check finds it; its outcome is kept.
        let at = bytes
            .windows(6)
            .position(|w| w == b"DENSHA")
            .expect("display in file");
        let mut bad = bytes.clone();
        bad[at] = b'E';
        std::fs::write(&path, &bad).expect("write");
        let segment = packed(
            FileBytes::map(&path).expect("maps"),
            &path,
            Checksum::Deferred,
        )
        .expect("loads: the checksum is checked later");
        assert_eq!(segment.display(0), Some("THE EENSHAM SURGERY"));
        let err = segment.verify().expect_err("damaged");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(err.to_string().contains("x.records"), "{err}");
        assert!(segment.check_failed());
        assert!(segment.verify().is_err());
        // Checked at load, the same file is refused.
        let err = packed(
            FileBytes::map(&path).expect("maps"),
            &path,
            Checksum::AtLoad,
        )
        .expect_err("refused");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        // A truncated file is refused at load, whenever its checksum is checked.
        std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("write");
        let err = packed(
            FileBytes::map(&path).expect("maps"),
            &path,
            Checksum::Deferred,
        )
        .expect_err("refused");
        assert!(err.to_string().contains("damaged or truncated"), "{err}");
    }

    #[test]
    fn damaged_offsets_read_as_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes, enc) = written(dir.path());
        let key_offsets_at = RECORDS_MAGIC.len() + 4 + enc.header.len();
        let record_offsets_at = key_offsets_at + 4 * enc.key_offsets.len() + enc.keys.len();
        let set = |bad: &mut Vec<u8>, at: usize, value: u32| {
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        };
        // The offset where record 0's display ends and record 1's code starts points past the
        // keys, and record 0's bytes end past the records.
        let mut bad = bytes.clone();
        set(&mut bad, key_offsets_at + 4 * 2, 0x7fff_0000);
        set(&mut bad, record_offsets_at + 4, u32::MAX);
        std::fs::write(&path, &bad).expect("write");
        let segment = packed(
            FileBytes::map(&path).expect("maps"),
            &path,
            Checksum::Deferred,
        )
        .expect("loads: its sizes add up");
        assert_eq!(segment.code(0), "A81001");
        assert_eq!(segment.display(0), None);
        assert_eq!(segment.code(1), "");
        // A record that cannot be decoded reads as its code and display alone.
        let concept = segment.concept(0);
        assert_eq!(&*concept.code, "A81001");
        assert!(concept.properties.is_empty());
        assert!(segment.concept(1).properties.is_empty());
        assert!(segment.verify().is_err());
    }
}
