//! Typed GPT-2 weights (`GPT2LMHeadModel`, `GPT2Model`) and their Hugging Face names.
//!
//! GPT-2 stores its projections as `Conv1D`, already (in, out): they load as they are, with no
//! transpose. The attention's Q, K and V are one fused `c_attn` of shape (D, 3D); it is held fused,
//! as stored, so that [`Gpt2::named_tensors`] can hand out views, and [`Gpt2Block::split_qkv`] /
//! [`Gpt2Block::set_qkv`] give growth code the three (D, D) maps and put them back.

use crate::config::Gpt2Config;
use crate::error::{CheckpointError, Result};
use crate::loader::Taker;
use crate::model::{Dropped, NamedTensor, check_shapes};
use crate::nn::{LayerNorm, Linear};
use crate::safetensors::TensorStore;
use ndarray::{Array2, Axis, concatenate, s};

/// One pre-LN decoder block.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Fused Q | K | V: (D, 3D), columns [0, D) are Q, [D, 2D) K, [2D, 3D) V.
    pub c_attn: Linear,
    /// Attention output W_O: (D, D).
    pub attn_proj: Linear,
    /// LayerNorm before the FFN.
    pub ln_2: LayerNorm,
    /// W_1: (D, F).
    pub fc: Linear,
    /// W_2: (F, D).
    pub mlp_proj: Linear,
}

impl Gpt2Block {
    /// Q, K and V as three (D, D) maps, copied out of the fused `c_attn`.
    pub fn split_qkv(&self) -> [Linear; 3] {
        let d = self.c_attn.in_dim();
        std::array::from_fn(|i| Linear {
            weight: self
                .c_attn
                .weight
                .slice(s![.., i * d..(i + 1) * d])
                .to_owned(),
            bias: self.c_attn.bias.slice(s![i * d..(i + 1) * d]).to_owned(),
        })
    }

    /// Replaces the fused `c_attn` by Q | K | V; each must be (D', D') for one D'.
    pub fn set_qkv(&mut self, q: &Linear, k: &Linear, v: &Linear) -> Result<()> {
        self.c_attn = fuse_qkv(q, k, v)?;
        Ok(())
    }
}

/// Fuses three (D, D) maps into one (D, 3D) `c_attn`, in the order Q, K, V.
pub fn fuse_qkv(q: &Linear, k: &Linear, v: &Linear) -> Result<Linear> {
    let d = q.in_dim();
    for (n, l) in [("q", q), ("k", k), ("v", v)] {
        if l.weight.dim() != (d, d) || l.bias.len() != d {
            return Err(CheckpointError::InvalidModel(format!(
                "fuse_qkv: {n} is {:?} + ({},), expected ({d}, {d}) + ({d},)",
                l.weight.dim(),
                l.bias.len()
            )));
        }
    }
    let weight = concatenate(
        Axis(1),
        &[q.weight.view(), k.weight.view(), v.weight.view()],
    )
    .expect("equal rows");
    let bias = concatenate(Axis(0), &[q.bias.view(), k.bias.view(), v.bias.view()]).expect("1-d");
    Ok(Linear { weight, bias })
}

/// A whole GPT-2 checkpoint in typed form.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2 {
    /// The config, shape fields in step with the tensors.
    pub config: Gpt2Config,
    /// Token embedding `wte`: (V, D).
    pub wte: Array2<f32>,
    /// Position embedding `wpe`: (P, D).
    pub wpe: Array2<f32>,
    /// Blocks, bottom first.
    pub blocks: Vec<Gpt2Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// An untied LM head (D, V); `None` when tied to `wte` (the usual case).
    pub lm_head: Option<Array2<f32>>,
    /// Whether names carry the `transformer.` prefix (true for `GPT2LMHeadModel`).
    pub prefixed: bool,
}

const LM_HEAD: &str = "lm_head.weight";
const PREFIX: &str = "transformer.";

/// Buffers of older checkpoints (the causal mask `attn.bias`, the scalar `attn.masked_bias`):
/// not weights, and transformers rebuilds them.
fn is_buffer(name: &str, p: &str) -> bool {
    let Some(rest) = name.strip_prefix(p).and_then(|n| n.strip_prefix("h.")) else {
        return false;
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return false;
    };
    layer.parse::<usize>().is_ok() && (tail == "attn.bias" || tail == "attn.masked_bias")
}

impl Gpt2 {
    /// Loads typed weights from `store`, checking every shape against `config`.
    pub fn load(store: &TensorStore, config: Gpt2Config) -> Result<(Self, Vec<Dropped>)> {
        let c = &config;
        let (d, f, v) = (c.n_embd, c.inner_dim(), c.vocab_size);
        let prefixed = store.contains("transformer.wte.weight");
        let p = if prefixed { PREFIX } else { "" };
        let mut t = Taker::new(store, |n| is_buffer(n, p));
        let wte = t.mat(&format!("{p}wte.weight"), v, d)?;
        let wpe = t.mat(&format!("{p}wpe.weight"), c.n_positions, d)?;
        // Grown as loaded, never sized from the config (see `Bert::load`).
        let mut blocks = Vec::new();
        for l in 0..c.n_layer {
            let q = format!("{p}h.{l}");
            blocks.push(Gpt2Block {
                ln_1: t.layer_norm(&format!("{q}.ln_1"), d)?,
                c_attn: t.conv1d(&format!("{q}.attn.c_attn"), d, 3 * d)?,
                attn_proj: t.conv1d(&format!("{q}.attn.c_proj"), d, d)?,
                ln_2: t.layer_norm(&format!("{q}.ln_2"), d)?,
                fc: t.conv1d(&format!("{q}.mlp.c_fc"), d, f)?,
                mlp_proj: t.conv1d(&format!("{q}.mlp.c_proj"), f, d)?,
            });
        }
        let ln_f = t.layer_norm(&format!("{p}ln_f"), d)?;
        let mut dropped = Vec::new();
        let mut lm_head = None;
        if t.has(LM_HEAD) {
            // nn.Linear (out = V, in = D), so stored (V, D) like wte.
            let w = t.mat(LM_HEAD, v, d)?;
            if !c.tie_word_embeddings {
                lm_head = Some(w.reversed_axes());
            } else if w == wte {
                dropped.push(Dropped::new(LM_HEAD, "tied: equal to wte"));
            } else {
                dropped.push(Dropped::new(
                    LM_HEAD,
                    "config ties it to wte, so transformers ignores the stored copy",
                ));
            }
        } else if !c.tie_word_embeddings {
            return Err(CheckpointError::MissingTensor {
                path: store.root().to_owned(),
                tensor: LM_HEAD.into(),
            });
        }
        for name in t.rest() {
            if is_buffer(&name, p) {
                dropped.push(Dropped::new(
                    &name,
                    "buffer, not a weight: transformers rebuilds the causal mask",
                ));
            } else {
                return Err(CheckpointError::UnexpectedTensor {
                    path: store.file_of(&name).unwrap_or(store.root()).to_owned(),
                    tensor: name,
                    family: "GPT-2",
                });
            }
        }
        for d in &dropped {
            tracing::debug!(tensor = %d.name, reason = %d.reason, "dropped on purpose");
        }
        Ok((
            Self {
                config,
                wte,
                wpe,
                blocks,
                ln_f,
                lm_head,
                prefixed,
            },
            dropped,
        ))
    }

    /// Every weight under its Hugging Face name, in Hugging Face orientation (Conv1D (in, out)
    /// as held; an untied `lm_head` as (V, D)).
    pub fn named_tensors(&self) -> Vec<NamedTensor<'_>> {
        let p = if self.prefixed { PREFIX } else { "" };
        let mut out: Vec<NamedTensor<'_>> = vec![
            (format!("{p}wte.weight"), self.wte.view().into_dyn()),
            (format!("{p}wpe.weight"), self.wpe.view().into_dyn()),
        ];
        for (l, b) in self.blocks.iter().enumerate() {
            let q = format!("{p}h.{l}");
            push_ln(&mut out, format!("{q}.ln_1"), &b.ln_1);
            push_conv(&mut out, format!("{q}.attn.c_attn"), &b.c_attn);
            push_conv(&mut out, format!("{q}.attn.c_proj"), &b.attn_proj);
            push_ln(&mut out, format!("{q}.ln_2"), &b.ln_2);
            push_conv(&mut out, format!("{q}.mlp.c_fc"), &b.fc);
            push_conv(&mut out, format!("{q}.mlp.c_proj"), &b.mlp_proj);
        }
        push_ln(&mut out, format!("{p}ln_f"), &self.ln_f);
        if let Some(h) = &self.lm_head {
            out.push((LM_HEAD.into(), h.t().into_dyn()));
        }
        out
    }

    /// Every tensor name [`Gpt2::named_tensors`] yields, with the shape the config implies.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (d, f, v) = (c.n_embd, c.inner_dim(), c.vocab_size);
        let p = if self.prefixed { PREFIX } else { "" };
        let mut out = vec![
            (format!("{p}wte.weight"), vec![v, d]),
            (format!("{p}wpe.weight"), vec![c.n_positions, d]),
        ];
        for l in 0..self.blocks.len() {
            let q = format!("{p}h.{l}");
            for (n, i, o) in [
                ("ln_1", 0, d),
                ("attn.c_attn", d, 3 * d),
                ("attn.c_proj", d, d),
                ("ln_2", 0, d),
                ("mlp.c_fc", d, f),
                ("mlp.c_proj", f, d),
            ] {
                let w = if i == 0 { vec![o] } else { vec![i, o] };
                out.push((format!("{q}.{n}.weight"), w));
                out.push((format!("{q}.{n}.bias"), vec![o]));
            }
        }
        out.push((format!("{p}ln_f.weight"), vec![d]));
        out.push((format!("{p}ln_f.bias"), vec![d]));
        if self.lm_head.is_some() {
            out.push((LM_HEAD.into(), vec![v, d]));
        }
        out
    }

    /// Checks that every tensor's shape agrees with the config.
    pub fn validate(&self) -> Result<()> {
        let c = &self.config;
        if c.n_head == 0 || !c.n_embd.is_multiple_of(c.n_head) {
            return Err(CheckpointError::InvalidModel(format!(
                "n_embd {} is not divisible by n_head {}",
                c.n_embd, c.n_head
            )));
        }
        if self.blocks.len() != c.n_layer {
            return Err(CheckpointError::InvalidModel(format!(
                "{} blocks, config says n_layer {}",
                self.blocks.len(),
                c.n_layer
            )));
        }
        check_shapes(&self.named_tensors(), &self.expected_shapes())
    }
}

fn push_conv<'a>(out: &mut Vec<NamedTensor<'a>>, prefix: String, l: &'a Linear) {
    out.push((format!("{prefix}.weight"), l.weight.view().into_dyn()));
    out.push((format!("{prefix}.bias"), l.bias.view().into_dyn()));
}

fn push_ln<'a>(out: &mut Vec<NamedTensor<'a>>, prefix: String, ln: &'a LayerNorm) {
    out.push((format!("{prefix}.weight"), ln.weight.view().into_dyn()));
    out.push((format!("{prefix}.bias"), ln.bias.view().into_dyn()));
}
