//! The Llama-family reference forward pass (Llama, Mistral, Qwen2, Qwen3), as transformers
//! computes `*ForCausalLM` in f32 with eager attention: RMSNorm, RoPE (default, linear and
//! llama3 frequencies; other types refused), grouped-query causal attention, Qwen3's per-head
//! q/k norms, SwiGLU, the final norm and the (tied) head.
//!
//! Weights come through [`LlamaWeights`], one layer at a time, so a model streamed from disk
//! is never held whole.

use super::softmax_rows;
use crate::error::ExpandError;
use bert2bert_checkpoint::llama::{Part, Role, RopeScaling};
use bert2bert_checkpoint::{LlamaConfig, LlamaWeights};
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, CowArray, Ix1, Ix2, IxDyn, Zip, s};

/// Everything the forward pass computes.
#[derive(Clone, Debug)]
pub struct LlamaOutputs {
    /// The residual stream: the embeddings, then each layer's output (before the final
    /// norm): L + 1 arrays of (batch, seq, D).
    pub hidden_states: Vec<Array3<f32>>,
    /// The final norm of the last layer's output, transformers' `last_hidden_state`.
    pub last_hidden_state: Array3<f32>,
    /// LM logits (batch, seq, V).
    pub logits: Array3<f32>,
}

/// RMSNorm over the last axis: `gamma * x / sqrt(mean(x^2) + eps)`, mean accumulated in f64.
pub fn rms_norm(x: ArrayView2<'_, f32>, gamma: ArrayView1<'_, f32>, eps: f64) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros(x.raw_dim());
    Zip::from(y.rows_mut())
        .and(x.rows())
        .for_each(|mut yr, xr| {
            let ms = xr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / xr.len() as f64;
            let r = 1.0 / (ms + eps).sqrt();
            for ((o, &v), &g) in yr.iter_mut().zip(xr.iter()).zip(gamma.iter()) {
                // transformers rounds the normalized value to the input dtype, then scales.
                *o = g * ((v as f64 * r) as f32);
            }
        });
    y
}

/// The RoPE inverse frequencies of `c` (head_dim / 2 of them), in f64.
pub fn inv_freq(c: &LlamaConfig) -> Result<Vec<f64>, ExpandError> {
    let hd = c.head_dim;
    let base: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f64 / hd as f64))
        .collect();
    match &c.rope_scaling {
        RopeScaling::Default => Ok(base),
        RopeScaling::Linear { factor } => Ok(base.iter().map(|f| f / factor).collect()),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            Ok(base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect())
        }
        RopeScaling::Other(t) => Err(ExpandError::Verify(format!(
            "rope_type `{t}` is not implemented by the reference forward pass (supported: \
             default, linear, llama3)"
        ))),
    }
}

fn mat<'a>(a: &'a CowArray<'_, f32, IxDyn>) -> ArrayView2<'a, f32> {
    a.view().into_dimensionality::<Ix2>().expect("2-d")
}

fn vec1<'a>(a: &'a CowArray<'_, f32, IxDyn>) -> ArrayView1<'a, f32> {
    a.view().into_dimensionality::<Ix1>().expect("1-d")
}

/// `x W^T (+ b)` for a projection stored (out, in).
fn proj(
    w: &dyn LlamaWeights,
    x: ArrayView2<'_, f32>,
    l: usize,
    weight: Part,
    bias: Option<Part>,
) -> Result<Array2<f32>, ExpandError> {
    let wt = w.tensor(Role::Layer(l, weight))?;
    let mut y = x.dot(&mat(&wt).t());
    if let Some(b) = bias {
        let bt = w.tensor(Role::Layer(l, b))?;
        y += &vec1(&bt);
    }
    Ok(y)
}

/// Rotates each head of `x` (rows, heads * hd) in place: the first and second halves of a head
/// pair up (transformers' `rotate_half`).
fn rope(x: &mut Array2<f32>, hd: usize, cos: &Array2<f32>, sin: &Array2<f32>, ns: usize) {
    let half = hd / 2;
    for (r, mut row) in x.rows_mut().into_iter().enumerate() {
        let t = r % ns;
        for head in row.as_slice_mut().expect("standard").chunks_mut(hd) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                let (c, s) = (cos[[t, i]], sin[[t, i]]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
}

/// Per-head RMSNorm of `x` (rows, heads * hd) with weight `gamma` (hd).
fn head_norm(x: &Array2<f32>, hd: usize, gamma: ArrayView1<'_, f32>, eps: f64) -> Array2<f32> {
    let (n, w) = x.dim();
    let flat = x
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n * w / hd, hd))
        .expect("whole heads");
    rms_norm(flat.view(), gamma, eps)
        .into_shape_with_order((n, w))
        .expect("same size")
}

/// Runs the model behind `w` on `input_ids` (batch, seq).
pub fn forward_llama(
    w: &dyn LlamaWeights,
    input_ids: &Array2<u32>,
) -> Result<LlamaOutputs, ExpandError> {
    let c = w.config().clone();
    let (nb, ns) = input_ids.dim();
    if ns > c.max_position_embeddings {
        return Err(ExpandError::Verify(format!(
            "sequence length {ns} exceeds max_position_embeddings {}",
            c.max_position_embeddings
        )));
    }
    if let Some(&id) = input_ids.iter().find(|&&i| i as usize >= c.vocab_size) {
        return Err(ExpandError::Verify(format!(
            "token id {id} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    let freqs = inv_freq(&c)?;
    let half = c.head_dim / 2;
    let mut cos = Array2::<f32>::zeros((ns, half));
    let mut sin = Array2::<f32>::zeros((ns, half));
    for t in 0..ns {
        for (i, f) in freqs.iter().enumerate() {
            // transformers computes the angle in f32.
            let a = (t as f32 * *f as f32) as f64;
            cos[[t, i]] = a.cos() as f32;
            sin[[t, i]] = a.sin() as f32;
        }
    }
    let d = c.hidden_size;
    let emb = w.tensor(Role::Embed)?;
    let emb = mat(&emb);
    let mut h = Array2::<f32>::zeros((nb * ns, d));
    for (r, &id) in input_ids.iter().enumerate() {
        h.row_mut(r).assign(&emb.row(id as usize));
    }
    let to3 = |a: &Array2<f32>| {
        a.clone()
            .into_shape_with_order((nb, ns, a.ncols()))
            .expect("rows are batch x seq")
    };
    let mut hidden_states = vec![to3(&h)];
    let eps = c.rms_norm_eps;
    let (hd, nh, nkv) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
    let group = nh / nkv;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let bias = |p: Part, on: bool| on.then_some(p);
    for l in 0..c.num_hidden_layers {
        let g1 = w.tensor(Role::Layer(l, Part::InputNorm))?;
        let x = rms_norm(h.view(), vec1(&g1), eps);
        let mut q = proj(w, x.view(), l, Part::Q, bias(Part::QBias, c.qkv_bias))?;
        let mut k = proj(w, x.view(), l, Part::K, bias(Part::KBias, c.qkv_bias))?;
        let v = proj(w, x.view(), l, Part::V, bias(Part::VBias, c.qkv_bias))?;
        if c.qk_norm {
            let qn = w.tensor(Role::Layer(l, Part::QNorm))?;
            let kn = w.tensor(Role::Layer(l, Part::KNorm))?;
            q = head_norm(&q, hd, vec1(&qn), eps);
            k = head_norm(&k, hd, vec1(&kn), eps);
        }
        rope(&mut q, hd, &cos, &sin, ns);
        rope(&mut k, hd, &cos, &sin, ns);
        let mut ctx = Array2::<f32>::zeros((nb * ns, nh * hd));
        for b in 0..nb {
            let rows = b * ns..(b + 1) * ns;
            for head in 0..nh {
                let kvh = head / group;
                let qh = q.slice(s![rows.clone(), head * hd..(head + 1) * hd]);
                let kh = k.slice(s![rows.clone(), kvh * hd..(kvh + 1) * hd]);
                let vh = v.slice(s![rows.clone(), kvh * hd..(kvh + 1) * hd]);
                let mut scores = qh.dot(&kh.t());
                scores *= scale;
                for i in 0..ns {
                    scores.slice_mut(s![i, i + 1..]).fill(f32::NEG_INFINITY);
                    if let Some(win) = c.sliding_window
                        && i >= win
                    {
                        scores.slice_mut(s![i, ..=i - win]).fill(f32::NEG_INFINITY);
                    }
                }
                softmax_rows(&mut scores);
                ctx.slice_mut(s![rows.clone(), head * hd..(head + 1) * hd])
                    .assign(&scores.dot(&vh));
            }
        }
        h += &proj(w, ctx.view(), l, Part::O, bias(Part::OBias, c.o_bias))?;
        let g2 = w.tensor(Role::Layer(l, Part::PostNorm))?;
        let x = rms_norm(h.view(), vec1(&g2), eps);
        let mut gate = proj(w, x.view(), l, Part::Gate, bias(Part::GateBias, c.mlp_bias))?;
        let up = proj(w, x.view(), l, Part::Up, bias(Part::UpBias, c.mlp_bias))?;
        Zip::from(&mut gate).and(&up).for_each(|g, &u| {
            let gv = *g as f64;
            *g = (gv / (1.0 + (-gv).exp())) as f32 * u;
        });
        h += &proj(
            w,
            gate.view(),
            l,
            Part::Down,
            bias(Part::DownBias, c.mlp_bias),
        )?;
        hidden_states.push(to3(&h));
    }
    let gn = w.tensor(Role::Norm)?;
    let last = rms_norm(h.view(), vec1(&gn), eps);
    let logits = if c.tie_word_embeddings {
        last.dot(&emb.t())
    } else {
        let head = w.tensor(Role::LmHead)?;
        last.dot(&mat(&head).t())
    };
    Ok(LlamaOutputs {
        hidden_states,
        last_hidden_state: to3(&last),
        logits: logits
            .into_shape_with_order((nb, ns, c.vocab_size))
            .expect("rows are batch x seq"),
    })
}
