//! Where rows come from: local files or http(s) URLs, plain or gzip, read as CSV/TSV records with
//! their row numbers. Knows nothing of mappings or FHIR.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a source could not be read.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A local file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A URL could not be fetched.
    #[error("{url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A CSV record could not be parsed.
    #[error("{file}: row {row}: {message}")]
    Csv {
        /// The file.
        file: String,
        /// 1-based data row (header excluded).
        row: u64,
        /// What went wrong.
        message: String,
    },
}

/// Whether a location is a URL rather than a path.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// A file ready to read, possibly downloaded into a temporary file first.
#[derive(Debug)]
pub struct LocalFile {
    /// Where the bytes are.
    pub path: PathBuf,
    /// The name to report in errors and provenance (the original path or URL).
    pub display_name: String,
    /// Already decompressed (unpacked from a download): never gunzipped, whatever its name or
    /// the mapping's `compression` say.
    pub unpacked: bool,
    _temp: Option<TempDownload>,
}

#[derive(Debug)]
struct TempDownload(PathBuf);

impl Drop for TempDownload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Resolves a location: a path is used as it is; a URL is downloaded (streamed, bounded memory)
/// into `scratch_dir` first. Non-2xx statuses are errors.
pub async fn fetch(location: &str, scratch_dir: &Path) -> Result<LocalFile, SourceError> {
    if !is_url(location) {
        return local_file(location);
    }
    let fetch_err = |message: String| SourceError::Fetch {
        url: location.to_string(),
        message,
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("fhir-registers/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fetch_err(e.to_string()))?;
    let mut response = client
        .get(location)
        .send()
        .await
        .map_err(|e| fetch_err(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fetch_err(format!("HTTP status {}", response.status())));
    }
    std::fs::create_dir_all(scratch_dir).map_err(|e| SourceError::Io {
        path: scratch_dir.display().to_string(),
        source: e,
    })?;
    let name = location
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download");
    let temp = scratch_dir.join(format!(
        ".download-{}-{}",
        std::process::id(),
        sanitise_file_name(name)
    ));
    let guard = TempDownload(temp.clone());
    let mut file = File::create(&temp).map_err(|e| SourceError::Io {
        path: temp.display().to_string(),
        source: e,
    })?;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fetch_err(e.to_string()))?
    {
        file.write_all(&chunk).map_err(|e| SourceError::Io {
            path: temp.display().to_string(),
            source: e,
        })?;
    }
    Ok(LocalFile {
        path: temp,
        display_name: location.to_string(),
        unpacked: false,
        _temp: Some(guard),
    })
}

impl LocalFile {
    /// A decompressed file on disk reported under another name (a download reported by its
    /// URL). The file is not removed when this is dropped.
    pub fn unpacked(path: PathBuf, display_name: String) -> Self {
        Self {
            path,
            display_name,
            unpacked: true,
            _temp: None,
        }
    }
}

/// A local file, checked to exist.
pub fn local_file(location: &str) -> Result<LocalFile, SourceError> {
    let path = PathBuf::from(location);
    if !path.is_file() {
        return Err(SourceError::Io {
            path: location.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    Ok(LocalFile {
        path,
        display_name: location.to_string(),
        unpacked: false,
        _temp: None,
    })
}

fn sanitise_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Opens a local file, gunzipping when `gzip` is true.
pub fn open(file: &LocalFile, gzip: bool) -> Result<Box<dyn Read + Send>, SourceError> {
    let f = File::open(&file.path).map_err(|e| SourceError::Io {
        path: file.display_name.clone(),
        source: e,
    })?;
    let reader = BufReader::with_capacity(1 << 16, f);
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// FNV-1a 64-bit: a stable content hash for change detection (not for security).
#[derive(Debug, Clone, Copy)]
pub struct ContentHash(u64);

impl Default for ContentHash {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl ContentHash {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }

    /// Hash of a byte string.
    pub fn of(bytes: &[u8]) -> String {
        let mut h = Self::default();
        h.update(bytes);
        h.hex()
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hash: ContentHash,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hash: ContentHash::default(),
            bytes: 0,
        }
    }

    /// The hash of everything read.
    pub fn hash(&self) -> String {
        self.hash.hex()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// CSV reader settings for a source.
pub fn csv_reader<R: Read>(reader: R, delimiter: u8, has_header: bool) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(has_header)
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(reader)
}

/// Strips a UTF-8 byte-order mark from the first header cell.
pub fn clean_header(cell: &str) -> String {
    cell.trim_start_matches('\u{feff}').trim().to_string()
}
