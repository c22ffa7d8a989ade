//! Putting it together: loading the mappings folder (mapping files and plain FHIR resources),
//! importing releases into the data directory, and assembling the [`Registry`] the server answers
//! from.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::mapping::{self, ImportError, Mapping, MappingSet};
use crate::source;
use crate::store::{
    CodeSystemMeta, CodeSystemVersion, ConceptMapEntry, DerivedMap, IndexedRelease, MapKind,
    MapSide, Registry, Release, ValueSetEntry, compare_versions, persist,
};
use crate::terminology::resources::code_system_version_from_fhir;
use crate::terminology::translate::concept_map_from_fhir;
use persist::SaveOutcome;

/// Why the registry could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// One or more mapping files are broken.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Mappings(Vec<mapping::MappingError>),
    /// A plain FHIR resource file is broken.
    #[error("{0}")]
    Resource(String),
    /// An import failed.
    #[error("{0}")]
    Import(#[from] ImportError),
    /// The data directory could not be written.
    #[error("{0}")]
    Persist(#[from] persist::PersistError),
    /// Two feeds of one CodeSystem supply the same codes in one of its versions.
    #[error("{0}")]
    FeedsOverlap(Box<FeedsOverlap>),
}

/// Two releases of different feeds of one CodeSystem that supply the same codes and would be
/// part of one version of it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{url}: {count} code(s) supplied both by {first} and by {second}, which make version {version} together ({}{}); a code must come from one feed of its CodeSystem",
    .codes.join(", "),
    if *.count > .codes.len() { ", …" } else { "" }
)]
pub struct FeedsOverlap {
    /// The CodeSystem.
    pub url: String,
    /// The first CodeSystem version both releases are part of.
    pub version: String,
    /// One release, as `feed@version`.
    pub first: String,
    /// The other release, as `feed@version`.
    pub second: String,
    /// How many codes both supply.
    pub count: usize,
    /// The first of them, in code order.
    pub codes: Vec<String>,
}

/// How many shared codes an overlap error lists.
const OVERLAP_CODES_SHOWN: usize = 5;

/// The codes two code-ordered lists share: how many, and the first few.
fn shared_codes<'a>(
    a: (usize, impl Fn(usize) -> &'a str),
    b: (usize, impl Fn(usize) -> &'a str),
) -> (usize, Vec<String>) {
    let ((na, code_a), (nb, code_b)) = (a, b);
    let (mut i, mut j, mut count, mut first) = (0, 0, 0, Vec::new());
    while i < na && j < nb {
        match code_a(i).cmp(code_b(j)) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if first.len() < OVERLAP_CODES_SHOWN {
                    first.push(code_a(i).to_string());
                }
                count += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (count, first)
}

fn release_codes<'a>(r: &'a IndexedRelease) -> (usize, impl Fn(usize) -> &'a str + 'a) {
    (r.len(), move |i| r.code(i as u32))
}

/// Whether two releases of different feeds are both part of some CodeSystem version: a
/// release is its feed's part from its version until the feed's next release (`None`: for
/// good). Returns the first such version.
fn meet<'a>(a: (&'a str, Option<&'a str>), b: (&'a str, Option<&'a str>)) -> Option<&'a str> {
    let start = if compare_versions(a.0, b.0).is_ge() {
        a.0
    } else {
        b.0
    };
    let before = |end: Option<&str>| end.is_none_or(|e| compare_versions(start, e).is_lt());
    (before(a.1) && before(b.1)).then_some(start)
}

/// Refuses a release that supplies a code another feed of its CodeSystem (`others`) supplies in
/// a version both releases would be part of. Nothing is written.
fn check_overlap(
    data_dir: &Path,
    url: &str,
    release: &Release,
    others: &[&str],
) -> Result<(), LoadError> {
    let info = &release.info;
    let later_own = persist::feed_release_files(data_dir, &info.feed)
        .iter()
        .filter_map(|p| persist::read_release(p).ok())
        .map(|r| r.info.version)
        .filter(|v| compare_versions(v, &info.version).is_gt())
        .min_by(|a, b| compare_versions(a, b));
    let new = (info.version.as_str(), later_own.as_deref());
    for feed in others {
        let (store, _) = persist::FeedStore::open(data_dir, feed);
        let mut versions: Vec<&str> = store
            .releases
            .iter()
            .map(|r| r.info.version.as_str())
            .collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        for stored in &store.releases {
            let v = stored.info.version.as_str();
            let next = versions
                .iter()
                .copied()
                .find(|w| compare_versions(w, v).is_gt());
            let Some(version) = meet(new, (v, next)) else {
                continue;
            };
            let other = store.indexed(stored);
            let (count, codes) = shared_codes(
                (release.concepts.len(), |i| release.concepts.code(i)),
                release_codes(&other),
            );
            if count > 0 {
                return Err(LoadError::FeedsOverlap(Box::new(FeedsOverlap {
                    url: url.to_string(),
                    version: version.to_string(),
                    first: format!("{feed}@{v}"),
                    second: format!("{}@{}", info.feed, info.version),
                    count,
                    codes,
                })));
            }
        }
    }
    Ok(())
}

/// Plain FHIR CodeSystem and ValueSet resources (`*.json`, `*.xml`) in a folder and in its
/// subfolders one level down (a code list collection of its own, `mappings/datadictionary/`),
/// except `data`, `snapshots` and `tests`, which hold register files and mapping tests.
pub fn load_resources(dir: &Path) -> Result<Vec<(String, Json)>, LoadError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let is_resource = |p: &Path| p.extension().is_some_and(|e| e == "json" || e == "xml");
    let mut files: Vec<_> = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if matches!(name.as_deref(), Some("data" | "snapshots" | "tests")) {
                continue;
            }
            files.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| is_resource(p)),
            );
        } else if is_resource(&path) {
            files.push(path);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text =
            std::fs::read_to_string(&f).map_err(|e| LoadError::Resource(format!("{name}: {e}")))?;
        let text = text.trim_start_matches('\u{feff}');
        let json_text = if f.extension().is_some_and(|e| e == "xml") {
            fhir_xml::xml_to_json(text).map_err(|e| LoadError::Resource(format!("{name}: {e}")))?
        } else {
            text.to_string()
        };
        let json: Json = serde_json::from_str(&json_text)
            .map_err(|e| LoadError::Resource(format!("{name}: not valid JSON: {e}")))?;
        match json.get("resourceType").and_then(Json::as_str) {
            Some("CodeSystem" | "ValueSet" | "ConceptMap") => out.push((name, json)),
            Some("Bundle") => {
                for entry in json
                    .get("entry")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(r) = entry.get("resource")
                        && matches!(
                            r.get("resourceType").and_then(Json::as_str),
                            Some("CodeSystem" | "ValueSet")
                        )
                    {
                        out.push((name.clone(), r.clone()));
                    }
                }
            }
            _ => tracing::warn!(file = %name, "skipping: not a CodeSystem, ValueSet or Bundle"),
        }
    }
    Ok(out)
}

/// Imports one release of one register into the data directory (atomically) and says what was
/// stored: only the records that changed since earlier releases of the feed, or nothing at all
/// when the same data was already imported with the same mapping. The previous releases are
/// untouched whatever happens; an existing version is replaced only when `replace` is set or the
/// source data is the same (a re-import after the mapping changed). A release that supplies a
/// code which another feed of its CodeSystem in `served` (the mappings served with it) supplies
/// in a version both would be part of is refused ([`LoadError::FeedsOverlap`]).
pub async fn import(
    served: &MappingSet,
    mapping: &Mapping,
    location: &str,
    version: &str,
    data_dir: &Path,
    replace: bool,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<SaveOutcome, LoadError> {
    let file = source::fetch(location, data_dir)
        .await
        .map_err(ImportError::from)?;
    import_file(served, mapping, &file, version, data_dir, replace, progress)
}

/// [`import`] of a file already on disk (its `display_name` is the release's recorded source).
/// Blocking: reads and converts the whole file.
pub fn import_file(
    served: &MappingSet,
    mapping: &Mapping,
    file: &source::LocalFile,
    version: &str,
    data_dir: &Path,
    replace: bool,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<SaveOutcome, LoadError> {
    let size = std::fs::metadata(&file.path).ok().map(|m| m.len());
    let gz = !file.unpacked && mapping.gzip_for(&file.display_name);
    let total = if gz { None } else { size };
    let mut cb = |bytes: u64| progress(bytes, total);
    // Under the feed's lock from here: the rows the store already has are not converted again.
    let feed = persist::FeedImport::open(data_dir, mapping.feed(), Some(version))?;
    let mut known = feed.store().known(version, &mapping.hash);
    let mut find = |code: &str, row_hash: u64| known.as_mut()?.find(code, row_hash);
    let release = mapping::read_release_known(mapping, file, version, &mut cb, Some(&mut find))?;
    let url = &mapping.spec.code_system.url;
    let others: Vec<&str> = served
        .code_systems
        .get(url)
        .into_iter()
        .flat_map(|cs| cs.feeds.iter().map(String::as_str))
        .filter(|f| *f != mapping.feed())
        .collect();
    check_overlap(data_dir, url, &release, &others)?;
    Ok(feed.save(release, replace, known.as_ref())?)
}

/// Imports each mapping's default releases (`default_file` and `source.release`) unless the data
/// directory already has that release made with the current mapping text. Returns what was
/// stored.
pub async fn import_defaults(
    set: &MappingSet,
    data_dir: &Path,
    progress: &mut (dyn FnMut(&str, u64, Option<u64>) + Send),
) -> Result<Vec<persist::Saved>, LoadError> {
    import_defaults_timed(set, data_dir, progress, &mut |_, _| {}).await
}

/// [`import_defaults`], telling `imported` the feed and duration of each import that ran.
pub async fn import_defaults_timed(
    set: &MappingSet,
    data_dir: &Path,
    progress: &mut (dyn FnMut(&str, u64, Option<u64>) + Send),
    imported: &mut (dyn FnMut(&str, std::time::Duration) + Send),
) -> Result<Vec<persist::Saved>, LoadError> {
    let mut done = Vec::new();
    for m in &set.mappings {
        for (file, version) in m.default_releases() {
            let path = persist::release_path(data_dir, m.feed(), &version);
            if let Ok(existing) = persist::read_release(&path) {
                if existing.info.mapping_hash == m.hash {
                    continue;
                }
                tracing::info!(
                    feed = m.feed(),
                    version,
                    "mapping changed since the stored release: re-importing"
                );
            }
            let feed = m.feed().to_string();
            let mut cb = |b: u64, t: Option<u64>| progress(&feed, b, t);
            let started = std::time::Instant::now();
            let outcome = import(set, m, &file, &version, data_dir, true, &mut cb).await?;
            imported(&feed, started.elapsed());
            if let SaveOutcome::Stored(saved) = outcome {
                done.push(saved);
            }
        }
    }
    Ok(done)
}

/// Every stored release of the given feeds, indexed (unreadable ones are logged and left out).
/// With `tidy`, what interrupted imports left in a feed's folder is removed on the way, unless an
/// import of the feed is running; without it nothing is written (a read-only replica).
pub fn load_releases<'a>(
    data_dir: &Path,
    feeds: impl IntoIterator<Item = &'a str>,
    tidy: bool,
) -> Vec<Arc<IndexedRelease>> {
    let mut out = Vec::new();
    for feed in feeds {
        let (store, errors) = if tidy {
            persist::FeedStore::open_and_tidy(data_dir, feed)
        } else {
            persist::FeedStore::open_for_serving(data_dir, feed)
        };
        for e in errors {
            tracing::error!(error = %e, "stored release cannot be read; not served");
        }
        out.extend(store.releases.iter().map(|r| Arc::new(store.indexed(r))));
    }
    out
}

/// Assembles the registry: every stored release of every mapped feed, versions per CodeSystem,
/// the mappings' ValueSets, and plain FHIR resources.
pub fn build_registry(
    set: &MappingSet,
    data_dir: &Path,
    resources: &[(String, Json)],
) -> Result<Registry, LoadError> {
    rebuild_registry(set, data_dir, resources, None, true)
}

/// [`build_registry`], reusing from `previous` the versions (with their indexes) of every mapped
/// CodeSystem whose feeds' release files did not change since `previous` was built: publishing
/// a release of one register re-reads that register only. Without `tidy` nothing is written to
/// the data directory (see [`load_releases`]).
pub fn rebuild_registry(
    set: &MappingSet,
    data_dir: &Path,
    resources: &[(String, Json)],
    previous: Option<&Registry>,
    tidy: bool,
) -> Result<Registry, LoadError> {
    let feeds: BTreeSet<&str> = set.mappings.iter().map(Mapping::feed).collect();
    for path in persist::release_files(data_dir) {
        let feed = path
            .parent()
            .and_then(Path::file_name)
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !feeds.contains(feed.as_str()) {
            tracing::warn!(feed, file = %path.display(), "stored release has no mapping; not served");
        }
    }
    let mut registry = Registry::default();
    for meta in set.code_systems.values() {
        let fingerprint = feeds_fingerprint(data_dir, &meta.feeds);
        match previous {
            Some(p) if p.built_from(&meta.url) == Some(fingerprint.as_str()) => {
                for v in p.code_system_versions(&meta.url) {
                    registry.add_code_system_arc(v.clone());
                }
            }
            _ => {
                let releases = load_releases(data_dir, meta.feeds.iter().map(String::as_str), tidy);
                add_mapped(&mut registry, meta, releases)?;
            }
        }
        registry.set_built_from(&meta.url, fingerprint);
    }
    for vs in set.value_sets() {
        add_value_set(&mut registry, vs);
    }
    for m in &set.mappings {
        for cm in derived_concept_maps(m) {
            registry.add_concept_map(cm);
        }
    }
    for (name, r) in resources {
        match r.get("resourceType").and_then(Json::as_str) {
            Some("CodeSystem") => {
                let cs = code_system_version_from_fhir(r, name)
                    .map_err(|e| LoadError::Resource(e.to_string()))?;
                registry.add_code_system(cs);
            }
            Some("ValueSet") => add_value_set(&mut registry, r.clone()),
            Some("ConceptMap") => registry.add_concept_map(
                concept_map_from_fhir(r)
                    .map_err(|e| LoadError::Resource(format!("{name}: {e}")))?,
            ),
            _ => {}
        }
    }
    Ok(registry)
}

/// Checks the checksums of the records files loaded to serve and not checked yet (see
/// [`persist::verify_pending`]), logging each damaged one; returns how many are.
pub fn verify_stored_files() -> usize {
    let started = std::time::Instant::now();
    let errors = persist::verify_pending();
    for e in &errors {
        tracing::error!(error = %e, "stored records file is damaged; the releases that use it are no longer served");
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        damaged = errors.len(),
        "checked records files"
    );
    errors.len()
}

/// The release files of some feeds, each by name, size and modification time: equal
/// fingerprints mean the same stored releases (files are written once, by rename).
fn feeds_fingerprint(data_dir: &Path, feeds: &[String]) -> String {
    let mut out = String::new();
    let mut feeds: Vec<&String> = feeds.iter().collect();
    feeds.sort();
    for feed in feeds {
        for path in persist::feed_release_files(data_dir, feed) {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.push_str(&format!(
                "{}:{}:{modified};",
                path.display(),
                meta.map_or(0, |m| m.len())
            ));
        }
        // A records file found damaged after it was loaded: the next publish reads the feed
        // again, and refuses the file.
        for path in persist::damaged_files(data_dir, feed) {
            out.push_str(&format!("damaged:{};", path.display()));
        }
    }
    out
}

/// The ConceptMaps a mapping derives from its concepts.
pub fn derived_concept_maps(m: &Mapping) -> Vec<ConceptMapEntry> {
    let own = &m.spec.code_system.url;
    m.spec
        .concept_maps
        .iter()
        .map(|cm| {
            let side = |v: &str| {
                if v == "code" {
                    MapSide::Code
                } else {
                    MapSide::Property(v.to_string())
                }
            };
            let source_system = cm.source_system.clone().unwrap_or_else(|| own.clone());
            let target_system = cm.target_system.clone().unwrap_or_else(|| own.clone());
            let relationship = cm
                .relationship
                .as_deref()
                .map(|r| {
                    if r.contains('-') || r == "equivalent" {
                        r.to_string()
                    } else {
                        crate::terminology::translate::relationship_of(r).to_string()
                    }
                })
                .unwrap_or_else(|| "equivalent".into());
            let mut resource = serde_json::json!({
                "resourceType": "ConceptMap",
                "id": cm.id,
                "url": cm.url,
                "status": "active",
                "sourceUri": source_system,
                "targetUri": target_system,
            });
            for (k, v) in [
                ("name", &cm.name),
                ("title", &cm.title),
                ("description", &cm.description),
            ] {
                if let Some(v) = v {
                    resource[k] = serde_json::json!(v);
                }
            }
            if let Some(p) = &m.spec.code_system.publisher {
                resource["publisher"] = serde_json::json!(p);
            }
            ConceptMapEntry {
                id: cm.id.clone(),
                url: cm.url.clone(),
                version: None,
                resource,
                kind: MapKind::Derived(DerivedMap {
                    code_system: own.clone(),
                    source_system,
                    source: side(&cm.source),
                    target_system,
                    target: side(&cm.target),
                    relationship,
                }),
            }
        })
        .collect()
}

/// Adds a ValueSet resource to the registry.
pub fn add_value_set(registry: &mut Registry, vs: Json) {
    registry.add_value_set(value_set_entry(vs));
}

/// A ValueSet resource as a registry entry.
pub fn value_set_entry(vs: Json) -> ValueSetEntry {
    let text = |k: &str| vs.get(k).and_then(Json::as_str).map(str::to_string);
    let url = text("url").unwrap_or_default();
    let id = text("id").unwrap_or_else(|| mapping::default_id(&url));
    ValueSetEntry {
        id,
        url,
        version: text("version"),
        resource: vs,
    }
}

/// Adds a version of a mapped CodeSystem per release date of its feeds, each made of the
/// latest release of every feed at that date. Two releases of one version that supply the same
/// code make the registry fail ([`LoadError::FeedsOverlap`]): which one answers would be a guess.
fn add_mapped(
    registry: &mut Registry,
    meta: &CodeSystemMeta,
    releases: Vec<Arc<IndexedRelease>>,
) -> Result<(), LoadError> {
    let mut by_feed: HashMap<String, Vec<Arc<IndexedRelease>>> = HashMap::new();
    for r in releases {
        by_feed.entry(r.info.feed.clone()).or_default().push(r);
    }
    for list in by_feed.values_mut() {
        list.sort_by(|a, b| compare_versions(&a.info.version, &b.info.version));
    }
    let mut checked = HashSet::new();
    let meta = Arc::new(meta.clone());
    let mut versions: Vec<String> = meta
        .feeds
        .iter()
        .flat_map(|f| by_feed.get(f).into_iter().flatten())
        .map(|r| r.info.version.clone())
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    versions.dedup();
    for v in versions {
        let parts: Vec<Arc<IndexedRelease>> = meta
            .feeds
            .iter()
            .filter_map(|f| {
                by_feed
                    .get(f)?
                    .iter()
                    .rev()
                    .find(|r| compare_versions(&r.info.version, &v).is_le())
                    .cloned()
            })
            .collect();
        for (k, a) in parts.iter().enumerate() {
            for b in &parts[k + 1..] {
                if !checked.insert((Arc::as_ptr(a), Arc::as_ptr(b))) {
                    continue;
                }
                let (count, codes) = shared_codes(release_codes(a), release_codes(b));
                if count > 0 {
                    return Err(LoadError::FeedsOverlap(Box::new(FeedsOverlap {
                        url: meta.url.clone(),
                        version: v,
                        first: format!("{}@{}", a.info.feed, a.info.version),
                        second: format!("{}@{}", b.info.feed, b.info.version),
                        count,
                        codes,
                    })));
                }
            }
        }
        registry.add_code_system(CodeSystemVersion::new(meta.clone(), v, parts));
    }
    Ok(())
}

/// The registry being served. Publishing a release builds a whole new registry beside it and
/// swaps it in at once ([`Live::replace`]): a request takes the current one
/// ([`Live::get`]) and answers from it to the end, and an old registry is freed when the last
/// request holding it finishes.
pub struct Live {
    current: std::sync::RwLock<Arc<Registry>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Live {
    /// Serving `registry`, generation 0.
    pub fn new(registry: Registry) -> Self {
        Self {
            current: std::sync::RwLock::new(Arc::new(registry)),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The registry to answer one request from.
    pub fn get(&self) -> Arc<Registry> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new registry and returns its generation (how many swaps so far).
    pub fn replace(&self, registry: Registry) -> u64 {
        let registry = Arc::new(registry);
        let (old, generation) = {
            let mut guard = match self.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let old = std::mem::replace(&mut *guard, registry);
            let generation = self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1;
            (old, generation)
        };
        // The old registry is freed here, outside the lock, unless requests still hold it.
        drop(old);
        generation
    }

    /// How many registries were swapped in since start.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Builds the text and case-folded code indexes of the latest version of every CodeSystem of
/// `registry` (older versions build theirs on first use).
pub fn warm(registry: &Registry) {
    for cs in registry.latest_code_systems() {
        cs.warm();
    }
}
