//! The subcommands behind the CLI: `serve`, `import`, `check`, `preview`. Each returns a process
//! exit code; messages go to stderr (and `preview`'s JSON to stdout).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{
    CheckArgs, ImportArgs, NewArgs, PreviewArgs, ServeArgs, SyncCommandArgs, TestArgs,
};
use crate::http::admin::Admin;
use crate::http::request::BodyLimits;
use crate::http::{AppState, CorsOrigins, app_at, serve};
use crate::mapping::{self, Mapping, MappingSet};
use crate::registers;
use crate::source;
use crate::store::persist::SaveOutcome;
use crate::store::{CodeSystemVersion, IndexedRelease};
use crate::sync::publish::Publisher;
use crate::sync::schedule::Service;
use crate::sync::{Secret, Syncer};
use crate::terminology::budget::{LaneSettings, Lanes};
use crate::terminology::overlay::{Overlay, SuppliedLimits};
use crate::terminology::request_cache::{CacheLimits, RequestCaches};
use crate::terminology::resources::code_system_json;

/// Shows import progress: an indicatif bar on a terminal, plain lines otherwise, and nothing for
/// imports that finish within a second.
pub struct Progress {
    label: String,
    started: Instant,
    last_line: Instant,
    bar: Option<indicatif::ProgressBar>,
    terminal: bool,
}

impl Progress {
    /// A progress reporter for one import.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            started: Instant::now(),
            last_line: Instant::now(),
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Reports bytes read so far (and the total when known).
    pub fn update(&mut self, bytes: u64, total: Option<u64>) {
        if self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        if self.terminal {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = match total {
                    Some(t) => indicatif::ProgressBar::new(t),
                    None => indicatif::ProgressBar::new_spinner(),
                };
                let style = indicatif::ProgressStyle::with_template(
                    "{msg} {bytes} {wide_bar} {percent}% {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(format!("importing {}", self.label));
                bar
            });
            bar.set_position(bytes);
        } else if self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            match total {
                Some(t) if t > 0 => eprintln!(
                    "importing {}: {:.1} MB of {:.1} MB ({}%)",
                    self.label,
                    bytes as f64 / 1e6,
                    t as f64 / 1e6,
                    bytes * 100 / t
                ),
                _ => eprintln!(
                    "importing {}: {:.1} MB read",
                    self.label,
                    bytes as f64 / 1e6
                ),
            }
        }
    }

    /// Ends the display.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_errors<T: std::fmt::Display>(errors: &[T]) {
    for e in errors {
        eprintln!("error: {e}");
    }
}

/// The lanes `serve` runs operations in (see [`crate::terminology::budget`]); `main` sizes the
/// blocking pool from them.
pub fn lane_settings(args: &ServeArgs) -> LaneSettings {
    let mut lanes = LaneSettings {
        slow_after: Duration::from_millis(args.slow_after_ms),
        ..LaneSettings::default()
    };
    if args.slow_threads > 0 {
        lanes.slow_threads = args.slow_threads;
    }
    lanes.slow_queue = match args.slow_queue {
        0 => LaneSettings::queue_for(lanes.slow_threads),
        n => n,
    };
    lanes
}

/// `serve`: import defaults if needed, assemble the registry, listen.
pub async fn serve(args: ServeArgs) -> i32 {
    let started = Instant::now();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let set = match MappingSet::load_dir(&args.mappings) {
        Ok(s) => s,
        Err(errors) => {
            print_errors(&errors);
            return 2;
        }
    };
    let resources = match registers::load_resources(&args.mappings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if !args.no_default_imports && !args.read_only {
        let mut bars: std::collections::HashMap<String, Progress> = Default::default();
        let mut cb = |feed: &str, bytes: u64, total: Option<u64>| {
            bars.entry(feed.to_string())
                .or_insert_with(|| Progress::new(feed))
                .update(bytes, total);
        };
        let mut timed = |feed: &str, took: Duration| metrics.record_import(feed, took);
        match registers::import_defaults_timed(&set, &args.data_dir, &mut cb, &mut timed).await {
            Ok(done) => {
                for saved in done {
                    tracing::info!(feed = %saved.info.feed, version = %saved.info.version, concepts = saved.info.concepts, new_records = saved.new_records, bytes = saved.bytes, "imported shipped release");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
        for (_, b) in bars {
            b.finish();
        }
    }
    // Read before the registry is built: whatever is stored after this is published by the
    // reload check.
    let marker = crate::sync::publish::read_marker(&args.data_dir).await;
    let registry = match registers::rebuild_registry(
        &set,
        &args.data_dir,
        &resources,
        None,
        !args.read_only,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let systems = registry.all_code_systems().count();
    let value_sets = registry.all_value_sets().count();
    let mut state = AppState::new(registry);
    state.metrics = metrics;
    state.limits.max_unpaged = args.max_expansion;
    state.limits.max_count = args.max_expansion;
    state.limits.max_unpaged_supplied = args.max_supplied_expansion;
    state.limits.max_filter_chars = args.max_filter_chars;
    state.limits.max_filter_words = args.max_filter_words;
    state.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    state.lanes = Lanes::new(lane_settings(&args));
    state.overlay = Overlay::new(SuppliedLimits {
        max_concepts: args.max_supplied_concepts,
    });
    state.caches = RequestCaches::new(CacheLimits {
        ttl: Duration::from_secs(args.cache_ttl),
        max_caches: args.max_caches,
        max_bytes: args.max_cache_mib.saturating_mul(1024 * 1024),
        ..CacheLimits::default()
    });
    state.max_batch_bytes = args.max_batch_bytes;
    state.max_batch_entries = args.max_batch_entries;
    state.browser_kept_diff_concepts = args.browser_kept_diff_concepts;
    state.cors = match CorsOrigins::parse(&args.cors_origins) {
        Ok(cors) => cors,
        Err(e) => {
            eprintln!("error: --cors-origins: {e}");
            return 2;
        }
    };
    state.body_limits = BodyLimits {
        max_body_bytes: args.max_body_mib.saturating_mul(1024 * 1024),
        max_parameters: args.max_parameters,
        body_read_timeout: Duration::from_secs(args.body_read_timeout.max(1)),
    };
    let set = Arc::new(set);
    let publisher = Publisher::new(
        state.live.clone(),
        set.clone(),
        Arc::new(resources),
        args.data_dir.clone(),
        marker,
    )
    .with_metrics(state.metrics.clone());
    let publisher = Arc::new(if args.read_only {
        publisher.read_only()
    } else {
        publisher
    });
    let token = match admin_token(&args) {
        Ok(Some(_)) if args.read_only => {
            tracing::warn!("--read-only: the admin API is off (a replica never syncs)");
            None
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let service = if args.sync || token.is_some() {
        let settings = args.sync_settings.settings(args.data_dir.clone());
        match Syncer::new(settings, set.clone()) {
            Ok(syncer) => Some(Arc::new(Service::new(
                syncer.with_metrics(state.metrics.clone()),
                Some(publisher.clone()),
            ))),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    if let (Some(token), Some(service)) = (token, &service) {
        state.admin = Some(Admin::new(token, service.clone()));
    }
    let state = Arc::new(state);
    // Background work lives as long as the server: dropped (aborted) when `serve` returns.
    let mut background = Vec::new();
    if args.reload_interval > 0 {
        background.push(
            publisher
                .clone()
                .watch(Duration::from_secs(args.reload_interval)),
        );
    }
    if args.sync
        && let Some(service) = &service
    {
        let followed: Vec<String> = service.synced().map(|m| m.id().to_string()).collect();
        tracing::info!(registers = ?followed, "following upstreams");
        background.push(service.clone().run_schedule());
    }
    // Records files are read in place: their checksums are checked once the server is ready.
    let checked = state.clone();
    background.push(
        publisher
            .clone()
            .check_stored_files(move || checked.is_ready()),
    );
    let router = app_at(state.clone(), &args.base_path);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    tracing::info!(
        code_system_versions = systems,
        value_sets,
        ready_ms = started.elapsed().as_millis() as u64,
        "serving FHIR R4 terminology at http://{}{}",
        args.listen,
        args.base_path
    );
    // Text and case-folded code indexes are built on first use; build those of the latest
    // versions now, off the request path, so the first text search does not pay for them (one
    // that comes sooner waits for its index only). Older versions build theirs when asked.
    // `/ready` answers 200 once they are built.
    let warming = state.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        warming.warm_up();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "text and code indexes built"
        );
    });
    serve::serve(
        listener,
        router,
        args.edge_settings(),
        serve::shutdown_signal(),
    )
    .await;
    for task in background {
        task.abort();
    }
    0
}

/// The admin token: `FHIR_REGISTERS_ADMIN_TOKEN`, or the file `--admin-token-file` names.
fn admin_token(args: &ServeArgs) -> Result<Option<Secret>, String> {
    let text = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?,
        ),
        None => std::env::var("FHIR_REGISTERS_ADMIN_TOKEN").ok(),
    };
    match text.map(|t| Secret::new(&t)) {
        Some(token) if token.expose().is_empty() => Err(
            "the admin token is empty (FHIR_REGISTERS_ADMIN_TOKEN or --admin-token-file)".into(),
        ),
        Some(token) if token.expose().len() < 16 => {
            Err("the admin token is shorter than 16 characters: use a long random one".into())
        }
        other => Ok(other),
    }
}

/// The mappings named on a command line, each by register id or by its file in the folder; an
/// unknown name is reported and gives `None`.
fn named_mappings<'a>(
    set: &'a MappingSet,
    names: &[String],
    folder: &std::path::Path,
) -> Option<Vec<&'a Mapping>> {
    let mut chosen = Vec::new();
    for name in names {
        let path = std::path::Path::new(name);
        let found = set.mapping(name).or_else(|| {
            set.mappings.iter().find(|m| {
                m.path == path
                    || (path.file_name().is_some() && m.path.file_name() == path.file_name())
            })
        });
        match found {
            Some(m) => chosen.push(m),
            None => {
                eprintln!(
                    "error: no mapping {name:?} in {} (give a register id or a mapping file there)",
                    folder.display()
                );
                return None;
            }
        }
    }
    Some(chosen)
}

/// `sync`: one pass over the named registers (or every one with an upstream), one line each.
pub async fn sync(args: SyncCommandArgs) -> i32 {
    let set = match MappingSet::load_dir(&args.mappings) {
        Ok(s) => s,
        Err(errors) => {
            print_errors(&errors);
            return 2;
        }
    };
    let wanted: Vec<String> = match named_mappings(&set, &args.registers, &args.mappings) {
        Some(chosen) => chosen.iter().map(|m| m.id().to_string()).collect(),
        None => return 2,
    };
    let settings = args.sync.settings(args.data_dir.clone());
    let syncer = match Syncer::new(settings, Arc::new(set)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let service = Service::new(syncer, None);
    let reports = if wanted.is_empty() {
        let all = service.sync_all().await;
        if all.is_empty() {
            eprintln!(
                "no mapping in {} has a [sync] table: nothing to follow",
                args.mappings.display()
            );
        }
        all
    } else {
        let mut reports = Vec::new();
        for id in &wanted {
            match service.sync_one(id).await {
                Ok(r) => reports.push(r),
                Err(e) => reports.push(crate::sync::Report::failure(id.clone(), e.0, 0)),
            }
        }
        reports
    };
    for r in &reports {
        println!("{}", r.line());
    }
    i32::from(reports.iter().any(|r| r.failed()))
}

fn load_mapping(path: &std::path::Path) -> Option<Mapping> {
    match Mapping::load(path) {
        Ok(m) => Some(m),
        Err(errors) => {
            print_errors(&errors);
            None
        }
    }
}

/// `import`: one release of one register.
pub async fn import(args: ImportArgs) -> i32 {
    let Some(m) = load_mapping(&args.mapping) else {
        return 2;
    };
    let Some(version) = args
        .version
        .clone()
        .or_else(|| mapping::version_from_name(&args.file))
        .or(m.spec.source.default_version.clone())
    else {
        eprintln!(
            "error: {}: no --version given, no date in the file name and the mapping has no source.default_version",
            args.mapping.display()
        );
        return 2;
    };
    // The other feeds of the mapping's CodeSystem, from the mappings served with it.
    let served = MappingSet::load_dir(&args.mappings).unwrap_or_else(|errors| {
        tracing::warn!(
            mappings = %args.mappings.display(),
            errors = errors.len(),
            "the mappings folder does not load: codes are not checked against other feeds"
        );
        MappingSet::default()
    });
    let mut progress = Progress::new(m.feed());
    let started = Instant::now();
    let mut cb = |b: u64, t: Option<u64>| progress.update(b, t);
    let result = registers::import(
        &served,
        &m,
        &args.file,
        &version,
        &args.data_dir,
        args.replace,
        &mut cb,
    )
    .await;
    progress.finish();
    match result {
        Ok(SaveOutcome::Stored(saved)) => {
            let info = &saved.info;
            eprintln!(
                "imported {}@{}: {} concepts from {} rows of {} in {:.1} s",
                info.feed,
                info.version,
                info.concepts,
                info.rows_read,
                info.source,
                started.elapsed().as_secs_f64()
            );
            eprintln!(
                "stored {} new or changed records, {} shared with earlier releases: {} bytes ({:.1}% of a standalone copy, {} bytes){}",
                saved.new_records,
                saved.shared_records,
                saved.bytes,
                100.0 * saved.bytes as f64 / saved.full_copy_bytes.max(1) as f64,
                saved.full_copy_bytes,
                if saved.replaced {
                    "; replaced the earlier release of this version"
                } else {
                    ""
                }
            );
            0
        }
        Ok(SaveOutcome::Unchanged { info }) => {
            eprintln!(
                "unchanged: this data was already imported with this mapping as {}@{} (from {}); nothing stored",
                info.feed, info.version, info.source
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was stored; earlier releases are unchanged");
            1
        }
    }
}

/// `check`: a mapping alone, or against a file; every error is reported.
pub async fn check(args: CheckArgs) -> i32 {
    let Some(m) = load_mapping(&args.mapping) else {
        return 1;
    };
    let Some(file) = args.file else {
        eprintln!("ok: {} is a valid mapping", args.mapping.display());
        return 0;
    };
    let version = args
        .version
        .or_else(|| mapping::version_from_name(&file))
        .or(m.spec.source.default_version.clone())
        .unwrap_or_else(|| "check".into());
    let scratch = std::env::temp_dir();
    let local = match source::fetch(&file, &scratch).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut progress = Progress::new(m.feed());
    let mut cb = |b: u64| progress.update(b, None);
    let result = mapping::read_release(&m, &local, &version, &mut cb);
    progress.finish();
    // What the file holds, column by column: what an author looks at when a register changes.
    let gzip = m.gzip_for(&local.display_name);
    match source::open(&local, gzip)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            crate::authoring::profile::profile(
                r,
                m.delimiter(),
                m.spec.source.header,
                &m.spec.source.columns,
                None,
            )
        }) {
        Ok((rows, columns)) => eprint!("{}", crate::authoring::profile::render(rows, &columns)),
        Err(e) => eprintln!("(no column profile: {e})"),
    }
    match result {
        Ok(r) => {
            eprintln!(
                "ok: {} rows read, {} concepts from {}",
                r.info.rows_read, r.info.concepts, file
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `preview`: the CodeSystem and ValueSets a mapping makes from a file, as a FHIR Bundle.
pub async fn preview(args: PreviewArgs) -> i32 {
    let Some(m) = load_mapping(&args.mapping) else {
        return 1;
    };
    let version = args
        .version
        .or_else(|| mapping::version_from_name(&args.file))
        .or(m.spec.source.default_version.clone())
        .unwrap_or_else(|| "preview".into());
    let scratch = std::env::temp_dir();
    let local = match source::fetch(&args.file, &scratch).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let release = match mapping::read_release(&m, &local, &version, &mut |_| {}) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let bundle = preview_bundle(m, release, args.limit);
    match serde_json::to_string_pretty(&bundle) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The preview Bundle (collection): the CodeSystem (with at most `limit` concepts, 0 = all) and
/// the mapping's ValueSets.
pub fn preview_bundle(
    m: Mapping,
    mut release: crate::store::Release,
    limit: usize,
) -> serde_json::Value {
    let value_sets = mapping::value_set_resources(&m);
    let set = MappingSet::from_mappings(vec![m]).unwrap_or_default();
    let mut entries = Vec::new();
    if let Some(meta) = set.code_systems.values().next() {
        let total = release.concepts.len();
        if limit > 0 {
            release.concepts.truncate(limit);
        }
        let version = release.info.version.clone();
        let cs = CodeSystemVersion::new(
            Arc::new(meta.clone()),
            version,
            vec![Arc::new(IndexedRelease::new(release))],
        );
        let mut resource = code_system_json(&cs, true, true);
        resource["count"] = json!(total);
        // Nothing was imported: no release provenance to show.
        if let Some(r) = resource.as_object_mut() {
            r.shift_remove("extension");
        }
        entries.push(json!({ "resource": resource }));
    }
    entries.extend(value_sets.into_iter().map(|v| json!({ "resource": v })));
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
}

/// `test`: the mappings' own test cases; one line per case, failures and snapshot diffs under it.
pub fn test(args: TestArgs) -> i32 {
    use crate::authoring::test::{SnapshotMode, pending, run_mapping};
    let set = match MappingSet::load_dir(&args.mappings) {
        Ok(s) => s,
        Err(errors) => {
            print_errors(&errors);
            return 2;
        }
    };
    let Some(mut chosen) = named_mappings(&set, &args.registers, &args.mappings) else {
        return 2;
    };
    if chosen.is_empty() {
        chosen = set.mappings.iter().collect();
    }
    let mode = if args.accept {
        SnapshotMode::Accept
    } else {
        SnapshotMode::Compare
    };
    let colour = std::io::stdout().is_terminal();
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let (mut passed, mut failed, mut untested) = (0, 0, Vec::new());
    for m in chosen {
        if m.spec.tests.is_empty() {
            untested.push(m.id().to_string());
            continue;
        }
        for case in run_mapping(m, &set, mode) {
            let label = format!("{} [{}]", case.mapping, case.name);
            if case.passed() {
                passed += 1;
                let note = if case.accepted {
                    " (snapshot accepted)"
                } else {
                    ""
                };
                println!("{} {label}{note}", paint("32", "ok  "));
                continue;
            }
            failed += 1;
            println!("{} {label}", paint("31", "FAIL"));
            for f in &case.failures {
                for line in f.lines() {
                    println!("     {line}");
                }
            }
            if let Some(diff) = &case.diff {
                println!(
                    "     the snapshot differs; the new one is written beside it as .snap.new:"
                );
                for line in diff.lines() {
                    let line = if line.starts_with('+') && !line.starts_with("+++") {
                        paint("32", line)
                    } else if line.starts_with('-') && !line.starts_with("---") {
                        paint("31", line)
                    } else {
                        line.to_string()
                    };
                    println!("     {line}");
                }
            }
        }
    }
    let waiting = pending(&args.mappings);
    if args.check && !waiting.is_empty() {
        failed += 1;
        println!(
            "{} snapshots waiting to be reviewed: {}",
            paint("31", "FAIL"),
            waiting
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "{passed} passed, {failed} failed{}",
        if untested.is_empty() {
            String::new()
        } else {
            format!("; no [[test]] in {}", untested.join(", "))
        }
    );
    if !waiting.is_empty() && !args.accept {
        println!(
            "review the .snap.new files, then run `fhir-registers test --accept` to accept them"
        );
    }
    i32::from(failed > 0)
}

/// `new`: drafts a mapping from a register file.
pub fn new_mapping(args: NewArgs) -> i32 {
    use crate::authoring::draft::{DraftInput, draft};
    let id = args.id.clone().unwrap_or_else(|| {
        let stem = args
            .file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem
            .split('.')
            .next()
            .unwrap_or("register")
            .to_ascii_lowercase();
        let id: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        id.trim_matches('-').to_string()
    });
    let input = DraftInput {
        file: &args.file,
        columns: args.columns.as_ref().map(|c| {
            c.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        }),
        id,
        url: args.url.clone(),
        fixture_rows: args.fixture_rows.max(1),
    };
    let drafted = match draft(&input) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let Some(out) = &args.output else {
        print!("{}", drafted.mapping);
        eprintln!(
            "(printed only: with -o OUT.toml the fixture slice {} is written beside it too)",
            drafted.fixture_path
        );
        return 0;
    };
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let fixture = dir.join(&drafted.fixture_path);
    let written = fixture
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&fixture, &drafted.fixture))
        .and_then(|()| std::fs::write(out, &drafted.mapping));
    match written {
        Ok(()) => {
            eprintln!(
                "wrote {} and its fixture {}; check the TODOs, then `fhir-registers check {} {}`",
                out.display(),
                fixture.display(),
                out.display(),
                args.file.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
