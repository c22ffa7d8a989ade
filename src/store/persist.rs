//! Persisting releases in the data directory, so that storage grows with the *changes* between
//! releases, not with their number.
//!
//! Layout, per feed:
//!
//! ```text
//! data/feeds/{feed}/{version}.release        what the release holds: provenance + runs of records
//! data/feeds/{feed}/records/{name}.records   concept records first seen in one import
//! ```
//!
//! A *record* is one concept exactly as one release has it. An import stores only the records no
//! earlier release of the feed has (a new practice, a practice whose name changed); every other
//! concept of the release is a reference to an existing record. The release file lists its
//! concepts in code order as runs of consecutive records (`segment, start, len`), so an unchanged
//! stretch of the register costs a few bytes.
//!
//! Every file is written atomically (temporary file, fsync, rename), the records before the release
//! file that names them, under an exclusive lock of the feed: a half-written or failed import is
//! never read. What a killed import leaves (`*.tmp-{pid}` files, records that no release names)
//! is removed under the same lock by the next import of the feed, a no-op one included, and by
//! `serve` when it loads the feed. Every file ends with a CRC-32 of its contents, checked when it
//! is read; `serve` reads records files in place and checks theirs once it is ready
//! ([`verify_pending`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

pub use super::error::PersistError;
use super::index::IndexedRelease;
use super::patch::Patch;
use super::release::{Release, ReleaseInfo};
pub use super::rows::Known;
use super::rows::{self, RowHashes};
pub use super::segment::{Checksum, Segment, decode_limit, set_decode_limit};
use super::segment::{Encoded, Rec};
use super::version::compare_versions;

/// File header of a release file (postcard body, then the CRC-32 of everything before it).
const RELEASE_MAGIC: &[u8; 8] = b"FHIRREL5";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Characters safe in a file name for a version string.
fn file_stem(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The folder of one feed.
pub fn feed_dir(data_dir: &Path, feed: &str) -> PathBuf {
    data_dir.join("feeds").join(feed)
}

/// Where the release of `feed` at `version` lives.
pub fn release_path(data_dir: &Path, feed: &str, version: &str) -> PathBuf {
    feed_dir(data_dir, feed).join(format!("{}.release", file_stem(version)))
}

fn records_path(data_dir: &Path, feed: &str, name: &str) -> PathBuf {
    feed_dir(data_dir, feed)
        .join("records")
        .join(format!("{name}.records"))
}

/// A stretch of consecutive records of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Index into [`StoredRelease::segments`].
    pub segment: u16,
    /// First record.
    pub start: u32,
    /// Number of records.
    pub len: u32,
}

/// A release file: provenance and the release's concepts as runs of records, in code order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRelease {
    /// Provenance.
    pub info: ReleaseInfo,
    /// Names of the record segments the runs point into.
    pub segments: Vec<String>,
    /// The concepts, in code order.
    pub runs: Vec<Run>,
    /// Whether only the provenance and segments were read (`runs` is empty until the release is
    /// read whole, on first use: see [`FeedStore::open_for_serving`]). Not stored.
    #[serde(skip)]
    pub head_only: bool,
}

impl StoredRelease {
    /// Every (segment, record) of the release, in code order.
    pub fn members(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (r.start..r.start + r.len).map(move |i| (r.segment, i)))
    }
}

/// Of `versions`, the nearest earlier than `version`, then the nearest later (indexes).
fn neighbours<'a>(versions: impl Iterator<Item = &'a str>, version: &str) -> Vec<usize> {
    let mut earlier: Option<(usize, &str)> = None;
    let mut later: Option<(usize, &str)> = None;
    for (k, v) in versions.enumerate() {
        match compare_versions(v, version) {
            std::cmp::Ordering::Less => {
                if earlier.is_none_or(|(_, e)| compare_versions(e, v).is_lt()) {
                    earlier = Some((k, v));
                }
            }
            std::cmp::Ordering::Greater => {
                if later.is_none_or(|(_, l)| compare_versions(l, v).is_gt()) {
                    later = Some((k, v));
                }
            }
            std::cmp::Ordering::Equal => {}
        }
    }
    earlier.into_iter().chain(later).map(|(k, _)| k).collect()
}

/// Loads segments by name, each once, bases first. A segment that cannot be read, or whose bases
/// cannot, is `None` and reported once.
struct SegmentLoader<'a> {
    data_dir: &'a Path,
    feed: &'a str,
    loaded: HashMap<String, Option<Arc<Segment>>>,
    errors: Vec<PersistError>,
    /// Whether small segments may be decoded whole: the feed's releases are all small.
    may_decode: bool,
    /// When the checksums of the records files are checked.
    checksum: Checksum,
}

impl SegmentLoader<'_> {
    fn get(&mut self, name: &str) -> Option<Arc<Segment>> {
        if let Some(done) = self.loaded.get(name) {
            return done.clone();
        }
        // Marks the segment while its bases load: a cycle reads as unreadable, not as a hang.
        self.loaded.insert(name.to_string(), None);
        let path = records_path(self.data_dir, self.feed, name);
        let may_decode = self.may_decode;
        // A file found damaged since it was last loaded is checked now, and so refused.
        let known_damaged = lock(&DAMAGED).contains(&path);
        let checksum = if known_damaged {
            Checksum::AtLoad
        } else {
            self.checksum
        };
        let segment = match Segment::load(&path, name, &mut |b| self.get(b), may_decode, checksum) {
            Ok(s) => {
                if known_damaged {
                    lock(&DAMAGED).retain(|p| p != &path);
                }
                let s = Arc::new(s);
                if s.check_pending() {
                    lock(&PENDING).push(Arc::downgrade(&s));
                }
                Some(s)
            }
            Err(e) => {
                self.errors.push(e);
                None
            }
        };
        self.loaded.insert(name.to_string(), segment.clone());
        segment
    }
}

/// Loaded records files whose checksum is still to be checked (see [`verify_pending`]).
static PENDING: Mutex<Vec<Weak<Segment>>> = Mutex::new(Vec::new());

/// Release files read to serve whose checksum is still to be checked (see [`verify_pending`]).
static PENDING_RELEASES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Files whose checksum check failed after they were loaded: the next load of their feed checks
/// them at once, and refuses them.
static DAMAGED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A lock of one of the lists above (a panic while one was held leaves a list still usable).
fn lock<T>(list: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    list.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks the checksums of the files loaded to serve ([`FeedStore::open_for_serving`]) and not
/// checked yet (records files, and release files of which only the head was read), reading each
/// once, and returns those that do not match. Such a file has been read since it was loaded;
/// its feed's next load ([`damaged_files`] changes, so a publish reads the feed again) checks it
/// at once and refuses it, and the releases that use it are not served. `serve` runs this in
/// the background once it is ready, and after each publish.
pub fn verify_pending() -> Vec<PersistError> {
    let pending = std::mem::take(&mut *lock(&PENDING));
    let releases = std::mem::take(&mut *lock(&PENDING_RELEASES));
    let mut errors = Vec::new();
    let checks = pending
        .iter()
        .filter_map(Weak::upgrade)
        .map(|segment| segment.verify())
        .chain(
            releases
                .iter()
                .map(|path| read_release_head(path).map(|_| ())),
        );
    for outcome in checks {
        if let Err(e) = outcome {
            if let PersistError::Corrupt { path, .. } | PersistError::Io { path, .. } = &e {
                let mut damaged = lock(&DAMAGED);
                let path = PathBuf::from(path);
                if !damaged.contains(&path) {
                    damaged.push(path);
                }
            }
            errors.push(e);
        }
    }
    errors
}

/// The files of `feed` found damaged by [`verify_pending`] and not loaded whole since.
pub fn damaged_files(data_dir: &Path, feed: &str) -> Vec<PathBuf> {
    let dir = feed_dir(data_dir, feed);
    lock(&DAMAGED)
        .iter()
        .filter(|p| p.starts_with(&dir))
        .cloned()
        .collect()
}

/// Writes a file atomically (streamed to a temporary file, synced, renamed) and returns its size.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<u64, PersistError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp).map_err(io(&tmp))?);
        write(&mut f).map_err(io(&tmp))?;
        let f = f.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(fs::metadata(path).map_err(io(path))?.len())
}

/// Writes `magic`, the postcard encoding of `value` and the CRC-32 of both, atomically.
fn write_postcard<T: Serialize>(
    path: &Path,
    magic: &[u8; 8],
    value: &T,
) -> Result<u64, PersistError> {
    let mut bytes = magic.to_vec();
    postcard::to_io(value, &mut bytes).map_err(|e| PersistError::Corrupt {
        path: path.display().to_string(),
        message: format!("cannot be encoded: {e}"),
    })?;
    let crc = crc32fast::hash(&bytes);
    write_atomic(path, |w| {
        w.write_all(&bytes)?;
        w.write_all(&crc.to_le_bytes())
    })
}

fn read_with_magic<T: serde::de::DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
) -> Result<T, PersistError> {
    read_checked(path, magic, false)
}

/// [`read_with_magic`] of a value that is the start of what the file holds.
fn read_with_magic_prefix<T: serde::de::DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
) -> Result<T, PersistError> {
    read_checked(path, magic, true)
}

fn read_checked<T: serde::de::DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
    prefix: bool,
) -> Result<T, PersistError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let corrupt = |message: String| PersistError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let Some(body) = bytes.strip_prefix(magic.as_slice()) else {
        return Err(corrupt(if bytes.starts_with(&magic[..7]) {
            format!(
                "format {} is not this server's ({}): re-import the release",
                String::from_utf8_lossy(&bytes[..magic.len().min(bytes.len())]),
                String::from_utf8_lossy(magic)
            )
        } else {
            "missing or outdated header".into()
        }));
    };
    let Some((body, stored)) = body.split_last_chunk::<4>() else {
        return Err(corrupt("truncated".into()));
    };
    let (stored, computed) = (
        u32::from_le_bytes(*stored),
        crc32fast::hash(&bytes[..bytes.len() - 4]),
    );
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch (stored CRC-32 {stored:08x}, contents {computed:08x}): the file is damaged"
        )));
    }
    if prefix {
        return postcard::take_from_bytes(body)
            .map(|(v, _)| v)
            .map_err(|e| corrupt(e.to_string()));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))
}

/// Reads one release file.
pub fn read_release(path: &Path) -> Result<StoredRelease, PersistError> {
    read_with_magic(path, RELEASE_MAGIC)
}

/// Reads one release file's provenance and segment names (the whole file is read and its
/// checksum checked; its runs are not decoded).
pub fn read_release_head(path: &Path) -> Result<StoredRelease, PersistError> {
    let head: ReleaseHead = read_with_magic_prefix(path, RELEASE_MAGIC)?;
    Ok(head.into())
}

/// What a release file starts with.
#[derive(Deserialize)]
struct ReleaseHead {
    info: ReleaseInfo,
    segments: Vec<String>,
}

impl From<ReleaseHead> for StoredRelease {
    fn from(head: ReleaseHead) -> Self {
        Self {
            info: head.info,
            segments: head.segments,
            runs: Vec::new(),
            head_only: true,
        }
    }
}

/// Bytes [`read_release_start`] reads first: a head is a few hundred bytes, and a few dozen
/// more for each records file the release names.
const HEAD_BYTES: u64 = 64 * 1024;

/// Reads one release file's provenance and segment names from the start of the file, without
/// reading the rest or checking its checksum (that is [`verify_pending`]'s, and
/// [`read_release`]'s when the release is first used): what `serve` reads of every release but
/// the newest, whose files grow with the register (megabytes each for a national one).
fn read_release_start(path: &Path) -> Result<StoredRelease, PersistError> {
    let mut bytes = Vec::new();
    let file = fs::File::open(path).map_err(io(path))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, HEAD_BYTES), &mut bytes)
        .map_err(io(path))?;
    if let Some(body) = bytes.strip_prefix(RELEASE_MAGIC.as_slice())
        && let Ok((head, _)) = postcard::take_from_bytes::<ReleaseHead>(body)
    {
        return Ok(head.into());
    }
    // A longer head, or a damaged or foreign file: read whole, to be refused by name.
    read_release_head(path)
}

/// Every release file of one feed (not read), sorted by name.
pub fn feed_release_files(data_dir: &Path, feed: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(feed_dir(data_dir, feed))
        .into_iter()
        .flatten()
        .flatten()
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "release"))
        .collect();
    out.sort();
    out
}

/// Every release file under the data directory (not read).
pub fn release_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for feed in fs::read_dir(data_dir.join("feeds")).into_iter().flatten() {
        let Ok(feed) = feed else { continue };
        out.extend(feed_release_files(
            data_dir,
            &feed.file_name().to_string_lossy(),
        ));
    }
    out.sort();
    out
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Provenance of the new release.
    pub info: ReleaseInfo,
    /// Its release file.
    pub path: PathBuf,
    /// Records first seen in this release (new or changed concepts).
    pub new_records: usize,
    /// Concepts stored as references to earlier records.
    pub shared_records: usize,
    /// Bytes written: the release file and the new records.
    pub bytes: u64,
    /// Bytes a standalone copy of the release would take (the same encoding, every concept).
    pub full_copy_bytes: u64,
    /// The version this one replaced (same version, re-made with another mapping or `--replace`).
    pub replaced: bool,
}

/// What adding a release did.
#[derive(Debug, Clone)]
pub enum SaveOutcome {
    /// A new release was stored.
    Stored(Saved),
    /// The same data made with the same mapping is already stored as `version`: nothing written.
    Unchanged {
        /// The existing release.
        info: ReleaseInfo,
    },
}

/// One feed's stored releases, with the records they use loaded once and shared.
#[derive(Debug)]
pub struct FeedStore {
    data_dir: PathBuf,
    feed: String,
    /// Readable releases, sorted by file name.
    pub releases: Vec<StoredRelease>,
    segments: HashMap<String, Arc<Segment>>,
    /// Whether some file of the feed could not be read: its records are then not known, and
    /// garbage collection keeps every records file.
    damaged: bool,
}

impl FeedStore {
    /// Opens a feed's store. Unreadable release files (and releases whose records are missing)
    /// are left out and returned as errors beside the store, so one broken file loses nothing else.
    pub fn open(data_dir: &Path, feed: &str) -> (Self, Vec<PersistError>) {
        Self::open_around(data_dir, feed, None)
    }

    /// Opens a feed's store to serve it: like [`FeedStore::open`], but only the newest release
    /// is read whole; the others keep their provenance and segments, and their code order is
    /// read on first use ([`FeedStore::indexed`] makes them lazy). Start-up time and memory then
    /// grow with the records a feed holds, not with how many releases list them.
    pub fn open_for_serving(data_dir: &Path, feed: &str) -> (Self, Vec<PersistError>) {
        Self::open_with(data_dir, feed, None, true)
    }

    /// [`FeedStore::open`], loading records only for the releases next to `version` when one is
    /// given (what an import of that version compares with): an import's time and memory then
    /// do not grow with the number of releases stored. Every release file is still read.
    pub fn open_around(
        data_dir: &Path,
        feed: &str,
        version: Option<&str>,
    ) -> (Self, Vec<PersistError>) {
        Self::open_with(data_dir, feed, version, false)
    }

    fn open_with(
        data_dir: &Path,
        feed: &str,
        version: Option<&str>,
        lazy: bool,
    ) -> (Self, Vec<PersistError>) {
        let mut errors = Vec::new();
        let mut store = Self {
            data_dir: data_dir.to_path_buf(),
            feed: feed.to_string(),
            releases: Vec::new(),
            segments: HashMap::new(),
            damaged: false,
        };
        let mut read = Vec::new();
        // Serving or importing, every release file's head is read (its checksum checked), and
        // only the releases needed now are read whole: the newest (serving), the neighbours of
        // the version imported; otherwise all of them.
        let heads = lazy || version.is_some();
        let newest = feed_release_files(data_dir, feed)
            .into_iter()
            .max_by(|a, b| compare_versions(&a.to_string_lossy(), &b.to_string_lossy()));
        for path in feed_release_files(data_dir, feed) {
            // Serving, the releases but the newest have their heads read, and their checksums
            // checked in the background (a file found damaged is checked now).
            let deferred =
                lazy && Some(&path) != newest.as_ref() && !lock(&DAMAGED).contains(&path);
            let result = if deferred {
                read_release_start(&path).inspect(|_| lock(&PENDING_RELEASES).push(path.clone()))
            } else if heads {
                read_release_head(&path).inspect(|_| lock(&DAMAGED).retain(|p| p != &path))
            } else {
                read_release(&path)
            };
            match result {
                Ok(r) => read.push((path, r)),
                Err(e) => errors.push(e),
            }
        }
        let whole: Vec<usize> = match version {
            Some(v) => neighbours(read.iter().map(|(_, r)| r.info.version.as_str()), v),
            None if lazy => (0..read.len())
                .max_by(|&a, &b| compare_versions(&read[a].1.info.version, &read[b].1.info.version))
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let mut unreadable = Vec::new();
        for &k in &whole {
            match read_release(&read[k].0) {
                Ok(r) => read[k].1 = r,
                Err(e) => {
                    errors.push(e);
                    unreadable.push(k);
                }
            }
        }
        let mut at = 0;
        read.retain(|_| {
            at += 1;
            !unreadable.contains(&(at - 1))
        });
        let largest = read.iter().map(|(_, r)| r.info.concepts).max().unwrap_or(0);
        let mut loader = SegmentLoader {
            data_dir,
            feed,
            loaded: HashMap::new(),
            errors: Vec::new(),
            may_decode: largest <= super::segment::decode_limit() as u64,
            // Serving, records files are read in place and checked once the server is ready.
            checksum: if lazy {
                Checksum::Deferred
            } else {
                Checksum::AtLoad
            },
        };
        for (path, release) in read {
            // Importing, only the neighbours (read whole) have their records loaded.
            if version.is_some() && release.head_only {
                store.releases.push(release);
                continue;
            }
            let mut ok = true;
            for name in &release.segments {
                match loader.get(name) {
                    Some(seg) => {
                        store.segments.insert(name.clone(), seg);
                    }
                    None => ok = false,
                }
            }
            // A release read head-only is checked when its runs are read (on first use).
            let in_bounds = release.runs.iter().all(|r| {
                release
                    .segments
                    .get(r.segment as usize)
                    .and_then(|n| store.segments.get(n))
                    .is_some_and(|s| (r.start as usize + r.len as usize) <= s.len())
            });
            if ok && !in_bounds {
                errors.push(PersistError::Corrupt {
                    path: path.display().to_string(),
                    message: "refers to records its segments do not have".into(),
                });
                ok = false;
            }
            if ok {
                store.releases.push(release);
            }
        }
        // Bases stay loaded too: the next import may make records from them, and they are in use.
        for (name, seg) in loader.loaded {
            if let Some(seg) = seg {
                store.segments.entry(name).or_insert(seg);
            }
        }
        errors.extend(loader.errors);
        store.damaged = !errors.is_empty();
        (store, errors)
    }

    /// Opens a feed's store to serve it and, when no import of the feed is running (its lock is
    /// free), removes what interrupted imports left behind (see [`save_release`]). A feed with
    /// no folder is not created.
    pub fn open_and_tidy(data_dir: &Path, feed: &str) -> (Self, Vec<PersistError>) {
        let dir = feed_dir(data_dir, feed);
        let lock = if dir.is_dir() {
            try_lock_feed(&dir)
        } else {
            None
        };
        let (store, errors) = Self::open_for_serving(data_dir, feed);
        if lock.is_some() {
            store.collect_garbage();
        }
        (store, errors)
    }

    /// The shared record segments of a stored release, in its `segments` order.
    pub fn segments_of(&self, release: &StoredRelease) -> Vec<Arc<Segment>> {
        release
            .segments
            .iter()
            .map(|n| self.segments[n].clone())
            .collect()
    }

    /// A stored release with its indexes, over the shared segments.
    pub fn indexed(&self, release: &StoredRelease) -> IndexedRelease {
        if release.head_only {
            let path = release_path(&self.data_dir, &self.feed, &release.info.version);
            let names = release.segments.clone();
            return IndexedRelease::lazy(
                release.info.clone(),
                self.segments_of(release),
                Box::new(move |segments: &[Arc<Segment>]| {
                    let whole = read_release(&path)?;
                    if whole.segments != names {
                        return Err(PersistError::Corrupt {
                            path: path.display().to_string(),
                            message: "names other records than when it was opened".into(),
                        });
                    }
                    let in_bounds = whole.runs.iter().all(|r| {
                        segments
                            .get(r.segment as usize)
                            .is_some_and(|s| (r.start as usize + r.len as usize) <= s.len())
                    });
                    if !in_bounds {
                        return Err(PersistError::Corrupt {
                            path: path.display().to_string(),
                            message: "refers to records its segments do not have".into(),
                        });
                    }
                    Ok(whole
                        .runs
                        .iter()
                        .map(|r| (r.segment, r.start, r.len))
                        .collect())
                }),
            );
        }
        IndexedRelease::from_segments(
            release.info.clone(),
            self.segments_of(release),
            release.runs.iter().map(|r| (r.segment, r.start, r.len)),
        )
    }

    /// The releases next to `version` whose records are loaded (see [`neighbours`]).
    fn neighbours(&self, version: &str) -> Vec<usize> {
        let loaded: Vec<usize> = (0..self.releases.len())
            .filter(|&k| {
                self.releases[k]
                    .segments
                    .iter()
                    .all(|n| self.segments.contains_key(n))
            })
            .collect();
        neighbours(
            loaded
                .iter()
                .map(|&k| self.releases[k].info.version.as_str()),
            version,
        )
        .into_iter()
        .map(|p| loaded[p])
        .collect()
    }

    /// Which rows of a release of `version`, read with the mapping of `mapping_hash`, this store
    /// already has: those of the nearest release (earlier, else later) made with that mapping.
    pub fn known(&self, version: &str, mapping_hash: &str) -> Option<Known> {
        let r = &self.releases[*self.neighbours(version).first()?];
        if r.info.mapping_hash != mapping_hash {
            return None;
        }
        let rows = RowHashes::new(feed_dir(&self.data_dir, &self.feed).join("records"));
        Some(Known::new(self.indexed(r), rows))
    }

    /// Adds a release to a store opened under the feed's lock (see [`save_release`]).
    fn add(
        &mut self,
        release: Release,
        replace: bool,
        known: Option<&Known>,
    ) -> Result<SaveOutcome, PersistError> {
        let info = release.info;
        if let Some(same) = self.releases.iter().find(|r| {
            r.info.source_hash == info.source_hash && r.info.mapping_hash == info.mapping_hash
        }) {
            return Ok(SaveOutcome::Unchanged {
                info: same.info.clone(),
            });
        }
        let existing = self
            .releases
            .iter()
            .find(|r| r.info.version == info.version);
        if let Some(e) = existing
            && e.info.source_hash != info.source_hash
            && !replace
        {
            return Err(PersistError::VersionExists {
                feed: self.feed.clone(),
                version: info.version.clone(),
                existing: e.info.source.clone(),
            });
        }
        let replaced = existing.is_some();

        // The releases to compare with: the nearest earlier and the nearest later one. A concept
        // made from the very row a record of the same code there was made from (same mapping),
        // or, for records without row hashes, equal to it (in a release made with the same
        // mapping: another mapping's records have another shape even where the register did not
        // change), is that record; a changed one is stored as a patch of its code's record in
        // the nearest earlier release (the later one when importing an older file), made with
        // any mapping. Rows `known` found are records of its release already.
        let nearest = self.neighbours(&info.version);
        let others: Vec<&StoredRelease> = nearest.iter().map(|&k| &self.releases[k]).collect();
        let indexed: Vec<IndexedRelease> = others.iter().map(|r| self.indexed(r)).collect();
        let name = format!(
            "{}-{}",
            file_stem(&info.version),
            crate::source::ContentHash::of(
                format!(
                    "{}{}{}",
                    info.source_hash, info.mapping_hash, info.imported_at
                )
                .as_bytes()
            )
        );
        let mut segment_names: Vec<String> = Vec::new();
        let segment_index = |n: &str, names: &mut Vec<String>| -> u16 {
            match names.iter().position(|x| x == n) {
                Some(p) => p as u16,
                None => {
                    names.push(n.to_string());
                    (names.len() - 1) as u16
                }
            }
        };
        // The row hashes `known` read already are not read again.
        let mut rows = known.map_or_else(
            || RowHashes::new(feed_dir(&self.data_dir, &self.feed).join("records")),
            Known::row_hashes,
        );
        let mut bases: Vec<String> = Vec::new();
        // New records: (position in the release, the record to patch: base, index).
        let mut pending: Vec<(u32, Option<(u16, u32)>)> = Vec::new();
        let mut runs: Vec<Run> = Vec::new();
        let total = release.concepts.len();
        for k in 0..total {
            let (seg, idx) = if let Some((known, token)) = known.zip(release.concepts.known(k)) {
                let (s, i) = known.release().record(token);
                (segment_index(&s.name, &mut segment_names), i)
            } else {
                let c = release.concepts.get(k);
                let row_hash = release.concepts.row_hash(k);
                let mut stored: Option<(&Segment, u32)> = None;
                let mut base: Option<(&Segment, u32)> = None;
                for (r, other) in indexed.iter().enumerate() {
                    let Some(i) = other.find(&c.code) else {
                        continue;
                    };
                    let record = other.record(i);
                    base.get_or_insert(record);
                    if others[r].info.mapping_hash != info.mapping_hash {
                        continue;
                    }
                    let stored_hash = rows.get(record.0, record.1);
                    let same = if stored_hash != 0 && row_hash != 0 {
                        stored_hash == row_hash
                    } else {
                        *other.concept(i) == c
                    };
                    if same {
                        stored = Some(record);
                        break;
                    }
                }
                match stored {
                    Some((s, i)) => (segment_index(&s.name, &mut segment_names), i),
                    None => {
                        let base = base.map(|(s, i)| (segment_index(&s.name, &mut bases), i));
                        pending.push((k as u32, base));
                        (
                            segment_index(&name, &mut segment_names),
                            (pending.len() - 1) as u32,
                        )
                    }
                }
            };
            match runs.last_mut() {
                Some(r) if r.segment == seg && r.start + r.len == idx => r.len += 1,
                _ => runs.push(Run {
                    segment: seg,
                    start: idx,
                    len: 1,
                }),
            }
        }
        drop(indexed);
        let new_count = pending.len();
        let rec_path = records_path(&self.data_dir, &self.feed, &name);
        let corrupt = |message: String| PersistError::Corrupt {
            path: rec_path.display().to_string(),
            message,
        };
        let base_segments: Vec<Arc<Segment>> =
            bases.iter().map(|b| self.segments[b].clone()).collect();
        let mut bytes = 0;
        let mut patched = 0;
        if new_count > 0 {
            let encoded = Encoded::build(bases.clone(), new_count, &mut |j| {
                let (k, base) = pending[j];
                let c = release.concepts.get(k as usize);
                Ok(match base {
                    Some((b, index)) => Rec::Patch {
                        base: b,
                        index,
                        patch: Box::new(Patch::between(
                            &base_segments[b as usize].concept(index),
                            &c,
                        )),
                        concept: c,
                    },
                    None => Rec::Full(c),
                })
            })
            .map_err(corrupt)?;
            patched = encoded.patches();
            let hashes: Vec<u64> = pending
                .iter()
                .map(|&(k, _)| release.concepts.row_hash(k as usize))
                .collect();
            if hashes.iter().any(|&h| h != 0) {
                let bytes = rows::encode(&hashes);
                write_atomic(&rows::rows_path(&rec_path), |w| w.write_all(&bytes))?;
            }
            bytes += write_atomic(&rec_path, |w| encoded.write_to(w))?;
        }
        drop(base_segments);
        let path = release_path(&self.data_dir, &self.feed, &info.version);
        let stored = StoredRelease {
            info: info.clone(),
            segments: segment_names,
            runs,
            head_only: false,
        };
        let release_bytes = write_postcard(&path, RELEASE_MAGIC, &stored)?;
        bytes += release_bytes;
        // A standalone copy: every concept whole, in one records file. Encoded for a release of
        // up to `decode_limit` concepts; estimated for a larger one from the bytes a record
        // takes in the whole records files it shares (encoding 2.7M concepts again to report a
        // percentage would cost seconds).
        let full_copy_bytes = if new_count == total && patched == 0 {
            bytes
        } else if total <= super::segment::decode_limit() && release.concepts.known_count() == 0 {
            let all = Encoded::build(Vec::new(), total, &mut |k| {
                Ok(Rec::Full(release.concepts.get(k)))
            })
            .map_err(corrupt)?;
            release_bytes + all.size()
        } else {
            let whole: Vec<(u64, usize)> = stored
                .segments
                .iter()
                .filter_map(|n| {
                    let s = self.segments.get(n)?;
                    let size = fs::metadata(records_path(&self.data_dir, &self.feed, n)).ok()?;
                    s.bases.is_empty().then(|| (size.len(), s.len()))
                })
                .collect();
            let (b, n) = whole
                .iter()
                .fold((0u64, 0usize), |(b, n), &(sb, sn)| (b + sb, n + sn));
            release_bytes + b * total as u64 / n.max(1) as u64
        };
        drop(release.concepts);
        // Keep the store as the disk now is: the new records (read back as serving reads them),
        // the new release in place of any it replaced.
        if new_count > 0 {
            let segments = &self.segments;
            let small = total <= super::segment::decode_limit();
            let segment = Segment::load(
                &rec_path,
                &name,
                &mut |b| segments.get(b).cloned(),
                small,
                Checksum::AtLoad,
            )?;
            self.segments.insert(name, Arc::new(segment));
        }
        self.releases.retain(|r| r.info.version != info.version);
        self.releases.push(stored);
        self.releases.sort_by_key(|r| file_stem(&r.info.version));
        Ok(SaveOutcome::Stored(Saved {
            shared_records: total - new_count,
            info,
            path,
            new_records: new_count,
            bytes,
            full_copy_bytes,
            replaced,
        }))
    }

    /// Removes what interrupted or superseded imports left: temporary files (`*.tmp-{pid}`, from
    /// an import killed while writing) in the feed's folder and its records folder, and records
    /// files no release needs (names, or makes its records from). Each removal is logged with
    /// the file and its size. Run only under the feed's lock, when no import of the feed is
    /// writing. When some file of the feed cannot be read, the records it needs are not known
    /// and every records file is kept.
    fn collect_garbage(&self) {
        // Segments an import did not load have their bases read from their headers.
        let mut damaged = self.damaged;
        let mut used: HashSet<String> = HashSet::new();
        let mut stack: Vec<String> = self
            .releases
            .iter()
            .flat_map(|r| r.segments.iter().cloned())
            .collect();
        while let Some(name) = stack.pop() {
            if used.contains(&name) {
                continue;
            }
            match self.segments.get(&name) {
                Some(seg) => stack.extend(seg.bases.iter().cloned()),
                None => match Segment::read_bases(&records_path(&self.data_dir, &self.feed, &name))
                {
                    Ok(bases) => stack.extend(bases),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a records file's header; every records file is kept");
                        damaged = true;
                    }
                },
            }
            used.insert(name);
        }
        let dir = feed_dir(&self.data_dir, &self.feed);
        let mut kept = 0;
        for (folder, holds_records) in [(dir.clone(), false), (dir.join("records"), true)] {
            for f in fs::read_dir(&folder).into_iter().flatten().flatten() {
                let p = f.path();
                let extension = p.extension().map(|e| e.to_string_lossy().into_owned());
                let tmp = extension.as_deref().is_some_and(|e| e.starts_with("tmp-"));
                let unused = holds_records
                    && matches!(extension.as_deref(), Some("records" | "rows"))
                    && p.file_stem()
                        .is_some_and(|s| !used.contains(&*s.to_string_lossy()));
                if unused && damaged {
                    kept += 1;
                    continue;
                }
                if !(tmp || unused) {
                    continue;
                }
                let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                let what = if tmp {
                    "a temporary file of an interrupted import"
                } else {
                    "a records file no release needs"
                };
                match fs::remove_file(&p) {
                    Ok(()) => tracing::info!(file = %p.display(), bytes, "removed {what}"),
                    Err(e) => {
                        tracing::warn!(file = %p.display(), bytes, error = %e, "cannot remove {what}")
                    }
                }
            }
        }
        if kept > 0 {
            tracing::warn!(
                feed = self.feed,
                files = kept,
                "records files no readable release names are kept: some file of the feed cannot be read"
            );
        }
    }
}

/// Takes the feed's lock without waiting: `None` when an import of the feed holds it (or the
/// lock file cannot be made, as in a read-only data directory).
fn try_lock_feed(dir: &Path) -> Option<fs::File> {
    let path = dir.join(".lock");
    let lock = match fs::File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(file = %path.display(), error = %e, "cannot open the feed's lock; not tidied");
            return None;
        }
    };
    match lock.try_lock() {
        Ok(()) => Some(lock),
        Err(fs::TryLockError::WouldBlock) => {
            tracing::debug!(feed = %dir.display(), "an import of the feed is running; not tidied");
            None
        }
        Err(fs::TryLockError::Error(e)) => {
            tracing::debug!(file = %path.display(), error = %e, "cannot lock the feed; not tidied");
            None
        }
    }
}

/// Adds one release to its feed's store: a no-op when the same data made with the same mapping
/// is already stored; an error when its version exists with other source data (unless
/// `replace`). The store is read once, under an exclusive lock of the feed, so an import running
/// in another process at the same time is seen; releases that cannot be read are logged and are
/// not bases for sharing. Whatever the outcome, what interrupted imports left behind is then
/// removed (see [`FeedStore::open_and_tidy`]), still under the lock.
pub fn save_release(
    data_dir: &Path,
    release: Release,
    replace: bool,
) -> Result<SaveOutcome, PersistError> {
    let version = release.info.version.clone();
    FeedImport::open(data_dir, &release.info.feed, Some(&version))?.save(release, replace, None)
}

/// A feed opened for an import: its store, read under the feed's exclusive lock, which is held
/// until [`FeedImport::save`] (or the value is dropped). Reading the release file while holding
/// it lets the import ask the store which rows it already has ([`FeedStore::known`]).
pub struct FeedImport {
    store: FeedStore,
    lock: fs::File,
}

impl FeedImport {
    /// Locks the feed (waiting for another import of it) and reads its store: every release
    /// file, and the records of the releases next to `version` when one is given (see
    /// [`FeedStore::open_around`]).
    pub fn open(data_dir: &Path, feed: &str, version: Option<&str>) -> Result<Self, PersistError> {
        let dir = feed_dir(data_dir, feed);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let (store, errors) = FeedStore::open_around(data_dir, feed, version);
        for e in errors {
            tracing::warn!(error = %e, "stored release cannot be read; it is not a base for sharing");
        }
        Ok(Self { store, lock })
    }

    /// The feed's store as read.
    pub fn store(&self) -> &FeedStore {
        &self.store
    }

    /// Stores the release (see [`save_release`]); `known` is what the rows were checked against
    /// while reading (its tokens are positions in its release).
    pub fn save(
        mut self,
        release: Release,
        replace: bool,
        known: Option<&Known>,
    ) -> Result<SaveOutcome, PersistError> {
        let outcome = self.store.add(release, replace, known);
        self.store.collect_garbage();
        drop(self.lock);
        if let Ok(SaveOutcome::Stored(saved)) = &outcome {
            mark_changed(
                &self.store.data_dir,
                &format!("{}@{}", saved.info.feed, saved.info.version),
            );
        }
        outcome
    }
}

/// The data directory's change marker: rewritten (atomically) after every stored release, so a
/// running `serve` notices another process's import by reading one small file.
pub fn change_marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join("feeds").join(".changed")
}

/// Records that `what` (`feed@version`) was stored: a new marker text (time, process, what).
/// Failing to write it is logged, not an error: the release is stored, and a `serve` that does
/// not notice it sees it on its next start.
pub fn mark_changed(data_dir: &Path, what: &str) {
    let path = change_marker_path(data_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let text = format!("{nanos} {} {what}\n", std::process::id());
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = fs::write(&temp, text).and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        tracing::warn!(path = %path.display(), error = %e, "cannot write the change marker");
    }
}

/// The change marker's text (`None` when no release was stored since it was introduced).
pub fn read_change_marker(data_dir: &Path) -> Option<String> {
    fs::read_to_string(change_marker_path(data_dir)).ok()
}

#[cfg(test)]
mod tests {
    use super::super::concept::{Concept, Value};
    use super::*;

    fn concept(code: &str, name: &str) -> Concept {
        let mut c = Concept::new(code);
        c.display = Some(name.into());
        c.properties
            .push(("opStartDate".into(), Value::DateTime("1974-04-01".into())));
        c
    }

    fn release(version: &str, source: &str, concepts: Vec<Concept>) -> Release {
        Release {
            info: ReleaseInfo {
                feed: "ods-epraccur".into(),
                mapping: "ods-epraccur".into(),
                version: version.into(),
                source: "x.csv".into(),
                rows_read: concepts.len() as u64,
                concepts: concepts.len() as u64,
                mapping_hash: "m".into(),
                source_hash: source.into(),
                imported_at: format!("2026-01-01T00:00:0{}Z", version.len()),
            },
            concepts: concepts.into(),
        }
    }

    fn concepts_of(store: &FeedStore, version: &str) -> Vec<Concept> {
        let r = store
            .releases
            .iter()
            .find(|r| r.info.version == version)
            .expect("release");
        let segs = store.segments_of(r);
        r.members()
            .map(|(s, i)| segs[s as usize].concept(i).into_owned())
            .collect()
    }

    #[test]
    fn releases_share_unchanged_records_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first: Vec<Concept> = (0..100)
            .map(|i| concept(&format!("A{i:05}"), &format!("PRACTICE {i}")))
            .collect();
        let mut second = first.clone();
        second[10].display = Some("RENAMED".into());
        second.push(concept("B00001", "NEW"));
        let SaveOutcome::Stored(a) = save_release(
            dir.path(),
            release("2020-01-01", "s1", first.clone()),
            false,
        )
        .expect("saves") else {
            panic!("stored")
        };
        assert_eq!((a.new_records, a.shared_records), (100, 0));
        let SaveOutcome::Stored(b) = save_release(
            dir.path(),
            release("2020-04-01", "s2", second.clone()),
            false,
        )
        .expect("saves") else {
            panic!("stored")
        };
        assert_eq!((b.new_records, b.shared_records), (2, 99));
        assert!(
            b.bytes * 5 < a.bytes,
            "second release {} bytes, first {}",
            b.bytes,
            a.bytes
        );
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(concepts_of(&store, "2020-01-01"), first);
        assert_eq!(concepts_of(&store, "2020-04-01"), second);

        // The same data again: nothing stored, whatever version it is given.
        let again = save_release(
            dir.path(),
            release("2020-07-01", "s2", second.clone()),
            false,
        );
        assert!(
            matches!(again, Ok(SaveOutcome::Unchanged { info }) if info.version == "2020-04-01")
        );
        // Other data under an existing version: refused.
        let clash = save_release(
            dir.path(),
            release("2020-04-01", "s3", first.clone()),
            false,
        );
        assert!(matches!(clash, Err(PersistError::VersionExists { .. })));
        assert_eq!(release_files(dir.path()).len(), 2);
    }

    #[test]
    fn changed_records_are_stored_as_patches_chained_across_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wide = |i: usize, town: &str| {
            let mut c = concept(&format!("A{i:05}"), &format!("PRACTICE {i}"));
            for (k, v) in [
                ("address1", format!("{i} THE HEALTH CENTRE")),
                ("address2", format!("{i} LAWSON STREET")),
                ("town", town.to_string()),
                ("telephone", format!("01642 6{i:05}")),
            ] {
                c.properties.push((k.into(), Value::String(v.into())));
            }
            for k in 0..8 {
                let v = format!("{i} ANOTHER FIELD {k} OF A REAL RECORD");
                c.properties
                    .push((format!("field{k}").into(), Value::String(v.into())));
            }
            c
        };
        let v1: Vec<Concept> = (0..50).map(|i| wide(i, "STOCKTON")).collect();
        let v2: Vec<Concept> = (0..50).map(|i| wide(i, "STOCKTON-ON-TEES")).collect();
        let mut v3 = v2.clone();
        for c in &mut v3 {
            c.status = Some("inactive".into());
            c.inactive = true;
        }
        let mut v0 = v1.clone();
        v0.truncate(40);
        let mut sizes = Vec::new();
        for (version, source, concepts) in [
            ("2020-01-01", "s1", v1.clone()),
            ("2020-04-01", "s2", v2.clone()),
            ("2020-07-01", "s3", v3.clone()),
            // An older file imported last is made from its nearest later release.
            ("2019-10-01", "s0", v0.clone()),
        ] {
            let SaveOutcome::Stored(s) =
                save_release(dir.path(), release(version, source, concepts), false).expect("saves")
            else {
                panic!("stored")
            };
            sizes.push(s.bytes);
        }
        // Every concept changed in one of its fields: a fraction of whole records (these test
        // records are small; real ones are several times larger).
        assert!(
            sizes[1] * 3 < sizes[0] && sizes[2] * 5 < sizes[0],
            "{sizes:?}"
        );
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(concepts_of(&store, "2019-10-01"), v0);
        assert_eq!(concepts_of(&store, "2020-01-01"), v1);
        assert_eq!(concepts_of(&store, "2020-04-01"), v2);
        assert_eq!(concepts_of(&store, "2020-07-01"), v3);
        // The bases of kept records survive garbage collection; losing one loses the releases
        // made from it, reported, and nothing else.
        let records = feed_dir(dir.path(), "ods-epraccur").join("records");
        // 2019-10 is 40 records of 2020-01 unchanged: it stores none of its own.
        assert_eq!(fs::read_dir(&records).expect("dir").count(), 3);
        let last = store.releases[3]
            .segments
            .iter()
            .find(|n| n.starts_with("2020-07-01-"))
            .expect("its own records")
            .clone();
        fs::remove_file(records.join(format!("{last}.records"))).expect("remove");
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let versions: Vec<&str> = store
            .releases
            .iter()
            .map(|r| r.info.version.as_str())
            .collect();
        assert_eq!(versions, ["2019-10-01", "2020-01-01", "2020-04-01"]);
        assert_eq!(concepts_of(&store, "2020-04-01"), v2);
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn what_a_killed_import_leaves_is_removed_by_the_next_import_and_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let concepts: Vec<Concept> = (0..20)
            .map(|i| concept(&format!("A{i:05}"), &format!("PRACTICE {i}")))
            .collect();
        save_release(
            dir.path(),
            release("2020-01-01", "s1", concepts.clone()),
            false,
        )
        .expect("saves");
        let feed = feed_dir(dir.path(), "ods-epraccur");
        let records = feed.join("records");
        let (clean_feed, clean_records) = (files_in(&feed), files_in(&records));
        let named = records.join(&clean_records[0]);
        // What `kill -9` leaves: half-written files of a process that is gone, and a records file
        // written before the release file that would have named it.
        let plant = || {
            fs::write(records.join("2020-04-01-0123.tmp-99999"), vec![0u8; 4096]).expect("tmp");
            fs::write(feed.join("2020-04-01.tmp-99999"), b"half a release").expect("tmp");
            fs::copy(&named, records.join("2020-04-01-0123.records")).expect("orphan");
        };
        plant();
        assert_ne!(files_in(&records), clean_records);

        // A no-op import tidies.
        let again = save_release(dir.path(), release("2020-02-01", "s1", concepts), false);
        assert!(
            matches!(again, Ok(SaveOutcome::Unchanged { .. })),
            "{again:?}"
        );
        assert_eq!(files_in(&feed), clean_feed);
        assert_eq!(files_in(&records), clean_records);

        // So does loading the feed to serve it, unless an import of the feed holds the lock.
        plant();
        let lock = fs::File::create(feed.join(".lock")).expect("lock file");
        lock.lock().expect("lock");
        let (_, errors) = FeedStore::open_and_tidy(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(files_in(&records).len(), clean_records.len() + 2);
        drop(lock);
        let (store, errors) = FeedStore::open_and_tidy(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.releases.len(), 1);
        assert_eq!(files_in(&feed), clean_feed);
        assert_eq!(files_in(&records), clean_records);

        // A release that cannot be read may need any records file: none is removed.
        plant();
        fs::write(
            release_path(dir.path(), "ods-epraccur", "2019-10-01"),
            b"FHIRREL5?",
        )
        .expect("write");
        let (_, errors) = FeedStore::open_and_tidy(dir.path(), "ods-epraccur");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(files_in(&records).contains(&"2020-04-01-0123.records".to_string()));
        assert!(!files_in(&records).iter().any(|f| f.contains(".tmp-")));
    }

    /// Flips one byte of the first occurrence of `text` in a file.
    fn damage(path: &Path, text: &[u8]) {
        let mut bytes = fs::read(path).expect("read");
        let at = bytes
            .windows(text.len())
            .position(|w| w == text)
            .expect("text in file");
        bytes[at] ^= 0x01;
        fs::write(path, &bytes).expect("write");
    }

    /// The background check finds `file` damaged, once, by its checksum.
    fn assert_background_check_names(file: &Path) {
        let shown = file.display().to_string();
        let found: Vec<String> = verify_pending()
            .iter()
            .map(ToString::to_string)
            .filter(|e| e.contains(&shown))
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("checksum mismatch"), "{}", found[0]);
    }

    /// A store holding one release of 20 practices, and its records file.
    fn twenty_practices_stored() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let concepts: Vec<Concept> = (0..20)
            .map(|i| concept(&format!("A{i:05}"), &format!("PRACTICE {i}")))
            .collect();
        save_release(dir.path(), release("2020-01-01", "s1", concepts), false).expect("saves");
        let records = feed_dir(dir.path(), "ods-epraccur").join("records");
        let file = fs::read_dir(&records)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "records"))
            .expect("a records file");
        (dir, file)
    }

    #[test]
    fn a_damaged_records_or_release_file_is_refused_by_name() {
        let (dir, file) = twenty_practices_stored();
        // One letter of one display ("PRACTICE 7" becomes "PRACTICE 6"): the file is still
        // well formed, and only its checksum tells.
        damage(&file, b"PRACTICE 7");
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert!(store.releases.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        assert!(text.contains(&*file.to_string_lossy()), "{text}");
        assert!(text.contains("checksum mismatch"), "{text}");

        // A release file damaged in its provenance is refused the same way.
        let dir = tempfile::tempdir().expect("tempdir");
        let concepts = vec![concept("A1", "X")];
        save_release(dir.path(), release("2020-01-01", "s1", concepts), false).expect("saves");
        let path = release_path(dir.path(), "ods-epraccur", "2020-01-01");
        damage(&path, b"x.csv");
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert!(store.releases.is_empty());
        let text = errors[0].to_string();
        assert!(text.contains("2020-01-01.release"), "{text}");
        assert!(text.contains("checksum mismatch"), "{text}");
    }

    #[test]
    fn serving_checks_records_checksums_later_and_refuses_a_damaged_file_on_the_next_load() {
        let (dir, file) = twenty_practices_stored();
        damage(&file, b"PRACTICE 7");
        // Packed, as a national register's records are (small feeds are decoded whole at load,
        // which reads and checks the whole file anyway).
        set_decode_limit(0);
        let (store, errors) = FeedStore::open_for_serving(dir.path(), "ods-epraccur");
        set_decode_limit(100_000);
        // Serving, the well-formed file is loaded and read; its checksum is not checked yet.
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.releases.len(), 1);
        let indexed = store.indexed(&store.releases[0]);
        assert_eq!(indexed.display(7), Some("QRACTICE 7"));
        assert!(damaged_files(dir.path(), "ods-epraccur").is_empty());
        // The background check finds it, names it, and the feed's next load refuses it.
        assert_background_check_names(&file);
        assert_eq!(
            damaged_files(dir.path(), "ods-epraccur"),
            std::slice::from_ref(&file)
        );
        let (store, errors) = FeedStore::open_for_serving(dir.path(), "ods-epraccur");
        assert!(store.releases.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("checksum mismatch"));
        // Once the file is whole again, it is served again.
        damage(&file, b"QRACTICE 7");
        let (store, errors) = FeedStore::open_for_serving(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.releases.len(), 1);
        assert!(damaged_files(dir.path(), "ods-epraccur").is_empty());
    }

    #[test]
    fn serving_reads_older_release_heads_alone_and_checks_them_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (version, source, name) in [("2020-01-01", "s1", "X"), ("2020-04-01", "s2", "Y")] {
            let r = release(version, source, vec![concept("A1", name)]);
            save_release(dir.path(), r, false).expect("saves");
        }
        let older = release_path(dir.path(), "ods-epraccur", "2020-01-01");
        damage(&older, b"x.csv");
        // Only the older release's head is read: its damage is not seen at load.
        let (store, errors) = FeedStore::open_for_serving(dir.path(), "ods-epraccur");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.releases.len(), 2);
        assert_eq!(store.releases[0].info.source, "y.csv");
        assert_background_check_names(&older);
        assert_eq!(damaged_files(dir.path(), "ods-epraccur"), [older]);
        // The next load refuses it, and serves the newer release.
        let (store, errors) = FeedStore::open_for_serving(dir.path(), "ods-epraccur");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(store.releases.len(), 1);
        assert_eq!(store.releases[0].info.version, "2020-04-01");
    }

    #[test]
    fn corruption_is_reported_and_loses_only_that_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        save_release(
            dir.path(),
            release("2020-01-01", "s1", vec![concept("A1", "X")]),
            false,
        )
        .expect("saves");
        save_release(
            dir.path(),
            release("2020-04-01", "s2", vec![concept("A1", "Y")]),
            false,
        )
        .expect("saves");
        let path = release_path(dir.path(), "ods-epraccur", "2020-04-01");
        fs::write(&path, b"garbage").expect("write");
        let (store, errors) = FeedStore::open(dir.path(), "ods-epraccur");
        assert_eq!(store.releases.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("not a readable store file"),
            "{}",
            errors[0]
        );
    }
}
