//! `cargo xtask pretrain`: pre-training of a fresh or existing (e.g. grown) model on the bundled
//! corpus, optionally in two stages, with exact resume: masked-LM for BERT, next-token for
//! GPT-2 (the family comes from `--init`'s config.json, or `--arch` for a fresh model).

use anyhow::{Context, bail};
use bert2bert_checkpoint::{BertConfig, Family, Gpt2Config, read_model_dir};
use bert2bert_train::bert::Params;
use bert2bert_train::data::causal::{
    CausalBatcher, CausalConfig, END_OF_TEXT_ID, causal_eval_batches, load_causal_split,
};
use bert2bert_train::data::{
    MlmBatcher, MlmConfig, SpecialIds, Split, default_assets_dir, eval_batches, load_corpus,
    load_tokenizer,
};
use bert2bert_train::gpt2::Gpt2Params;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{
    Batch, BatchSource, CarryFiles, METRICS_FILE, MODEL_DIR, ModelParams, TrainConfig, Trainer,
    TwoStage,
};
use bert2bert_train::export::{Recording, write_batches};
use bert2bert_train::schedule::{SCHEDULE_FILE, TrainSchedule};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file in the output folder that records the arguments of the run (read by `--resume`).
pub const ARGS_FILE: &str = "pretrain_args.json";

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum DeviceKind {
    /// The CPU (f32).
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// Model family of a fresh model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// BERT (`BertForMaskedLM`), masked-LM objective, WordPiece tokenizer.
    #[default]
    Bert,
    /// GPT-2 (`GPT2LMHeadModel`), next-token objective, byte-level BPE tokenizer.
    Gpt2,
}

impl Arch {
    /// The training objective, as in tables and plots.
    pub fn objective(self) -> &'static str {
        match self {
            Arch::Bert => "MLM",
            Arch::Gpt2 => "next-token",
        }
    }
}

impl Arch {
    /// The checkpoint family.
    pub fn family(self) -> Family {
        match self {
            Arch::Bert => Family::Bert,
            Arch::Gpt2 => Family::Gpt2,
        }
    }
}

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
    pub fn train_config(&self, eval_every: usize, log_every: usize, checkpoint_every: usize) -> TrainConfig {
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

/// Opens the requested device.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0)
            .context("cannot open CUDA device 0 (build with `--features cuda`, see docs/gpu.md)"),
    }
}

/// The training and held-out data for a run.
pub struct Data {
    /// Training batches (seeded, resumable).
    pub batcher: Box<dyn BatchSource>,
    /// The fixed held-out batches.
    pub eval: Vec<Batch>,
    /// Optimizer steps per pass over the training split.
    pub steps_per_epoch: f64,
}

/// The default tokenizer folder of a family under `assets`.
pub fn default_tokenizer_dir(assets: &Path, family: Family) -> PathBuf {
    match family {
        Family::Bert => assets.join("tokenizer"),
        Family::Gpt2 => assets.join("tokenizer-gpt2"),
    }
}

/// The bundled corpus tokenized for one family: the training and validation streams.
pub struct Streams {
    family: Family,
    tokenizer: PathBuf,
    vocab: usize,
    train: Arc<[u32]>,
    valid: Vec<u32>,
    special: Option<SpecialIds>,
}

impl Streams {
    /// Tokenizes the corpus under `assets` with the tokenizer in `tokenizer_dir`.
    pub fn load(family: Family, assets: &Path, tokenizer_dir: &Path) -> anyhow::Result<Self> {
        let tok_path = tokenizer_dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&tok_path)?;
        let vocab = tokenizer.get_vocab_size(true);
        Ok(match family {
            Family::Bert => {
                let special = SpecialIds::from_tokenizer(&tokenizer, &tok_path)?;
                let corpus = load_corpus(assets, &tokenizer)?;
                Self {
                    family,
                    tokenizer: tok_path,
                    vocab,
                    train: corpus.train.into(),
                    valid: corpus.valid,
                    special: Some(special),
                }
            }
            Family::Gpt2 => Self {
                family,
                tokenizer: tok_path,
                vocab,
                train: load_causal_split(assets, &tokenizer, Split::Train)?.into(),
                valid: load_causal_split(assets, &tokenizer, Split::Valid)?,
                special: None,
            },
        })
    }

    /// Size of the tokenizer's vocabulary.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Fails when the tokenizer has more tokens than `vocab_size`, a model's vocabulary.
    pub fn check_fits(&self, vocab_size: usize) -> anyhow::Result<()> {
        if self.vocab > vocab_size {
            bail!(
                "{}: the tokenizer has {} tokens, the model's vocabulary only {vocab_size}",
                self.tokenizer.display(),
                self.vocab
            );
        }
        Ok(())
    }

    fn mlm(&self, seq_len: usize, batch_size: usize, vocab: usize, seed: u64) -> MlmConfig {
        MlmConfig {
            special: self.special.expect("BERT streams carry special ids"),
            ..MlmConfig::new(seq_len, batch_size, vocab, seed)
        }
    }

    /// Seeded training batches of the family's objective, for a model of `vocab` tokens.
    pub fn batcher(
        &self,
        vocab: usize,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> anyhow::Result<(Box<dyn BatchSource>, f64)> {
        Ok(match self.family {
            Family::Bert => {
                let b = MlmBatcher::new(
                    self.train.clone(),
                    self.mlm(seq_len, batch_size, vocab, seed),
                )?;
                let spe = b.steps_per_epoch();
                (Box::new(b), spe)
            }
            Family::Gpt2 => {
                let cfg = CausalConfig {
                    seq_len,
                    batch_size,
                    vocab_size: vocab,
                    seed,
                };
                let b = CausalBatcher::new(self.train.clone(), cfg)?;
                let spe = b.steps_per_epoch();
                (Box::new(b), spe)
            }
        })
    }

    /// The fixed held-out set: `n` validation sequences, the same whatever the run's seed.
    pub fn eval(&self, vocab: usize, seq_len: usize, n: usize) -> anyhow::Result<Vec<Batch>> {
        Ok(match self.family {
            Family::Bert => eval_batches(&self.valid, &self.mlm(seq_len, 32, vocab, 0), n)?
                .into_iter()
                .map(Batch::Mlm)
                .collect(),
            Family::Gpt2 => {
                let cfg = CausalConfig {
                    seq_len,
                    batch_size: 32,
                    vocab_size: vocab,
                    seed: 0,
                };
                causal_eval_batches(&self.valid, &cfg, n)?
                    .into_iter()
                    .map(Batch::Causal)
                    .collect()
            }
        })
    }
}

/// Tokenizes the bundled corpus with the tokenizer in `tokenizer_dir` and builds the batches of
/// `family`'s objective: masked-LM for BERT, next-token for GPT-2.
#[allow(clippy::too_many_arguments)]
pub fn load_data(
    family: Family,
    assets: &Path,
    tokenizer_dir: &Path,
    vocab_size: usize,
    batch_size: usize,
    seq_len: usize,
    seed: u64,
    eval_sequences: usize,
) -> anyhow::Result<Data> {
    let streams = Streams::load(family, assets, tokenizer_dir)?;
    streams.check_fits(vocab_size)?;
    let (batcher, steps_per_epoch) = streams.batcher(vocab_size, batch_size, seq_len, seed)?;
    Ok(Data {
        batcher,
        eval: streams.eval(vocab_size, seq_len, eval_sequences)?,
        steps_per_epoch,
    })
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

/// Runs `cargo xtask pretrain`.
pub fn run(args: Args) -> anyhow::Result<()> {
    keep_freed_memory();
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
        stored.export_batches = args.export_batches.clone();
        (stored, true)
    } else {
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
        let family = args.arch.unwrap_or(Arch::Bert).family();
        let tok_dir = default_tokenizer_dir(&assets, family);
        let tokenizer = load_tokenizer(&tok_dir.join("tokenizer.json"))?;
        let vocab = tokenizer.get_vocab_size(true);
        if !args.hidden.is_multiple_of(args.heads) {
            bail!(
                "--hidden {} is not divisible by --heads {}",
                args.hidden,
                args.heads
            );
        }
        let params: ModelParams = match family {
            Family::Bert => {
                let mut cfg = BertConfig::new(
                    vocab,
                    args.hidden,
                    args.layers,
                    args.heads,
                    args.ffn,
                    args.seq_len,
                );
                cfg.raw.insert("pad_token_id".into(), 0.into());
                Params::fresh(&cfg, args.seed, &dev)?.into()
            }
            Family::Gpt2 => {
                let mut cfg =
                    Gpt2Config::new(vocab, args.hidden, args.layers, args.heads, args.seq_len);
                if args.ffn != 4 * args.hidden {
                    cfg.n_inner = Some(args.ffn);
                }
                // The bundled BPE tokenizer's one special token, <|endoftext|>, is id 0.
                for k in ["bos_token_id", "eos_token_id"] {
                    cfg.raw.insert(k.into(), END_OF_TEXT_ID.into());
                }
                Gpt2Params::fresh(&cfg, args.seed, &dev)?.into()
            }
        };
        (
            Start::Fresh(params, tokenizer_files(&tok_dir)?),
            family,
            vocab,
        )
    };

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
        default_tokenizer_dir(&assets, family)
    };
    let mut data = load_data(
        family,
        &assets,
        &tok_dir,
        vocab_size,
        args.batch_size,
        args.seq_len,
        args.seed,
        args.eval_sequences,
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
        eprintln!("exported {} batches to {}", rec.batches.len(), path.display());
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
