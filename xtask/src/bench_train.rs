//! `cargo xtask bench train`: training-step throughput of the bundled models' shape and of a
//! 1.5x wider one (BERT or GPT-2), or of the shapes `--shape` names (BERT-base on a GPU),
//! next to the machine's matmul rate measured in the same run.

use crate::pretrain::keep_freed_memory;
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{BertConfig, Gpt2Config};
use bert2bert_train::bert::{Params, Scope};
use bert2bert_train::data::causal::CausalBatch;
use bert2bert_train::gpt2::Gpt2Params;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{
    Batch, BatchSource, CarryFiles, ModelParams, SyntheticBatches, TrainConfig, Trainer, TwoStage,
};
use bert2bert_train::{Arch, DeviceKind, device};
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// Arguments of `cargo xtask bench train`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Timed steps per shape (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Vocabulary size (the bundled tokenizer's).
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Size of the square matmul that measures the machine's peak.
    #[arg(long, default_value_t = 1024)]
    pub matmul_size: usize,
    /// Also time a stage-1 step (sub-models, l_b = 1).
    #[arg(long)]
    pub two_stage: bool,
    /// Model family: bert (masked-LM) or gpt2 (next-token at every position).
    #[arg(long, value_enum, default_value_t = Arch::Bert)]
    pub arch: Arch,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Time this shape instead of the two defaults, as LAYERSxHIDDENxHEADSxFFN
    /// (`12x768x12x3072` is BERT-base); repeatable.
    #[arg(long = "shape", value_parser = parse_shape)]
    pub shapes: Vec<BenchShape>,
}

/// A model shape to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchShape {
    /// Layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN inner size.
    pub ffn: usize,
}

/// Parses `LxHxAxF` (layers, hidden, heads, FFN).
fn parse_shape(s: &str) -> Result<BenchShape, String> {
    let n: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!("{s:?}: {e} (expected LAYERSxHIDDENxHEADSxFFN, e.g. 12x768x12x3072)")
        })?;
    let [layers, hidden, heads, ffn] = n[..] else {
        return Err(format!(
            "{s:?}: four numbers expected, LAYERSxHIDDENxHEADSxFFN (e.g. 12x768x12x3072)"
        ));
    };
    if layers == 0 || hidden == 0 || heads == 0 || ffn == 0 || !hidden.is_multiple_of(heads) {
        return Err(format!(
            "{s:?}: every size must be positive and the hidden size a multiple of the heads"
        ));
    }
    Ok(BenchShape {
        layers,
        hidden,
        heads,
        ffn,
    })
}

/// Median of `xs` (not empty).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Measured matmul rate in GFLOP/s: median of 10 timed `n x n` products after 2 warm-ups.
pub fn matmul_gflops(n: usize, dev: &Device) -> anyhow::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), dev)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), dev)?;
    let mut times = Vec::new();
    for i in 0..12 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        // Force completion (and a sync on asynchronous devices).
        c.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (n as f64).powi(3) / median(times) / 1e9)
}

/// Timing of training steps of one shape.
pub struct StepTiming {
    /// Median seconds per step.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Counted FLOPs per second (see `bert2bert_train::flops`), in GFLOP/s.
    pub gflops: f64,
}

/// Seeded uniform-token next-token batches, GPT-2's counterpart of [`SyntheticBatches`].
struct SyntheticCausal {
    rng: SplitMix64,
    vocab: usize,
    batch_size: usize,
    seq_len: usize,
}

impl BatchSource for SyntheticCausal {
    fn next_batch(&mut self) -> bert2bert_train::Result<Batch> {
        let window: Vec<u32> = (0..self.batch_size * (self.seq_len + 1))
            .map(|_| self.rng.below(self.vocab) as u32)
            .collect();
        let rows = window.chunks(self.seq_len + 1);
        Ok(Batch::Causal(CausalBatch {
            input_ids: rows
                .clone()
                .flat_map(|r| &r[..self.seq_len])
                .copied()
                .collect(),
            targets: rows.flat_map(|r| &r[1..]).copied().collect(),
            batch_size: self.batch_size,
            seq_len: self.seq_len,
        }))
    }
}

/// A fresh model of `arch` and `shape`, with seeded synthetic batches of its objective.
fn fresh(
    args: &Args,
    shape: BenchShape,
    dev: &Device,
) -> anyhow::Result<(ModelParams, Box<dyn BatchSource>)> {
    let (b, s, v) = (args.batch_size, args.seq_len, args.vocab);
    let BenchShape {
        layers,
        hidden,
        heads,
        ffn,
    } = shape;
    Ok(match args.arch {
        Arch::Bert => {
            let cfg = BertConfig::new(v, hidden, layers, heads, ffn, s);
            (
                Params::fresh(&cfg, 0, dev)?.into(),
                Box::new(SyntheticBatches::new(v, b, s, 1)),
            )
        }
        Arch::Gpt2 => {
            let mut cfg = Gpt2Config::new(v, hidden, layers, heads, s);
            cfg.n_inner = (ffn != 4 * hidden).then_some(ffn);
            let src = SyntheticCausal {
                rng: SplitMix64::new(1),
                vocab: v,
                batch_size: b,
                seq_len: s,
            };
            (Gpt2Params::fresh(&cfg, 0, dev)?.into(), Box::new(src))
        }
    })
}

/// Times `steps` training steps (median, after 2 warm-ups) of `params` on `src`.
pub fn time_steps(
    params: ModelParams,
    src: &mut dyn BatchSource,
    args: &Args,
    two_stage: bool,
    dev: &Device,
) -> anyhow::Result<StepTiming> {
    // Trainer::new wants an output folder; steps are driven directly, so nothing is written.
    let out = std::env::temp_dir().join(format!("bert2bert-bench-train-{}", std::process::id()));
    let steps = args.steps + 2;
    let tc = TrainConfig {
        steps,
        schedule: Schedule {
            peak: 1e-4,
            warmup: 1,
            total: steps,
            decay: Decay::Linear,
        },
        adamw: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 0,
        eval_every: steps,
        log_every: steps,
        checkpoint_every: steps,
        two_stage: two_stage.then_some(TwoStage {
            lb: 1,
            stage1_steps: steps,
        }),
    };
    let mut trainer = Trainer::new(tc, params, dev.clone(), &out, CarryFiles::default())?;
    let mut times = Vec::new();
    let mut flops_per_s = Vec::new();
    for i in 0..steps {
        let batch = src.next_batch()?;
        let (_, scope): (u8, Scope) = trainer.scope_at(i);
        let f = trainer.params().train_flops(&batch, scope);
        let t = Instant::now();
        trainer.train_step(&batch)?;
        let s = t.elapsed().as_secs_f64();
        if i >= 2 {
            times.push(s);
            flops_per_s.push(f as f64 / s);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let seconds = median(times);
    Ok(StepTiming {
        seconds,
        tokens_per_s: (args.batch_size * args.seq_len) as f64 / seconds,
        gflops: median(flops_per_s) / 1e9,
    })
}

/// Runs `cargo xtask bench train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    keep_freed_memory();
    crate::alloc::cache_large_blocks();
    let dev = device(args.device)?;
    let peak = matmul_gflops(args.matmul_size, &dev)?;
    println!(
        "device {:?}, matmul {n} x {n} x {n} f32: {peak:.1} GFLOP/s",
        args.device,
        n = args.matmul_size
    );
    println!(
        "{} training step, batch {} x {} tokens, vocab {}, AdamW, {}:",
        args.arch.family().name(),
        args.batch_size,
        args.seq_len,
        args.vocab,
        match args.arch {
            Arch::Bert => "decoder at masked positions only",
            Arch::Gpt2 => "LM head at every position",
        }
    );
    let shapes: Vec<(String, BenchShape)> = if args.shapes.is_empty() {
        let four = |hidden, heads, ffn| BenchShape {
            layers: 4,
            hidden,
            heads,
            ffn,
        };
        vec![
            (
                "bundled 4 x 128 (2 heads, FFN 512)".into(),
                four(128, 2, 512),
            ),
            (
                "1.5x wider 4 x 192 (3 heads, FFN 768)".into(),
                four(192, 3, 768),
            ),
        ]
    } else {
        // The same "<what> L x H" label as the defaults, which scripts read back.
        args.shapes
            .iter()
            .map(|&b| {
                let name = format!(
                    "shape {} x {} ({} heads, FFN {})",
                    b.layers, b.hidden, b.heads, b.ffn
                );
                (name, b)
            })
            .collect()
    };
    for (name, shape) in shapes {
        let mut modes = vec![("full", false)];
        if args.two_stage {
            modes.push(("stage 1", true));
        }
        for (mode, two) in modes {
            let (params, mut src) = fresh(&args, shape, &dev)?;
            let t = time_steps(params, src.as_mut(), &args, two, &dev)?;
            println!(
                "  {name:40} {mode:8} {:7.3} s/step {:8.0} tokens/s {:6.1} GFLOP/s ({:4.1}% of matmul peak)",
                t.seconds,
                t.tokens_per_s,
                t.gflops,
                100.0 * t.gflops / peak
            );
        }
    }
    Ok(())
}
