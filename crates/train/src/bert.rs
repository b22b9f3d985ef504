//! BERT for masked language modelling in candle, trainable end to end.
//!
//! Plain structs with Hugging Face names (`bert.embeddings.*`, `bert.encoder.layer.N.*`,
//! `cls.predictions.*`), `load(vb, cfg)` and `forward`, in the style of candle-transformers.
//! Every op on the training path is differentiable: candle-nn's fused `LayerNorm::forward`,
//! `ops::layer_norm`, `ops::softmax_last_dim` and `ops::sdpa` are forward-only in candle 0.11
//! (they silently cut the gradient), so LayerNorm, softmax and log-softmax are composed here
//! from differentiable primitives. `tests/grad.rs` checks that every parameter gets a gradient.
//!
//! Hidden states are kept flat as `(batch * seq, hidden)` so every dense layer is one 2-D
//! matmul; the vocabulary projection is computed only at the masked positions.

use bert2bert_checkpoint::bert::{BertLayout, tensor_table as bert_table};
use bert2bert_checkpoint::random::{Heads, Init, SplitMix64};
use bert2bert_checkpoint::{Activation, Bert, BertConfig};
use candle_core::{D, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

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
        let mut mask = Vec::with_capacity(n);
        while mask.len() < n {
            let r = rng.next_u64();
            for half in [r as u32, (r >> 32) as u32] {
                if mask.len() < n {
                    mask.push(if half >= threshold { scale } else { 0.0 });
                }
            }
        }
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
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
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
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
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
}

fn dropout_probs(cfg: &BertConfig) -> (f64, f64) {
    let get = |k: &str| {
        cfg.raw
            .get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.1)
    };
    (
        get("hidden_dropout_prob"),
        get("attention_probs_dropout_prob"),
    )
}

/// Word, position and token-type embeddings with their LayerNorm.
#[derive(Clone, Debug)]
pub struct BertEmbeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    /// Loads `*.{word,position,token_type}_embeddings.weight` and `*.LayerNorm` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            word: vb.get((cfg.vocab_size, d), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, d),
                "position_embeddings.weight",
            )?,
            token_type: vb.get((cfg.type_vocab_size, d), "token_type_embeddings.weight")?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            dropout: dropout_probs(cfg).0,
        })
    }

    /// Embeds `input_ids (b, s)` and `token_type_ids (b, s)` into `(b * s, d)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let d = self.word.dim(1)?;
        let words = self.word.index_select(&input_ids.flatten_all()?, 0)?;
        let types = self
            .token_type
            .index_select(&token_type_ids.flatten_all()?, 0)?;
        let pos = self.position.narrow(0, 0, s)?;
        let x = (words + types)?
            .reshape((b, s, d))?
            .broadcast_add(&pos)?
            .reshape((b * s, d))?;
        dropout.apply(&self.layer_norm.forward(&x)?, self.dropout)
    }
}

/// Multi-head self-attention with its output projection and LayerNorm.
#[derive(Clone, Debug)]
pub struct BertAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    hidden_dropout: f64,
    attn_dropout: f64,
}

impl BertAttention {
    /// Loads `attention.self.{query,key,value}` and `attention.output.{dense,LayerNorm}`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let sa = vb.pp("self");
        let out = vb.pp("output");
        let (hidden_dropout, attn_dropout) = dropout_probs(cfg);
        Ok(Self {
            query: Linear::load(sa.pp("query"), d, d)?,
            key: Linear::load(sa.pp("key"), d, d)?,
            value: Linear::load(sa.pp("value"), d, d)?,
            output: Linear::load(out.pp("dense"), d, d)?,
            layer_norm: LayerNorm::load(out.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            hidden_dropout,
            attn_dropout,
        })
    }

    /// `x (b * s, d)`, `mask_bias (b, 1, 1, s)` (0 or a large negative) -> `(b * s, d)`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        batch: usize,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let s = n / batch;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, s, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probs = dropout.apply(&softmax_last_dim(&scores)?, self.attn_dropout)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, d))?;
        let h = dropout.apply(&self.output.forward(&ctx)?, self.hidden_dropout)?;
        self.layer_norm.forward(&(h + x)?)
    }
}

/// One post-LN encoder layer: attention, then the feed-forward block.
#[derive(Clone, Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    act: Activation,
    hidden_dropout: f64,
}

impl BertLayer {
    /// Loads `attention.*`, `intermediate.dense` and `output.{dense,LayerNorm}` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: BertAttention::load(vb.pp("attention"), cfg)?,
            intermediate: Linear::load(vb.pp("intermediate").pp("dense"), d, f)?,
            output: Linear::load(vb.pp("output").pp("dense"), f, d)?,
            layer_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            act: cfg.hidden_act,
            hidden_dropout: dropout_probs(cfg).0,
        })
    }

    /// Applies the layer to `x (b * s, d)`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        batch: usize,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let a = self.attention.forward(x, mask_bias, batch, dropout)?;
        let h = activate(&self.intermediate.forward(&a)?, self.act)?;
        let h = dropout.apply(&self.output.forward(&h)?, self.hidden_dropout)?;
        self.layer_norm.forward(&(h + a)?)
    }
}

/// The MLM head: transform (dense, activation, LayerNorm) and the decoder tied to the word
/// embeddings (or an untied decoder) plus the output bias.
#[derive(Clone, Debug)]
pub struct BertMlmHead {
    transform: Linear,
    layer_norm: LayerNorm,
    bias: Tensor,
    decoder: Option<Tensor>,
    act: Activation,
}

impl BertMlmHead {
    /// Loads `cls.predictions.*` under `vb` (`decoder.weight` only when untied).
    pub fn load(vb: VarBuilder, cfg: &BertConfig, untied: bool) -> Result<Self> {
        let d = cfg.hidden_size;
        let t = vb.pp("transform");
        Ok(Self {
            transform: Linear::load(t.pp("dense"), d, d)?,
            layer_norm: LayerNorm::load(t.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            bias: vb.get(cfg.vocab_size, "bias")?,
            decoder: if untied {
                Some(vb.get((cfg.vocab_size, d), "decoder.weight")?)
            } else {
                None
            },
            act: cfg.hidden_act,
        })
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

    /// Sub-model of depth `n` training only its top `lb` layers and the MLM head (transform,
    /// its LayerNorm, output bias); the embeddings, including the tied decoder, stay frozen.
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

/// A batch on the device, ready for [`BertForMaskedLM::forward`].
#[derive(Clone, Debug)]
pub struct DeviceBatch {
    /// Token ids `(b, s)`, u32.
    pub input_ids: Tensor,
    /// Segment ids `(b, s)`, u32.
    pub token_type_ids: Tensor,
    /// Additive attention bias `(b, 1, 1, s)`: 0 where attended, -1e9 at padding.
    pub mask_bias: Tensor,
    /// Flat indices (into `b * s`) of the positions to predict, u32.
    pub masked: Tensor,
    /// Target token ids at those positions, u32.
    pub targets: Tensor,
    /// Batch size b.
    pub batch_size: usize,
    /// Sequence length s.
    pub seq_len: usize,
    /// Number of predicted positions.
    pub num_masked: usize,
}

impl DeviceBatch {
    /// Uploads a host batch; `labels` hold the target at each predicted position of `masked`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input_ids: &[u32],
        token_type_ids: &[u32],
        attention_mask: &[u32],
        masked: &[usize],
        targets: &[u32],
        batch_size: usize,
        seq_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let n = batch_size * seq_len;
        if input_ids.len() != n || token_type_ids.len() != n || attention_mask.len() != n {
            candle_core::bail!(
                "batch of {batch_size} x {seq_len} needs {n} ids, got input_ids {}, token_type_ids {}, attention_mask {}",
                input_ids.len(),
                token_type_ids.len(),
                attention_mask.len()
            );
        }
        if masked.len() != targets.len() || masked.is_empty() {
            candle_core::bail!(
                "{} masked positions with {} targets (need at least one)",
                masked.len(),
                targets.len()
            );
        }
        if let Some(&bad) = masked.iter().find(|&&i| i >= n) {
            candle_core::bail!("masked index {bad} outside a batch of {n} positions");
        }
        let bias: Vec<f32> = attention_mask
            .iter()
            .map(|&m| if m == 0 { -1e9 } else { 0.0 })
            .collect();
        let masked_u32: Vec<u32> = masked.iter().map(|&i| i as u32).collect();
        Ok(Self {
            input_ids: Tensor::from_slice(input_ids, (batch_size, seq_len), device)?,
            token_type_ids: Tensor::from_slice(token_type_ids, (batch_size, seq_len), device)?,
            mask_bias: Tensor::from_vec(bias, (batch_size, 1, 1, seq_len), device)?,
            masked: Tensor::from_vec(masked_u32, masked.len(), device)?,
            targets: Tensor::from_slice(targets, targets.len(), device)?,
            batch_size,
            seq_len,
            num_masked: masked.len(),
        })
    }
}

/// BERT with the MLM head (`BertForMaskedLM`), Hugging Face names with the `bert.` prefix.
#[derive(Clone, Debug)]
pub struct BertForMaskedLM {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    head: BertMlmHead,
    config: BertConfig,
}

impl BertForMaskedLM {
    /// Loads every weight under `vb` (`bert.*` and `cls.predictions.*`).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Self::load_with(vb, cfg, false)
    }

    /// Like [`Self::load`]; `untied` also loads `cls.predictions.decoder.weight`.
    pub fn load_with(vb: VarBuilder, cfg: &BertConfig, untied: bool) -> Result<Self> {
        let bert = vb.pp("bert");
        let embeddings = BertEmbeddings::load(bert.pp("embeddings"), cfg)?;
        let enc = bert.pp("encoder").pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| BertLayer::load(enc.pp(l), cfg))
            .collect::<Result<Vec<_>>>()?;
        let head = BertMlmHead::load(vb.pp("cls").pp("predictions"), cfg, untied)?;
        Ok(Self {
            embeddings,
            layers,
            head,
            config: cfg.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Final hidden states `(b * s, d)` of the sub-model `scope`; frozen parts are detached.
    pub fn hidden_states(
        &self,
        batch: &DeviceBatch,
        scope: Scope,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        if scope.layers > self.layers.len() || scope.frozen_below > scope.layers {
            candle_core::bail!(
                "scope {scope:?} does not fit a model of {} layers",
                self.layers.len()
            );
        }
        let mut h = self
            .embeddings
            .forward(&batch.input_ids, &batch.token_type_ids, dropout)?;
        if !scope.train_embeddings {
            h = h.detach();
        }
        for (l, layer) in self.layers[..scope.layers].iter().enumerate() {
            h = layer.forward(&h, &batch.mask_bias, batch.batch_size, dropout)?;
            if l + 1 == scope.frozen_below {
                // The graph stops here: no backward through the frozen bottom.
                h = h.detach();
            }
        }
        Ok(h)
    }

    /// MLM logits `(m, V)` at flat positions `masked` of `hidden (b * s, d)`.
    pub fn mlm_logits(&self, hidden: &Tensor, masked: &Tensor, scope: Scope) -> Result<Tensor> {
        let h = hidden.index_select(masked, 0)?;
        let t = activate(&self.head.transform.forward(&h)?, self.head.act)?;
        let t = self.head.layer_norm.forward(&t)?;
        let dec = match &self.head.decoder {
            Some(w) => w.clone(),
            None if !scope.train_embeddings => self.embeddings.word.detach(),
            None => self.embeddings.word.clone(),
        };
        t.matmul(&dec.t()?)?.broadcast_add(&self.head.bias)
    }

    /// Mean MLM cross-entropy of `batch` through sub-model `scope`.
    pub fn loss(&self, batch: &DeviceBatch, scope: Scope, dropout: &mut Dropout) -> Result<Tensor> {
        let h = self.hidden_states(batch, scope, dropout)?;
        let logits = self.mlm_logits(&h, &batch.masked, scope)?;
        cross_entropy(&logits, &batch.targets)
    }
}

/// Whether parameter `name` is exempt from weight decay (biases and LayerNorm, as in BERT).
pub fn no_weight_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name == "cls.predictions.bias"
}

fn is_head_or_encoder(name: &str) -> bool {
    name.starts_with("bert.embeddings.")
        || name.starts_with("bert.encoder.")
        || name.starts_with("cls.predictions.")
}

/// Trainable weights of a checkpoint as candle `Var`s under Hugging Face names, with the typed
/// checkpoint they came from (its pooler and NSP head are carried through untouched).
pub struct Params {
    varmap: VarMap,
    template: Bert,
    untied: bool,
}

impl Params {
    /// Vars initialised from `bert` (which needs an MLM head) on `device`.
    pub fn from_bert(bert: &Bert, device: &Device) -> crate::Result<Self> {
        let mut b = bert.clone();
        b.prefixed = true;
        let Some(mlm) = &b.mlm else {
            return Err(crate::TrainError::Model(
                "the checkpoint has no MLM head (cls.predictions.*); use Params::with_fresh_head"
                    .into(),
            ));
        };
        let untied = mlm.decoder.is_some();
        b.validate()?;
        let varmap = crate::vars::from_tensors(
            b.named_tensors()
                .into_iter()
                .filter(|(name, _)| is_head_or_encoder(name)),
            device,
        )?;
        Ok(Self {
            varmap,
            template: b,
            untied,
        })
    }

    /// Like [`Self::from_bert`], adding a freshly initialised MLM head (seeded) when `bert` has none.
    pub fn with_fresh_head(bert: &Bert, seed: u64, device: &Device) -> crate::Result<Self> {
        if bert.mlm.is_some() {
            return Self::from_bert(bert, device);
        }
        let mut b = bert.clone();
        b.mlm = Bert::random(&bert.config, Heads::MLM, Init::FRESH, seed).mlm;
        tracing::warn!("checkpoint has no MLM head: starting from a freshly initialised one");
        Self::from_bert(&b, device)
    }

    /// A fresh model of shape `config` with Hugging Face initialisation, seeded.
    pub fn fresh(config: &BertConfig, seed: u64, device: &Device) -> crate::Result<Self> {
        Self::from_bert(&Bert::random(config, Heads::MLM, Init::FRESH, seed), device)
    }

    /// The config.
    pub fn config(&self) -> &BertConfig {
        &self.template.config
    }

    /// Whether the decoder has its own matrix (`cls.predictions.decoder.weight`) instead of the
    /// word embeddings.
    pub fn untied_decoder(&self) -> bool {
        self.untied
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
    pub fn model(&self) -> Result<BertForMaskedLM> {
        let vb = crate::vars::builder(&self.varmap);
        BertForMaskedLM::load_with(vb, self.config(), self.untied)
    }

    /// The current weights as a typed checkpoint (Hugging Face `BertForMaskedLM` names).
    pub fn to_bert(&self) -> crate::Result<Bert> {
        let mut b = self.template.clone();
        let vars = crate::vars::VarReader::new(&self.varmap);
        // The vars are the rows of the `BertForMaskedLM` table, by Hugging Face name and in
        // Hugging Face orientation; each is copied into the template's tensor of the same role,
        // so a template without the `bert.` prefix (or with a pooler / NSP head, which are not
        // trained) keeps its own names and parts.
        let layout = BertLayout::masked_lm(self.untied);
        for def in bert_table(&b.config, layout) {
            let dst = b.tensor_mut(def.role).ok_or_else(|| {
                crate::TrainError::Model(format!("the model has no `{}`", def.name))
            })?;
            vars.read_into(&def.name, dst)?;
        }
        Ok(b)
    }
}
