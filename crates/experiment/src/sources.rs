//! The sources a setting grows from (a bundled folder or a model pre-trained here), what the
//! summary records about them, and the data every run of one family shares.

use crate::ExperimentError;
use crate::error::checkpoint;
use crate::plan::{Plan, SettingPlan, Shape, SourceSpec, source_run_name};
use crate::runner::Runner;
use bert2bert_checkpoint::{Model, read_model_dir};
use bert2bert_train::bert::Params;
use bert2bert_train::data::DEFAULT_CORPUS;
use bert2bert_train::gpt2::Gpt2Params;
use bert2bert_train::trainer::{
    Batch, BatchSource, CarryFiles, METRICS_FILE, MODEL_DIR, ModelParams, read_metrics,
};
use bert2bert_train::{Arch, Streams, default_tokenizer_dir};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The data every run of one family shares: the tokenized corpus (each run draws its own
/// seeded order from it) and the fixed held-out set.
pub(crate) struct FamilyData {
    /// The family.
    pub(crate) arch: Arch,
    /// The setting's tokenizer folder (relative to the assets; None: the family's bundled one).
    pub(crate) tokenizer: Option<PathBuf>,
    /// The setting's corpus folder (relative to the assets; None: the bundled plays).
    pub(crate) corpus: Option<PathBuf>,
    /// The setting's mask fraction (None: BERT's).
    pub(crate) mask_prob: Option<f64>,
    corpus_dir: PathBuf,
    streams: Streams,
    tokenizer_dir: PathBuf,
    /// The tokenizer's vocabulary.
    pub(crate) vocab: usize,
    /// The fixed held-out set.
    pub(crate) eval: Vec<Batch>,
}

impl FamilyData {
    /// Tokenizes the corpus under `assets` for `setting` and builds `plan`'s held-out set.
    pub(crate) fn load(
        assets: &Path,
        plan: &Plan,
        setting: &SettingPlan,
    ) -> Result<Self, ExperimentError> {
        let arch = setting.arch;
        let tokenizer_dir = match &setting.tokenizer {
            Some(t) => assets.join(t),
            None => default_tokenizer_dir(assets, arch.family()),
        };
        let corpus_dir = assets.join(setting.corpus.as_deref().unwrap_or(DEFAULT_CORPUS.as_ref()));
        let mut streams = Streams::load(arch.family(), &corpus_dir, &tokenizer_dir)?;
        if let Some(p) = setting.mask_prob {
            streams = streams.with_mask_prob(p);
        }
        let vocab = streams.vocab();
        // Fixed evaluation set (seed 0 for every run), as in `cargo xtask pretrain`.
        let eval = streams.eval(vocab, plan.seq_len, plan.eval_sequences)?;
        Ok(Self {
            arch,
            tokenizer: setting.tokenizer.clone(),
            corpus: setting.corpus.clone(),
            mask_prob: setting.mask_prob,
            corpus_dir,
            streams,
            tokenizer_dir,
            vocab,
            eval,
        })
    }

    /// Training batches of `plan`'s size for a model of `vocab` tokens, seeded.
    pub(crate) fn batcher(
        &self,
        plan: &Plan,
        vocab: usize,
        seed: u64,
    ) -> Result<Box<dyn BatchSource>, ExperimentError> {
        Ok(self
            .streams
            .batcher(vocab, plan.batch_size, plan.seq_len, seed)?
            .0)
    }

    /// The tokenizer files every run's folders carry.
    pub(crate) fn carry(&self) -> CarryFiles {
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
        CarryFiles {
            dir: self.tokenizer_dir.clone(),
            files,
        }
    }
}

/// A source model ready to grow, with its pre-training cost.
pub(crate) struct Source {
    /// The model.
    pub(crate) model: Model,
    /// Its pre-training FLOPs, when known.
    pub(crate) flops: Option<u64>,
    /// Its last held-out loss in its own log, when known.
    pub(crate) final_loss: Option<f64>,
    /// Where it came from, in words.
    pub(crate) origin: String,
}

/// A model folder of family `arch`.
fn load_model(dir: &Path, arch: Arch) -> Result<Model, ExperimentError> {
    let md = read_model_dir(dir).map_err(checkpoint(format!("reading {}", dir.display())))?;
    if md.model.family() != arch.family() {
        return Err(ExperimentError::Invalid(format!(
            "{}: a {} checkpoint, the setting trains {}",
            dir.display(),
            md.model.family().name(),
            arch.family().name()
        )));
    }
    Ok(md.model)
}

/// Trainable parameters of a checkpoint: BERT gets a fresh MLM head if it has none.
pub(crate) fn params_of(
    model: &Model,
    seed: u64,
    dev: &Device,
) -> Result<ModelParams, ExperimentError> {
    Ok(match model {
        Model::Bert(b) => Params::with_fresh_head(b, seed, dev)?.into(),
        Model::Gpt2(g) => Gpt2Params::from_gpt2(g, dev)?.into(),
    })
}

/// The source of a setting: read from its folder, or pre-trained (or resumed) as a run of its
/// own; `None` while that run has not finished.
pub(crate) fn source_of(
    spec: &SourceSpec,
    arch: Arch,
    runner: &Runner,
    root: &Path,
) -> Result<Option<Source>, ExperimentError> {
    match spec {
        SourceSpec::Folder { path } => {
            let dir = root.join(path);
            let model = load_model(&dir, arch).map_err(|e| ExperimentError::Source {
                dir: dir.clone(),
                source: Box::new(e),
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
            let cfg = runner.plan.train_config(
                *steps,
                runner.plan.source_seed,
                false,
                runner.plan.scratch_lr(),
            );
            let done = runner.train(&name, &cfg, *steps, &|| {
                shape.fresh(
                    arch,
                    runner.data.vocab,
                    runner.plan.seq_len,
                    runner.plan.source_seed,
                    &runner.dev,
                )
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
    /// The setting's data (absent in summaries made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
}

/// The data a setting trains on, and how much of it a target run sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The tokenizer folder (relative to the assets folder).
    pub tokenizer: String,
    /// The corpus folder (relative to the assets folder; absent in summaries made before it
    /// was recorded, which all used the bundled plays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    /// The fraction of tokens a masked-LM sequence predicts (absent: BERT's 0.15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_prob: Option<f64>,
    /// Its vocabulary.
    pub vocab: usize,
    /// Tokens in the training split.
    pub train_tokens: usize,
    /// Entropy (nats) of the training split's unigram distribution.
    pub unigram_entropy: f64,
    /// Passes over the training split of one target run.
    pub epochs_per_run: f64,
}

impl DataInfo {
    /// The data of `data` for runs of `plan`.
    pub(crate) fn of(
        data: &FamilyData,
        plan: &Plan,
        assets: &Path,
    ) -> Result<Self, ExperimentError> {
        let (_, steps_per_epoch) =
            data.streams
                .batcher(data.vocab, plan.batch_size, plan.seq_len, 0)?;
        let relative = |p: &Path| p.strip_prefix(assets).unwrap_or(p).display().to_string();
        Ok(Self {
            tokenizer: relative(&data.tokenizer_dir),
            // Recorded only where a setting names one, so the summaries of the presets on the
            // plays stay as they were.
            corpus: data.corpus.as_ref().map(|_| relative(&data.corpus_dir)),
            mask_prob: data.mask_prob,
            vocab: data.vocab,
            train_tokens: data.streams.train_tokens(),
            unigram_entropy: data.streams.unigram_entropy(),
            epochs_per_run: plan.steps as f64 / steps_per_epoch,
        })
    }
}
