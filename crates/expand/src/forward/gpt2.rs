//! The GPT-2 reference forward pass: token + position embeddings, pre-LN blocks with causal
//! self-attention, the final LayerNorm and the (tied) LM head, as Hugging Face
//! `GPT2LMHeadModel` computes them in f32 with dropout off.
//!
//! No attention mask: a causal model never lets a position see the ones after it, so right
//! padding cannot change the outputs at real positions and the verification batches need none.

use super::{activate, layer_norm, linear, softmax_rows};
use crate::error::ExpandError;
use bert2bert_checkpoint::random::SplitMix64;
use bert2bert_checkpoint::{Gpt2, Gpt2Block};
use ndarray::{Array2, Array3, ArrayView2, s};

/// Everything the GPT-2 forward pass computes.
#[derive(Clone, Debug)]
pub struct Gpt2Outputs {
    /// The residual stream: the embeddings output, then each block's output (before `ln_f`):
    /// L + 1 arrays of (batch, seq, D).
    pub hidden_states: Vec<Array3<f32>>,
    /// `ln_f` of the last block's output, Hugging Face's `last_hidden_state` (batch, seq, D).
    pub last_hidden_state: Array3<f32>,
    /// LM logits (batch, seq, V).
    pub logits: Array3<f32>,
}

/// Attention settings read from the config (Hugging Face's `GPT2Attention`).
#[derive(Clone, Copy, Debug)]
struct AttnScale {
    /// `scale_attn_weights` (default true): divide scores by sqrt(d_h).
    by_head_dim: bool,
    /// `scale_attn_by_inverse_layer_idx` (default false): also divide by layer index + 1.
    by_layer: bool,
}

impl AttnScale {
    fn of(model: &Gpt2) -> Self {
        let flag = |k: &str, default: bool| {
            model
                .config
                .raw
                .get(k)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(default)
        };
        Self {
            by_head_dim: flag("scale_attn_weights", true),
            by_layer: flag("scale_attn_by_inverse_layer_idx", false),
        }
    }

    /// The factor on q . k of block `layer` (0-based), computed in f64 and rounded once.
    fn factor(self, head_dim: usize, layer: usize) -> f32 {
        let mut f = 1.0f64;
        if self.by_head_dim {
            f /= (head_dim as f64).sqrt();
        }
        if self.by_layer {
            f /= (layer + 1) as f64;
        }
        f as f32
    }
}

/// Whether `model`'s config scales attention scores by the inverse block index (so a block's
/// function depends on where it sits).
pub fn scales_by_layer_index(model: &Gpt2) -> bool {
    AttnScale::of(model).by_layer
}

/// Seeded token ids (batch, seq), uniform over the vocabulary.
pub fn random_ids(vocab: usize, batch: usize, seq: usize, rng: &mut SplitMix64) -> Array2<u32> {
    Array2::from_shape_simple_fn((batch, seq), || rng.below(vocab) as u32)
}

/// Runs `model` on `input_ids` (batch, seq).
pub fn forward_gpt2(model: &Gpt2, input_ids: &Array2<u32>) -> Result<Gpt2Outputs, ExpandError> {
    let c = &model.config;
    let (nb, ns) = input_ids.dim();
    if ns > c.n_positions {
        return Err(ExpandError::Verify(format!(
            "sequence length {ns} exceeds n_positions {}",
            c.n_positions
        )));
    }
    if let Some(&id) = input_ids.iter().find(|&&i| i as usize >= c.vocab_size) {
        return Err(ExpandError::Verify(format!(
            "token id {id} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    let d = c.n_embd;
    let mut h = Array2::<f32>::zeros((nb * ns, d));
    for b in 0..nb {
        for t in 0..ns {
            let w = model.wte.row(input_ids[[b, t]] as usize);
            let p = model.wpe.row(t);
            for ((o, &w), &p) in h.row_mut(b * ns + t).iter_mut().zip(w).zip(p) {
                *o = w + p;
            }
        }
    }
    let to3 = |a: &Array2<f32>| {
        a.clone()
            .into_shape_with_order((nb, ns, d))
            .expect("rows are batch x seq")
    };
    let scale = AttnScale::of(model);
    let mut hidden_states = vec![to3(&h)];
    for (l, block) in model.blocks.iter().enumerate() {
        h = decoder_block(model, block, h, scale.factor(c.head_dim(), l), nb, ns);
        hidden_states.push(to3(&h));
    }
    let last = layer_norm(h.view(), &model.ln_f, c.layer_norm_epsilon);
    let logits = match &model.lm_head {
        Some(head) => last.dot(head),
        None => last.dot(&model.wte.t()),
    };
    Ok(Gpt2Outputs {
        hidden_states,
        last_hidden_state: to3(&last),
        logits: logits
            .into_shape_with_order((nb, ns, c.vocab_size))
            .expect("rows are batch x seq"),
    })
}

/// One pre-LN block on rows `h` of shape (batch * seq, D):
/// h + attn(ln_1(h)), then + mlp(ln_2(.)).
fn decoder_block(
    model: &Gpt2,
    block: &Gpt2Block,
    mut h: Array2<f32>,
    scale: f32,
    nb: usize,
    ns: usize,
) -> Array2<f32> {
    let c = &model.config;
    let eps = c.layer_norm_epsilon;
    let a = layer_norm(h.view(), &block.ln_1, eps);
    let ctx = causal_attention(linear(a.view(), &block.c_attn).view(), c, scale, nb, ns);
    h += &linear(ctx.view(), &block.attn_proj);
    let m = layer_norm(h.view(), &block.ln_2, eps);
    let mut f = linear(m.view(), &block.fc);
    activate(&mut f, c.activation_function);
    h += &linear(f.view(), &block.mlp_proj);
    h
}

/// Multi-head causal self-attention from the fused Q | K | V rows (batch * seq, 3 D).
fn causal_attention(
    qkv: ArrayView2<'_, f32>,
    c: &bert2bert_checkpoint::Gpt2Config,
    scale: f32,
    nb: usize,
    ns: usize,
) -> Array2<f32> {
    let (d, dh) = (c.n_embd, c.head_dim());
    let mut ctx = Array2::<f32>::zeros((nb * ns, d));
    for b in 0..nb {
        let rows = b * ns..(b + 1) * ns;
        for hd in 0..c.n_head {
            let col = |part: usize| part * d + hd * dh..part * d + (hd + 1) * dh;
            let qh = qkv.slice(s![rows.clone(), col(0)]);
            let kh = qkv.slice(s![rows.clone(), col(1)]);
            let vh = qkv.slice(s![rows.clone(), col(2)]);
            let mut scores = qh.dot(&kh.t());
            scores *= scale;
            // Causal mask: query i sees keys 0..=i (exp(-inf) = 0 exactly in the softmax).
            for i in 0..ns {
                scores.slice_mut(s![i, i + 1..]).fill(f32::NEG_INFINITY);
            }
            softmax_rows(&mut scores);
            ctx.slice_mut(s![rows.clone(), hd * dh..(hd + 1) * dh])
                .assign(&scores.dot(&vh));
        }
    }
    ctx
}
