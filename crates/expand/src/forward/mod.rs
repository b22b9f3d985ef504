//! Reference forward passes in plain ndarray, matching Hugging Face numerics: the ground truth
//! against which growth is checked for function preservation.

pub mod bert;
pub mod gpt2;
pub mod llama;

pub use bert::{Batch, BertOutputs, forward_bert};
pub use gpt2::{Gpt2Outputs, forward_gpt2};
pub use llama::{LlamaOutputs, forward_llama};

use bert2bert_checkpoint::{Activation, LayerNorm, Linear};
use ndarray::{Array2, ArrayView2, Axis, Zip};

/// `x W + b` for a batch of rows `x`.
pub fn linear(x: ArrayView2<'_, f32>, l: &Linear) -> Array2<f32> {
    let mut y = x.dot(&l.weight);
    y += &l.bias;
    y
}

/// LayerNorm over the last axis; mean and variance are accumulated in f64 so the reference is
/// at least as accurate as PyTorch's f32 kernel (which uses Welford in f32 with f32 rounding).
pub fn layer_norm(x: ArrayView2<'_, f32>, ln: &LayerNorm, eps: f64) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros(x.raw_dim());
    Zip::from(y.rows_mut())
        .and(x.rows())
        .for_each(|mut yr, xr| {
            let n = xr.len() as f64;
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xr
                .iter()
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
                / n;
            let rstd = 1.0 / (var + eps).sqrt();
            for (((o, &v), &g), &b) in yr
                .iter_mut()
                .zip(xr.iter())
                .zip(ln.weight.iter())
                .zip(ln.bias.iter())
            {
                *o = ((v as f64 - mean) * rstd) as f32 * g + b;
            }
        });
    y
}

/// The activation, element-wise, evaluated in f64 and rounded once.
pub fn activate(x: &mut Array2<f32>, act: Activation) {
    let f: fn(f64) -> f64 = match act {
        // Hugging Face `gelu`: x * Phi(x) with the exact erf.
        Activation::Gelu => |v| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => |v| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        },
        Activation::Relu => |v| v.max(0.0),
    };
    x.mapv_inplace(|v| f(v as f64) as f32);
}

/// Softmax over each row in place, accumulated in f64.
pub fn softmax_rows(x: &mut Array2<f32>) {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let mut sum = 0.0f64;
        let e: Vec<f64> = row
            .iter()
            .map(|&v| {
                let e = (v as f64 - m).exp();
                sum += e;
                e
            })
            .collect();
        for (o, e) in row.iter_mut().zip(e) {
            *o = (e / sum) as f32;
        }
    }
}
