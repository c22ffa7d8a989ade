//! The source rows records were made from, so that an import of a release that changed 0.5 % of
//! a national register converts and compares that 0.5 %, not every row.
//!
//! Beside each records file `records/{name}.records`, an import writes `records/{name}.rows`: the
//! hash of the source row (see `mapping::RowHasher`: the row's fields, keyed by the mapping text,
//! the header and, when concepts depend on it, the version) each record was made from.
//!
//! ```text
//! "FHIRROW1"
//! u64 × n   row hash of record i (0: not known)
//! u32       CRC-32 (IEEE) of every byte before it
//! ```
//!
//! The file is written with its records file, before the release file that names them, and is
//! only read by imports: `serve` never loads it. A missing or damaged rows file costs speed, not
//! correctness: its records are then compared concept by concept, as before there were row hashes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::IndexedRelease;
use super::segment::Segment;

/// File header of a rows file.
const ROWS_MAGIC: &[u8; 8] = b"FHIRROW1";

/// Where the row hashes of the records file `records` live.
pub fn rows_path(records: &Path) -> PathBuf {
    records.with_extension("rows")
}

/// The bytes of a rows file holding `hashes`.
pub fn encode(hashes: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + hashes.len() * 8 + 4);
    bytes.extend_from_slice(ROWS_MAGIC);
    for h in hashes {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Reads a rows file of a segment of `len` records: `None` (logged when the file exists) when it
/// is missing, damaged or of another length.
pub fn read(path: &Path, len: usize) -> Option<Vec<u64>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read row hashes; the records are compared whole");
            return None;
        }
    };
    let ok = bytes.len() == 8 + len * 8 + 4
        && bytes.starts_with(ROWS_MAGIC)
        && bytes
            .split_last_chunk::<4>()
            .is_some_and(|(body, crc)| crc32fast::hash(body) == u32::from_le_bytes(*crc));
    if !ok {
        tracing::warn!(file = %path.display(), records = len, "damaged row hashes are not used; the records are compared whole");
        return None;
    }
    Some(
        bytes[8..8 + len * 8]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// Row hashes of the segments of one feed, read from disk on first use (a clone shares what
/// was read).
#[derive(Default, Clone)]
pub struct RowHashes {
    dir: PathBuf,
    loaded: HashMap<String, Option<Arc<[u64]>>>,
}

impl RowHashes {
    /// Row hashes of the records files in `records_dir`.
    pub fn new(records_dir: PathBuf) -> Self {
        Self {
            dir: records_dir,
            loaded: HashMap::new(),
        }
    }

    /// The hashes of a segment's records (`None` when not known).
    pub fn of(&mut self, segment: &Segment) -> Option<Arc<[u64]>> {
        if let Some(done) = self.loaded.get(&segment.name) {
            return done.clone();
        }
        let path = rows_path(&self.dir.join(format!("{}.records", segment.name)));
        let hashes = read(&path, segment.len()).map(Arc::from);
        self.loaded.insert(segment.name.clone(), hashes.clone());
        hashes
    }

    /// The hash of the row record `index` of `segment` was made from (0: not known).
    pub fn get(&mut self, segment: &Segment, index: u32) -> u64 {
        self.of(segment)
            .and_then(|h| h.get(index as usize).copied())
            .unwrap_or(0)
    }
}

/// Which rows of a release being read the store already has: a cursor over the stored release
/// nearest to it (made with the same mapping), compared by code and row hash. Rows come in the
/// file's order, usually code order, so each is found next to the one before; others by a binary
/// search.
pub struct Known {
    release: IndexedRelease,
    /// Row hashes of the release's segments, by segment (pointer).
    hashes: Vec<(*const Segment, Option<Arc<[u64]>>)>,
    /// Every row hash read.
    rows: RowHashes,
    cursor: u32,
}

impl Known {
    /// Over a stored release, with the row hashes of its segments.
    pub fn new(release: IndexedRelease, mut rows: RowHashes) -> Self {
        let hashes = release
            .segments()
            .iter()
            .map(|s| (Arc::as_ptr(s), rows.of(s)))
            .collect();
        Self {
            release,
            hashes,
            rows,
            cursor: 0,
        }
    }

    /// The row hashes read so far (to go on reading others without reading these again).
    pub fn row_hashes(&self) -> RowHashes {
        self.rows.clone()
    }

    /// The release the tokens refer to (a token is a position in it).
    pub fn release(&self) -> &IndexedRelease {
        &self.release
    }

    /// The position of `code` in the stored release when its record was made from a row with
    /// this hash.
    pub fn find(&mut self, code: &str, row_hash: u64) -> Option<u32> {
        let at = self.seek(code)?;
        let (segment, index) = self.release.record(at);
        let hashes = self
            .hashes
            .iter()
            .find(|(p, _)| std::ptr::eq(*p, segment))?
            .1
            .as_ref()?;
        (row_hash != 0 && hashes.get(index as usize) == Some(&row_hash)).then_some(at)
    }

    /// The position of `code`, searched from the cursor onwards first.
    fn seek(&mut self, code: &str) -> Option<u32> {
        let r = &self.release;
        let n = r.len() as u32;
        let c = self.cursor;
        let ahead = c < n && {
            let here = r.code(c);
            if here == code {
                self.cursor = c + 1;
                return Some(c);
            }
            here < code
        };
        if ahead {
            // Gallop forward from the cursor, then search the last step.
            let mut lo = c;
            let mut step = 1;
            while lo + step < n && r.code(lo + step) < code {
                lo += step;
                step *= 2;
            }
            let (mut a, mut b) = (lo + 1, (lo + step + 1).min(n));
            while a < b {
                let mid = (a + b) / 2;
                if r.code(mid) < code {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            self.cursor = a;
            return (a < n && r.code(a) == code).then(|| {
                self.cursor = a + 1;
                a
            });
        }
        let found = r.find(code)?;
        self.cursor = found + 1;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_hashes_read_back_and_a_damaged_or_short_file_is_not_used() {
        let dir = std::env::temp_dir().join(format!("fhir-registers-rows-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.rows");
        fs::write(&path, encode(&[7, 0, u64::MAX])).expect("write");
        assert_eq!(read(&path, 3), Some(vec![7, 0, u64::MAX]));
        assert_eq!(read(&path, 2), None, "another number of records");
        let mut bytes = fs::read(&path).expect("read");
        bytes[9] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert_eq!(read(&path, 3), None, "checksum");
        assert_eq!(read(&dir.join("missing.rows"), 3), None);
        fs::remove_dir_all(&dir).ok();
    }
}
