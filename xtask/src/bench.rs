//! `cargo xtask bench`: benchmarks whose figures go into docs/ (each names machine and command).

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Grow BERT-base (12 x 768) to BERT-large shape (24 x 1024) on disk: time and peak RSS next
    /// to a plain copy of the output bytes.
    Grow(crate::bench_grow::GrowArgs),
    /// Training-step throughput (tokens/s, GFLOP/s) of the bundled model's shape and a 1.5x
    /// wider one, next to the machine's matmul GFLOP/s.
    Train(crate::bench_train::Args),
}

/// Runs `cargo xtask bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Grow(a) => crate::bench_grow::run(a),
        What::Train(a) => crate::bench_train::run(a),
    }
}
