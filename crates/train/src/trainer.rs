//! The pre-training loop: MLM (BERT) or causal-LM (GPT-2) steps with AdamW, held-out
//! evaluation, JSON-lines metrics, atomic checkpoints with exact resume, and two-stage
//! pre-training (spec section 8).

use crate::bert::{BertForMaskedLM, DeviceBatch, Dropout, Params, Scope};
use crate::data::MlmBatch;
use crate::data::causal::{CausalBatch, CausalBatcher};
use crate::error::io_err;
use crate::gpt2::{CausalDeviceBatch, Gpt2LMHeadModel, Gpt2Params};
use crate::optim::{AdamW, AdamWConfig, Schedule};
use crate::{Result, TrainError, flops};
use bert2bert_checkpoint::folder::{AtomicDir, copy_files, write_config, write_weights};
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{Bert, Dtype, Family, Model, read_model_dir};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A masked batch on the host, as the data pipeline produces it.
pub type TrainBatch = MlmBatch;

// The upload lives here, with the model code, so the data module stays free of candle.
impl MlmBatch {
    /// Uploads the batch to `device`.
    pub fn to_device(&self, device: &Device) -> Result<DeviceBatch> {
        let mut targets = Vec::with_capacity(self.masked.len());
        for &i in &self.masked {
            let l = *self.labels.get(i).ok_or_else(|| {
                TrainError::Data(format!(
                    "masked index {i} outside {} labels",
                    self.labels.len()
                ))
            })?;
            if l < 0 {
                return Err(TrainError::Data(format!(
                    "position {i} is listed as masked but its label is {l}"
                )));
            }
            targets.push(l as u32);
        }
        Ok(DeviceBatch::new(
            &self.input_ids,
            &self.token_type_ids,
            &self.attention_mask,
            &self.masked,
            &targets,
            self.batch_size,
            self.seq_len,
            device,
        )?)
    }
}

/// A host batch of either objective: masked-LM (BERT) or next-token (GPT-2).
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Masked-language-model positions and targets.
    Mlm(TrainBatch),
    /// Next-token inputs and targets.
    Causal(CausalBatch),
}

impl Batch {
    /// Sequences and tokens per sequence.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Batch::Mlm(m) => (m.batch_size, m.seq_len),
            Batch::Causal(c) => (c.batch_size, c.seq_len),
        }
    }

    /// Tokens in the batch (sequences x sequence length).
    pub fn tokens(&self) -> u64 {
        let (b, s) = self.dims();
        (b * s) as u64
    }

    /// Positions whose token is predicted (the weight of this batch's mean loss).
    pub fn predicted(&self) -> usize {
        match self {
            Batch::Mlm(m) => m.masked.len(),
            Batch::Causal(c) => c.n_tokens(),
        }
    }
}

impl From<TrainBatch> for Batch {
    fn from(b: TrainBatch) -> Self {
        Batch::Mlm(b)
    }
}

impl From<CausalBatch> for Batch {
    fn from(b: CausalBatch) -> Self {
        Batch::Causal(b)
    }
}

/// The weights a [`Trainer`] trains: a BERT with its MLM head or a GPT-2 with its LM head.
// One value per training run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ModelParams {
    /// `BertForMaskedLM`, trained on [`Batch::Mlm`].
    Bert(Params),
    /// `GPT2LMHeadModel`, trained on [`Batch::Causal`].
    Gpt2(Gpt2Params),
}

impl From<Params> for ModelParams {
    fn from(p: Params) -> Self {
        ModelParams::Bert(p)
    }
}

impl From<Gpt2Params> for ModelParams {
    fn from(p: Gpt2Params) -> Self {
        ModelParams::Gpt2(p)
    }
}

/// A built candle model over [`ModelParams`].
enum Net {
    Bert(BertForMaskedLM),
    Gpt2(Gpt2LMHeadModel),
}

impl ModelParams {
    /// Exact f32 copies of a typed checkpoint's weights on `device` (BERT needs its MLM head).
    pub fn from_model(model: &Model, device: &Device) -> Result<Self> {
        match model {
            Model::Bert(b) => Ok(Params::from_bert(b, device)?.into()),
            Model::Gpt2(g) => Ok(Gpt2Params::from_gpt2(g, device)?.into()),
        }
    }

    /// The model family.
    pub fn family(&self) -> Family {
        match self {
            ModelParams::Bert(_) => Family::Bert,
            ModelParams::Gpt2(_) => Family::Gpt2,
        }
    }

    /// Transformer layers (BERT encoder layers, GPT-2 blocks).
    pub fn layers(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().num_hidden_layers,
            ModelParams::Gpt2(p) => p.config().n_layer,
        }
    }

    /// Size of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().vocab_size,
            ModelParams::Gpt2(p) => p.config().vocab_size,
        }
    }

    /// The longest sequence the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        match self {
            ModelParams::Bert(p) => p.config().max_position_embeddings,
            ModelParams::Gpt2(p) => p.config().n_positions,
        }
    }

    /// All vars with their Hugging Face names, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        match self {
            ModelParams::Bert(p) => p.named_vars(),
            ModelParams::Gpt2(p) => p.named_vars(),
        }
    }

    /// The BERT parameters, if this is a BERT.
    pub fn as_bert(&self) -> Option<&Params> {
        match self {
            ModelParams::Bert(p) => Some(p),
            ModelParams::Gpt2(_) => None,
        }
    }

    /// The GPT-2 parameters, if this is a GPT-2.
    pub fn as_gpt2(&self) -> Option<&Gpt2Params> {
        match self {
            ModelParams::Gpt2(p) => Some(p),
            ModelParams::Bert(_) => None,
        }
    }

    /// The current weights as a typed checkpoint.
    pub fn to_model(&self) -> Result<Model> {
        Ok(match self {
            ModelParams::Bert(p) => Model::Bert(p.to_bert()?),
            ModelParams::Gpt2(p) => Model::Gpt2(p.to_gpt2()?),
        })
    }

    fn optimizer(&self, cfg: AdamWConfig) -> AdamW {
        match self {
            ModelParams::Bert(p) => AdamW::new(p.named_vars(), cfg, crate::bert::no_weight_decay),
            ModelParams::Gpt2(p) => AdamW::new(p.named_vars(), cfg, crate::gpt2::no_weight_decay),
        }
    }

    fn build(&self) -> Result<Net> {
        Ok(match self {
            ModelParams::Bert(p) => Net::Bert(p.model()?),
            ModelParams::Gpt2(p) => Net::Gpt2(p.model()?),
        })
    }

    /// Training FLOPs of one step on `batch` through sub-model `scope` ([`crate::flops`]).
    pub fn train_flops(&self, batch: &Batch, scope: Scope) -> u64 {
        let (b, s) = batch.dims();
        match self {
            ModelParams::Bert(p) => flops::train_step(p.config(), b, s, batch.predicted(), scope),
            ModelParams::Gpt2(p) => flops::gpt2_train_step(p.config(), b, s, scope),
        }
    }
}

impl Net {
    /// Mean loss of `batch` through `scope` (over its [`Batch::predicted`] positions).
    fn loss(
        &self,
        batch: &Batch,
        scope: Scope,
        dropout: &mut Dropout,
        device: &Device,
    ) -> Result<Tensor> {
        match (self, batch) {
            (Net::Bert(m), Batch::Mlm(b)) => {
                let db = b.to_device(device)?;
                Ok(m.loss(&db, scope, dropout)?)
            }
            (Net::Gpt2(m), Batch::Causal(b)) => {
                let db = CausalDeviceBatch::new(b, device)?;
                Ok(m.loss(&db, scope, dropout)?)
            }
            (Net::Bert(_), Batch::Causal(_)) => Err(TrainError::Data(
                "a causal-LM batch was given to a BERT (masked-LM) model".into(),
            )),
            (Net::Gpt2(_), Batch::Mlm(_)) => Err(TrainError::Data(
                "a masked-LM batch was given to a GPT-2 (causal-LM) model".into(),
            )),
        }
    }
}

/// An endless, seeded stream of training batches.
pub trait BatchSource {
    /// The next batch.
    fn next_batch(&mut self) -> Result<Batch>;

    /// Skips `n` batches (used to resume at the exact data position).
    fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.next_batch()?;
        }
        Ok(())
    }
}

/// Stage 1 of two-stage pre-training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoStage {
    /// l_b: layers trained per sub-model.
    pub lb: usize,
    /// Steps of stage 1 (the rest of the run is stage 2).
    pub stage1_steps: usize,
}

/// Everything that determines a training run (stored in the checkpoint; resume refuses a change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Total optimizer steps.
    pub steps: usize,
    /// Learning-rate schedule (its `total` equals `steps`).
    pub schedule: Schedule,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip.
    pub max_grad_norm: Option<f64>,
    /// Seed of dropout and sub-model sampling (the data stream has its own).
    pub seed: u64,
    /// Held-out evaluation every this many steps (and at step 0 and the last step).
    pub eval_every: usize,
    /// A metrics line every this many steps.
    pub log_every: usize,
    /// A checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Two-stage pre-training, if enabled.
    pub two_stage: Option<TwoStage>,
}

impl TrainConfig {
    /// Checks the configuration against a model of `layers` layers.
    pub fn validate(&self, layers: usize) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        if self.schedule.total != self.steps {
            return bad(format!(
                "schedule spans {} steps, the run {}",
                self.schedule.total, self.steps
            ));
        }
        if !(self.schedule.peak > 0.0 && self.schedule.peak.is_finite()) {
            return bad(format!(
                "learning rate {} is not positive",
                self.schedule.peak
            ));
        }
        if self.eval_every == 0 || self.log_every == 0 || self.checkpoint_every == 0 {
            return bad("eval, log and checkpoint intervals must be positive".into());
        }
        if let Some(ts) = self.two_stage {
            if ts.lb == 0 || ts.lb > layers {
                return bad(format!(
                    "--lb {} must be between 1 and the model's {layers} layers",
                    ts.lb
                ));
            }
            if ts.stage1_steps > self.steps {
                return bad(format!(
                    "stage 1 ({} steps) is longer than the run ({} steps)",
                    ts.stage1_steps, self.steps
                ));
            }
        }
        Ok(())
    }
}

/// Sub-model depths of stage 1: l_b, 2 l_b, ..., and L when l_b does not divide it.
pub fn submodel_depths(layers: usize, lb: usize) -> Vec<usize> {
    let mut d: Vec<usize> = (1..=layers / lb).map(|k| k * lb).collect();
    if d.last() != Some(&layers) {
        d.push(layers);
    }
    d
}

/// A stream seed for (`seed`, `step`, `purpose`): every step's randomness is a pure function of
/// the run's seed and the step, so a resumed run draws exactly what an uninterrupted one would.
pub(crate) fn step_seed(seed: u64, step: usize, purpose: u64) -> u64 {
    SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F)
            ^ (step as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB),
    )
    .next_u64()
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Optimizer steps done.
    pub step: usize,
    /// Tokens processed (batch x sequence per step, cumulative).
    pub tokens: u64,
    /// Training FLOPs spent (cumulative, [`crate::flops`]).
    pub flops: u64,
    /// Mean training loss over the steps since the previous line (null at step 0).
    pub train_loss: Option<f64>,
    /// Held-out MLM loss (null when not evaluated at this step).
    pub eval_loss: Option<f64>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// 1: stage 1 of two-stage pre-training; 2: full-model training.
    pub stage: u8,
    /// Wall-clock seconds of training so far (across resumes).
    pub wall_s: f64,
}

/// What the caller sees after each step (for a progress bar).
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Steps done.
    pub step: usize,
    /// Total steps of the run.
    pub total: usize,
    /// This step's loss.
    pub loss: f64,
    /// Held-out loss if evaluated at this step.
    pub eval_loss: Option<f64>,
    /// Tokens processed so far.
    pub tokens: u64,
    /// Tokens per second over this invocation.
    pub tokens_per_s: f64,
    /// Stage (1 or 2).
    pub stage: u8,
    /// The sub-model this step trained (the whole model in stage 2).
    pub scope: Scope,
    /// This step's learning rate.
    pub lr: f64,
}

/// Counters saved with a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Steps done.
    pub step: usize,
    /// Tokens processed.
    pub tokens: u64,
    /// FLOPs spent.
    pub flops: u64,
    /// Wall seconds spent.
    pub wall_s: f64,
    /// Sum and count of training losses not yet written to the metrics.
    pub pending_loss: (f64, usize),
    /// Per-parameter AdamW step counts.
    pub optimizer_steps: BTreeMap<String, u64>,
}

impl TrainerState {
    /// The run's totals at this checkpoint.
    pub fn counters(&self) -> Counters {
        Counters {
            step: self.step,
            tokens: self.tokens,
            flops: self.flops,
            wall_s: self.wall_s,
        }
    }
}

/// The running totals of a run: where a run that continues it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counters {
    /// Steps done.
    pub step: usize,
    /// Tokens processed.
    pub tokens: u64,
    /// Training FLOPs spent.
    pub flops: u64,
    /// Wall-clock seconds of training.
    pub wall_s: f64,
}

/// What a run continues (see [`Trainer::continuing`]).
#[derive(Clone, Copy, Debug)]
pub struct Continuation<'a> {
    /// The totals of the run continued: step, tokens, FLOPs and wall time go on from them.
    pub counters: Counters,
    /// Its metrics log: the lines up to `counters.step` start the new run's log.
    pub metrics: &'a [Metrics],
    /// The held-out set, on which the new weights are evaluated at `counters.step`.
    pub eval: &'a [Batch],
}

/// File names inside a checkpoint folder (besides the Hugging Face files).
pub const STATE_FILE: &str = "trainer_state.json";
/// Optimizer moments inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The metrics log inside an output folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The latest resumable checkpoint inside an output folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The final model (Hugging Face folder, no optimizer state) inside an output folder.
pub const MODEL_DIR: &str = "model";

/// Files (tokenizer, README, ...) copied into every checkpoint: a folder and paths relative to it.
#[derive(Clone, Debug, Default)]
pub struct CarryFiles {
    /// The folder they are in.
    pub dir: PathBuf,
    /// Paths relative to `dir`.
    pub files: Vec<PathBuf>,
}

/// A training run in progress.
pub struct Trainer {
    cfg: TrainConfig,
    params: ModelParams,
    model: Net,
    opt: AdamW,
    device: Device,
    out: PathBuf,
    carry: CarryFiles,
    step: usize,
    tokens: u64,
    flops: u64,
    wall_s: f64,
    pending: (f64, usize),
}

impl Trainer {
    /// A fresh run of `params` (BERT or GPT-2) writing into `out` (created if needed).
    pub fn new(
        cfg: TrainConfig,
        params: impl Into<ModelParams>,
        device: Device,
        out: &Path,
        carry: CarryFiles,
    ) -> Result<Self> {
        let params = params.into();
        cfg.validate(params.layers())?;
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        let model = params.build()?;
        let opt = params.optimizer(cfg.adamw);
        Ok(Self {
            cfg,
            params,
            model,
            opt,
            device,
            out: out.to_owned(),
            carry,
            step: 0,
            tokens: 0,
            flops: 0,
            wall_s: 0.0,
            pending: (0.0, 0),
        })
    }

    /// A run of new weights `params` that continues another run's counters, e.g. StackBERT's
    /// stacked phase: fresh optimizer moments, while the step (and with it the learning-rate
    /// schedule and every per-step draw), tokens, FLOPs and wall time go on from
    /// `from.counters`. Writes a consistent start into `out`, replacing what an earlier
    /// attempt left there: `metrics.jsonl` holds the continued run's lines up to that step and
    /// the new weights' held-out loss at it, the first checkpoint is at that step (so the run
    /// resumes like any other), and no final model.
    pub fn continuing(
        cfg: TrainConfig,
        params: impl Into<ModelParams>,
        device: Device,
        out: &Path,
        carry: CarryFiles,
        from: Continuation<'_>,
    ) -> Result<Self> {
        let c = from.counters;
        if c.step == 0 || c.step > cfg.steps {
            return Err(TrainError::Config(format!(
                "a continued run starts after step 0 and within its {} steps, not at step {}",
                cfg.steps, c.step
            )));
        }
        let mut t = Self::new(cfg, params, device, out, carry)?;
        let model_dir = out.join(MODEL_DIR);
        if model_dir.exists() {
            std::fs::remove_dir_all(&model_dir).map_err(io_err(&model_dir))?;
        }
        t.step = c.step;
        t.tokens = c.tokens;
        t.flops = c.flops;
        t.wall_s = c.wall_s;
        let eval_loss = t.eval_loss(from.eval)?;
        // The line describes the step just done, as every line does.
        let last = c.step - 1;
        let (stage, _) = t.scope_at(last);
        let first = Metrics {
            step: c.step,
            tokens: c.tokens,
            flops: c.flops,
            train_loss: None,
            eval_loss: Some(eval_loss),
            lr: t.cfg.schedule.lr(last),
            stage,
            wall_s: c.wall_s,
        };
        let text: String = from
            .metrics
            .iter()
            .filter(|m| m.step <= c.step)
            .chain(std::iter::once(&first))
            .map(|m| serde_json::to_string(m).expect("serialisable") + "\n")
            .collect();
        let path = out.join(METRICS_FILE);
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        t.save_checkpoint()?;
        Ok(t)
    }

    /// Resumes the run whose output folder is `out` from its latest checkpoint. `cfg`, if given,
    /// must equal the stored configuration.
    pub fn resume(out: &Path, cfg: Option<&TrainConfig>, device: Device) -> Result<Self> {
        let dir = out.join(CHECKPOINT_DIR);
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::BadFile {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(c) = cfg
            && *c != state.config
        {
            return Err(TrainError::Config(format!(
                "--resume with different settings than the checkpoint in {}: stored {:?}, asked {:?}",
                dir.display(),
                state.config,
                c
            )));
        }
        let md = read_model_dir(&dir)?;
        let params = ModelParams::from_model(&md.model, &device)?;
        let carry_files: Vec<PathBuf> = md
            .other_files
            .iter()
            .filter(|p| {
                let s = p.to_string_lossy();
                s != STATE_FILE && s != OPTIMIZER_FILE
            })
            .cloned()
            .collect();
        // Keep the carried files outside the checkpoint folder, which is replaced on every save.
        let carry_dir = out.join(".carry");
        if carry_dir.exists() {
            std::fs::remove_dir_all(&carry_dir).map_err(io_err(&carry_dir))?;
        }
        copy_files(&dir, &carry_files, &carry_dir)?;
        let mut t = Self::new(
            state.config.clone(),
            params,
            device.clone(),
            out,
            CarryFiles {
                dir: carry_dir,
                files: carry_files,
            },
        )?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        let tensors = candle_core::safetensors::load(&opt_path, &device).map_err(|e| {
            TrainError::BadFile {
                path: opt_path.clone(),
                reason: e.to_string(),
            }
        })?;
        t.opt.load_state(&tensors, &state.optimizer_steps)?;
        t.step = state.step;
        t.tokens = state.tokens;
        t.flops = state.flops;
        t.wall_s = state.wall_s;
        t.pending = state.pending_loss;
        t.truncate_metrics()?;
        tracing::info!(step = t.step, "resumed from {}", dir.display());
        Ok(t)
    }

    /// Steps done so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The parameters being trained.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The output folder.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// The stage and sub-model of step `step` (0-based).
    pub fn scope_at(&self, step: usize) -> (u8, Scope) {
        let layers = self.params.layers();
        match self.cfg.two_stage {
            Some(ts) if step < ts.stage1_steps => {
                let depths = submodel_depths(layers, ts.lb);
                let n = depths[crate::schedule::sample_submodel(self.cfg.seed, step, depths.len())];
                (1, Scope::stage1(n, ts.lb))
            }
            _ => (2, Scope::full(layers)),
        }
    }

    /// One optimizer step on `batch`; returns the loss.
    pub fn train_step(&mut self, batch: &Batch) -> Result<f64> {
        let (_, scope) = self.scope_at(self.step);
        let mut dropout = Dropout::train(step_seed(self.cfg.seed, self.step, 1));
        let loss = self.model.loss(batch, scope, &mut dropout, &self.device)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                what: "loss",
                step: self.step + 1,
            });
        }
        let grads = loss.backward()?;
        let lr = self.cfg.schedule.lr(self.step);
        self.opt
            .step(&grads, lr, self.cfg.max_grad_norm)
            .map_err(|e| match e {
                TrainError::Model(_) => TrainError::Diverged {
                    what: "gradient norm",
                    step: self.step + 1,
                },
                e => e,
            })?;
        self.step += 1;
        self.tokens += batch.tokens();
        self.flops += self.params.train_flops(batch, scope);
        Ok(value)
    }

    /// Mean held-out loss over `batches` (weighted by predicted positions), dropout off.
    pub fn eval_loss(&self, batches: &[Batch]) -> Result<f64> {
        self.model.eval_loss(batches, &self.device)
    }

    /// Trains until step `until` (at most the configured total), reading batches from `source`
    /// (which must be positioned at the current step), evaluating on `eval`, appending metrics,
    /// checkpointing, and calling `on_step` after each step.
    pub fn run(
        &mut self,
        source: &mut dyn BatchSource,
        eval: &[Batch],
        until: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<()> {
        let until = until.min(self.cfg.steps);
        let started = Instant::now();
        let wall_before = self.wall_s;
        let tokens_before = self.tokens;
        if self.step == 0 {
            let e = self.eval_loss(eval)?;
            let (stage, _) = self.scope_at(0);
            self.append_metrics(&Metrics {
                step: 0,
                tokens: 0,
                flops: 0,
                train_loss: None,
                eval_loss: Some(e),
                lr: 0.0,
                stage,
                wall_s: 0.0,
            })?;
        }
        while self.step < until {
            let batch = source.next_batch()?;
            let (stage, scope) = self.scope_at(self.step);
            let lr = self.cfg.schedule.lr(self.step);
            let loss = self.train_step(&batch)?;
            self.wall_s = wall_before + started.elapsed().as_secs_f64();
            self.pending.0 += loss;
            self.pending.1 += 1;
            let last = self.step == self.cfg.steps;
            let eval_now = self.step.is_multiple_of(self.cfg.eval_every) || last;
            let eval_loss = if eval_now {
                Some(self.eval_loss(eval)?)
            } else {
                None
            };
            if eval_now || self.step.is_multiple_of(self.cfg.log_every) || last {
                let m = Metrics {
                    step: self.step,
                    tokens: self.tokens,
                    flops: self.flops,
                    train_loss: Some(self.pending.0 / self.pending.1 as f64),
                    eval_loss,
                    lr,
                    stage,
                    wall_s: self.wall_s,
                };
                self.pending = (0.0, 0);
                self.append_metrics(&m)?;
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            on_step(&StepReport {
                step: self.step,
                total: self.cfg.steps,
                loss,
                eval_loss,
                tokens: self.tokens,
                tokens_per_s: (self.tokens - tokens_before) as f64 / elapsed,
                stage,
                scope,
                lr,
            });
            if self.step.is_multiple_of(self.cfg.checkpoint_every) || self.step == until {
                self.save_checkpoint()?;
            }
        }
        if self.step == self.cfg.steps {
            self.save_model(&self.out.join(MODEL_DIR))?;
        }
        Ok(())
    }

    fn append_metrics(&self, m: &Metrics) -> Result<()> {
        let path = self.out.join(METRICS_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let line = serde_json::to_string(m).expect("serialisable") + "\n";
        f.write_all(line.as_bytes()).map_err(io_err(&path))
    }

    /// Drops metrics lines written after the checkpoint being resumed (a run killed between a
    /// metrics line and its checkpoint would otherwise log those steps twice).
    fn truncate_metrics(&self) -> Result<()> {
        let path = self.out.join(METRICS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut keep = String::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let m: Metrics = serde_json::from_str(line).map_err(|e| TrainError::BadFile {
                path: path.clone(),
                reason: format!("line {}: {e}", i + 1),
            })?;
            if m.step <= self.step {
                keep.push_str(line);
                keep.push('\n');
            }
        }
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, keep).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// The current weights as a typed BERT checkpoint (an error for GPT-2: see [`Self::to_model`]).
    pub fn to_bert(&self) -> Result<Bert> {
        match &self.params {
            ModelParams::Bert(p) => p.to_bert(),
            ModelParams::Gpt2(_) => {
                Err(TrainError::Model("the model is a GPT-2, not a BERT".into()))
            }
        }
    }

    /// The current weights as a typed checkpoint.
    pub fn to_model(&self) -> Result<Model> {
        self.params.to_model()
    }

    /// Writes the current weights as a Hugging Face folder at `dir` (atomically, replacing it).
    pub fn save_model(&self, dir: &Path) -> Result<PathBuf> {
        let model = self.params.to_model()?;
        let tmp = AtomicDir::new(dir, true)?;
        write_weights(tmp.path(), &model, Dtype::F32)?;
        write_config(tmp.path(), &model, Dtype::F32)?;
        copy_files(&self.carry.dir, &self.carry.files, tmp.path())?;
        Ok(tmp.commit()?)
    }

    /// Writes the resumable checkpoint (`out/checkpoint`): the model folder plus optimizer
    /// moments and trainer state, atomically.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.out.join(CHECKPOINT_DIR);
        let model = self.params.to_model()?;
        let tmp = AtomicDir::new(&dir, true)?;
        write_weights(tmp.path(), &model, Dtype::F32)?;
        write_config(tmp.path(), &model, Dtype::F32)?;
        copy_files(&self.carry.dir, &self.carry.files, tmp.path())?;
        let (tensors, optimizer_steps) = self.opt.state();
        let opt_path = tmp.path().join(OPTIMIZER_FILE);
        candle_core::safetensors::save(&tensors, &opt_path)?;
        let state = TrainerState {
            config: self.cfg.clone(),
            step: self.step,
            tokens: self.tokens,
            flops: self.flops,
            wall_s: self.wall_s,
            pending_loss: self.pending,
            optimizer_steps,
        };
        let state_path = tmp.path().join(STATE_FILE);
        let text = serde_json::to_string_pretty(&state).expect("serialisable") + "\n";
        std::fs::write(&state_path, text).map_err(io_err(&state_path))?;
        Ok(tmp.commit()?)
    }
}

impl Net {
    fn layers(&self) -> usize {
        match self {
            Net::Bert(m) => m.num_layers(),
            Net::Gpt2(m) => m.num_layers(),
        }
    }

    fn eval_loss(&self, batches: &[Batch], device: &Device) -> Result<f64> {
        let mut sum = 0.0;
        let mut count = 0usize;
        let scope = Scope::full(self.layers());
        for b in batches {
            let loss = self.loss(b, scope, &mut Dropout::eval(), device)?;
            let n = b.predicted();
            sum += loss.detach().to_scalar::<f32>()? as f64 * n as f64;
            count += n;
        }
        if count == 0 {
            return Err(TrainError::Data("no held-out positions to evaluate".into()));
        }
        Ok(sum / count as f64)
    }
}

/// Mean held-out loss of `params` over `batches` (weighted by predicted positions), dropout off.
pub fn eval_loss(params: &ModelParams, batches: &[Batch], device: &Device) -> Result<f64> {
    params.build()?.eval_loss(batches, device)
}

/// Reads a metrics log.
pub fn read_metrics(path: &Path) -> Result<Vec<Metrics>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::BadFile {
                path: path.to_owned(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Seeded random MLM batches (uniform tokens, 15% predicted): for tests and throughput benchmarks.
#[derive(Clone, Debug)]
pub struct SyntheticBatches {
    rng: SplitMix64,
    vocab: usize,
    batch_size: usize,
    seq_len: usize,
}

impl SyntheticBatches {
    /// Batches of `batch_size` x `seq_len` tokens below `vocab`, seeded.
    pub fn new(vocab: usize, batch_size: usize, seq_len: usize, seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            vocab,
            batch_size,
            seq_len,
        }
    }
}

impl SyntheticBatches {
    /// The next masked batch.
    pub fn next_mlm(&mut self) -> TrainBatch {
        let n = self.batch_size * self.seq_len;
        // Ids 0..5 are the special tokens of the bundled vocabulary; 4 is [MASK].
        let low = 5.min(self.vocab - 1);
        let mut input_ids = Vec::with_capacity(n);
        let mut labels = vec![-100i64; n];
        let mut masked = Vec::new();
        for (i, label) in labels.iter_mut().enumerate() {
            let tok = (low + self.rng.below(self.vocab - low)) as u32;
            if self.rng.uniform() < 0.15 {
                *label = tok as i64;
                masked.push(i);
                input_ids.push(4.min(self.vocab as u32 - 1));
            } else {
                input_ids.push(tok);
            }
        }
        if masked.is_empty() {
            labels[0] = input_ids[0] as i64;
            masked.push(0);
        }
        TrainBatch {
            input_ids,
            token_type_ids: vec![0; n],
            attention_mask: vec![1; n],
            labels,
            masked,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
        }
    }
}

impl BatchSource for SyntheticBatches {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Mlm(self.next_mlm()))
    }
}

impl BatchSource for crate::data::MlmBatcher {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Mlm(crate::data::MlmBatcher::next_batch(self)))
    }
}

impl BatchSource for CausalBatcher {
    fn next_batch(&mut self) -> Result<Batch> {
        Ok(Batch::Causal(CausalBatcher::next_batch(self)))
    }
}
