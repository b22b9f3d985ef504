//! GPT-2 causal language model (`GPT2LMHeadModel`) in candle, trainable end to end.
//!
//! Plain structs with Hugging Face names (`transformer.wte`, `transformer.h.N.*`,
//! `transformer.ln_f`, an optional untied `lm_head`), `load(vb, cfg)` and `forward`, in the
//! style of candle-transformers. Pre-LN blocks, causal self-attention through the fused `c_attn`
//! (Conv1D weights stay (in, out) as stored), `gelu_new` (candle's tanh GELU, which has a
//! backward pass), and an LM head tied to `wte`: logits = ln_f(h) wte^T. LayerNorm, softmax and
//! cross-entropy go through [`crate::fused`] because candle-nn's versions cut the gradient.
//!
//! Hidden states are kept flat as `(batch * seq, d)` so every dense layer is one 2-D matmul.

use bert2bert_checkpoint::folder::{AtomicDir, write_config, write_weights};
use bert2bert_checkpoint::gpt2::{Gpt2Layout, tensor_table as gpt2_table};
use bert2bert_checkpoint::random::Init;
use bert2bert_checkpoint::{Activation, Dtype, Gpt2, Gpt2Config, Model};
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::data::causal::CausalBatch;
use crate::fused::attention_softmax;
use crate::layers::{Dropout, LayerNorm, Scope, activate, cross_entropy};

/// The untied LM head, stored (V, D) like `wte`.
const LM_HEAD: &str = "lm_head.weight";

/// A GPT-2 `Conv1D`: `y = x W + b` with `W` stored (in, out).
#[derive(Clone, Debug)]
pub struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    /// Loads `weight (in, out)` and `bias (out)` under `vb`.
    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((d_in, d_out), "weight")?,
            bias: vb.get(d_out, "bias")?,
        })
    }

    /// Applies the layer to `x (n, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::dense(x, &self.weight, &self.bias, false)
    }
}

/// Dropout probabilities of a config: (embeddings, residual branches, attention weights).
fn dropout_probs(cfg: &Gpt2Config) -> (f64, f64, f64) {
    let get = |k: &str| {
        cfg.raw
            .get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.1)
    };
    (get("embd_pdrop"), get("resid_pdrop"), get("attn_pdrop"))
}

/// Config switches this model does not implement (their non-default values change the maths).
fn check_supported(cfg: &Gpt2Config) -> Result<()> {
    let flag = |k: &str| cfg.raw.get(k).and_then(serde_json::Value::as_bool);
    for (key, default) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
        ("add_cross_attention", false),
    ] {
        if flag(key).is_some_and(|v| v != default) {
            candle_core::bail!("GPT-2 config: {key} = {} is not supported", !default);
        }
    }
    if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
        candle_core::bail!(
            "GPT-2 config: n_embd {} is not divisible by n_head {}",
            cfg.n_embd,
            cfg.n_head
        );
    }
    Ok(())
}

/// One pre-LN decoder block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Clone, Debug)]
pub struct Gpt2Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: LayerNorm,
    fc: Conv1D,
    mlp_proj: Conv1D,
    heads: usize,
    head_dim: usize,
    act: Activation,
    resid_pdrop: f64,
    attn_pdrop: f64,
}

impl Gpt2Block {
    /// Loads `ln_1`, `attn.{c_attn,c_proj}`, `ln_2` and `mlp.{c_fc,c_proj}` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config) -> Result<Self> {
        let (d, f, eps) = (cfg.n_embd, cfg.inner_dim(), cfg.layer_norm_epsilon);
        let (_, resid_pdrop, attn_pdrop) = dropout_probs(cfg);
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), d, eps)?,
            c_attn: Conv1D::load(vb.pp("attn").pp("c_attn"), d, 3 * d)?,
            attn_proj: Conv1D::load(vb.pp("attn").pp("c_proj"), d, d)?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), d, eps)?,
            fc: Conv1D::load(vb.pp("mlp").pp("c_fc"), d, f)?,
            mlp_proj: Conv1D::load(vb.pp("mlp").pp("c_proj"), f, d)?,
            heads: cfg.n_head,
            head_dim: d / cfg.n_head,
            act: cfg.activation_function,
            resid_pdrop,
            attn_pdrop,
        })
    }

    /// `x (b * s, d)`, `causal_bias (1, 1, s, s)` (0 on and below the diagonal, a large
    /// negative above) -> `(b * s, d)`.
    pub fn forward(
        &self,
        x: &Tensor,
        causal_bias: &Tensor,
        batch: usize,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let s = n / batch;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(1, i * d, d)?
                .reshape((batch, s, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let probs = attention_softmax(&q.matmul(&k.t()?)?, causal_bias, scale)?;
        let probs = dropout.apply(&probs, self.attn_pdrop)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, d))?;
        let a = dropout.apply(&self.attn_proj.forward(&ctx)?, self.resid_pdrop)?;
        let x = (x + a)?;
        let h = activate(&self.fc.forward(&self.ln_2.forward(&x)?)?, self.act)?;
        let m = dropout.apply(&self.mlp_proj.forward(&h)?, self.resid_pdrop)?;
        x + m
    }
}

/// A causal-LM batch on the device.
#[derive(Clone, Debug)]
pub struct CausalDeviceBatch {
    /// Token ids `(b, s)`, u32.
    pub input_ids: Tensor,
    /// Next-token targets `(b * s)`, u32.
    pub targets: Tensor,
    /// Batch size b.
    pub batch_size: usize,
    /// Sequence length s.
    pub seq_len: usize,
}

impl CausalDeviceBatch {
    /// Uploads a host batch.
    pub fn new(batch: &CausalBatch, device: &Device) -> Result<Self> {
        let (b, s) = (batch.batch_size, batch.seq_len);
        if batch.input_ids.len() != b * s || batch.targets.len() != b * s {
            candle_core::bail!(
                "batch of {b} x {s} needs {} ids, got input_ids {}, targets {}",
                b * s,
                batch.input_ids.len(),
                batch.targets.len()
            );
        }
        Ok(Self {
            input_ids: Tensor::from_slice(&batch.input_ids, (b, s), device)?,
            targets: Tensor::from_slice(&batch.targets, b * s, device)?,
            batch_size: b,
            seq_len: s,
        })
    }
}

/// The additive causal mask `(1, 1, s, s)`: 0 where key <= query, -1e9 above the diagonal
/// (exp underflows to exactly 0 in f32, as transformers' finfo.min masking).
pub fn causal_bias(s: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..s * s)
        .map(|i| if i % s > i / s { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_vec(v, (1, 1, s, s), device)
}

/// GPT-2 with its LM head (`GPT2LMHeadModel`), Hugging Face names with the `transformer.` prefix.
#[derive(Clone, Debug)]
pub struct Gpt2LMHeadModel {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Gpt2Block>,
    ln_f: LayerNorm,
    lm_head: Option<Tensor>,
    embd_pdrop: f64,
    config: Gpt2Config,
}

impl Gpt2LMHeadModel {
    /// Loads every weight under `vb` (`transformer.*`, and `lm_head.weight` when untied).
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config) -> Result<Self> {
        check_supported(cfg)?;
        let t = vb.pp("transformer");
        let d = cfg.n_embd;
        let h = t.pp("h");
        let blocks = (0..cfg.n_layer)
            .map(|l| Gpt2Block::load(h.pp(l), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: t.get((cfg.vocab_size, d), "wte.weight")?,
            wpe: t.get((cfg.n_positions, d), "wpe.weight")?,
            blocks,
            ln_f: LayerNorm::load(t.pp("ln_f"), d, cfg.layer_norm_epsilon)?,
            lm_head: if cfg.tie_word_embeddings {
                None
            } else {
                Some(vb.get((cfg.vocab_size, d), LM_HEAD)?)
            },
            embd_pdrop: dropout_probs(cfg).0,
            config: cfg.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Output `(b * s, d)` of the top block of sub-model `scope` (before `ln_f`); frozen parts
    /// are detached, so no backward pass runs through them.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        scope: Scope,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        if scope.layers > self.blocks.len() || scope.frozen_below > scope.layers {
            candle_core::bail!(
                "scope {scope:?} does not fit a model of {} blocks",
                self.blocks.len()
            );
        }
        let (b, s) = input_ids.dims2()?;
        let d = self.config.n_embd;
        if s > self.config.n_positions {
            candle_core::bail!(
                "sequence of {s} tokens, the model has {} positions",
                self.config.n_positions
            );
        }
        let tokens = self.wte.index_select(&input_ids.flatten_all()?, 0)?;
        let pos = self.wpe.narrow(0, 0, s)?;
        let x = tokens
            .reshape((b, s, d))?
            .broadcast_add(&pos)?
            .reshape((b * s, d))?;
        let mut h = dropout.apply(&x, self.embd_pdrop)?;
        if !scope.train_embeddings {
            h = h.detach();
        }
        let bias = causal_bias(s, input_ids.device())?;
        for (l, block) in self.blocks[..scope.layers].iter().enumerate() {
            h = block.forward(&h, &bias, b, dropout)?;
            if l + 1 == scope.frozen_below {
                h = h.detach();
            }
        }
        Ok(h)
    }

    /// Logits `(n, V)` of hidden states `(n, d)`: `ln_f`, then the (tied) head.
    pub fn logits(&self, hidden: &Tensor, scope: Scope) -> Result<Tensor> {
        let h = self.ln_f.forward(hidden)?;
        let head = match &self.lm_head {
            Some(w) => w.clone(),
            None if !scope.train_embeddings => self.wte.detach(),
            None => self.wte.clone(),
        };
        h.matmul(&head.t()?)
    }

    /// Logits `(b, s, V)` of the whole model, dropout off.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let scope = Scope::full(self.blocks.len());
        let h = self.hidden_states(input_ids, scope, &mut Dropout::eval())?;
        self.logits(&h, scope)?
            .reshape((b, s, self.config.vocab_size))
    }

    /// Mean next-token cross-entropy of `batch` through sub-model `scope`.
    pub fn loss(
        &self,
        batch: &CausalDeviceBatch,
        scope: Scope,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let h = self.hidden_states(&batch.input_ids, scope, dropout)?;
        cross_entropy(&self.logits(&h, scope)?, &batch.targets)
    }
}

/// Whether GPT-2 parameter `name` is exempt from weight decay (biases and LayerNorms).
pub fn no_weight_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains(".ln_")
}

/// Trainable GPT-2 weights as candle `Var`s under Hugging Face `GPT2LMHeadModel` names
/// (always `transformer.`-prefixed), with the typed checkpoint they came from.
pub struct Gpt2Params {
    varmap: VarMap,
    template: Gpt2,
}

impl Gpt2Params {
    /// Vars initialised from `gpt2` on `device` (exact f32 copies).
    pub fn from_gpt2(gpt2: &Gpt2, device: &Device) -> crate::Result<Self> {
        gpt2.validate()?;
        let mut prefixed = gpt2.clone();
        prefixed.prefixed = true;
        let varmap = crate::vars::from_tensors(prefixed.named_tensors(), device)?;
        Ok(Self {
            varmap,
            template: gpt2.clone(),
        })
    }

    /// A fresh model of shape `config` with Hugging Face initialisation, seeded.
    pub fn fresh(config: &Gpt2Config, seed: u64, device: &Device) -> crate::Result<Self> {
        Self::from_gpt2(&Gpt2::random(config, Init::FRESH, seed), device)
    }

    /// The config.
    pub fn config(&self) -> &Gpt2Config {
        &self.template.config
    }

    /// The underlying var map (names are Hugging Face names).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// All vars with their names, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        crate::vars::sorted(&self.varmap)
    }

    /// Builds the candle model over these vars (gradients flow into them).
    pub fn model(&self) -> Result<Gpt2LMHeadModel> {
        let vb = crate::vars::builder(&self.varmap);
        Gpt2LMHeadModel::load(vb, self.config())
    }

    /// The current weights as a typed checkpoint (names prefixed as in the source checkpoint).
    pub fn to_gpt2(&self) -> crate::Result<Gpt2> {
        let mut g = self.template.clone();
        let vars = crate::vars::VarReader::new(&self.varmap);
        // The vars are the rows of the `GPT2LMHeadModel` table (see `bert::Params::to_bert`).
        let layout = Gpt2Layout::lm_head_model(g.lm_head.is_some());
        for def in gpt2_table(&g.config, layout) {
            let dst = g.tensor_mut(def.role).ok_or_else(|| {
                crate::TrainError::Model(format!("the model has no `{}`", def.name))
            })?;
            vars.read_into(&def.name, dst)?;
        }
        Ok(g)
    }
    /// Writes the current weights as a Hugging Face `GPT2LMHeadModel` folder at `dir`
    /// (`config.json` and `model.safetensors`, f32), atomically, replacing it.
    pub fn save_model(&self, dir: &std::path::Path) -> crate::Result<std::path::PathBuf> {
        let model = Model::Gpt2(self.to_gpt2()?);
        let tmp = AtomicDir::new(dir, true)?;
        write_weights(tmp.path(), &model, Dtype::F32)?;
        write_config(tmp.path(), &model, Dtype::F32)?;
        Ok(tmp.commit()?)
    }
}
