//! BERT for masked language modelling in candle, trainable end to end.
//!
//! Plain structs with Hugging Face names (`bert.embeddings.*`, `bert.encoder.layer.N.*`,
//! `cls.predictions.*`), `load(vb, cfg)` and `forward`, in the style of candle-transformers.
//! Every op on the training path is differentiable (the shared layers in [`crate::layers`]).
//!
//! Hidden states are kept flat as `(batch * seq, hidden)` so every dense layer is one 2-D
//! matmul; the vocabulary projection is computed only at the masked positions.

use crate::fused::attention_softmax;
use crate::layers::activate;
// Re-exported: the shared layers lived here before `layers` existed.
pub use crate::layers::{
    Dropout, LayerNorm, Linear, Scope, cross_entropy, layer_norm_composed, log_softmax_last_dim,
    softmax_composed, softmax_last_dim,
};
use bert2bert_checkpoint::bert::{BertLayout, tensor_table as bert_table};
use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{Activation, Bert, BertConfig};
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

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
        let probs = attention_softmax(&q.matmul(&k.t()?)?, mask_bias, scale)?;
        let probs = dropout.apply(&probs, self.attn_dropout)?;
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
        crate::fused::dense(&t, &dec, &self.head.bias, true)
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
