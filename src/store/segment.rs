//! One records file in memory, read in place: the server does not decode a concept until a
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
//! A file whose sizes do not add up to its length, or whose checksum does not match, is refused
//! at load with its path: a damaged file is never read as records.
//!
//! Small segments (up to [`decode_limit`] records) are decoded whole when loaded, as the registers
//! of a few thousand codes are fastest that way; large ones stay packed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::codec::{Reader, Writer};
use super::concept::Concept;
use super::error::PersistError;
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

/// One records file, loaded: records in the order their import first saw them (code order).
#[derive(Debug)]
pub struct Segment {
    /// File stem.
    pub name: String,
    /// Segments its patched records are made from (kept while this one is).
    pub bases: Vec<String>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Decoded(Vec<Concept>),
    Packed(Box<Packed>),
}

/// The sections of a records file, each in one allocation.
#[derive(Debug)]
struct Packed {
    keys: String,
    key_offsets: Vec<u32>,
    dict: Vec<Box<str>>,
    records: Vec<u8>,
    record_offsets: Vec<u32>,
    bases: Vec<Arc<Segment>>,
    has_parents: bool,
    path: String,
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
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Decoded(c) => c.len(),
            Body::Packed(p) => p.record_offsets.len() - 1,
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

    /// Reads a records file. Bases are looked up by name (already loaded). A segment of at most
    /// [`decode_limit`] records is decoded whole when `may_decode` (its feed is that small too:
    /// the monthly changes of a national register stay packed, or sixty of them would hold
    /// hundreds of thousands of decoded concepts).
    pub fn load(
        path: &Path,
        name: &str,
        base_of: &mut dyn FnMut(&str) -> Option<Arc<Segment>>,
        may_decode: bool,
    ) -> Result<Self, PersistError> {
        let shown = path.display().to_string();
        let corrupt = |message: String| PersistError::Corrupt {
            path: shown.clone(),
            message,
        };
        let io = |source| PersistError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut f = Crc32Reader {
            inner: std::io::BufReader::new(file),
            crc: crc32fast::Hasher::new(),
        };
        let (header_len, header) = read_header(&mut f, size, &shown)?;
        let n = header.count as u64;
        // The sizes the header gives must add up to the file's: nothing is allocated for a
        // damaged count or length.
        let expected = [
            RECORDS_MAGIC.len() as u64 + 4 + header_len,
            4 * (2 * n + 1),
            header.keys_len,
            4 * (n + 1),
            header.records_len,
            CHECKSUM_LEN,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add);
        if expected != Some(size) {
            return Err(corrupt(format!(
                "{size} bytes where its header says {}: the file is damaged or truncated",
                expected.map_or_else(|| "more than can be".into(), |e| e.to_string())
            )));
        }
        let key_offsets = read_u32s(&mut f, 2 * n + 1).map_err(io)?;
        let keys = read_vec(&mut f, header.keys_len).map_err(io)?;
        let record_offsets = read_u32s(&mut f, n + 1).map_err(io)?;
        let records = read_vec(&mut f, header.records_len).map_err(io)?;
        let computed = f.crc.clone().finalize();
        let mut stored = [0u8; CHECKSUM_LEN as usize];
        f.inner.read_exact(&mut stored).map_err(io)?;
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(corrupt(format!(
                "checksum mismatch (stored CRC-32 {stored:08x}, contents {computed:08x}): the file is damaged"
            )));
        }
        let keys = String::from_utf8(keys).map_err(|_| corrupt("keys are not UTF-8".into()))?;
        // Offsets in order and in bounds, on character boundaries: slicing never panics.
        let mut last = 0;
        for (k, &o) in key_offsets.iter().enumerate() {
            let flagged = o & HAS_DISPLAY != 0;
            let at = o & OFFSET;
            if at < last || (flagged && k % 2 == 0) || !keys.is_char_boundary(at as usize) {
                return Err(corrupt(format!("key offset {k} is out of order")));
            }
            last = at;
        }
        if last as u64 != header.keys_len {
            return Err(corrupt("key offsets do not cover the keys".into()));
        }
        if record_offsets.windows(2).any(|w| w[0] > w[1])
            || record_offsets.first() != Some(&0)
            || record_offsets.last().map(|&l| l as u64) != Some(header.records_len)
        {
            return Err(corrupt("record offsets are out of order".into()));
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
            keys,
            key_offsets,
            dict: header.dict.into_iter().map(Into::into).collect(),
            records,
            record_offsets,
            bases,
            has_parents: header.has_parents,
            path: shown.clone(),
        };
        let body = if may_decode && (n as usize) <= decode_limit() {
            let mut concepts = Vec::with_capacity(n as usize);
            for i in 0..n as u32 {
                concepts.push(
                    packed
                        .decode(i)
                        .map_err(|e| corrupt(format!("record {i}: {e}")))?,
                );
            }
            Body::Decoded(concepts)
        } else {
            Body::Packed(Box::new(packed))
        };
        Ok(Self {
            name: name.to_string(),
            bases: header.bases,
            body,
        })
    }
}

/// A reader that computes the CRC-32 of what passes through it.
struct Crc32Reader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Crc32Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
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

fn read_u32s(r: &mut impl Read, n: u64) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = [0u8; 4096];
    let mut left = n * 4;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..k])?;
        out.extend(
            buf[..k]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= k as u64;
    }
    Ok(out)
}

impl Packed {
    fn code(&self, i: usize) -> &str {
        let (a, b) = (self.key_offsets[2 * i], self.key_offsets[2 * i + 1]);
        &self.keys[(a & OFFSET) as usize..(b & OFFSET) as usize]
    }

    fn display(&self, i: usize) -> Option<&str> {
        let (a, b) = (self.key_offsets[2 * i + 1], self.key_offsets[2 * i + 2]);
        (a & HAS_DISPLAY != 0).then(|| &self.keys[(a & OFFSET) as usize..b as usize])
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
        let bytes =
            &self.records[self.record_offsets[i] as usize..self.record_offsets[i + 1] as usize];
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
    fn packed(dir: &Path, name: &str, bases: &[Arc<Segment>], recs: Vec<Rec>) -> Arc<Segment> {
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
        let a = packed(
            dir.path(),
            "a",
            &[],
            first.iter().cloned().map(Rec::Full).collect(),
        );
        let b = packed(
            dir.path(),
            "b",
            std::slice::from_ref(&a),
            patches(&first, &second),
        );
        let c = packed(
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
            let s = Segment::load(&path, "x", &mut |_| None, true).expect("loads");
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
        let err = Segment::load(&path, "x", &mut |_| None, true).expect_err("refused");
        assert!(err.to_string().contains("x.records"), "{err}");
        // A truncated file, and one of the previous format, are refused before anything is
        // allocated for them.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        let err = Segment::load(&path, "x", &mut |_| None, true).expect_err("refused");
        assert!(err.to_string().contains("damaged or truncated"), "{err}");
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"FHIRREC5");
        std::fs::write(&path, &old).expect("write");
        let err = Segment::load(&path, "x", &mut |_| None, true).expect_err("refused");
        assert!(err.to_string().contains("re-import the release"), "{err}");
    }
}
