//! `cargo xtask experiment`: the paper's saving table (spec section 9) in miniature.
//!
//! Every method trains the same target shape on the same data, optimizer, batch, sequence length
//! and learning-rate schedule; the held-out loss (masked-LM for BERT settings, next-token for
//! GPT-2 settings) is logged against training FLOPs, and the
//! saving is read off where each curve crosses the scratch model's final loss. Runs live in
//! `<out>/runs/<name>/` (ordinary `pretrain`-style output folders), so an interrupted experiment
//! resumes every run from its last checkpoint and skips the finished ones. See
//! docs/experiment.md for the design and docs/results.md for what the published run showed.

mod plot;
mod summary;

use crate::pretrain::{Arch, DeviceKind, Streams, default_tokenizer_dir, device};
use crate::workspace_root;
use anyhow::{Context, bail};
use bert2bert_checkpoint::{Bert, BertConfig, Gpt2Config, Model, read_model_dir};
use bert2bert_expand::{GrowOptions, MapKind, Method as GrowMethod, Target, baselines, grow};
use bert2bert_train::bert::Params;
use bert2bert_train::data::causal::END_OF_TEXT_ID;
use bert2bert_train::data::default_assets_dir;
use bert2bert_train::gpt2::Gpt2Params;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{
    Batch, BatchSource, CHECKPOINT_DIR, CarryFiles, METRICS_FILE, MODEL_DIR, Metrics, ModelParams,
    STATE_FILE, TrainConfig, Trainer, TrainerState, TwoStage, read_metrics,
};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The plan of an experiment, stored as `<out>/experiment.json` (a re-run must match it).
pub const PLAN_FILE: &str = "experiment.json";
/// The summary of an experiment.
pub const SUMMARY_FILE: &str = "summary.json";
/// The Markdown table of an experiment.
pub const TABLE_FILE: &str = "table.md";

/// A named size of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Tiny shapes and a handful of steps: checks the machinery end to end (about a minute).
    Smoke,
    /// The published CPU run: the bundled 4 x 128 model grown to 4 x 192 (about 3 hours, 2 cores).
    Mini,
    /// A bigger run for one CUDA GPU (`--device cuda`, a build with `--features cuda`).
    Gpu,
    /// The `mini` budget for GPT-2: the bundled 4 x 128 GPT-2 grown to 4 x 192.
    Gpt2Mini,
}

impl Preset {
    /// The preset's name (also its results folder).
    pub fn name(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Mini => "mini",
            Self::Gpu => "gpu",
            Self::Gpt2Mini => "gpt2-mini",
        }
    }
}

/// A training method of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The target shape from random initialisation.
    Scratch,
    /// The source in the top-left corner, the rest random.
    DirectCopy,
    /// Progressive stacking: a half-depth model of the target width, stacked, trained on.
    StackBert,
    /// Function-preserving initialisation.
    Fpi,
    /// FPI with the exact map (GPT-2: copies + mean-units, function-preserving at any ratio).
    Exact,
    /// Advanced knowledge initialisation.
    Aki,
    /// AKI plus two-stage pre-training.
    Bert2Bert,
}

impl Method {
    /// The method's name in file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scratch => "scratch",
            Self::DirectCopy => "directcopy",
            Self::StackBert => "stackbert",
            Self::Fpi => "fpi",
            Self::Exact => "exact",
            Self::Aki => "aki",
            Self::Bert2Bert => "bert2bert",
        }
    }

    /// The method's name in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Self::Scratch => "Scratch",
            Self::DirectCopy => "DirectCopy",
            Self::StackBert => "StackBERT",
            Self::Fpi => "FPI",
            Self::Exact => "FPI, exact map",
            Self::Aki => "AKI",
            Self::Bert2Bert => "bert2BERT (AKI + two-stage)",
        }
    }

    /// Whether the method starts from the source model (its saving can include the source's cost).
    pub fn uses_source(self) -> bool {
        !matches!(self, Self::Scratch | Self::StackBert)
    }
}

/// A model shape (BERT or GPT-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Encoder layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN size.
    pub ffn: usize,
}

impl Shape {
    /// A shape with heads of `head_dim` units (`hidden / head_dim` heads) and FFN 4 x hidden.
    pub const fn new(layers: usize, hidden: usize, head_dim: usize) -> Self {
        Self {
            layers,
            hidden,
            heads: hidden / head_dim,
            ffn: 4 * hidden,
        }
    }

    /// The shape of a config.
    pub fn of(c: &BertConfig) -> Self {
        Self {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            ffn: c.intermediate_size,
        }
    }

    fn target(self) -> Target {
        Target {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            intermediate: self.ffn,
        }
    }

    /// A fresh model of this shape with `base`'s other settings, seeded.
    fn fresh(self, base: &BaseConfig, seed: u64, dev: &Device) -> anyhow::Result<ModelParams> {
        Ok(match base {
            BaseConfig::Bert(b) => {
                let c = b.with_shape(self.layers, self.hidden, self.heads, self.ffn);
                Params::fresh(&c, seed, dev)?.into()
            }
            BaseConfig::Gpt2(g) => {
                let c = g.with_shape(self.layers, self.hidden, self.heads, self.ffn);
                Gpt2Params::fresh(&c, seed, dev)?.into()
            }
        })
    }

    /// The shape of a model.
    pub fn of_model(m: &Model) -> Self {
        match m {
            Model::Bert(b) => Self::of(&b.config),
            Model::Gpt2(g) => Self {
                layers: g.config.n_layer,
                hidden: g.config.n_embd,
                heads: g.config.n_head,
                ffn: g.config.inner_dim(),
            },
        }
    }

    /// `LxD`, as in run names.
    pub fn short(self) -> String {
        format!("{}x{}", self.layers, self.hidden)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} x {} ({} heads, FFN {})",
            self.layers, self.hidden, self.heads, self.ffn
        )
    }
}

/// Where a setting's source model comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SourceSpec {
    /// A pretrained checkpoint folder (relative to the workspace root); its pre-training FLOPs
    /// are read from the `metrics.jsonl` next to its weights when it has one.
    Folder {
        /// The folder.
        path: PathBuf,
    },
    /// Pre-trained inside the experiment (a run like any other, counted as the source's cost).
    Pretrain {
        /// Its shape.
        shape: Shape,
        /// Optimizer steps.
        steps: usize,
    },
}

/// One growth setting: a source, a target, the methods compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingPlan {
    /// Short name (file names).
    pub name: String,
    /// Model family (and with it objective, tokenizer and data) of every run in the setting.
    #[serde(default)]
    pub arch: Arch,
    /// Title in tables and plots.
    pub title: String,
    /// The source.
    pub source: SourceSpec,
    /// The target shape.
    pub target: Shape,
    /// Methods, in table order (scratch first).
    pub methods: Vec<Method>,
    /// Seeds of every run in this setting.
    pub seeds: Vec<u64>,
}

/// The methods of a GPT-2 setting: DirectCopy and StackBERT are BERT baselines, and FPI is run
/// both with the paper's map (not exact at a 1.5x ratio for a pre-LN model) and the exact one.
const GPT2_METHODS: [Method; 5] = [
    Method::Scratch,
    Method::Fpi,
    Method::Exact,
    Method::Aki,
    Method::Bert2Bert,
];

/// Everything that determines an experiment's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The preset it came from.
    pub preset: Preset,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Optimizer steps of every target run.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup, as a fraction of a run's steps.
    pub warmup_frac: f64,
    /// Held-out evaluation every N steps.
    pub eval_every: usize,
    /// Held-out sequences (fixed masks, the same for every run).
    pub eval_sequences: usize,
    /// A checkpoint every N steps.
    pub checkpoint_every: usize,
    /// bert2BERT: layers trained per stage-1 sub-model (l_b).
    pub lb: usize,
    /// bert2BERT: stage-1 steps.
    pub stage1_steps: usize,
    /// StackBERT: steps trained at half depth before stacking.
    pub stack_steps: usize,
    /// Seed of sources pre-trained inside the experiment.
    pub source_seed: u64,
    /// The settings.
    pub settings: Vec<SettingPlan>,
}

impl Plan {
    /// The plan of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let all = vec![
            Method::Scratch,
            Method::DirectCopy,
            Method::StackBert,
            Method::Fpi,
            Method::Aki,
            Method::Bert2Bert,
        ];
        match preset {
            Preset::Smoke => {
                let src = SourceSpec::Pretrain {
                    shape: Shape::new(2, 32, 16),
                    steps: 40,
                };
                let steps = 24;
                Self {
                    preset,
                    batch_size: 8,
                    seq_len: 32,
                    steps,
                    lr: 1e-3,
                    warmup_frac: 0.1,
                    eval_every: 4,
                    eval_sequences: 16,
                    checkpoint_every: 8,
                    lb: 1,
                    stage1_steps: steps / 8,
                    stack_steps: steps / 4,
                    source_seed: 1000,
                    settings: vec![
                        SettingPlan {
                            name: "width".into(),
                            arch: Arch::Bert,
                            title: "width 2 x 32 -> 2 x 48".into(),
                            source: src.clone(),
                            target: Shape::new(2, 48, 16),
                            methods: all,
                            seeds: vec![0, 1],
                        },
                        SettingPlan {
                            name: "depth".into(),
                            arch: Arch::Bert,
                            title: "width and depth 2 x 32 -> 4 x 48".into(),
                            source: src,
                            target: Shape::new(4, 48, 16),
                            methods: vec![Method::Scratch, Method::Fpi, Method::Bert2Bert],
                            seeds: vec![0],
                        },
                        SettingPlan {
                            name: "gpt2".into(),
                            arch: Arch::Gpt2,
                            title: "GPT-2 width 2 x 32 -> 2 x 48".into(),
                            source: SourceSpec::Pretrain {
                                shape: Shape::new(2, 32, 16),
                                steps: 40,
                            },
                            target: Shape::new(2, 48, 16),
                            methods: GPT2_METHODS.to_vec(),
                            seeds: vec![0],
                        },
                    ],
                }
            }
            Preset::Gpt2Mini => {
                // mini's budget and target width for the decoder: the bundled 4 x 128 GPT-2
                // (trained like the bundled BERT) grown 1.5x wider, the paper's GPT setting.
                let mut plan = Self::preset(Preset::Mini);
                plan.preset = preset;
                plan.settings = vec![SettingPlan {
                    name: "gpt2".into(),
                    arch: Arch::Gpt2,
                    title: "GPT-2 width 4 x 128 -> 4 x 192".into(),
                    source: SourceSpec::Folder {
                        path: "assets/bundled-gpt2".into(),
                    },
                    target: Shape::new(4, 192, 64),
                    methods: GPT2_METHODS.to_vec(),
                    seeds: vec![0, 1],
                }];
                plan
            }
            Preset::Mini => {
                // Sized by measured step times (docs/experiment.md, "Sizing `mini`"): about 3
                // hours on the project's 2-core machine for every run below.
                let steps = 700;
                Self {
                    preset,
                    batch_size: 32,
                    seq_len: 64,
                    steps,
                    lr: 1e-3,
                    warmup_frac: 0.05,
                    eval_every: 25,
                    eval_sequences: 128,
                    checkpoint_every: 100,
                    lb: 1,
                    stage1_steps: steps / 8,
                    stack_steps: steps / 4,
                    source_seed: 1000,
                    settings: vec![
                        SettingPlan {
                            name: "width".into(),
                            arch: Arch::Bert,
                            title: "width 4 x 128 -> 4 x 192".into(),
                            source: SourceSpec::Folder {
                                path: "assets/bundled-bert".into(),
                            },
                            target: Shape::new(4, 192, 64),
                            methods: all,
                            seeds: vec![0, 1],
                        },
                        SettingPlan {
                            name: "depth".into(),
                            arch: Arch::Bert,
                            title: "width and depth 2 x 128 -> 4 x 192".into(),
                            source: SourceSpec::Pretrain {
                                shape: Shape::new(2, 128, 64),
                                steps: 3000,
                            },
                            target: Shape::new(4, 192, 64),
                            methods: vec![Method::Scratch, Method::Fpi, Method::Bert2Bert],
                            seeds: vec![0],
                        },
                    ],
                }
            }
            Preset::Gpu => {
                // Sized by measured H100 step times (docs/experiment.md, "Sizing `gpu`"): about
                // 3.5 hours. The sources get the targets' budget, the paper's regime.
                let steps = 2000;
                Self {
                    preset,
                    batch_size: 64,
                    seq_len: 128,
                    steps,
                    lr: 5e-4,
                    warmup_frac: 0.05,
                    eval_every: 100,
                    eval_sequences: 512,
                    checkpoint_every: 500,
                    lb: 2,
                    stage1_steps: steps / 8,
                    stack_steps: steps / 4,
                    source_seed: 1000,
                    settings: vec![
                        SettingPlan {
                            name: "width".into(),
                            arch: Arch::Bert,
                            title: "width 6 x 256 -> 6 x 384".into(),
                            source: SourceSpec::Pretrain {
                                shape: Shape::new(6, 256, 64),
                                steps,
                            },
                            target: Shape::new(6, 384, 64),
                            methods: all.clone(),
                            seeds: vec![0, 1],
                        },
                        SettingPlan {
                            name: "depth".into(),
                            arch: Arch::Bert,
                            title: "width and depth 3 x 256 -> 6 x 384".into(),
                            source: SourceSpec::Pretrain {
                                shape: Shape::new(3, 256, 64),
                                steps,
                            },
                            target: Shape::new(6, 384, 64),
                            methods: vec![
                                Method::Scratch,
                                Method::DirectCopy,
                                Method::Fpi,
                                Method::Aki,
                                Method::Bert2Bert,
                            ],
                            seeds: vec![0],
                        },
                    ],
                }
            }
        }
    }

    /// Sets the target runs' steps, with stage 1 at 1/8 and StackBERT's shallow phase at 1/4.
    pub fn with_steps(&mut self, steps: usize) {
        self.steps = steps;
        self.stage1_steps = steps / 8;
        self.stack_steps = steps / 4;
    }

    fn warmup(&self, steps: usize) -> usize {
        ((steps as f64 * self.warmup_frac).round() as usize).max(1)
    }

    /// The training configuration of a run of `steps` steps.
    pub fn train_config(&self, steps: usize, seed: u64, two_stage: bool) -> TrainConfig {
        TrainConfig {
            steps,
            schedule: Schedule {
                peak: self.lr,
                warmup: self.warmup(steps),
                total: steps,
                decay: Decay::Linear,
            },
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            seed,
            eval_every: self.eval_every,
            log_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            two_stage: two_stage.then_some(TwoStage {
                lb: self.lb,
                stage1_steps: self.stage1_steps,
            }),
        }
    }

    /// Checks the plan's numbers.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.stack_steps == 0
            || self.stack_steps >= self.steps
            || self.stage1_steps >= self.steps
        {
            bail!(
                "the plan needs 0 < stack steps ({}) and stage-1 steps ({}) < steps ({})",
                self.stack_steps,
                self.stage1_steps,
                self.steps
            );
        }
        for s in &self.settings {
            if s.methods.first() != Some(&Method::Scratch) {
                bail!("setting {}: the first method must be scratch", s.name);
            }
            if s.seeds.is_empty() {
                bail!("setting {}: no seeds", s.name);
            }
            let bert_only = [Method::DirectCopy, Method::StackBert];
            if s.arch == Arch::Gpt2 && s.methods.iter().any(|m| bert_only.contains(m)) {
                bail!(
                    "setting {}: DirectCopy and StackBERT are BERT baselines, not run for GPT-2",
                    s.name
                );
            }
            if s.arch == Arch::Bert && s.methods.contains(&Method::Exact) {
                bail!(
                    "setting {}: the exact map is for pre-LN models (GPT-2), not BERT",
                    s.name
                );
            }
            if s.methods.contains(&Method::StackBert) && s.target.layers < 2 {
                bail!(
                    "setting {}: StackBERT needs at least 2 target layers",
                    s.name
                );
            }
        }
        Ok(())
    }
}

/// Arguments of `cargo xtask experiment`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Size of the experiment.
    #[arg(long, value_enum, default_value_t = Preset::Smoke)]
    pub preset: Preset,
    /// Output folder (default: results/<preset> in the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seeds of the main (width) setting, comma-separated (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Steps of every target run (default: the preset's); stage 1 stays 1/8 of them and
    /// StackBERT's shallow phase 1/4. A bigger budget needs its own --out.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// The assets folder (corpus/ and tokenizer/).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Do not train: rebuild summary.json, table.md and the plots from the runs there are.
    #[arg(long)]
    pub report: bool,
    /// Also write the generated part of this Markdown file (docs/results.md) from the summary.
    #[arg(long)]
    pub doc: Option<PathBuf>,
    /// Check that the generated part of this Markdown file matches the summary; train nothing.
    #[arg(long)]
    pub check_doc: Option<PathBuf>,
    /// Stop every unfinished target run at this step (after checkpointing; sources pre-trained
    /// here still finish); a later call resumes.
    #[arg(long)]
    pub stop_at: Option<usize>,
    /// Start over: delete the runs of an earlier experiment in the output folder.
    #[arg(long)]
    pub restart: bool,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The data every run of one family shares: the tokenized corpus (each run draws its own
/// seeded order from it) and the fixed held-out set.
struct FamilyData {
    arch: Arch,
    streams: Streams,
    tokenizer_dir: PathBuf,
    vocab: usize,
    eval: Vec<Batch>,
}

impl FamilyData {
    fn load(assets: &Path, plan: &Plan, arch: Arch) -> anyhow::Result<Self> {
        let tokenizer_dir = default_tokenizer_dir(assets, arch.family());
        let streams = Streams::load(arch.family(), assets, &tokenizer_dir)?;
        let vocab = streams.vocab();
        // Fixed evaluation set (seed 0 for every run), as in `cargo xtask pretrain`.
        let eval = streams.eval(vocab, plan.seq_len, plan.eval_sequences)?;
        Ok(Self {
            arch,
            streams,
            tokenizer_dir,
            vocab,
            eval,
        })
    }

    /// Training batches of `plan`'s size for a model of `vocab` tokens, seeded.
    fn batcher(
        &self,
        plan: &Plan,
        vocab: usize,
        seed: u64,
    ) -> anyhow::Result<Box<dyn BatchSource>> {
        Ok(self
            .streams
            .batcher(vocab, plan.batch_size, plan.seq_len, seed)?
            .0)
    }

    fn carry(&self) -> anyhow::Result<CarryFiles> {
        let mut files = Vec::new();
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
            "vocab.json",
            "merges.txt",
        ] {
            if self.tokenizer_dir.join(name).is_file() {
                files.push(PathBuf::from(name));
            }
        }
        Ok(CarryFiles {
            dir: self.tokenizer_dir.clone(),
            files,
        })
    }
}

/// `LxD` for BERT, `gpt2-LxD` for GPT-2: the model part of run names.
fn model_tag(arch: Arch, shape: Shape) -> String {
    match arch {
        Arch::Bert => shape.short(),
        Arch::Gpt2 => format!("gpt2-{}", shape.short()),
    }
}

/// The name of a run's folder under `<out>/runs/`.
pub fn run_name(setting: &SettingPlan, method: Method, seed: u64) -> String {
    match method {
        // Scratch and StackBERT do not depend on the source: settings with the same target share them.
        Method::Scratch | Method::StackBert => {
            format!(
                "{}-{}-s{seed}",
                method.name(),
                model_tag(setting.arch, setting.target)
            )
        }
        _ => format!("{}-{}-s{seed}", setting.name, method.name()),
    }
}

/// The name of the run that pre-trains a source inside the experiment.
pub fn source_run_name(arch: Arch, shape: Shape) -> String {
    format!("source-{}", model_tag(arch, shape))
}

/// Runs the training of one experiment.
struct Runner<'a> {
    plan: &'a Plan,
    data: &'a FamilyData,
    dev: Device,
    runs: PathBuf,
    stop_at: Option<usize>,
    quiet: bool,
}

/// Whether the run in `dir` has finished all `steps` (its final model is written).
fn finished(dir: &Path, steps: usize) -> bool {
    dir.join(MODEL_DIR).join("config.json").is_file()
        && read_state(dir).is_ok_and(|s| s.step >= steps)
}

fn read_state(dir: &Path) -> anyhow::Result<TrainerState> {
    let path = dir.join(CHECKPOINT_DIR).join(STATE_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_state(dir: &Path, state: &TrainerState) -> anyhow::Result<()> {
    let path = dir.join(CHECKPOINT_DIR).join(STATE_FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(state)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn load_bert(dir: &Path) -> anyhow::Result<Bert> {
    let md = read_model_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    md.model
        .as_bert()
        .cloned()
        .with_context(|| format!("{}: not a BERT checkpoint", dir.display()))
}

impl Runner<'_> {
    fn bar(&self, name: &str, total: usize, at: usize) -> ProgressBar {
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>28} {elapsed_precise} [{bar:25}] {pos}/{len} {msg} (eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
        bar.set_position(at as u64);
        bar
    }

    /// Trains `trainer` until `until` (or `--stop-at`), from the data position of its step.
    fn drive(&self, trainer: &mut Trainer, name: &str, until: usize) -> anyhow::Result<bool> {
        let stop = self.stop_at.map_or(until, |s| s.min(until));
        let cfg = trainer.config().clone();
        let vocab = trainer.params().vocab_size();
        let mut batcher = self.data.batcher(self.plan, vocab, cfg.seed)?;
        batcher.skip(trainer.step())?;
        let bar = self.bar(name, cfg.steps, trainer.step());
        let mut last_eval = None;
        trainer.run(batcher.as_mut(), &self.data.eval, stop, &mut |r| {
            if r.eval_loss.is_some() {
                last_eval = r.eval_loss;
            }
            bar.set_position(r.step as u64);
            bar.set_message(format!(
                "stage {} eval {} {:.0} tok/s",
                r.stage,
                last_eval.map_or("-".into(), |e| format!("{e:.3}")),
                r.tokens_per_s
            ));
        })?;
        bar.finish_and_clear();
        Ok(trainer.step() >= until)
    }

    /// Trains (or resumes, or skips) the run `name` until step `until` of `cfg.steps`; `init`
    /// builds the starting weights of a fresh run. Returns whether it reached `until`.
    fn train(
        &self,
        name: &str,
        cfg: &TrainConfig,
        until: usize,
        init: &dyn Fn() -> anyhow::Result<ModelParams>,
    ) -> anyhow::Result<bool> {
        let dir = self.runs.join(name);
        let mut trainer = if dir.join(CHECKPOINT_DIR).join(STATE_FILE).is_file() {
            let state = read_state(&dir)?;
            if state.step >= until && (until < cfg.steps || finished(&dir, cfg.steps)) {
                tracing::info!(run = name, "already done");
                return Ok(true);
            }
            Trainer::resume(&dir, Some(cfg), self.dev.clone()).with_context(|| {
                format!(
                    "resuming {} (use --restart if the experiment's settings changed)",
                    dir.display()
                )
            })?
        } else {
            if dir.exists() {
                // Started but never checkpointed: nothing to keep.
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            Trainer::new(
                cfg.clone(),
                init()?,
                self.dev.clone(),
                &dir,
                self.data.carry()?,
            )?
        };
        self.drive(&mut trainer, name, until)
    }

    /// StackBERT: `stack_steps` of a half-depth model of the target width, stacked to full
    /// depth, then the rest of the run on one continuous schedule (optimizer moments restart).
    fn train_stackbert(&self, name: &str, target: &BertConfig, seed: u64) -> anyhow::Result<bool> {
        let plan = self.plan;
        let dir = self.runs.join(name);
        let cfg = plan.train_config(plan.steps, seed, false);
        let phase2_started =
            read_state(&dir).is_ok_and(|s| s.step >= plan.stack_steps && s.step > 0);
        if !phase2_started {
            let half = target.with_shape(
                (target.num_hidden_layers / 2).max(1),
                target.hidden_size,
                target.num_attention_heads,
                target.intermediate_size,
            );
            let p1 = format!("{name}/phase1");
            // Phase 1 runs on the whole run's schedule and stops where stacking happens.
            let done = self.train(&p1, &cfg, plan.stack_steps, &|| {
                Ok(Params::fresh(&half, seed, &self.dev)?.into())
            })?;
            if !done {
                return Ok(false);
            }
            let p1_dir = self.runs.join(&p1);
            let shallow = load_bert(&p1_dir.join(CHECKPOINT_DIR))?;
            let p1_state = read_state(&p1_dir)?;
            let deep = baselines::stack(&shallow, target.num_hidden_layers)
                .map_err(crate::Usage::from_expand)?;
            // Phase 2 starts as a fresh trainer whose counters continue phase 1's: write its
            // first checkpoint, move the counters to the stacking step, and resume from it.
            for sub in [CHECKPOINT_DIR, MODEL_DIR, METRICS_FILE] {
                let p = dir.join(sub);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else if p.is_file() {
                    std::fs::remove_file(&p)?;
                }
            }
            let t = Trainer::new(
                cfg.clone(),
                Params::from_bert(&deep, &self.dev)?,
                self.dev.clone(),
                &dir,
                self.data.carry()?,
            )?;
            let stacked_eval = t.eval_loss(&self.data.eval)?;
            t.save_checkpoint()?;
            drop(t);
            let mut metrics = read_metrics(&p1_dir.join(METRICS_FILE))?;
            metrics.retain(|m| m.step <= p1_state.step);
            metrics.push(Metrics {
                step: p1_state.step,
                tokens: p1_state.tokens,
                flops: p1_state.flops,
                train_loss: None,
                eval_loss: Some(stacked_eval),
                lr: cfg.schedule.lr(p1_state.step.saturating_sub(1)),
                stage: 2,
                wall_s: p1_state.wall_s,
            });
            let text: String = metrics
                .iter()
                .map(|m| serde_json::to_string(m).expect("serialisable") + "\n")
                .collect();
            std::fs::write(dir.join(METRICS_FILE), text)?;
            let mut state = read_state(&dir)?;
            state.step = p1_state.step;
            state.tokens = p1_state.tokens;
            state.flops = p1_state.flops;
            state.wall_s = p1_state.wall_s;
            state.pending_loss = (0.0, 0);
            write_state(&dir, &state)?;
        }
        self.train(name, &cfg, plan.steps, &|| {
            bail!("{}: phase 2 has no checkpoint to resume", dir.display())
        })
    }
}

/// A source model ready to grow, with its pre-training cost.
struct Source {
    model: Model,
    flops: Option<u64>,
    final_loss: Option<f64>,
    origin: String,
}

/// The fresh-model settings of a family: everything but the shape.
enum BaseConfig {
    Bert(BertConfig),
    Gpt2(Gpt2Config),
}

impl BaseConfig {
    fn new(arch: Arch, vocab: usize, seq_len: usize) -> Self {
        match arch {
            Arch::Bert => {
                let mut c = BertConfig::new(vocab, 32, 1, 1, 32, seq_len);
                c.raw.insert("pad_token_id".into(), 0.into());
                Self::Bert(c)
            }
            Arch::Gpt2 => {
                let mut c = Gpt2Config::new(vocab, 32, 1, 1, seq_len);
                for k in ["bos_token_id", "eos_token_id"] {
                    c.raw.insert(k.into(), END_OF_TEXT_ID.into());
                }
                Self::Gpt2(c)
            }
        }
    }
}

/// A model folder of family `arch`.
fn load_model(dir: &Path, arch: Arch) -> anyhow::Result<Model> {
    let md = read_model_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    if md.model.family() != arch.family() {
        bail!(
            "{}: a {} checkpoint, the setting trains {}",
            dir.display(),
            md.model.family().name(),
            arch.family().name()
        );
    }
    Ok(md.model)
}

/// Trainable parameters of a checkpoint: BERT gets a fresh MLM head if it has none.
fn params_of(model: &Model, seed: u64, dev: &Device) -> anyhow::Result<ModelParams> {
    Ok(match model {
        Model::Bert(b) => Params::with_fresh_head(b, seed, dev)?.into(),
        Model::Gpt2(g) => Gpt2Params::from_gpt2(g, dev)?.into(),
    })
}

fn source_of(
    spec: &SourceSpec,
    arch: Arch,
    runner: &Runner,
    root: &Path,
    base: &BaseConfig,
) -> anyhow::Result<Option<Source>> {
    match spec {
        SourceSpec::Folder { path } => {
            let dir = root.join(path);
            let model = load_model(&dir, arch).with_context(|| {
                format!(
                    "the source model {} is missing or unreadable (the bundled models: see \
                     assets/README.md)",
                    dir.display()
                )
            })?;
            let metrics_path = dir.join(METRICS_FILE);
            let metrics = read_metrics(&metrics_path).ok();
            if metrics.is_none() {
                tracing::warn!(
                    "{}: no metrics.jsonl; the source's pre-training FLOPs are unknown",
                    dir.display()
                );
            }
            let last = metrics.as_ref().and_then(|m| m.last().cloned());
            let final_loss = metrics
                .as_ref()
                .and_then(|m| m.iter().rev().find_map(|x| x.eval_loss));
            Ok(Some(Source {
                model,
                flops: last.map(|m| m.flops),
                final_loss,
                origin: path.display().to_string(),
            }))
        }
        SourceSpec::Pretrain { shape, steps } => {
            let name = source_run_name(arch, *shape);
            // `--stop-at` stops the target runs; a source trains to the end first.
            let runner = &Runner {
                stop_at: None,
                dev: runner.dev.clone(),
                runs: runner.runs.clone(),
                ..*runner
            };
            let cfg = runner
                .plan
                .train_config(*steps, runner.plan.source_seed, false);
            let done = runner.train(&name, &cfg, *steps, &|| {
                shape.fresh(base, runner.plan.source_seed, &runner.dev)
            })?;
            if !done {
                return Ok(None);
            }
            let dir = runner.runs.join(&name);
            let metrics = read_metrics(&dir.join(METRICS_FILE))?;
            Ok(Some(Source {
                model: load_model(&dir.join(MODEL_DIR), arch)?,
                flops: metrics.last().map(|m| m.flops),
                final_loss: metrics.iter().rev().find_map(|m| m.eval_loss),
                origin: format!("runs/{name} (pre-trained here, {steps} steps)"),
            }))
        }
    }
}

/// What the summary needs to know about a setting's source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Its shape.
    pub shape: Shape,
    /// Where it came from.
    pub origin: String,
    /// Its pre-training FLOPs, when known.
    pub flops: Option<u64>,
    /// Its last held-out MLM loss in its own training log, when known (a bundled source may
    /// have been scored on another held-out set).
    pub final_loss: Option<f64>,
    /// Its held-out MLM loss on this experiment's held-out set (what the targets are scored on).
    pub eval_loss: Option<f64>,
}

const SOURCES_FILE: &str = "sources.json";
const MACHINE_FILE: &str = "machine.json";

/// Refuses an `--out` that is, lies inside, or contains the assets folder or a setting's source
/// folder (`--restart` deletes runs there; every call writes the plan and the summary).
fn refuse_overlapping_out(
    out: &Path,
    assets: &Path,
    plan: &Plan,
    root: &Path,
) -> anyhow::Result<()> {
    let sources: Vec<PathBuf> = plan
        .settings
        .iter()
        .filter_map(|s| match &s.source {
            SourceSpec::Folder { path } => Some(root.join(path)),
            SourceSpec::Pretrain { .. } => None,
        })
        .collect();
    let mut inputs = vec![(assets, "assets folder (--assets)")];
    inputs.extend(sources.iter().map(|p| (p.as_path(), "source model folder")));
    crate::refuse_overlap("--out", out, &inputs)
}

/// Runs `cargo xtask experiment`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("results").join(args.preset.name()));
    if let Some(doc) = &args.check_doc {
        return summary::check_doc(&out, doc);
    }
    let mut plan = Plan::preset(args.preset);
    let assets = args.assets.clone().unwrap_or_else(default_assets_dir);
    refuse_overlapping_out(&out, &assets, &plan, &root)?;
    if let Some(seeds) = &args.seeds {
        if seeds.is_empty() {
            return Err(crate::Usage::new("--seeds: give at least one seed").into());
        }
        plan.settings[0].seeds = seeds.clone();
    }
    if let Some(steps) = args.steps {
        plan.with_steps(steps);
    }
    plan.validate()
        .map_err(|e| crate::Usage::new(format!("{e:#}")))?;
    let plan_path = out.join(PLAN_FILE);

    if !args.report {
        if plan_path.is_file() {
            let stored: Plan = serde_json::from_str(&std::fs::read_to_string(&plan_path)?)
                .with_context(|| format!("parsing {}", plan_path.display()))?;
            // Seeds may change between calls (runs are keyed by seed); nothing else may.
            let unseeded = |p: &Plan| {
                let mut p = p.clone();
                p.settings.iter_mut().for_each(|s| s.seeds.clear());
                p
            };
            if unseeded(&stored) != unseeded(&plan) && !args.restart {
                bail!(
                    "{} holds an experiment with other settings; continue it with the same \
                     options, or start over with --restart",
                    plan_path.display()
                );
            }
        }
        if args.restart && out.join("runs").exists() {
            std::fs::remove_dir_all(out.join("runs"))?;
        }
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(&plan_path, serde_json::to_string_pretty(&plan)? + "\n")?;
        // The machine that trains (a later --report elsewhere must not claim its own).
        let machine = summary::Machine::detect(args.device);
        std::fs::write(
            out.join(MACHINE_FILE),
            serde_json::to_string_pretty(&machine)? + "\n",
        )?;
        train_all(&plan, &args, &root, &out)?;
    } else if plan_path.is_file() {
        plan = serde_json::from_str(&std::fs::read_to_string(&plan_path)?)
            .with_context(|| format!("parsing {}", plan_path.display()))?;
    } else if let Some(doc) = &args.doc {
        // Nothing has run yet: the document says so.
        summary::write_doc(&out, doc)?;
        eprintln!(
            "no experiment in {}; wrote {}",
            out.display(),
            doc.display()
        );
        return Ok(());
    } else {
        bail!(
            "--report: no experiment in {} ({PLAN_FILE} is missing)",
            out.display()
        );
    }

    let sources: Vec<Option<SourceInfo>> = std::fs::read_to_string(out.join(SOURCES_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let machine = std::fs::read_to_string(out.join(MACHINE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| summary::Machine::detect(args.device));
    let s = summary::summarize(&plan, &out, &sources, machine)?;
    s.write(&out)?;
    plot::plots(&s, &out)?;
    eprintln!(
        "summary in {}, table in {}",
        out.join(SUMMARY_FILE).display(),
        out.join(TABLE_FILE).display()
    );
    if let Some(doc) = &args.doc {
        summary::write_doc(&out, doc)?;
        eprintln!("wrote {}", doc.display());
    }
    Ok(())
}

fn train_all(plan: &Plan, args: &Args, root: &Path, out: &Path) -> anyhow::Result<()> {
    let assets = args.assets.clone().unwrap_or_else(default_assets_dir);
    let dev = device(args.device)?;
    let mut data: Vec<FamilyData> = Vec::new();
    let mut infos = Vec::new();
    let mut complete = true;
    for setting in &plan.settings {
        let arch = setting.arch;
        // Each family's corpus is tokenized once, when its first setting comes.
        let k = match data.iter().position(|d| d.arch == arch) {
            Some(k) => k,
            None => {
                data.push(FamilyData::load(&assets, plan, arch)?);
                data.len() - 1
            }
        };
        let data = &data[k];
        let runner = Runner {
            plan,
            data,
            dev: dev.clone(),
            runs: out.join("runs"),
            stop_at: args.stop_at,
            quiet: args.quiet,
        };
        let base = BaseConfig::new(arch, data.vocab, plan.seq_len);
        let Some(src) = source_of(&setting.source, arch, &runner, root, &base)? else {
            complete = false;
            infos.push(None);
            continue;
        };
        let src_params = params_of(&src.model, 0, &runner.dev)?;
        infos.push(Some(SourceInfo {
            shape: Shape::of_model(&src.model),
            origin: src.origin.clone(),
            flops: src.flops,
            final_loss: src.final_loss,
            // The source's loss on the held-out set every target is scored on.
            eval_loss: Some(bert2bert_train::trainer::eval_loss(
                &src_params,
                &data.eval,
                &runner.dev,
            )?),
        }));
        std::fs::write(
            out.join(SOURCES_FILE),
            serde_json::to_string_pretty(&infos)? + "\n",
        )?;
        if src_params.max_positions() < plan.seq_len {
            bail!(
                "the source of setting {} has {} positions, the experiment uses sequences of {}",
                setting.name,
                src_params.max_positions(),
                plan.seq_len
            );
        }
        if src_params.vocab_size() < data.vocab {
            bail!(
                "the source of setting {} has a vocabulary of {}, the tokenizer {}",
                setting.name,
                src_params.vocab_size(),
                data.vocab
            );
        }
        drop(src_params);
        let target = setting.target.target();
        for &seed in &setting.seeds {
            for &method in &setting.methods {
                let name = run_name(setting, method, seed);
                let growth = |m: GrowMethod, map: MapKind| -> anyhow::Result<ModelParams> {
                    let opts = GrowOptions {
                        method: m,
                        map,
                        seed,
                        ..GrowOptions::default()
                    };
                    let (model, _) =
                        grow(&src.model, &target, &opts).map_err(crate::Usage::from_expand)?;
                    params_of(&model, seed, &runner.dev)
                };
                let bert_source = || {
                    src.model
                        .as_bert()
                        .with_context(|| format!("{name}: a BERT baseline needs a BERT source"))
                };
                let cfg = plan.train_config(plan.steps, seed, method == Method::Bert2Bert);
                let done = match method {
                    Method::Scratch => runner.train(&name, &cfg, plan.steps, &|| {
                        setting.target.fresh(&base, seed, &runner.dev)
                    })?,
                    Method::DirectCopy => runner.train(&name, &cfg, plan.steps, &|| {
                        let b = baselines::direct_copy(bert_source()?, &target, seed)
                            .map_err(crate::Usage::from_expand)?;
                        Ok(Params::with_fresh_head(&b, seed, &runner.dev)?.into())
                    })?,
                    Method::StackBert => {
                        let BaseConfig::Bert(b) = &base else {
                            bail!("{name}: StackBERT is a BERT baseline");
                        };
                        let t = &setting.target;
                        runner.train_stackbert(
                            &name,
                            &b.with_shape(t.layers, t.hidden, t.heads, t.ffn),
                            seed,
                        )?
                    }
                    Method::Fpi => runner.train(&name, &cfg, plan.steps, &|| {
                        growth(GrowMethod::Fpi, MapKind::Balanced)
                    })?,
                    Method::Exact => runner.train(&name, &cfg, plan.steps, &|| {
                        growth(GrowMethod::Fpi, MapKind::Exact)
                    })?,
                    Method::Aki | Method::Bert2Bert => {
                        runner.train(&name, &cfg, plan.steps, &|| {
                            growth(GrowMethod::Aki, MapKind::Balanced)
                        })?
                    }
                };
                complete &= done;
            }
        }
    }
    if !complete {
        eprintln!("stopped before the end (--stop-at); run the same command again to continue");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_in_or_around_a_bundled_source_is_refused() {
        let root = workspace_root();
        let elsewhere = tempfile::tempdir().unwrap();
        let plan = Plan::preset(Preset::Mini);
        let bundled = root.join("assets/bundled-bert");
        for (out, needle) in [
            (bundled.join("runs"), "is inside the source model folder"),
            (bundled.clone(), "is the source model folder"),
            (root.join("assets"), "contains the source model folder"),
        ] {
            let err = refuse_overlapping_out(&out, elsewhere.path(), &plan, &root).unwrap_err();
            assert!(err.is::<crate::Usage>(), "misuse: exit 2");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let fine = root.join("results/mini");
        refuse_overlapping_out(&fine, elsewhere.path(), &plan, &root).unwrap();
    }
}
