//! The `fhir-registers` binary: parses the command line, sets up logging, runs a subcommand.

use clap::Parser;
use fhir_registers::commands;
use fhir_registers::config::{Cli, Command, ServeArgs};

fn main() {
    // Operations that may take long (expansions, validation against large ValueSets) run on
    // tokio's blocking pool. They are CPU-bound, so threads beyond a few per core add nothing but
    // memory: each thread's allocator arena keeps what it once used (32 concurrent text filters
    // over 2.7M postcodes grew the server by 130 MiB with tokio's default of up to 512 threads).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((2 * cores).max(4))
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        // No subcommand means `serve`, with its flags' environment variables honoured.
        None => match Cli::parse_from(["fhir-registers", "serve"]).command {
            Some(Command::Serve(args)) => commands::serve(args).await,
            _ => commands::serve(ServeArgs::default()).await,
        },
        Some(Command::Serve(args)) => commands::serve(args).await,
        Some(Command::Import(args)) => commands::import(args).await,
        Some(Command::Check(args)) => commands::check(args).await,
        Some(Command::Preview(args)) => commands::preview(args).await,
    };
    std::process::exit(code);
}
