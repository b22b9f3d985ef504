//! AdamW over named candle `Var`s, the learning-rate schedule and global-norm gradient clipping.
//!
//! Written here rather than taken from candle-nn because training needs a learning rate per step,
//! updates of only the parameters that got a gradient (stage 1 of two-stage pre-training), no
//! weight decay on biases and LayerNorms, and state that can be saved and restored exactly.

use crate::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How the learning rate falls after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linearly to 0 at the last step.
    Linear,
    /// Half a cosine to 0 at the last step.
    Cosine,
    /// Constant after warmup.
    Constant,
}

/// Linear warmup to `peak`, then `decay` to 0 at `total` steps: one continuous schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Shape after warmup.
    pub decay: Decay,
}

impl Schedule {
    /// Learning rate of update `step` (0-based): `peak * (step + 1) / warmup` during warmup, so
    /// the first update is not wasted at lr 0, then the decay over the remaining steps.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let done = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.peak * (1.0 - done),
            Decay::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
            Decay::Constant => self.peak,
        }
    }
}

/// AdamW hyper-parameters (defaults: BERT's 0.9, 0.999, 1e-6, weight decay 0.01).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (not applied to biases and LayerNorms).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Option<Tensor>,
    v: Option<Tensor>,
    t: u64,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Number of parameters (tensors) updated.
    pub updated: usize,
}

/// AdamW (decoupled weight decay, bias-corrected moments, as `torch.optim.AdamW`) over named vars.
///
/// Each parameter keeps its own step count, so a parameter that gets no gradient in a step
/// (frozen in stage 1) is left exactly as it is, moments included, as PyTorch does.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
}

impl AdamW {
    /// An optimizer over `vars`; `no_decay(name)` exempts a parameter from weight decay.
    pub fn new(
        vars: Vec<(String, Var)>,
        cfg: AdamWConfig,
        no_decay: impl Fn(&str) -> bool,
    ) -> Self {
        let slots = vars
            .into_iter()
            .map(|(name, var)| Slot {
                decay: !no_decay(&name),
                name,
                var,
                m: None,
                v: None,
                t: 0,
            })
            .collect();
        Self { cfg, slots }
    }

    /// Global L2 norm of the gradients present in `grads`.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total: Option<Tensor> = None;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                let sq = g.sqr()?.sum_all()?;
                total = Some(match total {
                    None => sq,
                    Some(t) => (t + sq)?,
                });
            }
        }
        Ok(match total {
            None => 0.0,
            Some(t) => (t.to_scalar::<f32>()? as f64).sqrt(),
        })
    }

    /// One update at learning rate `lr`, clipping the global gradient norm to `max_norm` first.
    /// Parameters without a gradient in `grads` are not touched.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: Option<f64>) -> Result<StepInfo> {
        let grad_norm = self.grad_norm(grads)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::Model(format!("gradient norm is {grad_norm}")));
        }
        let clip = match max_norm {
            Some(m) if grad_norm > m => m / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let AdamWConfig {
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay,
        } = self.cfg;
        let mut updated = 0;
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = if clip < 1.0 { (g * clip)? } else { g.clone() };
            let m = match &s.m {
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                None => (&g * (1.0 - b1))?,
            };
            let g2 = g.sqr()?;
            let v = match &s.v {
                Some(v) => ((v * b2)? + (g2 * (1.0 - b2))?)?,
                None => (g2 * (1.0 - b2))?,
            };
            s.t += 1;
            let bc1 = 1.0 - b1.powi(s.t as i32);
            let bc2 = 1.0 - b2.powi(s.t as i32);
            let denom = ((&v * (1.0 / bc2))?.sqrt()? + eps)?;
            let update = ((&m * (lr / bc1))? / denom)?;
            let p = s.var.as_tensor();
            let p = if s.decay && weight_decay > 0.0 {
                (p * (1.0 - lr * weight_decay))?
            } else {
                p.clone()
            };
            s.var.set(&(p - update)?.detach())?;
            s.m = Some(m.detach());
            s.v = Some(v.detach());
            updated += 1;
        }
        Ok(StepInfo { grad_norm, updated })
    }

    /// Moments as named tensors (`<param>.m`, `<param>.v`) and per-parameter step counts.
    pub fn state(&self) -> (HashMap<String, Tensor>, BTreeMap<String, u64>) {
        let mut tensors = HashMap::new();
        let mut steps = BTreeMap::new();
        for s in &self.slots {
            if let (Some(m), Some(v)) = (&s.m, &s.v) {
                tensors.insert(format!("{}.m", s.name), m.clone());
                tensors.insert(format!("{}.v", s.name), v.clone());
            }
            steps.insert(s.name.clone(), s.t);
        }
        (tensors, steps)
    }

    /// Restores state written by [`Self::state`].
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: &BTreeMap<String, u64>,
    ) -> Result<()> {
        for s in &mut self.slots {
            let t = steps.get(&s.name).copied().ok_or_else(|| {
                TrainError::Model(format!(
                    "optimizer state has no step count for `{}`",
                    s.name
                ))
            })?;
            s.t = t;
            if t == 0 {
                s.m = None;
                s.v = None;
                continue;
            }
            let get = |k: String| -> Result<Tensor> {
                let x = tensors.get(&k).ok_or_else(|| {
                    TrainError::Model(format!("optimizer state has no tensor `{k}`"))
                })?;
                if x.shape() != s.var.shape() {
                    return Err(TrainError::Model(format!(
                        "optimizer tensor `{k}` has shape {:?}, parameter has {:?}",
                        x.shape(),
                        s.var.shape()
                    )));
                }
                Ok(x.to_device(s.var.device())?)
            };
            s.m = Some(get(format!("{}.m", s.name))?);
            s.v = Some(get(format!("{}.v", s.name))?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = Schedule {
            peak: 1.0,
            warmup: 4,
            total: 12,
            decay: Decay::Linear,
        };
        assert!((s.lr(0) - 0.25).abs() < 1e-12);
        assert!((s.lr(3) - 1.0).abs() < 1e-12);
        assert!((s.lr(8) - 0.5).abs() < 1e-12);
        assert!(s.lr(12).abs() < 1e-12);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr(8) - 0.5).abs() < 1e-12);
        assert!((c.lr(6) - 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
    }

    /// Two AdamW steps on f(w) = sum(w * c) against the closed form of torch.optim.AdamW.
    #[test]
    fn adamw_matches_the_reference_update() -> Result<()> {
        let dev = Device::Cpu;
        let w0 = [0.5f32, -1.0, 2.0];
        let c = [0.1f32, -0.2, 0.3];
        let var = Var::from_tensor(&Tensor::new(&w0, &dev)?)?;
        let ct = Tensor::new(&c, &dev)?;
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg, |_| false);
        let lr = 0.01;
        for _ in 0..2 {
            let loss = var.as_tensor().mul(&ct)?.sum_all()?;
            opt.step(&loss.backward()?, lr, None)?;
        }
        // Reference: g constant = c, so m_t/bc1 = c and v_t/bc2 = c^2 exactly for every t.
        let got = var.as_tensor().to_vec1::<f32>()?;
        for i in 0..3 {
            let mut w = w0[i] as f64;
            for _ in 0..2 {
                w *= 1.0 - lr * 0.1;
                w -= lr * c[i] as f64 / ((c[i] as f64).abs() + 1e-8);
            }
            assert!((got[i] as f64 - w).abs() < 1e-6, "{i}: {} vs {w}", got[i]);
        }
        Ok(())
    }

    #[test]
    fn clipping_scales_to_max_norm_and_skips_params_without_grad() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &dev)?)?;
        let b = Var::from_tensor(&Tensor::new(&[1.0f32], &dev)?)?;
        let mut opt = AdamW::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamWConfig::default(),
            |_| true,
        );
        // loss = 0.5 |a|^2 -> grad = a, norm 5.
        let loss = (a.as_tensor().sqr()?.sum_all()? * 0.5)?;
        let grads = loss.backward()?;
        assert!((opt.grad_norm(&grads)? - 5.0).abs() < 1e-6);
        let info = opt.step(&grads, 0.1, Some(1.0))?;
        assert_eq!(info.updated, 1);
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0]);
        let (_, steps) = opt.state();
        assert_eq!(steps["a"], 1);
        assert_eq!(steps["b"], 0);
        Ok(())
    }
}
