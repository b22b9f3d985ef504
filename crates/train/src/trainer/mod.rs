//! The pre-training loop: MLM (BERT) or causal-LM (GPT-2) steps with AdamW, held-out
//! evaluation, JSON-lines metrics, atomic checkpoints with exact resume, and two-stage
//! pre-training (spec section 8).
//!
//! Split along its seams: [`config`] (what determines a run), [`params`] (the weights and the
//! model built over them), [`batch`] (what a step consumes), [`state`] (metrics, checkpoint
//! state, folder layout) and, here, the [`Trainer`] and its loop.

use crate::bert::{BertForMaskedLM, DeviceBatch, Params};
use crate::data::MlmBatch;
use crate::data::causal::{CausalBatch, CausalBatcher};
use crate::error::io_err;
use crate::gpt2::{CausalDeviceBatch, Gpt2LMHeadModel, Gpt2Params};
use crate::layers::{Dropout, Scope};
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

mod batch;
mod config;
mod params;
mod state;

pub use batch::{Batch, BatchSource, SyntheticBatches, TrainBatch};
pub(crate) use config::step_seed;
pub use config::{TrainConfig, TwoStage, submodel_depths};
pub(crate) use params::Net;
pub use params::{ModelParams, eval_loss};
pub use state::{
    CHECKPOINT_DIR, CarryFiles, Continuation, Counters, METRICS_FILE, MODEL_DIR, Metrics,
    OPTIMIZER_FILE, STATE_FILE, StepReport, TrainerState, read_metrics,
};

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
