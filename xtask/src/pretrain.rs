//! `cargo xtask pretrain`: pre-training of a fresh or existing (e.g. grown) model on the bundled
//! corpus, optionally in two stages, with exact resume: masked-LM for BERT, next-token for
//! GPT-2 (the family comes from `--init`'s config.json, or `--arch` for a fresh model).

use anyhow::{Context, bail};
use bert2bert_checkpoint::{Family, read_model_dir};
use bert2bert_train::bert::Params;
use bert2bert_train::data::{DEFAULT_CORPUS, MlmConfig, default_assets_dir, load_tokenizer};
use bert2bert_train::export::{Recording, write_batches};
use bert2bert_train::gpt2::Gpt2Params;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::schedule::{SCHEDULE_FILE, TrainSchedule};
use bert2bert_train::trainer::{
    BatchSource, CarryFiles, METRICS_FILE, MODEL_DIR, ModelParams, TrainConfig, Trainer, TwoStage,
};
use bert2bert_train::{
    Arch, DeviceKind, FreshConfig, ModelShape, default_tokenizer_dir, device, load_data,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file in the output folder that records the arguments of the run (read by `--resume`).
pub const ARGS_FILE: &str = "pretrain_args.json";

/// Arguments of `cargo xtask pretrain`.
#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct Args {
    /// Start from this checkpoint folder (grown or pretrained; BERT or GPT-2, read from its
    /// config.json); without it, a fresh model.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Fresh model: family (default bert). With --init it must match the checkpoint.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub arch: Option<Arch>,
    /// Fresh model: layers (encoder layers or decoder blocks).
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Fresh model: hidden size.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Fresh model: attention heads.
    #[arg(long, default_value_t = 2)]
    pub heads: usize,
    /// Fresh model: FFN size.
    #[arg(long, default_value_t = 512)]
    pub ffn: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per sequence (BERT: [CLS] and [SEP] included; GPT-2: input tokens).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// BERT: fraction of the tokens each sequence predicts (default 0.15, BERT's), in training
    /// and in the held-out set.
    #[arg(long)]
    #[serde(default)]
    pub mask_prob: Option<f64>,
    /// Warmup steps (default: 5% of --steps).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Decay after warmup.
    #[arg(long, value_enum, default_value_t = DecayArg::Linear)]
    pub decay: DecayArg,
    /// AdamW weight decay (not on biases and LayerNorms).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the data order, masks, dropout, sub-model sampling and a fresh model's weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Two-stage pre-training (spec section 8): stage 1 trains sub-models' top --lb layers.
    #[arg(long)]
    pub two_stage: bool,
    /// Layers trained per stage-1 sub-model (l_b).
    #[arg(long, default_value_t = 1)]
    pub lb: usize,
    /// Steps of stage 1 (default: 1/8 of --steps, the paper's 5 of 40 epochs).
    #[arg(long)]
    pub stage1_steps: Option<usize>,
    /// Held-out evaluation every N steps.
    #[arg(long, default_value_t = 200)]
    pub eval_every: usize,
    /// Held-out sequences (fixed masks, the same for every run of this sequence length).
    #[arg(long, default_value_t = 256)]
    pub eval_sequences: usize,
    /// A metrics line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// A resumable checkpoint every N steps.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Output folder: metrics.jsonl, checkpoint/ (resumable), model/ (final, Hugging Face).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its checkpoint, with the settings it was started with.
    #[arg(long)]
    pub resume: bool,
    /// Stop (after checkpointing) at this step, to continue later with --resume.
    #[arg(long)]
    pub stop_at: Option<usize>,
    /// Replace an existing --out folder when starting a new run.
    #[arg(long)]
    pub overwrite: bool,
    /// The assets folder (corpus/, tokenizer/ and tokenizer-gpt2/).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Corpus folder, `train.txt.gz` and `valid.txt.gz` (default: the plays, `<assets>/corpus`).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Tokenizer folder for a fresh model (default: the family's bundled one under --assets).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Take the training schedule (steps, learning rate, AdamW, clipping, seed, two-stage
    /// sub-models) from this `bert2bert_schedule.json`, e.g. the one `grow` wrote beside the
    /// grown model, instead of the flags.
    #[arg(long, conflicts_with_all = [
        "steps", "lr", "warmup", "decay", "weight_decay", "clip", "seed", "two_stage", "lb",
        "stage1_steps",
    ])]
    #[serde(default)]
    pub schedule: Option<PathBuf>,
    /// Write every training batch of this invocation and the loss computed on it to FILE
    /// (safetensors, plus FILE with extension .json), for checking another trainer against this
    /// one (docs/distributed.md).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub export_batches: Option<PathBuf>,
}

/// Learning-rate decay (command-line form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum DecayArg {
    /// Linear to 0.
    Linear,
    /// Cosine to 0.
    Cosine,
}

/// The schedule flags shared by `pretrain` and `grow` (which writes them beside the grown model),
/// with pretrain's defaults: warmup 5% of the steps, stage 1 an eighth of them.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleFlags {
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps (None: 5% of `steps`).
    pub warmup: Option<usize>,
    /// Decay after warmup.
    pub decay: DecayArg,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub clip: f64,
    /// Seed of dropout and sub-model sampling.
    pub seed: u64,
    /// l_b and stage-1 steps (None: an eighth of `steps`), if two-stage.
    pub two_stage: Option<(usize, Option<usize>)>,
}

impl ScheduleFlags {
    /// The training configuration, with the given evaluation, logging and checkpoint intervals.
    pub fn train_config(
        &self,
        eval_every: usize,
        log_every: usize,
        checkpoint_every: usize,
    ) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            schedule: Schedule {
                peak: self.lr,
                warmup: self.warmup.unwrap_or(self.steps / 20),
                total: self.steps,
                decay: match self.decay {
                    DecayArg::Linear => Decay::Linear,
                    DecayArg::Cosine => Decay::Cosine,
                },
            },
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            max_grad_norm: (self.clip > 0.0).then_some(self.clip),
            seed: self.seed,
            eval_every,
            log_every,
            checkpoint_every,
            two_stage: self.two_stage.map(|(lb, s1)| TwoStage {
                lb,
                stage1_steps: s1.unwrap_or(self.steps / 8),
            }),
        }
    }
}

impl Args {
    fn train_config(&self, layers: usize) -> anyhow::Result<TrainConfig> {
        let flags = ScheduleFlags {
            steps: self.steps,
            lr: self.lr,
            warmup: self.warmup,
            decay: self.decay,
            weight_decay: self.weight_decay,
            clip: self.clip,
            seed: self.seed,
            two_stage: self.two_stage.then_some((self.lb, self.stage1_steps)),
        };
        let cfg = flags.train_config(self.eval_every, self.log_every, self.checkpoint_every);
        cfg.validate(layers)?;
        Ok(cfg)
    }
}

/// Keeps freed buffers in the heap instead of returning them to the kernel (glibc only).
///
/// candle allocates a fresh buffer for every tensor; above glibc's mmap threshold each one is
/// mapped anew and page-faulted in, which cost about 10% of a CPU training step on the project's
/// VM (measured with `perf`: `clear_page_erms` at 15% of samples). 32 MiB is glibc's largest
/// allowed threshold; training memory is reused step after step, so nothing grows.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters and is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn is_tokenizer_file(p: &Path) -> bool {
    matches!(
        p.to_str(),
        Some(
            "tokenizer.json"
                | "vocab.txt"
                | "vocab.json"
                | "merges.txt"
                | "tokenizer_config.json"
                | "special_tokens_map.json"
        )
    )
}

/// Refuses an `--out` that is, lies inside, or contains `--init`, the assets or the corpus: starting
/// a run there (with `--overwrite`, which empties it first) would destroy them.
fn refuse_overlapping_out(args: &Args) -> anyhow::Result<()> {
    let assets = args.assets.clone().unwrap_or_else(default_assets_dir);
    let mut inputs = vec![(assets.as_path(), "assets folder (--assets)")];
    if let Some(corpus) = &args.corpus {
        inputs.push((corpus.as_path(), "corpus folder (--corpus)"));
    }
    if let Some(init) = &args.init {
        inputs.push((init.as_path(), "checkpoint to start from (--init)"));
    }
    crate::refuse_overlap("--out", &args.out, &inputs)
}

/// Runs `cargo xtask pretrain`.
pub fn run(args: Args) -> anyhow::Result<()> {
    keep_freed_memory();
    crate::alloc::cache_large_blocks();
    // Before anything is removed or written (an --overwrite of an earlier run included).
    if let Some(p) = args.mask_prob {
        MlmConfig::check_mask_prob(p).map_err(|why| crate::Usage(format!("--mask-prob {why}")))?;
    }
    let args_path = args.out.join(ARGS_FILE);
    let (args, resume) = if args.resume {
        let text = std::fs::read_to_string(&args_path).with_context(|| {
            format!(
                "--resume: cannot read {} (was a run started in this folder?)",
                args_path.display()
            )
        })?;
        let mut stored: Args = serde_json::from_str(&text)
            .with_context(|| format!("--resume: {} is malformed", args_path.display()))?;
        // Only where and how far to run may change on resume; the run's settings are stored.
        stored.device = args.device;
        stored.stop_at = args.stop_at;
        stored.quiet = args.quiet;
        refuse_overlapping_out(&stored)?;
        stored.export_batches = args.export_batches.clone();
        (stored, true)
    } else {
        // Before the old run folder is removed: it must not hold (or be held by) an input.
        refuse_overlapping_out(&args)?;
        if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
            if !args.overwrite {
                bail!(
                    "{} exists and is not empty (use --resume to continue it, or --overwrite)",
                    args.out.display()
                );
            }
            std::fs::remove_dir_all(&args.out)
                .with_context(|| format!("removing {}", args.out.display()))?;
        }
        let mut args = args;
        if let Some(path) = &args.schedule {
            // The schedule's seed is the run's seed (data order and a fresh head too), and its
            // step count the run's, so the stored arguments say what ran.
            let sched = TrainSchedule::read(path)?;
            args.seed = sched.seed;
            args.steps = sched.total_steps;
        }
        (args, false)
    };
    let dev = device(args.device)?;
    let assets = args.assets.clone().unwrap_or_else(default_assets_dir);
    let ckpt_dir = args.out.join(bert2bert_train::trainer::CHECKPOINT_DIR);

    // The model, the family, and the folder whose tokenizer (and other) files travel with it.
    let (start, family, vocab_size) = if resume {
        // The checkpoint says which family and vocabulary the data must have. Resuming rewrites
        // only what the checkpoint implies (its carried files, metrics logged after it), so a
        // data error below loses nothing.
        let t = Trainer::resume(&args.out, None, dev.clone())
            .with_context(|| format!("resuming {}", args.out.display()))?;
        let (family, vocab) = (t.params().family(), t.params().vocab_size());
        (Start::Resume(t), family, vocab)
    } else if let Some(init) = &args.init {
        if let Some(kind) = crate::grow_llama::llama_kind(init) {
            return Err(crate::Usage(format!(
                "--init {} is a {} (Llama-family) checkpoint: the candle trainer here pre-trains \
                 BERT and GPT-2 only; train Llama-family models with the PyTorch package of the \
                 distributed-training work, bert2bert-torch (python/, see docs/distributed.md), \
                 which loads the grown folder with transformers",
                init.display(),
                kind.name()
            ))
            .into());
        }
        let md =
            read_model_dir(init).with_context(|| format!("reading --init {}", init.display()))?;
        let family = md.model.family();
        if let Some(arch) = args.arch
            && arch.family() != family
        {
            return Err(crate::Usage(format!(
                "--arch {} contradicts --init {}, a {} checkpoint",
                arch.family().name(),
                init.display(),
                family.name()
            ))
            .into());
        }
        let params: ModelParams = match &md.model {
            bert2bert_checkpoint::Model::Bert(bert) => {
                Params::with_fresh_head(bert, args.seed, &dev)?.into()
            }
            bert2bert_checkpoint::Model::Gpt2(gpt2) => Gpt2Params::from_gpt2(gpt2, &dev)?.into(),
        };
        if params.max_positions() < args.seq_len {
            bail!(
                "--seq-len {} exceeds the model's {} positions ({})",
                args.seq_len,
                params.max_positions(),
                init.display()
            );
        }
        let carry = if md
            .other_files
            .iter()
            .any(|p| p.as_os_str() == "tokenizer.json")
        {
            // The run writes its own schedule; the one beside --init does not travel on.
            CarryFiles {
                dir: init.clone(),
                files: md
                    .other_files
                    .iter()
                    .filter(|p| p.as_os_str() != SCHEDULE_FILE)
                    .cloned()
                    .collect(),
            }
        } else {
            tokenizer_files(&default_tokenizer_dir(&assets, family))?
        };
        let vocab = params.vocab_size();
        (Start::Fresh(params, carry), family, vocab)
    } else {
        let arch = args.arch.unwrap_or(Arch::Bert);
        let family = arch.family();
        let tok_dir = args
            .tokenizer
            .clone()
            .unwrap_or_else(|| default_tokenizer_dir(&assets, family));
        let tokenizer = load_tokenizer(&tok_dir.join("tokenizer.json"))?;
        let vocab = tokenizer.get_vocab_size(true);
        if !args.hidden.is_multiple_of(args.heads) {
            bail!(
                "--hidden {} is not divisible by --heads {}",
                args.hidden,
                args.heads
            );
        }
        let shape = ModelShape {
            layers: args.layers,
            hidden: args.hidden,
            heads: args.heads,
            ffn: args.ffn,
        };
        let params = FreshConfig::new(arch, vocab, args.seq_len, shape).params(args.seed, &dev)?;
        (
            Start::Fresh(params, tokenizer_files(&tok_dir)?),
            family,
            vocab,
        )
    };

    if args.mask_prob.is_some() && family == Family::Gpt2 {
        return Err(crate::Usage(
            "--mask-prob is for masked-LM (BERT) runs; a GPT-2 run predicts every next token"
                .into(),
        )
        .into());
    }
    // The data first: a tokenizer that does not fit the model fails before anything is written.
    let tok_dir = if resume {
        ckpt_dir.clone()
    } else if let Some(init) = args
        .init
        .as_ref()
        .filter(|i| i.join("tokenizer.json").is_file())
    {
        init.clone()
    } else {
        args.tokenizer
            .clone()
            .unwrap_or_else(|| default_tokenizer_dir(&assets, family))
    };
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| assets.join(DEFAULT_CORPUS));
    let mut data = load_data(
        family,
        &corpus,
        &tok_dir,
        vocab_size,
        args.batch_size,
        args.seq_len,
        args.seed,
        args.eval_sequences,
        args.mask_prob.unwrap_or(MlmConfig::BERT_MASK_PROB),
    )?;
    let mut trainer = match start {
        Start::Resume(t) => t,
        Start::Fresh(params, carry) => {
            let cfg = match &args.schedule {
                Some(path) => {
                    let sched = TrainSchedule::read(path)?;
                    sched.check(&params, path)?;
                    sched.train_config(args.eval_every, args.log_every, args.checkpoint_every)
                }
                None => args.train_config(params.layers())?,
            };
            let sched = TrainSchedule::for_params(&params, &cfg)?;
            std::fs::create_dir_all(&args.out)?;
            std::fs::write(&args_path, serde_json::to_string_pretty(&args)? + "\n")
                .with_context(|| format!("writing {}", args_path.display()))?;
            sched.write(&args.out.join(SCHEDULE_FILE))?;
            Trainer::new(cfg, params, dev.clone(), &args.out, carry)?
        }
    };
    data.batcher.skip(trainer.step())?;
    let first_step = trainer.step();
    let mut recording = None;
    let mut reports = Vec::new();
    tracing::info!(
        family = family.name(),
        steps_per_epoch = data.steps_per_epoch,
        "data ready"
    );

    let until = args.stop_at.unwrap_or(usize::MAX);
    let total = trainer.config().steps;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.step() as u64);
    let mut last_eval = None;
    let mut smooth: Option<f64> = None;
    let source: &mut dyn BatchSource = match &args.export_batches {
        Some(_) => recording.insert(Recording::new(data.batcher.as_mut())),
        None => data.batcher.as_mut(),
    };
    trainer.run(source, &data.eval, until, &mut |r| {
        reports.push(*r);
        if r.eval_loss.is_some() {
            last_eval = r.eval_loss;
        }
        let s = smooth.map_or(r.loss, |s| 0.95 * s + 0.05 * r.loss);
        smooth = Some(s);
        bar.set_position(r.step as u64);
        bar.set_message(format!(
            "stage {} loss {:.3} eval {} {:.0} tok/s",
            r.stage,
            s,
            last_eval.map_or("-".into(), |e| format!("{e:.3}")),
            r.tokens_per_s
        ));
    })?;
    bar.finish();
    if let (Some(path), Some(rec)) = (&args.export_batches, recording) {
        write_batches(path, family.name(), first_step, &rec.batches, &reports)
            .with_context(|| format!("--export-batches {}", path.display()))?;
        eprintln!(
            "exported {} batches to {}",
            rec.batches.len(),
            path.display()
        );
    }
    let out = &args.out;
    if trainer.step() == total {
        eprintln!(
            "done: {} steps; model in {}, metrics in {}",
            total,
            out.join(MODEL_DIR).display(),
            out.join(METRICS_FILE).display()
        );
    } else {
        eprintln!(
            "stopped at step {} of {}; continue with `cargo xtask pretrain --out {} --resume`",
            trainer.step(),
            total,
            out.display()
        );
    }
    Ok(())
}

/// How a run begins: continuing a checkpoint, or fresh weights and the files that travel with them.
// One value per run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Start {
    Resume(Trainer),
    Fresh(ModelParams, CarryFiles),
}

fn tokenizer_files(dir: &Path) -> anyhow::Result<CarryFiles> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = PathBuf::from(e?.file_name());
        if is_tokenizer_file(&name) {
            files.push(name);
        }
    }
    files.sort();
    Ok(CarryFiles {
        dir: dir.to_owned(),
        files,
    })
}
