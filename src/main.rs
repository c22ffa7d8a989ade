//! The `fhir-registers` binary: parses the command line, sets up logging, runs a subcommand.

use clap::Parser;
use fhir_registers::commands;
use fhir_registers::config::{Cli, Command, ServeArgs};

#[tokio::main]
async fn main() {
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
