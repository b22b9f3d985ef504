//! The in-memory growth benchmark: BERT-base size to BERT-large shape, timed next to a plain
//! copy of the same number of bytes in the same run.

use crate::options::{GrowOptions, Target};
use crate::{GrowPlan, grow};
use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Bert, BertConfig, Model};
use serde::Serialize;
use std::fmt;
use std::time::Instant;

/// Shapes of a benchmark run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BenchShape {
    /// BERT-base (12 x 768, 12 heads, FFN 3072, vocab 30522) -> 24 x 1024, 16 heads, FFN 4096.
    BaseToLarge,
    /// 4 x 256 -> 8 x 512 (vocab 8192): a quick check of the benchmark itself.
    Small,
}

impl BenchShape {
    fn shapes(self) -> (BertConfig, Target) {
        match self {
            Self::BaseToLarge => (
                BertConfig::new(30522, 768, 12, 12, 3072, 512),
                Target {
                    layers: 24,
                    hidden: 1024,
                    heads: 16,
                    intermediate: 4096,
                },
            ),
            Self::Small => (
                BertConfig::new(8192, 256, 4, 4, 1024, 512),
                Target {
                    layers: 8,
                    hidden: 512,
                    heads: 8,
                    intermediate: 2048,
                },
            ),
        }
    }
}

/// What one benchmark run measured (seconds are wall time, medians over the repetitions).
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// The shapes.
    pub shape: BenchShape,
    /// The growth options.
    pub options: GrowOptions,
    /// Source parameters.
    pub source_parameters: usize,
    /// Grown parameters.
    pub grown_parameters: usize,
    /// Bytes of the grown model in f32.
    pub output_bytes: usize,
    /// Repetitions each figure is the median of.
    pub runs: usize,
    /// Rayon threads.
    pub threads: usize,
    /// `grow()`: the whole grown model in new memory.
    pub grow_s: f64,
    /// Every grown tensor produced by the plan into one reused buffer (the streaming path's
    /// compute, without the file).
    pub plan_s: f64,
    /// Copying `output_bytes` into new memory (`Vec::clone`): what `grow_s` is compared to.
    pub copy_fresh_s: f64,
    /// Copying `output_bytes` into memory already touched (`copy_from_slice`).
    pub copy_touched_s: f64,
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gb = self.output_bytes as f64 / 1e9;
        writeln!(
            f,
            "{:?}: {} -> {} parameters ({gb:.2} GB f32), {} {}, {} threads, median of {}",
            self.shape,
            self.source_parameters,
            self.grown_parameters,
            self.options.method,
            self.options.map,
            self.threads,
            self.runs
        )?;
        writeln!(f, "{:<44} {:>8}", "", "seconds")?;
        for (what, s) in [
            ("grow() into new memory", self.grow_s),
            ("copy of the same bytes into new memory", self.copy_fresh_s),
            ("plan: every tensor into one reused buffer", self.plan_s),
            (
                "copy of the same bytes into touched memory",
                self.copy_touched_s,
            ),
        ] {
            writeln!(f, "{what:<44} {s:>8.3}")?;
        }
        write!(
            f,
            "grow / fresh copy: {:.2}x; plan / touched copy: {:.2}x",
            self.grow_s / self.copy_fresh_s,
            self.plan_s / self.copy_touched_s
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// Grows a random model of `shape` `runs` times in memory and times it next to plain copies
/// of the output's bytes, all in this process. Weights are drawn with Hugging Face's
/// initialisation (not timed).
pub fn grow_benchmark(shape: BenchShape, opts: &GrowOptions, runs: usize) -> BenchResult {
    let runs = runs.max(1);
    let (cfg, target) = shape.shapes();
    tracing::info!("drawing a random {:?} source", shape);
    let source = Model::Bert(Bert::random(&cfg, Heads::ALL, Init::FRESH, 1));
    let plan = GrowPlan::new(&source, &target, opts).expect("benchmark shapes are valid");
    let grown_parameters = plan.report().grown_parameters;
    let n = grown_parameters;
    let (mut grows, mut plans, mut fresh, mut touched) = (vec![], vec![], vec![], vec![]);
    let mut buf = vec![0.0f32; plan.max_tensor_len()];
    buf.fill(1.0);
    for _ in 0..runs {
        let (s, g) = time(|| grow(&source, &target, opts).expect("valid"));
        grows.push(s);
        drop(g);
        let (s, _) = time(|| {
            for i in 0..plan.len() {
                let len: usize = plan.shape(i).iter().product();
                plan.tensor_into(i, &mut buf[..len]);
            }
        });
        plans.push(s);
    }
    // The copies run after the growths, with the grown models freed, so both see the same
    // allocator state.
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    for _ in 0..runs {
        let (s, dst) = time(|| src.clone());
        fresh.push(s);
        let mut dst = dst;
        let (s, _) = time(|| dst.copy_from_slice(&src));
        touched.push(s);
        std::hint::black_box(&dst);
    }
    BenchResult {
        shape,
        options: *opts,
        source_parameters: source.num_parameters(),
        grown_parameters,
        output_bytes: n * 4,
        runs,
        threads: rayon::current_num_threads(),
        grow_s: median(grows),
        plan_s: median(plans),
        copy_fresh_s: median(fresh),
        copy_touched_s: median(touched),
    }
}

/// [`grow_benchmark`] of BERT-base to BERT-large shape with FPI, once.
pub fn grow_base_to_large() -> BenchResult {
    grow_benchmark(BenchShape::BaseToLarge, &GrowOptions::default(), 1)
}
