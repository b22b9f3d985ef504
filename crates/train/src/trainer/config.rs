//! What determines a run: [`TrainConfig`], two-stage settings, sub-model depths and the
//! per-step seeds.

use super::*;

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
