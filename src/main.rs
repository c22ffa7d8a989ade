//! The `fhir-registers` binary: parses the command line, sets up logging, runs a subcommand.

use clap::Parser;
use fhir_registers::commands;
use fhir_registers::config::{Cli, Command, ServeArgs};
use fhir_registers::terminology::budget::LaneSettings;

fn main() {
    let command = match Cli::parse().command {
        Some(c) => c,
        // No subcommand means `serve`, with its flags' environment variables honoured.
        None => match Cli::parse_from(["fhir-registers", "serve"]).command {
            Some(c) => c,
            None => Command::Serve(ServeArgs::default()),
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
        Ok(rt) => rt.block_on(run(command)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(command: Command) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match command {
        Command::Serve(args) => commands::serve(args).await,
        Command::Import(args) => commands::import(args).await,
        Command::Check(args) => commands::check(args).await,
        Command::Preview(args) => commands::preview(args).await,
    };
    std::process::exit(code);
}
