//! `cargo xtask bench train`: training-step throughput of the bundled model's shape and of a
//! 1.5x wider one, next to the machine's matmul rate measured in the same run.

use crate::pretrain::{DeviceKind, device, keep_freed_memory};
use bert2bert_checkpoint::BertConfig;
use bert2bert_train::bert::{Params, Scope};
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{
    BatchSource, CarryFiles, SyntheticBatches, TrainConfig, Trainer, TwoStage,
};
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
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
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

/// Times `steps` training steps (median, after 2 warm-ups) of a model of `cfg`.
pub fn time_steps(
    cfg: &BertConfig,
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
    let params = Params::fresh(cfg, 0, dev)?;
    let mut trainer = Trainer::new(tc, params, dev.clone(), &out, CarryFiles::default())?;
    let mut src = SyntheticBatches::new(cfg.vocab_size, args.batch_size, args.seq_len, 1);
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
    let dev = device(args.device)?;
    let peak = matmul_gflops(args.matmul_size, &dev)?;
    println!(
        "device {:?}, matmul {n} x {n} x {n} f32: {peak:.1} GFLOP/s",
        args.device,
        n = args.matmul_size
    );
    println!(
        "training step, batch {} x {} tokens, vocab {}, AdamW, decoder at masked positions only:",
        args.batch_size, args.seq_len, args.vocab
    );
    let shapes = [
        ("bundled 4 x 128 (2 heads, FFN 512)", 128, 2, 512),
        ("1.5x wider 4 x 192 (3 heads, FFN 768)", 192, 3, 768),
    ];
    for (name, hidden, heads, ffn) in shapes {
        let cfg = BertConfig::new(args.vocab, hidden, 4, heads, ffn, args.seq_len);
        let mut modes = vec![("full", false)];
        if args.two_stage {
            modes.push(("stage 1", true));
        }
        for (mode, two) in modes {
            let t = time_steps(&cfg, &args, two, &dev)?;
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
