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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registers over HTTP (imports the shipped registers on first start).
    Serve(ServeArgs),
    /// Import one release of one register into the data directory.
    Import(ImportArgs),
    /// Check a mapping against a register file and report every error.
    Check(CheckArgs),
    /// Print the CodeSystem and ValueSets a mapping produces from a file (FHIR JSON Bundle).
    Preview(PreviewArgs),
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
    /// Time budget of one operation, in seconds (then 422 `too-costly`).
    #[arg(long, env = "FHIR_REGISTERS_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Do not import mappings' `default_file`s on start (serve only what is already stored).
    #[arg(long, env = "FHIR_REGISTERS_NO_DEFAULT_IMPORTS")]
    pub no_default_imports: bool,
    /// Most bytes the answers of one batch (`POST` of a `batch` Bundle to the base) may take
    /// together; the entry that would pass it and every entry after it are answered 422
    /// `too-costly`. Entries are streamed, so memory holds one answer at a time.
    #[arg(long, env = "FHIR_REGISTERS_MAX_BATCH_BYTES", default_value_t = crate::http::DEFAULT_MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_path: "/fhir".into(),
            data_dir: PathBuf::from("data"),
            mappings: PathBuf::from("mappings"),
            max_expansion: 50_000,
            request_timeout: 30,
            no_default_imports: false,
            max_batch_bytes: crate::http::DEFAULT_MAX_BATCH_BYTES,
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
