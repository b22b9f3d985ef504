//! The plan of an experiment: presets, settings, methods, shapes, schedules and run names.
//! Everything that determines an experiment's numbers is here, and stored as `experiment.json`.

use crate::ExperimentError;
use bert2bert_checkpoint::{BertConfig, Model};
use bert2bert_expand::Target;
use bert2bert_train::data::MlmConfig;
use bert2bert_train::optim::{AdamWConfig, Decay, Schedule};
use bert2bert_train::trainer::{ModelParams, TrainConfig, TwoStage};
use bert2bert_train::{Arch, FreshConfig, ModelShape};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A named size of the experiment.
// Serialized lowercase ("gpt2mini"): stored plans and summaries hold these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    /// The paper's regime on the CPU, GPT-2: scratch ends well below where grown models start.
    RegimeGpt2,
    /// The paper's regime on the CPU, BERT (masked LM).
    RegimeBert,
    /// The paper's regime for BERT on one CUDA GPU: a 2 x 128 source grown to 4 x 256 on the
    /// Bible, sized by a CPU pilot of its exact runs (also runs on the CPU, for hours).
    RegimeBertGpu,
    /// The BERT regime on the two-Bible corpus: the 2 x 128 -> 4 x 256 pair of `regime-bert-gpu`
    /// with target runs twice as long, which that corpus has the text for (one GPU, or the CPU
    /// over several sessions).
    RegimeBertBibles,
}

impl Preset {
    /// The preset's name (also its results folder).
    pub fn name(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Mini => "mini",
            Self::Gpu => "gpu",
            Self::Gpt2Mini => "gpt2-mini",
            Self::RegimeGpt2 => "regime-gpt2",
            Self::RegimeBert => "regime-bert",
            Self::RegimeBertGpu => "regime-bert-gpu",
            Self::RegimeBertBibles => "regime-bert-bibles",
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

    pub(crate) fn target(self) -> Target {
        Target {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            intermediate: self.ffn,
        }
    }

    /// The shape of a fresh model's config.
    pub fn model_shape(self) -> ModelShape {
        ModelShape {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            ffn: self.ffn,
        }
    }

    /// The config of a fresh `arch` model of this shape, for `vocab` tokens and sequences of
    /// `seq_len`.
    pub fn config(self, arch: Arch, vocab: usize, seq_len: usize) -> FreshConfig {
        FreshConfig::new(arch, vocab, seq_len, self.model_shape())
    }

    /// A fresh `arch` model of this shape, seeded.
    pub(crate) fn fresh(
        self,
        arch: Arch,
        vocab: usize,
        seq_len: usize,
        seed: u64,
        dev: &Device,
    ) -> Result<ModelParams, ExperimentError> {
        Ok(self.config(arch, vocab, seq_len).params(seed, dev)?)
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
    /// Tokenizer folder, relative to the assets folder (default: the family's bundled one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Corpus folder, relative to the assets folder (default: the bundled plays, `corpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<PathBuf>,
    /// BERT: fraction of the tokens each sequence predicts, in training and in the held-out
    /// set (default: BERT's 0.15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_prob: Option<f64>,
    /// The schedule of the methods that start from the source in this setting (default:
    /// scratch's, the plan's `lr` and `warmup_frac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grown: Option<LrSpec>,
}

/// A learning-rate schedule's free numbers (the decay is always linear to 0 at the last step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSpec {
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup, as a fraction of a run's steps.
    pub warmup_frac: f64,
}

/// Target steps of `regime-bert` (sized by the pilot in docs/experiment.md).
const BERT_REGIME_STEPS: usize = 1200;
/// Steps of `regime-bert`'s source, pre-trained inside the experiment.
const BERT_REGIME_SOURCE_STEPS: usize = 2000;
/// Target steps of `regime-bert-gpu`: 3.9 passes over the Bible's training split.
const BERT_GPU_STEPS: usize = 2000;
/// Steps of `regime-bert-gpu`'s 2 x 128 source: with the experiment's source seed it ends
/// 0.483, 0.502 and 0.522 nats below the unigram entropy after 1350, 1500 and 1600 steps, and a
/// 2000-step scratch (seed 0) ended 0.100 below the 1600-step one; 1550 splits the room between
/// the two margins (about 0.01 nats each).
const BERT_GPU_SOURCE_STEPS: usize = 1550;
/// Target steps of `regime-bert-bibles`: 3.9 passes over the two-Bible training split.
const BERT_BIBLES_STEPS: usize = 4400;
/// Steps of `regime-bert-bibles`' 2 x 128 source (docs/experiment.md, its pilot).
const BERT_BIBLES_SOURCE_STEPS: usize = 2000;

/// The methods of the paper's BERT table, in its order.
const BERT_METHODS: [Method; 6] = [
    Method::Scratch,
    Method::DirectCopy,
    Method::StackBert,
    Method::Fpi,
    Method::Aki,
    Method::Bert2Bert,
];

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
        let all = BERT_METHODS.to_vec();
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
                        },
                        SettingPlan {
                            name: "depth".into(),
                            arch: Arch::Bert,
                            title: "width and depth 2 x 32 -> 4 x 48".into(),
                            source: src,
                            target: Shape::new(4, 48, 16),
                            methods: vec![Method::Scratch, Method::Fpi, Method::Bert2Bert],
                            seeds: vec![0],
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
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
                    tokenizer: None,
                    corpus: None,
                    mask_prob: None,
                    grown: None,
                }];
                plan
            }
            Preset::RegimeGpt2 | Preset::RegimeBert => Self::regime(preset),
            Preset::RegimeBertGpu => Self::regime_bert_gpu(),
            Preset::RegimeBertBibles => Self::regime_bert_bibles(),
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
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
                            tokenizer: None,
                            corpus: None,
                            mask_prob: None,
                            grown: None,
                        },
                    ],
                }
            }
        }
    }

    /// The CPU presets in the paper's regime (docs/experiment.md, "The regime presets"): a
    /// source 2x narrower and 2x shallower than the target, pre-trained here on a fraction of
    /// the target's budget, so that scratch ends well below where the grown models start; a
    /// 2048-token tokenizer (the head dominated the cost at 8192); three seeds.
    fn regime(preset: Preset) -> Self {
        let gpt2 = preset == Preset::RegimeGpt2;
        // BERT trains on the King James Bible (assets/corpus-kjv): on the plays, a masked-LM
        // source of CPU size stays within 0.5 nats of the unigram entropy (docs/experiment.md).
        let (arch, methods, tokenizer, corpus, steps, source_steps, lr) = if gpt2 {
            (
                Arch::Gpt2,
                GPT2_METHODS.to_vec(),
                "tokenizer-gpt2-2k",
                None,
                600,
                400,
                2e-3,
            )
        } else {
            (
                Arch::Bert,
                BERT_METHODS.to_vec(),
                "tokenizer-kjv-2k",
                Some(PathBuf::from("corpus-kjv")),
                BERT_REGIME_STEPS,
                BERT_REGIME_SOURCE_STEPS,
                2e-3,
            )
        };
        let family = if gpt2 { "GPT-2" } else { "BERT" };
        let source = SourceSpec::Pretrain {
            shape: Shape::new(2, 64, 32),
            steps: source_steps,
        };
        let target = Shape::new(4, 96, 32);
        let name = if gpt2 { "gpt2" } else { "bert" };
        let mut plan = Self {
            preset,
            batch_size: 32,
            seq_len: 64,
            steps,
            lr,
            warmup_frac: 0.05,
            eval_every: 25,
            eval_sequences: 128,
            checkpoint_every: 100,
            lb: 1,
            stage1_steps: steps / 8,
            stack_steps: steps / 4,
            source_seed: 1000,
            settings: vec![SettingPlan {
                name: name.into(),
                arch,
                title: format!("{family} width and depth 2 x 64 -> 4 x 96"),
                source: source.clone(),
                target,
                methods,
                seeds: vec![0, 1, 2],
                tokenizer: Some(tokenizer.into()),
                corpus: corpus.clone(),
                mask_prob: None,
                grown: None,
            }],
        };
        // The alternative schedule, once (in the GPT-2 setting; the BERT preset's budget has no
        // room for it): bert2BERT on a lower peak with almost no warmup, the schedule an already
        // trained model seems to ask for.
        if gpt2 {
            let grown = LrSpec {
                lr: 1e-3,
                warmup_frac: 0.01,
            };
            plan.settings.push(SettingPlan {
                name: format!("{name}-grownlr"),
                arch,
                title: format!(
                    "{family} 2 x 64 -> 4 x 96, grown on peak {} with {}% warmup",
                    grown.lr,
                    100.0 * grown.warmup_frac
                ),
                source,
                target,
                methods: vec![Method::Scratch, Method::Bert2Bert],
                seeds: vec![0],
                tokenizer: Some(tokenizer.into()),
                corpus,
                mask_prob: None,
                grown: Some(grown),
            });
        }
        plan
    }

    /// The BERT regime for one GPU (docs/experiment.md, "The BERT regime on a GPU"): on the
    /// CPU-sized shapes scratch never got clear of the source (a masked-LM model's loss per
    /// step hardly depends on its size there), so the source is 2 x 128 and the target 4 x 256,
    /// on the Bible's 2048 WordPiece at BERT's 15% masking, with the target runs at 3.9 epochs.
    fn regime_bert_gpu() -> Self {
        let steps = BERT_GPU_STEPS;
        let source = SourceSpec::Pretrain {
            shape: Shape::new(2, 128, 64),
            steps: BERT_GPU_SOURCE_STEPS,
        };
        Self {
            preset: Preset::RegimeBertGpu,
            batch_size: 32,
            seq_len: 64,
            steps,
            // 2e-3 left a 4 x 256 post-LN model on the unigram plateau (the pilot).
            lr: 1e-3,
            warmup_frac: 0.05,
            eval_every: 50,
            eval_sequences: 128,
            checkpoint_every: 500,
            lb: 1,
            stage1_steps: steps / 8,
            stack_steps: steps / 4,
            source_seed: 1000,
            settings: vec![SettingPlan {
                name: "bert".into(),
                arch: Arch::Bert,
                title: "BERT width and depth 2 x 128 -> 4 x 256".into(),
                source,
                target: Shape::new(4, 256, 64),
                methods: BERT_METHODS.to_vec(),
                seeds: vec![0, 1, 2],
                tokenizer: Some("tokenizer-kjv-2k".into()),
                corpus: Some(PathBuf::from("corpus-kjv")),
                mask_prob: None,
                grown: None,
            }],
        }
    }

    /// `regime-bert-gpu` on the two-Bible corpus (docs/experiment.md, "The BERT regime on two
    /// Bibles"): the same shapes and schedule; the source trained to the same margin over its
    /// corpus's unigram entropy, the target runs 2.2 times as long within 4 passes.
    fn regime_bert_bibles() -> Self {
        let mut plan = Self::regime_bert_gpu();
        plan.preset = Preset::RegimeBertBibles;
        plan.with_steps(BERT_BIBLES_STEPS);
        let s = &mut plan.settings[0];
        s.source = SourceSpec::Pretrain {
            shape: Shape::new(2, 128, 64),
            steps: BERT_BIBLES_SOURCE_STEPS,
        };
        s.title = "BERT width and depth 2 x 128 -> 4 x 256, two Bibles".into();
        s.tokenizer = Some("tokenizer-bibles-2k".into());
        s.corpus = Some(PathBuf::from("corpus-bibles"));
        plan
    }

    /// Sets the target runs' steps, with stage 1 at 1/8 and StackBERT's shallow phase at 1/4.
    pub fn with_steps(&mut self, steps: usize) {
        self.steps = steps;
        self.stage1_steps = steps / 8;
        self.stack_steps = steps / 4;
    }

    /// Scratch's schedule (also StackBERT's and that of sources pre-trained here).
    pub fn scratch_lr(&self) -> LrSpec {
        LrSpec {
            lr: self.lr,
            warmup_frac: self.warmup_frac,
        }
    }

    /// The schedule `method` trains on in `setting`: the setting's `grown` one for the methods
    /// that start from the source where it has one, scratch's otherwise.
    pub fn lr_of(&self, setting: &SettingPlan, method: Method) -> LrSpec {
        match setting.grown {
            Some(g) if method.uses_source() => g,
            _ => self.scratch_lr(),
        }
    }

    /// The training configuration of a run of `steps` steps on schedule `lr`.
    pub fn train_config(
        &self,
        steps: usize,
        seed: u64,
        two_stage: bool,
        lr: LrSpec,
    ) -> TrainConfig {
        TrainConfig {
            steps,
            schedule: Schedule {
                peak: lr.lr,
                warmup: ((steps as f64 * lr.warmup_frac).round() as usize).max(1),
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

    /// Checks the plan's numbers ([`ExperimentError::Invalid`] says what is wrong).
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let invalid = |m: String| Err(ExperimentError::Invalid(m));
        if self.stack_steps == 0
            || self.stack_steps >= self.steps
            || self.stage1_steps >= self.steps
        {
            return invalid(format!(
                "the plan needs 0 < stack steps ({}) and stage-1 steps ({}) < steps ({})",
                self.stack_steps, self.stage1_steps, self.steps
            ));
        }
        for s in &self.settings {
            if s.methods.first() != Some(&Method::Scratch) {
                return invalid(format!(
                    "setting {}: the first method must be scratch",
                    s.name
                ));
            }
            if s.seeds.is_empty() {
                return invalid(format!("setting {}: no seeds", s.name));
            }
            let bert_only = [Method::DirectCopy, Method::StackBert];
            if s.arch == Arch::Gpt2 && s.methods.iter().any(|m| bert_only.contains(m)) {
                return invalid(format!(
                    "setting {}: DirectCopy and StackBERT are BERT baselines, not run for GPT-2",
                    s.name
                ));
            }
            if s.arch == Arch::Bert && s.methods.contains(&Method::Exact) {
                return invalid(format!(
                    "setting {}: the exact map is for pre-LN models (GPT-2), not BERT",
                    s.name
                ));
            }
            if let Some(p) = s.mask_prob {
                if s.arch != Arch::Bert {
                    return invalid(format!(
                        "setting {}: mask_prob is for masked-LM (BERT) settings",
                        s.name
                    ));
                }
                if let Err(why) = MlmConfig::check_mask_prob(p) {
                    return invalid(format!("setting {}: mask_prob {why}", s.name));
                }
            }
            if s.methods.contains(&Method::StackBert) && s.target.layers < 2 {
                return invalid(format!(
                    "setting {}: StackBERT needs at least 2 target layers",
                    s.name
                ));
            }
        }
        // Settings share scratch, StackBERT and source runs by name (family and shape): a
        // shared run is only the same run if it trains on the same data.
        for (i, a) in self.settings.iter().enumerate() {
            for b in &self.settings[i + 1..] {
                let shares = a.arch == b.arch
                    && (a.target == b.target
                        || source_run_names(a).any(|n| source_run_names(b).any(|m| m == n)));
                if shares
                    && (a.corpus != b.corpus
                        || a.tokenizer != b.tokenizer
                        || a.mask_prob != b.mask_prob)
                {
                    return invalid(format!(
                        "settings {} and {} share runs but not their corpus, tokenizer and mask \
                         fraction",
                        a.name, b.name
                    ));
                }
            }
        }
        Ok(())
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

/// The names of the source runs a setting pre-trains (none for a bundled source).
fn source_run_names(setting: &SettingPlan) -> impl Iterator<Item = String> + '_ {
    match &setting.source {
        SourceSpec::Pretrain { shape, .. } => Some(source_run_name(setting.arch, *shape)),
        _ => None,
    }
    .into_iter()
}

/// The name of the run that pre-trains a source inside the experiment.
pub fn source_run_name(arch: Arch, shape: Shape) -> String {
    format!("source-{}", model_tag(arch, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ALL: [Preset; 8] = [
        Preset::Smoke,
        Preset::Mini,
        Preset::Gpu,
        Preset::Gpt2Mini,
        Preset::RegimeGpt2,
        Preset::RegimeBert,
        Preset::RegimeBertGpu,
        Preset::RegimeBertBibles,
    ];

    #[test]
    fn every_preset_is_valid_and_named_as_on_the_command_line() {
        for p in ALL {
            let plan = Plan::preset(p);
            plan.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name()));
            assert_eq!(plan.preset, p);
            assert_eq!(plan.stage1_steps, plan.steps / 8, "{}", p.name());
            assert_eq!(plan.stack_steps, plan.steps / 4, "{}", p.name());
            #[cfg(feature = "clap")]
            assert_eq!(
                clap::ValueEnum::to_possible_value(&p).unwrap().get_name(),
                p.name()
            );
        }
        // The stored spellings (experiment.json, summary.json) do not change.
        assert_eq!(
            serde_json::to_string(&Preset::Gpt2Mini).unwrap(),
            "\"gpt2mini\""
        );
        assert_eq!(
            serde_json::to_string(&Method::DirectCopy).unwrap(),
            "\"directcopy\""
        );
    }

    #[test]
    fn invalid_plans_are_refused_with_the_reason() {
        let mut p = Plan::preset(Preset::Smoke);
        p.with_steps(3);
        let e = p.validate().unwrap_err();
        assert!(matches!(e, ExperimentError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("stack steps (0)"), "{e}");
        let mut p = Plan::preset(Preset::Gpt2Mini);
        p.settings[0].methods.push(Method::StackBert);
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("BERT baselines")
        );
        let mut p = Plan::preset(Preset::Mini);
        p.settings[0].methods.remove(0);
        assert!(p.validate().unwrap_err().to_string().contains("scratch"));
        let mut p = Plan::preset(Preset::Mini);
        p.settings[1].seeds.clear();
        assert!(p.validate().unwrap_err().to_string().contains("no seeds"));
    }

    #[test]
    fn settings_that_share_runs_must_share_their_data() {
        // mini's two settings share scratch-4x192: a second corpus for one of them would make
        // that one folder two different runs.
        let mut p = Plan::preset(Preset::Mini);
        p.settings[1].corpus = Some("corpus-kjv".into());
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("share runs but not their corpus"), "{e}");
        p.settings[0].corpus = Some("corpus-kjv".into());
        p.validate().unwrap();
        // A setting of the other family shares nothing by name, so it may train on other data.
        let mut p = Plan::preset(Preset::Smoke);
        let gpt2 = p
            .settings
            .iter()
            .position(|s| s.arch == Arch::Gpt2)
            .unwrap();
        p.settings[gpt2].corpus = Some("corpus-kjv".into());
        p.validate().unwrap();
    }

    #[test]
    fn a_mask_fraction_is_for_bert_settings_in_0_1_and_shared_by_shared_runs() {
        let mut p = Plan::preset(Preset::Mini);
        p.settings[1].mask_prob = Some(0.4);
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("mask fraction"), "{e}");
        p.settings[0].mask_prob = Some(0.4);
        p.validate().unwrap();
        p.settings[0].mask_prob = Some(1.0);
        p.settings[1].mask_prob = Some(1.0);
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("mask_prob 1 is not in (0, 1)"), "{e}");
        let mut p = Plan::preset(Preset::RegimeGpt2);
        p.settings[0].mask_prob = Some(0.15);
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("masked-LM (BERT)"), "{e}");
        // Absent, it is not written: plans saved before it existed read back equal.
        let p = Plan::preset(Preset::RegimeBert);
        assert!(!serde_json::to_string(&p).unwrap().contains("mask_prob"));
    }

    #[test]
    fn the_bert_regime_trains_on_the_bible_within_four_epochs() {
        for preset in [Preset::RegimeBert, Preset::RegimeBertGpu] {
            let plan = Plan::preset(preset);
            assert_eq!(plan.settings.len(), 1);
            let s = &plan.settings[0];
            assert_eq!(s.corpus.as_deref(), Some(Path::new("corpus-kjv")));
            assert_eq!(s.tokenizer.as_deref(), Some(Path::new("tokenizer-kjv-2k")));
            assert_eq!(s.seeds, [0, 1, 2]);
            assert!(s.target.layers >= 4);
            // 1,017,088 training tokens under the 2048 WordPiece (assets/corpus-kjv/README.md),
            // packed seq_len - 2 to a sequence between [CLS] and [SEP]: a run of 32 sequences a
            // step stays within 4 passes.
            let tokens = (plan.steps * plan.batch_size * (plan.seq_len - 2)) as f64;
            assert!(tokens / 1_017_088.0 < 4.0, "{}: {tokens}", preset.name());
        }
        // The two-Bible preset: 2,252,840 training tokens (assets/corpus-bibles/README.md).
        let plan = Plan::preset(Preset::RegimeBertBibles);
        let s = &plan.settings[0];
        assert_eq!(s.corpus.as_deref(), Some(Path::new("corpus-bibles")));
        assert_eq!(
            s.tokenizer.as_deref(),
            Some(Path::new("tokenizer-bibles-2k"))
        );
        assert_eq!(
            (s.seeds.as_slice(), s.target.layers),
            ([0, 1, 2].as_slice(), 4)
        );
        let tokens = (plan.steps * plan.batch_size * (plan.seq_len - 2)) as f64;
        assert!(tokens / 2_252_840.0 < 4.0, "{tokens}");
        assert!(
            tokens / 1_017_088.0 > 8.0,
            "longer than the King James text allows"
        );
        // The GPT-2 preset keeps the plays.
        assert!(
            Plan::preset(Preset::RegimeGpt2)
                .settings
                .iter()
                .all(|s| s.corpus.is_none())
        );
    }

    #[test]
    fn runs_that_do_not_use_the_source_are_shared_by_target_shape() {
        let plan = Plan::preset(Preset::Mini);
        let (width, depth) = (&plan.settings[0], &plan.settings[1]);
        assert_eq!(run_name(width, Method::Scratch, 0), "scratch-4x192-s0");
        assert_eq!(
            run_name(width, Method::Scratch, 0),
            run_name(depth, Method::Scratch, 0)
        );
        assert_eq!(run_name(width, Method::StackBert, 1), "stackbert-4x192-s1");
        assert_eq!(run_name(depth, Method::Fpi, 0), "depth-fpi-s0");
        let gpt2 = &Plan::preset(Preset::Gpt2Mini).settings[0];
        assert_eq!(run_name(gpt2, Method::Scratch, 0), "scratch-gpt2-4x192-s0");
        assert_eq!(
            source_run_name(Arch::Gpt2, Shape::new(2, 32, 16)),
            "source-gpt2-2x32"
        );
    }

    #[test]
    fn grown_methods_train_on_their_own_schedule_only_where_the_setting_says() {
        let plan = Plan::preset(Preset::RegimeGpt2);
        let (main, alt) = (&plan.settings[0], &plan.settings[1]);
        let grown = alt.grown.unwrap();
        assert_ne!(grown, plan.scratch_lr());
        assert_eq!(plan.lr_of(main, Method::Aki), plan.scratch_lr());
        assert_eq!(plan.lr_of(main, Method::Scratch), plan.scratch_lr());
        assert_eq!(plan.lr_of(alt, Method::Bert2Bert), grown);
        assert_eq!(plan.lr_of(alt, Method::Scratch), plan.scratch_lr());
        let cfg = plan.train_config(600, 2, true, grown);
        assert_eq!(cfg.schedule.warmup, 6);
        assert_eq!(cfg.schedule.peak, grown.lr);
        assert_eq!(cfg.two_stage.unwrap().stage1_steps, plan.stage1_steps);
        // Warmup is at least one step.
        assert_eq!(plan.train_config(10, 0, false, grown).schedule.warmup, 1);
    }

    #[test]
    fn a_shape_builds_the_fresh_model_it_names() {
        let s = Shape::new(2, 48, 16);
        assert_eq!((s.heads, s.ffn), (3, 192));
        assert_eq!(s.short(), "2x48");
        let p = s.fresh(Arch::Gpt2, 100, 32, 0, &Device::Cpu).unwrap();
        let m = p.to_model().unwrap();
        assert_eq!(Shape::of_model(&m), s);
        let FreshConfig::Bert(b) = s.config(Arch::Bert, 100, 32) else {
            panic!("a BERT config");
        };
        assert_eq!(Shape::of(&b), s);
        assert_eq!(b.max_position_embeddings, 32);
    }
}
