//! Project automation: `cargo xtask grow | verify | pretrain | experiment | bench`.

mod alloc;
mod bench;
mod bench_grow;
mod bench_train;
#[cfg(feature = "experiment")]
mod experiment;
mod grow;
mod grow_llama;
mod pretrain;
mod verify;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A misuse of the command line found after parsing (exit code 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(String);

impl Usage {
    /// A usage error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// Classifies a growth refusal: a target the method cannot reach is a misuse of the
    /// command line; anything else is bad data.
    pub fn from_expand(e: bert2bert_expand::ExpandError) -> anyhow::Error {
        use bert2bert_expand::ExpandError as E;
        match e {
            E::ZeroTarget { .. }
            | E::Shrink { .. }
            | E::Indivisible { .. }
            | E::HeadSize { .. }
            | E::Target(_) => Self(format!("{e} (check the target flags)")).into(),
            // An option the family cannot honour (--map exact on BERT) is a misuse too.
            E::Unsupported { .. } => Self(e.to_string()).into(),
            other => other.into(),
        }
    }
}

/// Refuses (exit 2, before anything is read or written) an output folder given by `flag` that
/// is, lies inside, or contains one of `inputs` (`(path, what it is)`).
pub fn refuse_overlap(flag: &str, out: &Path, inputs: &[(&Path, &str)]) -> anyhow::Result<()> {
    use bert2bert_checkpoint::CheckpointError;
    for (input, role) in inputs {
        bert2bert_checkpoint::paths::check_disjoint(out, input, role).map_err(|e| match e {
            CheckpointError::OutputOverlapsInput { .. } => Usage::new(format!("{flag} {e}")).into(),
            other => anyhow::Error::from(other),
        })?;
    }
    Ok(())
}

/// The workspace root, for the bundled assets.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

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
    #[cfg(feature = "experiment")]
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
        #[cfg(feature = "experiment")]
        Command::Experiment(a) => experiment::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable error line (with its causes): exit 2 for misuse, 1 for bad data.
            eprintln!("error: {e:#}");
            ExitCode::from(if e.is::<Usage>() { 2 } else { 1 })
        }
    }
}
