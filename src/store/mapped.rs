//! A stored file's bytes, read in place through a memory map: the one place the server uses
//! `unsafe`.
//!
//! `serve` would otherwise read every records file the newest releases use into memory at start
//! (hundreds of megabytes for a national register with years of history) and checksum it before
//! answering. A map costs nothing at open: the kernel reads a page when a request first touches
//! it, and may drop clean pages again under memory pressure, as they are the page cache's.
//!
//! Mapping a file is `unsafe` in Rust because another process could change or truncate it while
//! it is mapped, and the bytes a `&[u8]` promised would change underneath (or reading them would
//! raise `SIGBUS`). The store never does that to a file it has written: every file is written
//! under a temporary name, synced and then renamed into place (`persist::write_atomic`), and is
//! never opened for writing again; replacing a release renames a new file over the name, which
//! leaves the mapped inode as it was; garbage collection only unlinks files, and an unlinked file
//! stays readable while it is mapped. What is left is an operator editing a file in the data
//! directory by hand, which the checksum exists to catch and which this module cannot prevent.
//!
//! [`FileBytes`] is the safe face: it derefs to `&[u8]` whether mapped or read into memory (the
//! fallback when a map cannot be made, and what tests compare a map with).

use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes a CRC check reads at a time when it reads a mapped file through the file itself.
const CHECK_CHUNK: usize = 1 << 20;

/// A whole file's bytes, mapped or read into memory.
#[derive(Debug)]
pub struct FileBytes {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Mapped read-only, with the file it maps (read again, not through the map, to check it).
    Mapped(memmap2::Mmap, File),
    /// Read into memory.
    Read(Vec<u8>),
}

impl FileBytes {
    /// Maps the file at `path` read-only; reads it into memory instead when it cannot be mapped
    /// (an empty file, a file system without maps).
    pub fn map(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Self::from(Vec::new()));
        }
        // SAFETY: the map is read-only and the store's files are immutable once they have their
        // name: each is written to a temporary file, synced and renamed into place, and never
        // opened for writing again; a replaced file is renamed over (the mapped inode is left as
        // it was) and garbage collection only unlinks. Nothing in this process or in another
        // `fhir-registers` process writes to or truncates a mapped file (see the module docs).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) };
        match map {
            Ok(map) => Ok(Self {
                inner: Inner::Mapped(map, file),
            }),
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "cannot map; reading it");
                Self::read_from(file)
            }
        }
    }

    /// Reads the file at `path` into memory.
    #[cfg(test)]
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Self::read_from(File::open(path)?)
    }

    fn read_from(mut file: File) -> std::io::Result<Self> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Self::from(bytes))
    }

    /// Whether the bytes are read in place through a map.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped(..))
    }

    /// The CRC-32 (IEEE) a store file ends with (its last four bytes, little-endian), and the
    /// one of every byte before them: `(stored, computed)`, equal when the file is whole. A
    /// mapped file is read through the file, not the map, so checking it does not make the
    /// whole file resident in the process.
    pub fn trailing_crc(&self) -> std::io::Result<(u32, u32)> {
        let len = self.len();
        let Some(body) = len.checked_sub(4) else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        let mut crc = crc32fast::Hasher::new();
        let mut stored = [0u8; 4];
        match &self.inner {
            Inner::Read(bytes) => {
                crc.update(&bytes[..body]);
                stored.copy_from_slice(&bytes[body..]);
            }
            Inner::Mapped(_, file) => {
                let mut buf = vec![0u8; CHECK_CHUNK.min(body.max(1))];
                let mut at = 0;
                while at < body {
                    let n = (body - at).min(buf.len());
                    file.read_exact_at(&mut buf[..n], at as u64)?;
                    crc.update(&buf[..n]);
                    at += n;
                }
                file.read_exact_at(&mut stored, body as u64)?;
            }
        }
        Ok((u32::from_le_bytes(stored), crc.finalize()))
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            inner: Inner::Read(bytes),
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped(map, _) => map,
            Inner::Read(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes
    }

    #[test]
    fn a_mapped_file_reads_as_the_file_read_into_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.records");
        // Several check chunks and a bit, so the chunked check meets a partial last chunk.
        let body: Vec<u8> = (0..(CHECK_CHUNK * 2 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, with_crc(&body)).expect("write");
        let mapped = FileBytes::map(&path).expect("maps");
        let read = FileBytes::read(&path).expect("reads");
        assert!(mapped.is_mapped());
        assert!(!read.is_mapped());
        assert_eq!(&*mapped, &*read);
        let (stored, computed) = mapped.trailing_crc().expect("checks");
        assert_eq!(stored, computed);
        assert_eq!(read.trailing_crc().expect("checks"), (stored, computed));

        // An empty file is read (a map of nothing cannot be made), and is too short to check.
        let empty = dir.path().join("empty.records");
        std::fs::write(&empty, b"").expect("write");
        let bytes = FileBytes::map(&empty).expect("opens");
        assert!(bytes.is_empty() && !bytes.is_mapped());
        assert!(bytes.trailing_crc().is_err());
    }

    #[test]
    fn a_damaged_file_fails_its_check_mapped_or_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.records");
        let mut bytes = with_crc(b"PRACTICE 7 OF STOCKTON");
        bytes[9] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        for file in [FileBytes::map(&path), FileBytes::read(&path)] {
            let file = file.expect("opens");
            let (stored, computed) = file.trailing_crc().expect("checks");
            assert_ne!(stored, computed, "a damaged file passed its check");
        }
    }
}
