//! What a run writes besides the weights: the metrics log, the trainer state of a
//! checkpoint, the file names of a run folder, and the files carried into every checkpoint.

use super::*;

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
