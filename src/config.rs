//! Command line and environment configuration. Every flag can also be set by an environment
//! variable `FHIR_REGISTERS_…`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Serves national reference-data registers (ODS, postcodes, ICD-10) as FHIR R4 terminology.
#[derive(Debug, Parser)]
#[command(name = "fhir-registers", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How log lines are written to stderr: `text` (one readable line each) or `json` (one JSON
    /// object per line, fields at the top level, for log collectors). Which lines are written
    /// is chosen by `RUST_LOG` (default `info`; `fhir_registers::access=off` drops the
    /// per-request lines).
    #[arg(
        long,
        global = true,
        env = "FHIR_REGISTERS_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registers over HTTP (imports the shipped registers on first start).
    Serve(Box<ServeArgs>),
    /// Import one release of one register into the data directory.
    Import(ImportArgs),
    /// Check a mapping against a register file and report every error.
    Check(CheckArgs),
    /// Print the CodeSystem and ValueSets a mapping produces from a file (FHIR JSON Bundle).
    Preview(PreviewArgs),
    /// Check the upstreams of registers (their mappings' `[sync]` tables) once and import every
    /// new release; prints one line per register and exits 1 if any failed.
    Sync(SyncCommandArgs),
    /// Run the mappings' own test cases (`[[test]]`) and compare their snapshots.
    Test(TestArgs),
    /// Draft a mapping from a register file (printed, or written with its test fixture).
    New(NewArgs),
}

/// Options for `new`.
#[derive(Debug, Clone, Args)]
pub struct NewArgs {
    /// The register file (CSV or TSV, plain or `.gz`).
    pub file: PathBuf,
    /// Write the mapping here (and its fixture slice to `tests/` beside it) instead of printing it.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Column names, comma-separated, for a file without a header.
    #[arg(long)]
    pub columns: Option<String>,
    /// The register id (default: from the file name).
    #[arg(long)]
    pub id: Option<String>,
    /// The CodeSystem's canonical URL.
    #[arg(long)]
    pub url: Option<String>,
    /// Data rows in the fixture slice.
    #[arg(long, default_value_t = 50)]
    pub fixture_rows: usize,
}

/// Options for `test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Folder of mapping files (snapshots are in its `snapshots/` folder).
    #[arg(long, env = "FHIR_REGISTERS_MAPPINGS", default_value = "mappings")]
    pub mappings: PathBuf,
    /// Accept the snapshots as they are now (writes `.snap`, removes `.snap.new`).
    #[arg(long)]
    pub accept: bool,
    /// Also fail if any `.snap.new` is waiting in the snapshots folder.
    #[arg(long)]
    pub check: bool,
    /// Mappings to test (register ids or mapping files in the folder); all when none is named.
    pub registers: Vec<String>,
}

/// How syncs reach upstreams (`sync`, and `serve`'s schedule and admin API). The TRUD API key
/// comes from the environment variable `FHIR_REGISTERS_TRUD_API_KEY` only, and is never
/// printed.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Seconds to wait for a connection to an upstream.
    #[arg(
        long,
        env = "FHIR_REGISTERS_SYNC_CONNECT_TIMEOUT",
        default_value_t = 30
    )]
    pub sync_connect_timeout: u64,
    /// Seconds one download (or TRUD listing) may take in all.
    #[arg(long, env = "FHIR_REGISTERS_SYNC_TIMEOUT", default_value_t = 1800)]
    pub sync_timeout: u64,
    /// Most MiB a downloaded file may unpack to (zip member or gzip file); more is refused as a
    /// possible zip bomb.
    #[arg(
        long,
        env = "FHIR_REGISTERS_SYNC_MAX_UNPACKED_MIB",
        default_value_t = 4096
    )]
    pub sync_max_unpacked_mib: u64,
    /// Seconds to wait after a failed sync before trying again; doubled after each further
    /// failure.
    #[arg(long, env = "FHIR_REGISTERS_SYNC_RETRY_MIN", default_value_t = 60)]
    pub sync_retry_min: u64,
    /// Longest wait, in seconds, between tries of a failing upstream (and the wait after TRUD
    /// refuses the API key).
    #[arg(long, env = "FHIR_REGISTERS_SYNC_RETRY_MAX", default_value_t = 21_600)]
    pub sync_retry_max: u64,
    /// Base URL of the NHS TRUD API.
    #[arg(long, env = "FHIR_REGISTERS_TRUD_URL", default_value = crate::sync::DEFAULT_TRUD_URL)]
    pub trud_url: String,
}

impl Default for SyncArgs {
    fn default() -> Self {
        Self {
            sync_connect_timeout: 30,
            sync_timeout: 1800,
            sync_max_unpacked_mib: 4096,
            sync_retry_min: 60,
            sync_retry_max: 21_600,
            trud_url: crate::sync::DEFAULT_TRUD_URL.into(),
        }
    }
}

impl SyncArgs {
    /// The sync settings for a data directory, with the TRUD key from the environment.
    pub fn settings(&self, data_dir: PathBuf) -> crate::sync::SyncSettings {
        use std::time::Duration;
        crate::sync::SyncSettings {
            data_dir,
            connect_timeout: Duration::from_secs(self.sync_connect_timeout.max(1)),
            timeout: Duration::from_secs(self.sync_timeout.max(1)),
            max_unpacked_bytes: self.sync_max_unpacked_mib.saturating_mul(1024 * 1024),
            retry_min: Duration::from_secs(self.sync_retry_min.max(1)),
            retry_max: Duration::from_secs(self.sync_retry_max.max(self.sync_retry_min).max(1)),
            trud_url: self.trud_url.clone(),
            trud_key: std::env::var("FHIR_REGISTERS_TRUD_API_KEY")
                .ok()
                .filter(|k| !k.trim().is_empty())
                .map(|k| crate::sync::Secret::new(&k)),
        }
    }
}

/// Options for `sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncCommandArgs {
    /// Where imported releases are stored.
    #[arg(long, env = "FHIR_REGISTERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Folder of mapping files.
    #[arg(long, env = "FHIR_REGISTERS_MAPPINGS", default_value = "mappings")]
    pub mappings: PathBuf,
    /// How upstreams are reached.
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Registers to sync (mapping ids, or mapping files in the mappings folder); every mapping
    /// with a `[sync]` table when none is named.
    pub registers: Vec<String>,
}

/// Options for `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "FHIR_REGISTERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Path of the FHIR base (`/fhir` → `http://host:port/fhir/metadata`).
    #[arg(long, env = "FHIR_REGISTERS_BASE_PATH", default_value = "/fhir")]
    pub base_path: String,
    /// Where imported releases are stored.
    #[arg(long, env = "FHIR_REGISTERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Folder of mapping files (`*.toml`) and plain FHIR CodeSystem/ValueSet files (`*.json`, `*.xml`).
    #[arg(long, env = "FHIR_REGISTERS_MAPPINGS", default_value = "mappings")]
    pub mappings: PathBuf,
    /// Largest `$expand` answered without `count` (larger ones are 422 too-costly).
    #[arg(long, env = "FHIR_REGISTERS_MAX_EXPANSION", default_value_t = 50_000)]
    pub max_expansion: usize,
    /// Largest `$expand` answered without `count` when it draws on a CodeSystem supplied with
    /// the request (`tx-resource`): the reference server's default of 1,000 (larger ones are
    /// 422 too-costly; `count`/`offset` still page them).
    #[arg(
        long,
        env = "FHIR_REGISTERS_MAX_SUPPLIED_EXPANSION",
        default_value_t = 1_000
    )]
    pub max_supplied_expansion: usize,
    /// Time budget of one operation, in seconds (then 422 `too-costly`).
    #[arg(long, env = "FHIR_REGISTERS_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Do not import mappings' `default_file`s on start (serve only what is already stored).
    #[arg(long, env = "FHIR_REGISTERS_NO_DEFAULT_IMPORTS")]
    pub no_default_imports: bool,
    /// Longest `$expand` text `filter`, in characters (longer is a 400).
    #[arg(long, env = "FHIR_REGISTERS_MAX_FILTER_CHARS", default_value_t = 512)]
    pub max_filter_chars: usize,
    /// Most words in an `$expand` text `filter` (more is a 400).
    #[arg(long, env = "FHIR_REGISTERS_MAX_FILTER_WORDS", default_value_t = 32)]
    pub max_filter_words: usize,
    /// Most concepts in one CodeSystem a request supplies as `tx-resource` (more is a 422
    /// too-costly).
    #[arg(
        long,
        env = "FHIR_REGISTERS_MAX_SUPPLIED_CONCEPTS",
        default_value_t = 100_000
    )]
    pub max_supplied_concepts: usize,
    /// Seconds a `$cache-control` cache is kept without being used.
    #[arg(long, env = "FHIR_REGISTERS_CACHE_TTL", default_value_t = 1800)]
    pub cache_ttl: u64,
    /// Most `$cache-control` caches open at once (starting one more drops the least recently
    /// used).
    #[arg(long, env = "FHIR_REGISTERS_MAX_CACHES", default_value_t = 256)]
    pub max_caches: usize,
    /// Most MiB of resources (their JSON) all `$cache-control` caches hold together (past it
    /// the least recently used caches are dropped).
    #[arg(long, env = "FHIR_REGISTERS_MAX_CACHE_MIB", default_value_t = 256)]
    pub max_cache_mib: usize,
    /// Milliseconds an operation runs before it counts as expensive and moves to the slow lane.
    #[arg(long, env = "FHIR_REGISTERS_SLOW_AFTER_MS", default_value_t = 50)]
    pub slow_after_ms: u64,
    /// Expensive operations running at once (0: one per core).
    #[arg(long, env = "FHIR_REGISTERS_SLOW_THREADS", default_value_t = 0)]
    pub slow_threads: usize,
    /// Expensive operations waiting for the slow lane, beyond which more are refused with 503
    /// (0: twice the slow threads).
    #[arg(long, env = "FHIR_REGISTERS_SLOW_QUEUE", default_value_t = 0)]
    pub slow_queue: usize,
    /// Seconds a client has to send a whole request head, from its first byte (then 408 and
    /// the connection is closed).
    #[arg(long, env = "FHIR_REGISTERS_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds a connection with no request in progress stays open without a byte moving.
    #[arg(long, env = "FHIR_REGISTERS_IDLE_TIMEOUT", default_value_t = 30)]
    pub idle_timeout: u64,
    /// Most client connections open at once; more are answered 503 `throttled` and closed.
    #[arg(long, env = "FHIR_REGISTERS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Longest request URL (path and query), in bytes; longer is 414 `too-long` (hyper reads
    /// at most 65,534).
    #[arg(long, env = "FHIR_REGISTERS_MAX_URL_BYTES", default_value_t = 8 * 1024)]
    pub max_url_bytes: usize,
    /// Largest total size of a request's header fields, in bytes; larger is 431 `too-long`.
    #[arg(long, env = "FHIR_REGISTERS_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Seconds requests in flight may take to finish after Ctrl-C or SIGTERM.
    #[arg(long, env = "FHIR_REGISTERS_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Most bytes the answers of one batch (`POST` of a `batch` Bundle to the base) may take
    /// together; the entry that would pass it and every entry after it are answered 422
    /// `too-costly`. Entries are streamed, so memory holds one answer at a time.
    #[arg(long, env = "FHIR_REGISTERS_MAX_BATCH_BYTES", default_value_t = crate::http::DEFAULT_MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// Most entries in one batch (more is 422 `too-costly`).
    #[arg(long, env = "FHIR_REGISTERS_MAX_BATCH_ENTRIES", default_value_t = crate::http::DEFAULT_MAX_BATCH_ENTRIES)]
    pub max_batch_entries: usize,
    /// Largest request body, in MiB (larger is 413 `too-long`).
    #[arg(long, env = "FHIR_REGISTERS_MAX_BODY_MIB", default_value_t = 32)]
    pub max_body_mib: usize,
    /// Most parameters in one request: query pairs plus the body's top-level parameters (more
    /// is 400).
    #[arg(long, env = "FHIR_REGISTERS_MAX_PARAMETERS", default_value_t = 10_000)]
    pub max_parameters: usize,
    /// Seconds a client has to send a whole request body once its head is in (then 408).
    #[arg(long, env = "FHIR_REGISTERS_BODY_READ_TIMEOUT", default_value_t = 30)]
    pub body_read_timeout: u64,
    /// Origins browser apps may call the FHIR API from (CORS): `*` for any, a comma-separated
    /// list of origins (`https://app.example.org`), or `none` to send no CORS headers.
    #[arg(long, env = "FHIR_REGISTERS_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// Follow every register's upstream on its schedule (the `[sync]` tables' `every`) and
    /// publish new releases without a restart.
    #[arg(long, env = "FHIR_REGISTERS_SYNC", conflicts_with = "read_only")]
    pub sync: bool,
    /// A replica over a data directory another process writes: never import, sync or write
    /// anything (the directory may be mounted read-only); serve what is stored and publish new
    /// releases as the change marker shows them. No admin API.
    #[arg(long, env = "FHIR_REGISTERS_READ_ONLY")]
    pub read_only: bool,
    /// Seconds within which a release another process stores (`import`, `sync`, a writer
    /// replica) is served without a restart, plus the time to build the changed register; the
    /// data directory's change marker is read four times per interval (0: never).
    #[arg(long, env = "FHIR_REGISTERS_RELOAD_INTERVAL", default_value_t = 5)]
    pub reload_interval: u64,
    /// File holding the bearer token of the admin API (`/admin/…`); the environment variable
    /// `FHIR_REGISTERS_ADMIN_TOKEN` may hold it instead. Without a token the admin API does not
    /// exist.
    #[arg(long, env = "FHIR_REGISTERS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Most concepts the register browser keeps in the diffs it has computed, together (a diff
    /// is kept so that paging through it does not compare the two versions again; the oldest go
    /// first, and a larger diff is not kept). About 16 bytes a concept.
    #[arg(long, env = "FHIR_REGISTERS_BROWSER_KEPT_DIFF_CONCEPTS", default_value_t = crate::web::DEFAULT_KEPT_DIFF_CONCEPTS)]
    pub browser_kept_diff_concepts: usize,
    /// How upstreams are reached.
    #[command(flatten)]
    pub sync_settings: SyncArgs,
}

impl ServeArgs {
    /// The connection loop's settings from these flags (timeouts of at least a second, at
    /// least one connection).
    pub fn edge_settings(&self) -> crate::http::serve::EdgeSettings {
        use std::time::Duration;
        crate::http::serve::EdgeSettings {
            header_read_timeout: Duration::from_secs(self.header_read_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            max_connections: self.max_connections.max(1),
            limits: crate::http::edge::RequestLimits {
                max_url_bytes: self.max_url_bytes,
                max_header_bytes: self.max_header_bytes,
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
        }
    }
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_path: "/fhir".into(),
            data_dir: PathBuf::from("data"),
            mappings: PathBuf::from("mappings"),
            max_expansion: 50_000,
            max_supplied_expansion: 1_000,
            request_timeout: 30,
            no_default_imports: false,
            max_filter_chars: 512,
            max_filter_words: 32,
            max_supplied_concepts: 100_000,
            cache_ttl: 1800,
            max_caches: 256,
            max_cache_mib: 256,
            slow_after_ms: 50,
            slow_threads: 0,
            slow_queue: 0,
            header_read_timeout: 10,
            idle_timeout: 30,
            max_connections: 1024,
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            shutdown_timeout: 10,
            max_batch_bytes: crate::http::DEFAULT_MAX_BATCH_BYTES,
            max_batch_entries: crate::http::DEFAULT_MAX_BATCH_ENTRIES,
            max_body_mib: 32,
            max_parameters: 10_000,
            body_read_timeout: 30,
            cors_origins: "*".into(),
            sync: false,
            read_only: false,
            reload_interval: 5,
            admin_token_file: None,
            browser_kept_diff_concepts: crate::web::DEFAULT_KEPT_DIFF_CONCEPTS,
            sync_settings: SyncArgs::default(),
        }
    }
}

/// Options for `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Where imported releases are stored.
    #[arg(long, env = "FHIR_REGISTERS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Release version, usually the release date `YYYY-MM-DD` (default: a date in the file name,
    /// `epraccur_2019-10.csv` → `2019-10-01`, else the mapping's `default_version`).
    #[arg(long, env = "FHIR_REGISTERS_VERSION")]
    pub version: Option<String>,
    /// Replace an existing release of the same version made from other data.
    #[arg(long)]
    pub replace: bool,
    /// The mappings `serve` reads: a release that supplies a code another feed of its
    /// CodeSystem supplies (in a version both are part of) is refused. Not checked when the
    /// folder does not exist or does not load.
    #[arg(long, env = "FHIR_REGISTERS_MAPPINGS", default_value = "mappings")]
    pub mappings: PathBuf,
    /// The mapping file.
    pub mapping: PathBuf,
    /// The register file: a path or an http(s) URL.
    pub file: String,
}

/// Options for `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The mapping file.
    pub mapping: PathBuf,
    /// The register file (path or http(s) URL); without it only the mapping itself is checked.
    pub file: Option<String>,
    /// Release version to check against (dates in `inactive_from` compare with it).
    #[arg(long, env = "FHIR_REGISTERS_VERSION")]
    pub version: Option<String>,
}

/// Options for `preview`.
#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// The mapping file.
    pub mapping: PathBuf,
    /// The register file (path or http(s) URL).
    pub file: String,
    /// Release version (default: the mapping's `default_version`, else `preview`).
    #[arg(long, env = "FHIR_REGISTERS_VERSION")]
    pub version: Option<String>,
    /// Show at most this many concepts (0 = all).
    #[arg(long, env = "FHIR_REGISTERS_PREVIEW_LIMIT", default_value_t = 0)]
    pub limit: usize,
}
