//! The layers BERT and GPT-2 share, in the style of candle-transformers' `with_tracing`:
//! a dense layer, LayerNorm, seeded dropout, softmax, log-softmax and cross-entropy (fused
//! kernels on the CPU, composed from differentiable primitives elsewhere), the hidden
//! activations, and the [`Scope`] of a forward pass (whole model or stage-1 sub-model).
//!
//! candle-nn's fused `LayerNorm::forward`, `ops::layer_norm`, `ops::softmax_last_dim` and
//! `ops::sdpa` are forward-only in candle 0.11 (they silently cut the gradient), hence the
//! composed versions here; `tests/grad.rs` checks that every parameter gets a gradient.

use bert2bert_checkpoint::Activation;
use bert2bert_checkpoint::random::SplitMix64;
use candle_core::{D, Result, Tensor};
use candle_nn::VarBuilder;

/// Seeded dropout: real in training, the identity in evaluation.
///
/// Masks are drawn on the host from a SplitMix64 stream and uploaded, so a run is bit-for-bit
/// reproducible on every device and a resumed run can re-create the stream from its seed.
pub struct Dropout {
    rng: Option<SplitMix64>,
}

impl Dropout {
    /// Dropout off (evaluation).
    pub fn eval() -> Self {
        Self { rng: None }
    }

    /// Dropout on, drawing masks from `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            rng: Some(SplitMix64::new(seed)),
        }
    }

    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.rng.is_some()
    }

    /// Zeroes each element with probability `p` and scales the rest by 1 / (1 - p).
    pub fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        let Some(rng) = self.rng.as_mut() else {
            return Ok(x.clone());
        };
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let n = x.elem_count();
        let keep = (1.0 - p) as f32;
        let scale = 1.0 / keep;
        // Compare 32-bit draws against a threshold: two draws per 64-bit word.
        let threshold = (p * 4_294_967_296.0).min(4_294_967_295.0) as u32;
        let mut mask = vec![0f32; n];
        for pair in mask.chunks_mut(2) {
            let r = rng.next_u64();
            for (m, half) in pair.iter_mut().zip([r as u32, (r >> 32) as u32]) {
                *m = if half >= threshold { scale } else { 0.0 };
            }
        }
        crate::fused::mask_mul(x, mask)
    }
}

/// A dense layer `y = x W^T + b` with `W` stored `(out, in)` as in Hugging Face.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Loads `weight (out, in)` and `bias (out)` under `vb`.
    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((d_out, d_in), "weight")?,
            bias: vb.get(d_out, "bias")?,
        })
    }

    /// Applies the layer to `x (n, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::dense(x, &self.weight, &self.bias, true)
    }
}

/// LayerNorm over the last axis, composed from differentiable ops.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of width `d` under `vb`.
    pub fn load(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(d, "weight")?,
            bias: vb.get(d, "bias")?,
            eps,
        })
    }

    /// Normalises each row of `x` and applies the affine map.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// LayerNorm over the last axis composed from differentiable ops (the non-CPU path, and the
/// reference the fused CPU kernel is tested against).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    xc.broadcast_mul(&inv)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Softmax over the last axis (fused kernel on the CPU, composed elsewhere).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    crate::fused::softmax_last_dim(x)
}

/// Softmax over the last axis, composed from differentiable ops.
///
/// The row maximum is subtracted for stability; it is detached because softmax does not depend
/// on it, so its gradient is exactly zero anyway.
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last axis, composed from differentiable ops.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&max)?;
    let lse = s.exp()?.sum_keepdim(D::Minus1)?.log()?;
    s.broadcast_sub(&lse)
}

/// Mean cross-entropy of `logits (m, V)` against `targets (m)` (u32 class ids).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    crate::fused::cross_entropy_rows(logits, targets)?.mean_all()
}

/// The config's hidden activation (BERT's and GPT-2's).
pub(crate) fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu => crate::fused::gelu_erf(x),
        // gelu_new: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), candle's `gelu`.
        Activation::GeluTanh => crate::fused::gelu_tanh(x),
        Activation::Relu => x.relu(),
    }
}

/// What a forward pass trains: the whole model, or (stage 1 of two-stage pre-training) the
/// sub-model of the bottom `layers` layers with only its top layers and the head live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Number of bottom layers run (the sub-model's depth).
    pub layers: usize,
    /// Layers `[0, frozen_below)` run without gradient (detached).
    pub frozen_below: usize,
    /// Whether the embeddings, and with them the tied decoder matrix, are trained.
    pub train_embeddings: bool,
}

impl Scope {
    /// The whole model of `layers` layers, everything trained.
    pub fn full(layers: usize) -> Self {
        Self {
            layers,
            frozen_below: 0,
            train_embeddings: true,
        }
    }

    /// Sub-model of depth `n` training only its top `lb` layers and the head (BERT: the MLM
    /// transform, its LayerNorm, output bias; GPT-2: `ln_f`); the embeddings, including a tied
    /// output matrix, stay frozen.
    pub fn stage1(n: usize, lb: usize) -> Self {
        Self {
            layers: n,
            frozen_below: n.saturating_sub(lb),
            train_embeddings: false,
        }
    }

    /// Number of layers that receive gradients.
    pub fn trained_layers(&self) -> usize {
        self.layers - self.frozen_below
    }
}
