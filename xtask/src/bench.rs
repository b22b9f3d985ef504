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
    /// Grow BERT-base to BERT-large shape in memory (no files): `grow()` next to a copy of the
    /// same bytes into new memory, and the streaming plan's compute next to a copy into touched
    /// memory, in one run.
    GrowMem(GrowMemArgs),
    /// Training-step throughput (tokens/s, GFLOP/s) of the bundled model's shape and a 1.5x
    /// wider one, next to the machine's matmul GFLOP/s.
    Train(crate::bench_train::Args),
}

/// Runs `cargo xtask bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Grow(a) => crate::bench_grow::run(a),
        What::Train(a) => crate::bench_train::run(a),
        What::GrowMem(a) => grow_mem(a),
    }
}

/// Options of `cargo xtask bench grow-mem`.
#[derive(clap::Args, Debug)]
pub struct GrowMemArgs {
    /// Width method.
    #[arg(long, default_value = "fpi")]
    method: bert2bert_expand::Method,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A smaller shape (4 x 256 -> 8 x 512) for a quick check of the benchmark itself.
    #[arg(long)]
    small: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn grow_mem(a: GrowMemArgs) -> anyhow::Result<()> {
    use bert2bert_expand::bench::{BenchShape, grow_benchmark};
    let shape = if a.small {
        BenchShape::Small
    } else {
        BenchShape::BaseToLarge
    };
    let opts = bert2bert_expand::GrowOptions {
        method: a.method,
        ..Default::default()
    };
    let r = grow_benchmark(shape, &opts, a.runs);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r}");
    }
    Ok(())
}
