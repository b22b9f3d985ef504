//! `cargo xtask verify`: compare a grown checkpoint's function with its source's.

use anyhow::Result;
use bert2bert_checkpoint::read_model_dir;
use bert2bert_expand::{EXACT_REL_TOL, VerifyOptions, VerifyReport, verify};
use std::path::PathBuf;

/// Batch settings of a verification, shared by `grow` and `verify`.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Number of seeded token batches.
    #[arg(long, default_value_t = 2)]
    pub batches: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Tokens per sequence (at most the model's max_position_embeddings).
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// Seed of the token batches.
    #[arg(long = "verify-seed", id = "verify_seed", default_value_t = 0)]
    pub seed: u64,
}

impl VerifyArgs {
    /// The library's options.
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions {
            batches: self.batches,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            seed: self.seed,
        }
    }
}

/// Arguments of `cargo xtask verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source (small) model folder.
    #[arg(long)]
    pub source: PathBuf,
    /// The grown model folder.
    #[arg(long)]
    pub grown: PathBuf,
    #[command(flatten)]
    pub batches: VerifyArgs,
    /// Exit non-zero (1) when the largest relative difference exceeds the documented tolerance.
    #[arg(long)]
    pub expect_exact: bool,
    /// Print a machine-readable JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Prints a verification report for people.
pub fn print_verify(v: &VerifyReport, expected_exact: bool) {
    println!("{v}");
    if expected_exact && !v.exact {
        println!(
            "warning: this growth should preserve the function, but the difference exceeds the tolerance"
        );
    } else if !expected_exact && !v.exact {
        println!(
            "(expected: this growth is not function-preserving by design; see the report above)"
        );
    }
}

/// Runs `cargo xtask verify`.
pub fn run(args: Args) -> Result<()> {
    let report = if crate::grow_llama::llama_kind(&args.source).is_some() {
        let source = bert2bert_checkpoint::LlamaSource::open(&args.source)?;
        crate::grow_llama::verify_dirs(&source, &args.grown, &args.batches.options())?
    } else {
        let source = read_model_dir(&args.source)?;
        let grown = read_model_dir(&args.grown)?;
        verify(&source.model, &grown.model, &args.batches.options())?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if args.expect_exact && !report.exact {
        anyhow::bail!(
            "{}: not function-preserving: max relative difference {:.3e} exceeds {:.0e}",
            args.grown.display(),
            report.max_rel,
            EXACT_REL_TOL
        );
    }
    Ok(())
}
