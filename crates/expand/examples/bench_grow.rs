//! Runs the in-memory growth benchmark: `bench_grow [small] [aki] [runs]`.
use bert2bert_expand::bench::{BenchShape, grow_benchmark};
use bert2bert_expand::{GrowOptions, Method};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shape = if args.iter().any(|a| a == "small") {
        BenchShape::Small
    } else {
        BenchShape::BaseToLarge
    };
    let method = if args.iter().any(|a| a == "aki") {
        Method::Aki
    } else {
        Method::Fpi
    };
    let runs = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3);
    let opts = GrowOptions {
        method,
        ..GrowOptions::default()
    };
    println!("{}", grow_benchmark(shape, &opts, runs));
}
