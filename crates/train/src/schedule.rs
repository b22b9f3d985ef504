//! The two-stage training schedule as a small, versioned JSON file (`bert2bert_schedule.json`):
//! the one description of a run's schedule that the candle trainer and the PyTorch package
//! (`python/`) both read. Format: `docs/distributed.md`.
//!
//! It names every parameter by its Hugging Face name (as in `BertForMaskedLM` /
//! `GPT2LMHeadModel`), lists the stage-1 sub-models with the parameters each one trains, and
//! carries the learning-rate schedule, AdamW settings, clipping and the seed of the sub-model
//! sampler ([`sample_submodel`]), so another trainer can follow it step for step.

use crate::error::io_err;
use crate::optim::{AdamWConfig, Schedule};
use crate::trainer::{ModelParams, TrainConfig, TwoStage, submodel_depths};
use crate::{Result, TrainError};
use bert2bert_checkpoint::bert::{self, BertLayout};
use bert2bert_checkpoint::gpt2::{self, Gpt2Layout};
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{BertConfig, Family, Gpt2Config, Model};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The schedule's file name, beside a grown checkpoint or in a `pretrain` output folder.
pub const SCHEDULE_FILE: &str = "bert2bert_schedule.json";
/// The value of the file's `format` field.
pub const SCHEDULE_FORMAT: &str = "bert2bert-schedule";
/// The version this code writes and reads.
pub const SCHEDULE_VERSION: u32 = 1;
/// The sub-model sampler of [`sample_submodel`], by name (the file's `sampler` field).
pub const SAMPLER: &str = "splitmix64-v1";
/// The Llama-family `model_type`s a schedule may name; the PyTorch package trains them, the
/// candle trainer does not.
pub const LLAMA_FAMILIES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

/// One stage-1 sub-model: the embeddings, the bottom `depth` layers and the head, of which only
/// layers `frozen_below..depth` and the head are trained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubModel {
    /// Layers run (the sub-model's depth).
    pub depth: usize,
    /// Layers `0..frozen_below` run without gradient.
    pub frozen_below: usize,
    /// Hugging Face names of the parameters this sub-model trains, sorted.
    pub trainable: Vec<String>,
}

/// A run's schedule: what `bert2bert_schedule.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSchedule {
    /// Always [`SCHEDULE_FORMAT`].
    pub format: String,
    /// [`SCHEDULE_VERSION`].
    pub version: u32,
    /// `bert` (masked LM) or `gpt2` (next token), as `model_type`.
    pub family: String,
    /// Transformer layers of the model (L).
    pub layers: usize,
    /// l_b, layers trained per stage-1 sub-model (null for a single-stage run).
    pub lb: Option<usize>,
    /// Optimizer steps of stage 1 (0 for a single-stage run).
    pub stage1_steps: usize,
    /// Optimizer steps of the whole run (stage 1 included).
    pub total_steps: usize,
    /// The learning rate: one schedule across both stages.
    pub lr: Schedule,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (null: none).
    pub max_grad_norm: Option<f64>,
    /// Seed of the sub-model sampler (and, in the candle trainer, of dropout and the data).
    pub seed: u64,
    /// How a stage-1 step picks its sub-model: [`SAMPLER`].
    pub sampler: String,
    /// Every parameter of the model (all trained in stage 2), sorted.
    pub parameters: Vec<String>,
    /// The parameters without weight decay (biases, LayerNorms), sorted.
    pub no_weight_decay: Vec<String>,
    /// Stage-1 sub-models in sampling order (empty for a single-stage run).
    pub submodels: Vec<SubModel>,
}

/// What a parameter belongs to, for the stage-1 rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Below every sub-model: word/position/type embeddings (and their LayerNorm).
    Embedding,
    /// Transformer layer `i`.
    Layer(usize),
    /// The output head shared by every sub-model (BERT: transform, its LayerNorm, the output
    /// bias, an untied decoder; GPT-2: `ln_f`, an untied `lm_head`).
    Head,
}

/// Every trained parameter of a `family` model with `layers` layers, by Hugging Face name, with
/// its role, in the checkpoint's write order: the rows of the family's tensor table for the
/// model the trainers train (`BertForMaskedLM` / `GPT2LMHeadModel`).
fn parameters(family: Family, layers: usize, untied_head: bool) -> Vec<(String, Role)> {
    // Names and roles depend only on the layer count and the layout; the placeholder config's
    // sizes only feed the table's shapes, which the schedule does not use.
    match family {
        Family::Bert => {
            let c = BertConfig::new(1, 1, layers, 1, 1, 1);
            bert::tensor_table(&c, BertLayout::masked_lm(untied_head))
                .into_iter()
                .filter_map(|d| bert_role(d.role).map(|r| (d.name, r)))
                .collect()
        }
        Family::Gpt2 => {
            let c = Gpt2Config::new(1, 1, layers, 1, 1);
            gpt2::tensor_table(&c, Gpt2Layout::lm_head_model(untied_head))
                .into_iter()
                .map(|d| (d.name, gpt2_role(d.role)))
                .collect()
        }
    }
}

/// The stage-1 role of a BERT tensor; `None` for the pooler and NSP head, which
/// `BertForMaskedLM` does not have.
fn bert_role(role: bert::Role) -> Option<Role> {
    use bert::Role as R;
    match role {
        R::WordEmbeddings | R::PositionEmbeddings | R::TokenTypeEmbeddings => Some(Role::Embedding),
        R::EmbeddingsLayerNorm(_) => Some(Role::Embedding),
        R::Layer(l, _, _) => Some(Role::Layer(l)),
        R::Transform(_) | R::TransformLayerNorm(_) | R::MlmBias | R::Decoder => Some(Role::Head),
        R::Pooler(_) | R::Nsp(_) => None,
    }
}

/// The stage-1 role of a GPT-2 tensor.
fn gpt2_role(role: gpt2::Role) -> Role {
    use gpt2::Role as R;
    match role {
        R::Wte | R::Wpe => Role::Embedding,
        R::Block(l, _, _) => Role::Layer(l),
        R::LnF(_) | R::LmHead => Role::Head,
    }
}

/// The role of a Llama-family parameter: `model.embed_tokens` below every sub-model, the final
/// `model.norm` and an untied `lm_head` in the head.
fn llama_role(name: &str) -> Option<Role> {
    if name.starts_with("model.embed_tokens.") {
        Some(Role::Embedding)
    } else if name.starts_with("model.norm.") || name == "lm_head.weight" {
        Some(Role::Head)
    } else {
        let rest = name.strip_prefix("model.layers.")?;
        let (i, _) = rest.split_once('.')?;
        i.parse().ok().map(Role::Layer)
    }
}

/// Whether a Llama-family parameter is exempt from weight decay: biases and every RMSNorm
/// weight (the layer norms, Qwen3's q/k norms, the final norm), as for BERT's and GPT-2's norms.
fn llama_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("norm")
}

/// Every trained parameter of a `family` model with `layers` layers, by Hugging Face name,
/// sorted (`untied_head`: BERT's `cls.predictions.decoder.weight` / GPT-2's `lm_head.weight`).
pub fn parameter_names(family: Family, layers: usize, untied_head: bool) -> Vec<String> {
    let mut names: Vec<String> = parameters(family, layers, untied_head)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

/// Whether the model's output head has its own matrix (not tied to the word embeddings).
pub fn untied_head(model: &Model) -> bool {
    match model {
        Model::Bert(b) => b.mlm.as_ref().is_some_and(|m| m.decoder.is_some()),
        Model::Gpt2(g) => !g.config.tie_word_embeddings,
    }
}

/// The index of the sub-model that stage-1 step `step` (0-based) trains, out of `n`:
/// `SplitMix64(s).below(n)` with `s = SplitMix64(seed * K1 ^ 2 * K2 ^ step * K3).next_u64()`
/// (wrapping u64 arithmetic; K1, K2, K3 in `docs/distributed.md`), a pure function of
/// (seed, step) so every rank and a resumed run draw the same.
pub fn sample_submodel(seed: u64, step: usize, n: usize) -> usize {
    SplitMix64::new(crate::trainer::step_seed(seed, step, 2)).below(n)
}

impl TrainSchedule {
    /// The schedule of `cfg` for a `family` model of `layers` layers.
    pub fn new(family: Family, layers: usize, untied: bool, cfg: &TrainConfig) -> Result<Self> {
        let no_decay = |n: &str| match family {
            Family::Bert => crate::bert::no_weight_decay(n),
            Family::Gpt2 => crate::gpt2::no_weight_decay(n),
        };
        let params = parameters(family, layers, untied);
        let roles: HashMap<&str, Role> = params.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let mut names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        Self::build(
            family.name(),
            layers,
            names,
            &|n| roles.get(n).copied(),
            &no_decay,
            cfg,
        )
    }

    /// The schedule of `cfg` for a Llama-family model (`model_type` one of
    /// [`LLAMA_FAMILIES`]) of `layers` layers whose parameters are `parameters` (Hugging Face
    /// names, as the checkpoint's tensor table lists them).
    pub fn for_llama(
        model_type: &str,
        layers: usize,
        mut parameters: Vec<String>,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        if !LLAMA_FAMILIES.contains(&model_type) {
            return Err(TrainError::Config(format!(
                "`{model_type}` is not a Llama-family model type ({})",
                LLAMA_FAMILIES.join(", ")
            )));
        }
        parameters.sort();
        Self::build(
            model_type,
            layers,
            parameters,
            &llama_role,
            &llama_no_decay,
            cfg,
        )
    }

    /// The schedule of `cfg` over `parameters` (sorted), each placed by `role`.
    fn build(
        family: &str,
        layers: usize,
        parameters: Vec<String>,
        role: &dyn Fn(&str) -> Option<Role>,
        no_decay: &dyn Fn(&str) -> bool,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        cfg.validate(layers)?;
        let no_weight_decay = parameters.iter().filter(|n| no_decay(n)).cloned().collect();
        let submodels = match cfg.two_stage {
            Some(ts) => submodel_depths(layers, ts.lb)
                .into_iter()
                .map(|depth| {
                    let frozen_below = depth.saturating_sub(ts.lb);
                    let trainable = parameters
                        .iter()
                        .filter(|n| match role(n) {
                            Some(Role::Layer(i)) => (frozen_below..depth).contains(&i),
                            Some(Role::Head) => true,
                            Some(Role::Embedding) | None => false,
                        })
                        .cloned()
                        .collect();
                    SubModel {
                        depth,
                        frozen_below,
                        trainable,
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            format: SCHEDULE_FORMAT.into(),
            version: SCHEDULE_VERSION,
            family: family.into(),
            layers,
            lb: cfg.two_stage.map(|t| t.lb),
            stage1_steps: cfg.two_stage.map_or(0, |t| t.stage1_steps),
            total_steps: cfg.steps,
            lr: cfg.schedule,
            adamw: cfg.adamw,
            max_grad_norm: cfg.max_grad_norm,
            seed: cfg.seed,
            sampler: SAMPLER.into(),
            parameters,
            no_weight_decay,
            submodels,
        })
    }

    /// The schedule of `cfg` for the model `params` trains.
    pub fn for_params(params: &ModelParams, cfg: &TrainConfig) -> Result<Self> {
        let untied = match params {
            ModelParams::Bert(p) => p.untied_decoder(),
            ModelParams::Gpt2(p) => !p.config().tie_word_embeddings,
        };
        Self::new(params.family(), params.layers(), untied, cfg)
    }

    /// The training configuration this schedule describes, with the candle trainer's own
    /// evaluation, logging and checkpoint intervals.
    pub fn train_config(
        &self,
        eval_every: usize,
        log_every: usize,
        checkpoint_every: usize,
    ) -> TrainConfig {
        TrainConfig {
            steps: self.total_steps,
            schedule: self.lr,
            adamw: self.adamw,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            eval_every,
            log_every,
            checkpoint_every,
            two_stage: self.lb.map(|lb| TwoStage {
                lb,
                stage1_steps: self.stage1_steps,
            }),
        }
    }

    /// The sub-model of step `step`, or `None` in stage 2.
    pub fn submodel_at(&self, step: usize) -> Option<&SubModel> {
        if step >= self.stage1_steps || self.submodels.is_empty() {
            return None;
        }
        Some(&self.submodels[sample_submodel(self.seed, step, self.submodels.len())])
    }

    /// Checks that this schedule is one the candle trainer follows exactly for `params`:
    /// same family, layer count and parameter names, and sub-models as the stage-1 rule makes
    /// them. `path` names the file in errors.
    pub fn check(&self, params: &ModelParams, path: &Path) -> Result<()> {
        let bad = |reason: String| TrainError::BadFile {
            path: path.to_owned(),
            reason,
        };
        if self.family != params.family().name() {
            return Err(bad(format!(
                "the schedule is for a {} model, the checkpoint is {}",
                self.family,
                params.family().name()
            )));
        }
        if self.layers != params.layers() {
            return Err(bad(format!(
                "the schedule is for {} layers, the model has {}",
                self.layers,
                params.layers()
            )));
        }
        let have: Vec<String> = params.named_vars().into_iter().map(|(n, _)| n).collect();
        if let Some(n) = self.parameters.iter().find(|n| !have.contains(n)) {
            return Err(bad(format!("parameter `{n}` is not in the model")));
        }
        if let Some(n) = have.iter().find(|n| !self.parameters.contains(n)) {
            return Err(bad(format!(
                "the model's parameter `{n}` is not in the schedule"
            )));
        }
        let expected = Self::for_params(params, &self.train_config(1, 1, 1))
            .map_err(|e| bad(e.to_string()))?;
        if self.no_weight_decay != expected.no_weight_decay {
            return Err(bad(
                "`no_weight_decay` differs from the family's rule (biases and \
                 LayerNorms); the candle trainer cannot follow it"
                    .into(),
            ));
        }
        for (got, want) in self.submodels.iter().zip(&expected.submodels) {
            if got != want {
                return Err(bad(format!(
                    "sub-model of depth {} differs from the stage-1 rule (top {} layers and \
                     the head); the candle trainer cannot follow it",
                    got.depth,
                    self.lb.unwrap_or(0)
                )));
            }
        }
        if self.submodels.len() != expected.submodels.len() {
            return Err(bad(format!(
                "{} sub-models, the stage-1 rule gives {}",
                self.submodels.len(),
                expected.submodels.len()
            )));
        }
        Ok(())
    }

    /// Reads and validates a schedule file (format, version, consistency of its fields).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let bad = |reason: String| TrainError::BadFile {
            path: path.to_owned(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        match v.get("format").and_then(serde_json::Value::as_str) {
            Some(SCHEDULE_FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "`format` is {other:?}, expected \"{SCHEDULE_FORMAT}\""
                )));
            }
        }
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(x) if x == SCHEDULE_VERSION as u64 => {}
            other => {
                return Err(bad(format!(
                    "version {other:?}; this build reads version {SCHEDULE_VERSION}"
                )));
            }
        }
        let s: Self = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        if s.sampler != SAMPLER {
            return Err(bad(format!(
                "sampler `{}`, this build knows `{SAMPLER}`",
                s.sampler
            )));
        }
        if s.family != Family::Bert.name()
            && s.family != Family::Gpt2.name()
            && !LLAMA_FAMILIES.contains(&s.family.as_str())
        {
            return Err(bad(format!("unsupported family `{}`", s.family)));
        }
        s.train_config(1, 1, 1)
            .validate(s.layers)
            .map_err(|e| bad(e.to_string()))?;
        if s.lb.is_some() == s.submodels.is_empty() {
            return Err(bad("`lb` and `submodels` must be given together".into()));
        }
        Ok(s)
    }

    /// Writes the schedule as pretty JSON to `path` (through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serialisable") + "\n";
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Decay;

    fn cfg(two_stage: Option<TwoStage>) -> TrainConfig {
        TrainConfig {
            steps: 40,
            schedule: Schedule {
                peak: 1e-3,
                warmup: 2,
                total: 40,
                decay: Decay::Linear,
            },
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            seed: 3,
            eval_every: 10,
            log_every: 1,
            checkpoint_every: 10,
            two_stage,
        }
    }

    #[test]
    fn submodels_train_their_top_layers_and_the_head() {
        let ts = TwoStage {
            lb: 2,
            stage1_steps: 5,
        };
        let s = TrainSchedule::new(Family::Gpt2, 5, false, &cfg(Some(ts))).unwrap();
        let depths: Vec<(usize, usize)> = s
            .submodels
            .iter()
            .map(|m| (m.depth, m.frozen_below))
            .collect();
        assert_eq!(depths, vec![(2, 0), (4, 2), (5, 3)]);
        let top = &s.submodels[2].trainable;
        assert_eq!(top.len(), 2 * 12 + 2);
        assert!(top.iter().all(|n| n.starts_with("transformer.h.3.")
            || n.starts_with("transformer.h.4.")
            || n.starts_with("transformer.ln_f.")));
        let s = TrainSchedule::new(Family::Bert, 2, true, &cfg(Some(ts))).unwrap();
        assert!(
            s.submodels[0]
                .trainable
                .contains(&"cls.predictions.decoder.weight".into())
        );
        assert!(
            !s.submodels[0]
                .trainable
                .iter()
                .any(|n| n.contains("embeddings"))
        );
    }

    #[test]
    fn schedule_round_trips_through_its_file_and_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SCHEDULE_FILE);
        let s = TrainSchedule::new(
            Family::Bert,
            3,
            false,
            &cfg(Some(TwoStage {
                lb: 1,
                stage1_steps: 5,
            })),
        )
        .unwrap();
        s.write(&path).unwrap();
        assert_eq!(TrainSchedule::read(&path).unwrap(), s);
        assert_eq!(
            s.train_config(10, 1, 10),
            cfg(s.train_config(1, 1, 1).two_stage)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 9")).unwrap();
        let e = TrainSchedule::read(&path).unwrap_err().to_string();
        assert!(e.contains(SCHEDULE_FILE) && e.contains("version"), "{e}");
        std::fs::write(
            &path,
            text.replace("\"stage1_steps\": 5", "\"stage1_steps\": 50"),
        )
        .unwrap();
        let e = TrainSchedule::read(&path).unwrap_err().to_string();
        assert!(e.contains("longer than the run"), "{e}");
    }

    #[test]
    fn llama_family_schedules_place_their_tensors_and_round_trip() {
        let names: Vec<String> = [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.1.self_attn.q_proj.bias",
            "model.layers.1.mlp.down_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ]
        .map(String::from)
        .to_vec();
        let ts = TwoStage {
            lb: 1,
            stage1_steps: 5,
        };
        let s = TrainSchedule::for_llama("qwen3", 2, names, &cfg(Some(ts))).unwrap();
        assert_eq!(s.family, "qwen3");
        assert!(s.parameters.is_sorted());
        assert_eq!(
            s.no_weight_decay,
            [
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.self_attn.q_norm.weight",
                "model.layers.1.self_attn.q_proj.bias",
                "model.norm.weight",
            ]
        );
        // Depth 2, l_b 1: layer 1 and the head (final norm, untied lm_head); never the embeddings.
        assert_eq!(
            s.submodels[1].trainable,
            [
                "lm_head.weight",
                "model.layers.1.mlp.down_proj.weight",
                "model.layers.1.self_attn.q_proj.bias",
                "model.norm.weight",
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SCHEDULE_FILE);
        s.write(&path).unwrap();
        assert_eq!(TrainSchedule::read(&path).unwrap(), s);
        let e = TrainSchedule::for_llama("phi", 2, vec![], &cfg(None)).unwrap_err();
        assert!(e.to_string().contains("`phi`"), "{e}");
    }

    /// The sampler's first draws, pinned: `python/tests/test_schedule.py` pins the same
    /// values for the Python reimplementation, so the two cannot drift apart silently.
    #[test]
    fn sampler_draws_are_pinned_and_cover_every_submodel() {
        let draws = |seed: u64, n: usize| -> Vec<usize> {
            (0..12).map(|s| sample_submodel(seed, s, n)).collect()
        };
        assert_eq!(draws(0, 4), [3, 2, 2, 1, 2, 1, 3, 3, 2, 1, 1, 0]);
        assert_eq!(
            draws(12345678901234567, 5),
            [0, 4, 4, 4, 1, 2, 0, 3, 2, 3, 3, 1]
        );
        let mut seen = [0usize; 3];
        for step in 0..300 {
            seen[sample_submodel(7, step, 3)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 70), "{seen:?}");
    }
}
