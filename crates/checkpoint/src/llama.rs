//! Llama-family decoders (`model_type` llama, mistral, qwen2, qwen3; `*ForCausalLM`): the
//! config, one tensor table from which loading, writing and shape checks all derive, a
//! streaming reader that never holds the whole checkpoint, and typed weights in memory.
//!
//! Tensors stay in Hugging Face orientation (`nn.Linear` (out, in)); the table says which role
//! each stored tensor plays, so growth and the reference forward pass look tensors up by role.

use crate::config::{Fields, read_raw_config};
use crate::dtype::Dtype;
use crate::error::{CheckpointError, Result};
use crate::folder::{AtomicDir, copy_files, write_config_json};
use crate::model::Dropped;
use crate::random::{Init, SplitMix64};
use crate::safetensors::{FolderWriter, TensorSpec, TensorStore};
use ndarray::{ArrayD, ArrayView1, ArrayView2, ArrayViewD, CowArray, Ix1, Ix2, IxDyn};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The member of the family, as in `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlamaKind {
    /// `llama` (`LlamaForCausalLM`): optional `attention_bias` (q, k, v, o) and `mlp_bias`.
    Llama,
    /// `mistral` (`MistralForCausalLM`): no biases.
    Mistral,
    /// `qwen2` (`Qwen2ForCausalLM`): q, k, v biases always, o without.
    Qwen2,
    /// `qwen3` (`Qwen3ForCausalLM`): per-head `q_norm` / `k_norm`, optional `attention_bias`.
    Qwen3,
}

impl LlamaKind {
    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// The kind named by `model_type`.
    pub fn from_model_type(t: &str) -> Option<Self> {
        match t {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The kind of an `architectures` entry (`LlamaForCausalLM`, ...).
    pub fn from_architecture(a: &str) -> Option<Self> {
        [Self::Llama, Self::Mistral, Self::Qwen2, Self::Qwen3]
            .into_iter()
            .find(|k| {
                let prefix = match k {
                    Self::Llama => "Llama",
                    Self::Mistral => "Mistral",
                    Self::Qwen2 => "Qwen2",
                    Self::Qwen3 => "Qwen3",
                };
                a.strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with("For") || r == "Model")
            })
    }
}

/// RoPE as the config describes it (`rope_parameters` in transformers 5.x, `rope_theta` +
/// `rope_scaling` in 4.x).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`, or no scaling).
    Default,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, a smooth blend in between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
    /// Any other `rope_type` (carried through unchanged; the reference forward refuses it).
    Other(String),
}

/// A Llama-family config: the fields the math needs, plus the raw object for everything else.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Which member of the family.
    pub kind: LlamaKind,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Hidden size D (the residual stream).
    pub hidden_size: usize,
    /// FFN size F (gate, up: D -> F; down: F -> D).
    pub intermediate_size: usize,
    /// Number of decoder layers L.
    pub num_hidden_layers: usize,
    /// Query heads A.
    pub num_attention_heads: usize,
    /// Key/value heads K (A a multiple of K; K = A is plain multi-head, K = 1 multi-query).
    pub num_key_value_heads: usize,
    /// Head size d_h (`head_dim`, or D / A when absent).
    pub head_dim: usize,
    /// RMSNorm epsilon, shared by every norm (Qwen3's q/k norms too).
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Biases on q, k and v.
    pub qkv_bias: bool,
    /// Bias on o_proj.
    pub o_bias: bool,
    /// Biases on gate, up and down (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Whether `lm_head` is `embed_tokens` (then absent from the file).
    pub tie_word_embeddings: bool,
    /// The largest position (only checked by the forward pass).
    pub max_position_embeddings: usize,
    /// Sliding-window attention width, if any layer uses it.
    pub sliding_window: Option<usize>,
    /// The whole config.json object; unknown fields are written back unchanged.
    pub raw: Map<String, Value>,
}

/// Reads the RoPE fields of `raw` (5.x `rope_parameters` first, then 4.x `rope_theta` and
/// `rope_scaling`).
fn rope_of(f: &Fields<'_>) -> Result<(f64, RopeScaling)> {
    let raw = f.raw;
    let params = raw.get("rope_parameters").filter(|v| !v.is_null());
    let scaling = raw.get("rope_scaling").filter(|v| !v.is_null());
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| raw.get("rope_theta"))
        .map(|v| {
            v.as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| f.missing("rope_theta", "a positive number"))
        })
        .transpose()?
        .unwrap_or(10_000.0);
    let Some(p) = params.or(scaling) else {
        return Ok((theta, RopeScaling::Default));
    };
    let p = p
        .as_object()
        .ok_or_else(|| f.missing("rope_parameters", "an object"))?;
    let ty = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        p.get(k)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| f.invalid(format!("rope `{ty}` needs a positive number `{k}`")))
    };
    let scaling = match ty {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => RopeScaling::Other(other.to_owned()),
    };
    Ok((theta, scaling))
}

impl LlamaConfig {
    /// Parses and validates a raw Llama-family config; `path` names errors.
    pub fn from_raw(path: &Path, raw: Map<String, Value>) -> Result<Self> {
        let f = Fields { path, raw: &raw };
        let kind = raw
            .get("model_type")
            .and_then(Value::as_str)
            .and_then(LlamaKind::from_model_type)
            .or_else(|| {
                raw.get("architectures")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .find_map(LlamaKind::from_architecture)
                    })
            })
            .ok_or_else(|| f.missing("model_type", "llama, mistral, qwen2 or qwen3"))?;
        let act = f.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: format!("hidden_act `{act}` (the Llama family's SwiGLU needs silu)"),
            });
        }
        let prf = f.f64_or("partial_rotary_factor", 1.0)?;
        if prf != 1.0 {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: format!("partial_rotary_factor {prf} (only full rotary is supported)"),
            });
        }
        let hidden = f.usize("hidden_size")?;
        let heads = f.usize("num_attention_heads")?;
        let kv = f.usize_or("num_key_value_heads", heads)?;
        if !heads.is_multiple_of(kv) {
            return Err(f.invalid(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        let head_dim = match raw.get("head_dim") {
            None | Some(Value::Null) => {
                if !hidden.is_multiple_of(heads) {
                    return Err(f.invalid(format!(
                        "hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given"
                    )));
                }
                hidden / heads
            }
            Some(_) => f.usize("head_dim")?,
        };
        if !head_dim.is_multiple_of(2) {
            return Err(f.invalid(format!("head_dim {head_dim} is odd (RoPE rotates pairs)")));
        }
        let (rope_theta, rope_scaling) = rope_of(&f)?;
        let attention_bias = f.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match kind {
            LlamaKind::Llama | LlamaKind::Qwen3 => (attention_bias, attention_bias),
            LlamaKind::Mistral => (false, false),
            LlamaKind::Qwen2 => (true, false),
        };
        let mlp_bias = kind == LlamaKind::Llama && f.bool_or("mlp_bias", false)?;
        let sliding_window = match kind {
            LlamaKind::Mistral => match raw.get("sliding_window") {
                None | Some(Value::Null) => None,
                Some(_) => Some(f.usize("sliding_window")?),
            },
            LlamaKind::Qwen2 | LlamaKind::Qwen3 if f.bool_or("use_sliding_window", false)? => {
                Some(f.usize("sliding_window")?)
            }
            _ => None,
        };
        let cfg = Self {
            kind,
            vocab_size: f.usize("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: kind == LlamaKind::Qwen3,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            max_position_embeddings: f.usize_or("max_position_embeddings", 2048)?,
            sliding_window,
            raw: Map::new(),
        };
        if let Some(Value::Array(types)) = raw.get("layer_types")
            && types.len() != cfg.num_hidden_layers
        {
            return Err(f.invalid(format!(
                "layer_types has {} entries for {} layers",
                types.len(),
                cfg.num_hidden_layers
            )));
        }
        Ok(Self { raw, ..cfg })
    }

    /// Reads `config.json` of folder `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        Self::from_raw(&dir.join("config.json"), read_raw_config(dir)?)
    }

    /// Query heads per KV head (the GQA group size).
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The config as JSON: the raw object with every shape field written over it. `head_dim`
    /// is written when the raw config had it or when D / A no longer gives it.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.raw.clone();
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ] {
            m.insert(k.into(), Value::from(v));
        }
        let derived = self
            .hidden_size
            .is_multiple_of(self.num_attention_heads)
            .then(|| self.hidden_size / self.num_attention_heads);
        let had = m.get("head_dim").is_some_and(|v| !v.is_null());
        if had || derived != Some(self.head_dim) {
            m.insert("head_dim".into(), Value::from(self.head_dim));
        }
        m.entry("model_type")
            .or_insert_with(|| Value::from(self.kind.name()));
        m
    }

    /// A config with a new shape and everything else kept. `layer_order[t]` is the source
    /// layer of new layer t: per-layer fields (`layer_types`) follow it.
    pub fn with_shape(
        &self,
        hidden: usize,
        heads: usize,
        kv_heads: usize,
        intermediate: usize,
        layer_order: &[usize],
    ) -> Self {
        let mut raw = self.raw.clone();
        if let Some(Value::Array(types)) = self.raw.get("layer_types") {
            let grown: Vec<Value> = layer_order.iter().map(|&l| types[l].clone()).collect();
            raw.insert("layer_types".into(), Value::Array(grown));
        }
        Self {
            hidden_size: hidden,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            intermediate_size: intermediate,
            num_hidden_layers: layer_order.len(),
            raw,
            ..self.clone()
        }
    }

    /// A minimal config for tests and fresh models (transformers 5.x style, `rope_parameters`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: LlamaKind,
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        intermediate: usize,
        tied: bool,
    ) -> Self {
        let arch = match kind {
            LlamaKind::Llama => "LlamaForCausalLM",
            LlamaKind::Mistral => "MistralForCausalLM",
            LlamaKind::Qwen2 => "Qwen2ForCausalLM",
            LlamaKind::Qwen3 => "Qwen3ForCausalLM",
        };
        let mut raw: Map<String, Value> = serde_json::json!({
            "architectures": [arch],
            "model_type": kind.name(),
            "hidden_act": "silu",
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "tie_word_embeddings": tied,
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
        })
        .as_object()
        .cloned()
        .expect("object");
        if kind == LlamaKind::Qwen2 {
            raw.insert("use_sliding_window".into(), Value::from(false));
        }
        Self::from_raw(Path::new("config.json"), raw).expect("a valid config")
    }
}

/// The tensors of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// `input_layernorm.weight` (D): RMSNorm before attention.
    InputNorm,
    /// `self_attn.q_proj.weight` (A d_h, D).
    Q,
    /// `self_attn.q_proj.bias` (A d_h).
    QBias,
    /// `self_attn.k_proj.weight` (K d_h, D).
    K,
    /// `self_attn.k_proj.bias` (K d_h).
    KBias,
    /// `self_attn.v_proj.weight` (K d_h, D).
    V,
    /// `self_attn.v_proj.bias` (K d_h).
    VBias,
    /// `self_attn.o_proj.weight` (D, A d_h).
    O,
    /// `self_attn.o_proj.bias` (D).
    OBias,
    /// `self_attn.q_norm.weight` (d_h), Qwen3.
    QNorm,
    /// `self_attn.k_norm.weight` (d_h), Qwen3.
    KNorm,
    /// `post_attention_layernorm.weight` (D): RMSNorm before the MLP.
    PostNorm,
    /// `mlp.gate_proj.weight` (F, D).
    Gate,
    /// `mlp.gate_proj.bias` (F).
    GateBias,
    /// `mlp.up_proj.weight` (F, D).
    Up,
    /// `mlp.up_proj.bias` (F).
    UpBias,
    /// `mlp.down_proj.weight` (D, F).
    Down,
    /// `mlp.down_proj.bias` (D).
    DownBias,
}

/// What a stored tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `model.embed_tokens.weight` (V, D).
    Embed,
    /// A tensor of decoder layer `.0`.
    Layer(usize, Part),
    /// `model.norm.weight` (D): the final RMSNorm.
    Norm,
    /// `lm_head.weight` (V, D), absent when tied.
    LmHead,
}

/// One row of the Llama-family tensor table.
pub type TensorDef = crate::model::TensorDef<Role>;

/// The layer parts a config has, in the order transformers' state dict lists them, with
/// their name under `model.layers.N.` and their shape.
fn layer_parts(c: &LlamaConfig) -> Vec<(Part, &'static str, Vec<usize>)> {
    let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let mut out = vec![(Part::Q, "self_attn.q_proj.weight", vec![q, d])];
    if c.qkv_bias {
        out.push((Part::QBias, "self_attn.q_proj.bias", vec![q]));
    }
    out.push((Part::K, "self_attn.k_proj.weight", vec![kv, d]));
    if c.qkv_bias {
        out.push((Part::KBias, "self_attn.k_proj.bias", vec![kv]));
    }
    out.push((Part::V, "self_attn.v_proj.weight", vec![kv, d]));
    if c.qkv_bias {
        out.push((Part::VBias, "self_attn.v_proj.bias", vec![kv]));
    }
    out.push((Part::O, "self_attn.o_proj.weight", vec![d, q]));
    if c.o_bias {
        out.push((Part::OBias, "self_attn.o_proj.bias", vec![d]));
    }
    if c.qk_norm {
        out.push((Part::QNorm, "self_attn.q_norm.weight", vec![hd]));
        out.push((Part::KNorm, "self_attn.k_norm.weight", vec![hd]));
    }
    out.push((Part::Gate, "mlp.gate_proj.weight", vec![f, d]));
    if c.mlp_bias {
        out.push((Part::GateBias, "mlp.gate_proj.bias", vec![f]));
    }
    out.push((Part::Up, "mlp.up_proj.weight", vec![f, d]));
    if c.mlp_bias {
        out.push((Part::UpBias, "mlp.up_proj.bias", vec![f]));
    }
    out.push((Part::Down, "mlp.down_proj.weight", vec![d, f]));
    if c.mlp_bias {
        out.push((Part::DownBias, "mlp.down_proj.bias", vec![d]));
    }
    out.push((Part::InputNorm, "input_layernorm.weight", vec![d]));
    out.push((Part::PostNorm, "post_attention_layernorm.weight", vec![d]));
    out
}

/// Every tensor a checkpoint of config `c` stores, in write order.
pub fn tensor_table(c: &LlamaConfig) -> Vec<TensorDef> {
    let (d, v) = (c.hidden_size, c.vocab_size);
    let mut out = vec![TensorDef {
        name: "model.embed_tokens.weight".into(),
        shape: vec![v, d],
        role: Role::Embed,
    }];
    let parts = layer_parts(c);
    for l in 0..c.num_hidden_layers {
        for (p, name, shape) in &parts {
            out.push(TensorDef {
                name: format!("model.layers.{l}.{name}"),
                shape: shape.clone(),
                role: Role::Layer(l, *p),
            });
        }
    }
    out.push(TensorDef {
        name: "model.norm.weight".into(),
        shape: vec![d],
        role: Role::Norm,
    });
    if !c.tie_word_embeddings {
        out.push(TensorDef {
            name: "lm_head.weight".into(),
            shape: vec![v, d],
            role: Role::LmHead,
        });
    }
    out
}

/// Whether `name` is a RoPE buffer some older checkpoints stored (transformers recomputes it).
fn is_rope_buffer(name: &str) -> bool {
    name.starts_with("model.layers.") && name.ends_with(".self_attn.rotary_emb.inv_freq")
}

/// Source of Llama weights by role: a folder streamed from disk or a model in memory.
pub trait LlamaWeights: Sync {
    /// The config the tensors follow.
    fn config(&self) -> &LlamaConfig;
    /// The tensor of `role` as f32 in Hugging Face orientation.
    fn tensor(&self, role: Role) -> Result<CowArray<'_, f32, IxDyn>>;
}

/// A Llama-family folder opened for streaming: config and tensor table checked against the
/// safetensors headers (names, shapes, float dtypes), no tensor data read until asked for, and
/// each tensor's pages given back after it is read.
pub struct LlamaSource {
    /// The folder.
    pub path: PathBuf,
    /// Its config.
    pub config: LlamaConfig,
    /// Its tensor table.
    pub table: Vec<TensorDef>,
    /// The float dtype most of the stored weights have.
    pub dtype: Dtype,
    /// Other files (tokenizer, generation config, ...), relative to `path`, carried on write.
    pub other_files: Vec<PathBuf>,
    /// Stored tensors deliberately not used, with reasons.
    pub dropped: Vec<Dropped>,
    store: TensorStore,
    by_role: BTreeMap<Role, usize>,
}

impl std::fmt::Debug for LlamaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaSource")
            .field("path", &self.path)
            .field("kind", &self.config.kind)
            .finish_non_exhaustive()
    }
}

impl LlamaSource {
    /// Opens folder `dir`: config, then every tensor of the table checked against the headers;
    /// missing, misshapen, non-float and unexpected tensors are refused, naming file and tensor.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = LlamaConfig::read(dir)?;
        let store = TensorStore::open_dir_streaming(dir)?;
        if !store.contains("model.embed_tokens.weight") && store.contains("embed_tokens.weight") {
            return Err(CheckpointError::Unsupported {
                path: store.root().to_owned(),
                reason: "a base model without LM head (names without `model.`); save the \
                         *ForCausalLM model instead"
                    .into(),
            });
        }
        // Before the table (one row per tensor of every claimed layer) is built.
        crate::preflight::check_layer_count(
            &dir.join("config.json"),
            "num_hidden_layers",
            config.num_hidden_layers,
            &store,
            "model.layers.",
        )?;
        let table = tensor_table(&config);
        for def in &table {
            let info = store
                .info(&def.name)
                .ok_or_else(|| CheckpointError::MissingTensor {
                    path: store.root().to_owned(),
                    tensor: def.name.clone(),
                })?;
            let file = store.file_of(&def.name).unwrap_or(store.root()).to_owned();
            if info.shape != def.shape {
                return Err(CheckpointError::Shape {
                    path: file,
                    tensor: def.name.clone(),
                    found: info.shape.clone(),
                    expected: def.shape.clone(),
                });
            }
            if !info.dtype.is_weight_float() {
                return Err(CheckpointError::Tensor {
                    path: file,
                    tensor: def.name.clone(),
                    reason: format!(
                        "dtype {} is not a float type (F32, F16, BF16 or F64 expected)",
                        info.dtype
                    ),
                });
            }
        }
        let known: std::collections::BTreeSet<&str> =
            table.iter().map(|d| d.name.as_str()).collect();
        let mut dropped = Vec::new();
        for name in store.names().filter(|n| !known.contains(n)) {
            if is_rope_buffer(name) {
                dropped.push(Dropped::new(
                    name,
                    "RoPE buffer, not a weight: transformers recomputes it",
                ));
            } else if name == "lm_head.weight" && config.tie_word_embeddings {
                dropped.push(Dropped::new(
                    name,
                    "config ties it to embed_tokens, so transformers ignores the stored copy",
                ));
            } else {
                return Err(CheckpointError::UnexpectedTensor {
                    path: store.file_of(name).unwrap_or(store.root()).to_owned(),
                    tensor: name.to_owned(),
                    family: "Llama",
                });
            }
        }
        let mut other_files = Vec::new();
        crate::folder::list_other_files(dir, Path::new(""), &mut other_files)?;
        let by_role = table.iter().enumerate().map(|(i, d)| (d.role, i)).collect();
        Ok(Self {
            path: dir.to_owned(),
            dtype: store.dominant_float_dtype().unwrap_or(Dtype::F32),
            config,
            table,
            other_files,
            dropped,
            store,
            by_role,
        })
    }

    /// The table row of `role`.
    pub fn def(&self, role: Role) -> Option<&TensorDef> {
        self.by_role.get(&role).map(|&i| &self.table[i])
    }

    /// Number of stored parameters (the table's).
    pub fn num_parameters(&self) -> usize {
        self.table
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .sum()
    }

    /// Every tensor read into memory.
    pub fn load(&self) -> Result<Llama> {
        crate::memory::ensure_fits(
            self.store.root(),
            "loading the weights as f32",
            self.store.total_f32_bytes() as u128,
        )?;
        let tensors = self
            .table
            .iter()
            .map(|d| self.tensor(d.role).map(CowArray::into_owned))
            .collect::<Result<Vec<_>>>()?;
        Llama::new(self.config.clone(), tensors)
    }
}

impl LlamaWeights for LlamaSource {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tensor(&self, role: Role) -> Result<CowArray<'_, f32, IxDyn>> {
        let def = self.def(role).ok_or_else(|| {
            CheckpointError::InvalidModel(format!("{role:?} is not in this model's table"))
        })?;
        let t = self.store.read_f32(&def.name);
        self.store.release(&def.name);
        Ok(CowArray::from(t?))
    }
}

/// Llama-family weights in memory, in table order and Hugging Face orientation.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama {
    /// The config.
    pub config: LlamaConfig,
    /// The config's tensor table.
    pub table: Vec<TensorDef>,
    /// One tensor per table row.
    pub tensors: Vec<ArrayD<f32>>,
}

impl Llama {
    /// Weights `tensors` for `config`, checked against its table (count and shapes).
    pub fn new(config: LlamaConfig, tensors: Vec<ArrayD<f32>>) -> Result<Self> {
        let table = tensor_table(&config);
        if tensors.len() != table.len() {
            return Err(CheckpointError::InvalidModel(format!(
                "{} tensors, config implies {}",
                tensors.len(),
                table.len()
            )));
        }
        for (d, t) in table.iter().zip(&tensors) {
            if t.shape() != d.shape.as_slice() {
                return Err(CheckpointError::InvalidModel(format!(
                    "tensor `{}` has shape {:?}, config implies {:?}",
                    d.name,
                    t.shape(),
                    d.shape
                )));
            }
        }
        Ok(Self {
            config,
            table,
            tensors,
        })
    }

    /// Opens folder `dir` and reads every tensor.
    pub fn read(dir: &Path) -> Result<Self> {
        LlamaSource::open(dir)?.load()
    }

    /// Seeded random weights for `config`: matrices N(0, std), biases N(0, bias_std), norms
    /// 1 + N(0, ln_std).
    pub fn random(config: &LlamaConfig, init: Init, seed: u64) -> Self {
        let table = tensor_table(config);
        let tensors = table
            .iter()
            .enumerate()
            .map(|(i, d)| random_tensor(d, init, seed, i))
            .collect();
        Self::new(config.clone(), tensors).expect("table shapes")
    }

    fn index(&self, role: Role) -> usize {
        self.table
            .iter()
            .position(|d| d.role == role)
            .unwrap_or_else(|| panic!("{role:?} is not in this model's table"))
    }

    /// Whether the model has a tensor of `role`.
    pub fn has(&self, role: Role) -> bool {
        self.table.iter().any(|d| d.role == role)
    }

    /// The tensor of `role`.
    ///
    /// # Panics
    /// If the table has no such role.
    pub fn get(&self, role: Role) -> ArrayViewD<'_, f32> {
        self.tensors[self.index(role)].view()
    }

    /// The tensor of `role`, mutable.
    pub fn get_mut(&mut self, role: Role) -> ndarray::ArrayViewMutD<'_, f32> {
        let i = self.index(role);
        self.tensors[i].view_mut()
    }

    /// A matrix by role, as stored ((out, in) for projections).
    pub fn mat(&self, role: Role) -> ArrayView2<'_, f32> {
        self.get(role).into_dimensionality::<Ix2>().expect("2-d")
    }

    /// A vector by role.
    pub fn vec(&self, role: Role) -> ArrayView1<'_, f32> {
        self.get(role).into_dimensionality::<Ix1>().expect("1-d")
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensors.iter().map(ArrayD::len).sum()
    }

    /// Writes config and weights (in `dtype`) into folder `out`, atomically, carrying
    /// `other_files` from `from`; refuses non-finite values before writing anything.
    pub fn write(
        &self,
        out: &Path,
        dtype: Dtype,
        overwrite: bool,
        max_shard_bytes: Option<u64>,
    ) -> Result<PathBuf> {
        for (d, t) in self.table.iter().zip(&self.tensors) {
            crate::safetensors::check_finite(out, &d.name, t.iter())?;
        }
        let dir = AtomicDir::new(out, overwrite)?;
        let specs: Vec<TensorSpec> = self
            .table
            .iter()
            .map(|d| TensorSpec {
                name: d.name.clone(),
                dtype,
                shape: d.shape.clone(),
            })
            .collect();
        let mut w = FolderWriter::create(dir.path(), &specs, max_shard_bytes)?;
        for (d, t) in self.table.iter().zip(&self.tensors) {
            let t = t.as_standard_layout();
            w.write_finite_f32(&d.name, &d.shape, t.as_slice().expect("standard"))?;
        }
        w.finish()?;
        write_config_json(dir.path(), self.config.to_json(), dtype)?;
        dir.commit()
    }

    /// Like [`Llama::write`], then copies `files` (relative to `from`) into the folder.
    pub fn write_with_files(
        &self,
        out: &Path,
        dtype: Dtype,
        from: &Path,
        files: &[PathBuf],
    ) -> Result<PathBuf> {
        let out = self.write(out, dtype, true, None)?;
        copy_files(from, files, &out)?;
        Ok(out)
    }
}

impl LlamaWeights for Llama {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tensor(&self, role: Role) -> Result<CowArray<'_, f32, IxDyn>> {
        if !self.has(role) {
            return Err(CheckpointError::InvalidModel(format!(
                "{role:?} is not in this model's table"
            )));
        }
        Ok(CowArray::from(self.get(role)))
    }
}

/// Row `i` of a table filled with seeded random values (norm weights around 1): the same
/// tensor whether the model is built in memory or streamed to disk.
pub fn random_tensor(def: &TensorDef, init: Init, seed: u64, i: usize) -> ArrayD<f32> {
    let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (mean, std) = match def.role {
        Role::Norm
        | Role::Layer(_, Part::InputNorm | Part::PostNorm | Part::QNorm | Part::KNorm) => {
            (1.0, init.ln_std)
        }
        Role::Layer(
            _,
            Part::QBias
            | Part::KBias
            | Part::VBias
            | Part::OBias
            | Part::GateBias
            | Part::UpBias
            | Part::DownBias,
        ) => (0.0, init.bias_std),
        _ => (0.0, init.std),
    };
    ArrayD::from_shape_simple_fn(IxDyn(&def.shape), || mean + std * rng.normal())
}
