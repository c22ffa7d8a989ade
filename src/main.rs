//! The `fhir-registers` binary: parses the command line, sets up logging, runs a subcommand.

use clap::Parser;
use fhir_registers::commands;
use fhir_registers::config::{Cli, Command, LogFormat};
use fhir_registers::terminology::budget::LaneSettings;

// jemalloc instead of glibc's malloc: glibc keeps what a burst of large answers once used in its
// per-thread arenas (after a streamed batch of 40 expansions of 50,000 postcodes the server stayed
// 61 MiB above its idle size for good), while jemalloc's background threads hand pages unused for
// 10 s (`dirty_decay_ms`) back to the system (the same batch: back to idle size within 12 s).
// Its statistics are logged at debug level (see `log_allocator_stats`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let logs = init_logging(cli.log_format);
    let command = match cli.command {
        Some(c) => c,
        // No subcommand means `serve`, with its flags' environment variables honoured.
        None => match Cli::parse_from(["fhir-registers", "serve"]).command {
            Some(c) => c,
            None => Command::Serve(Box::default()),
        },
    };
    // Operations that may take long (expansions, validation against large ValueSets) run on
    // tokio's blocking pool. They are CPU-bound, so threads beyond what the lanes need add
    // nothing but memory: each thread's allocator arena keeps what it once used (32 concurrent
    // text filters over 2.7M postcodes grew the server by 130 MiB with tokio's default of up to
    // 512 threads). The pool holds the slow lane (running and queued) plus threads kept for fast
    // work, so expensive requests cannot take every thread.
    let lanes = match &command {
        Command::Serve(args) => commands::lane_settings(args),
        _ => LaneSettings::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(lanes.blocking_threads())
        .build();
    match runtime {
        Ok(rt) => {
            let code = rt.block_on(run(command));
            // `exit` runs no destructors: the log lines still buffered are written first. (The
            // runtime is not dropped, which would wait for blocking tasks still running.)
            drop(logs);
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            drop(logs);
            std::process::exit(1);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines. Lines go
/// through a buffer that a thread of their own writes out, so a slow stderr (a pipe to a busy
/// collector) never holds up a request: when the buffer is full, lines are dropped instead.
/// The returned guard writes out what is buffered when dropped.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("fhir-registers-log")
        .finish(std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer);
    match format {
        LogFormat::Text => logs
            // Colours only on a terminal: a log file or collector gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line with the event's fields at the top level (`request_id`, not
        // `fields.request_id`); spans carry nothing the lines need.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    guard
}

async fn run(command: Command) -> i32 {
    // Purging runs on jemalloc's own threads, so memory goes back even while the server idles.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background threads could not be started");
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        std::thread::spawn(log_allocator_stats);
    }
    match command {
        Command::Serve(args) => commands::serve(*args).await,
        Command::Import(args) => commands::import(args).await,
        Command::Check(args) => commands::check(args).await,
        Command::Preview(args) => commands::preview(args).await,
        Command::Sync(args) => commands::sync(args).await,
        Command::Test(args) => commands::test(args),
        Command::New(args) => commands::new_mapping(args),
    }
}

/// Every 10 s, the allocator's view of memory: bytes the program holds (`allocated`), pages it
/// keeps resident (`resident`) and address space kept but handed back (`retained`).
fn log_allocator_stats() {
    use tikv_jemalloc_ctl::{epoch, stats};
    loop {
        if epoch::advance().is_ok()
            && let (Ok(allocated), Ok(resident), Ok(retained)) = (
                stats::allocated::read(),
                stats::resident::read(),
                stats::retained::read(),
            )
        {
            tracing::debug!(
                allocated_mib = allocated >> 20,
                resident_mib = resident >> 20,
                retained_mib = retained >> 20,
                "allocator"
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
}
