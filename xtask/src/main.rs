//! Project automation: `cargo xtask grow | verify | pretrain | experiment | bench`.

mod bench;
mod experiment;
mod grow;
mod pretrain;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// bert2bert: grow a small pretrained Transformer into a larger one, then pre-train it.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Grow a checkpoint to a larger shape (defaults: the bundled model, 1.5x wider, AKI).
    Grow(grow::Args),
    /// Compare a grown checkpoint's function with its source on seeded batches.
    Verify(verify::Args),
    /// Pre-train a model (fresh or from a checkpoint), optionally in two stages.
    Pretrain(pretrain::Args),
    /// Reproduce the paper's saving table in miniature.
    Experiment(experiment::Args),
    /// Benchmarks: growth speed and memory, training throughput.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Grow(a) => grow::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable error line (with its causes), exit 1 for bad data; clap exits 2 for misuse.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
