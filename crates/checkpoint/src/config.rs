//! `config.json`: family detection and typed configs that carry unknown fields through unchanged.

use crate::error::{CheckpointError, Result, io_err};
use serde_json::{Map, Value};
use std::path::Path;

/// Model families this crate knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BERT (`model_type: bert`): post-LayerNorm encoder.
    Bert,
    /// GPT-2 (`model_type: gpt2`): pre-LayerNorm decoder.
    Gpt2,
}

impl Family {
    /// Lower-case name, as in `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Gpt2 => "gpt2",
        }
    }

    /// Detects the family from `model_type`, falling back to `architectures`.
    pub fn detect(path: &Path, raw: &Map<String, Value>) -> Result<Self> {
        let model_type = raw.get("model_type").and_then(Value::as_str);
        let archs: Vec<&str> = raw
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match model_type {
            Some("bert") => Ok(Self::Bert),
            Some("gpt2") => Ok(Self::Gpt2),
            Some(other) if crate::llama::LlamaKind::from_model_type(other).is_some() => {
                Err(CheckpointError::Unsupported {
                    path: path.to_owned(),
                    reason: format!(
                        "model_type `{other}` is a Llama-family decoder: it is streamed, never read \
                         whole (bert2bert_checkpoint::LlamaSource; `cargo xtask grow` and `verify` \
                         handle it), and training it belongs to the PyTorch side (python/, \
                         docs/distributed.md)"
                    ),
                })
            }
            Some(other) => Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: format!(
                    "model_type `{other}` (supported: bert, gpt2; RoBERTa-style models differ in position ids, not only names)"
                ),
            }),
            None if archs.iter().any(|a| a.starts_with("Bert")) => Ok(Self::Bert),
            None if archs.iter().any(|a| a.starts_with("GPT2")) => Ok(Self::Gpt2),
            None => Err(CheckpointError::ConfigField {
                path: path.to_owned(),
                field: "model_type".into(),
                expected: "a string naming the model family (bert or gpt2)",
            }),
        }
    }
}

/// Reads and parses `config.json` of model folder `dir` into its raw JSON object.
pub fn read_raw_config(dir: &Path) -> Result<Map<String, Value>> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(CheckpointError::MissingConfig { path });
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let v: Value = serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
        path: path.clone(),
        source,
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(CheckpointError::ConfigInvalid {
            path,
            reason: "top level is not a JSON object".into(),
        }),
    }
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, x * Phi(x) (Hugging Face `gelu`).
    Gelu,
    /// Tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// max(0, x).
    Relu,
}

impl Activation {
    /// Parses a Hugging Face activation name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// The Hugging Face name written for this activation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
            Self::Relu => "relu",
        }
    }
}

/// Typed access to a raw config object, with errors naming the file and field.
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    pub raw: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub fn usize(&self, field: &str) -> Result<usize> {
        self.raw
            .get(field)
            .and_then(Value::as_u64)
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| self.missing(field, "a positive integer"))
    }
    pub fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.usize(field),
        }
    }
    pub fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| self.missing(field, "a non-negative number")),
        }
    }
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.missing(field, "a boolean")),
        }
    }
    pub fn str_or<'s>(&'s self, field: &str, default: &'s str) -> Result<&'s str> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.missing(field, "a string")),
        }
    }
    pub fn activation(&self, field: &str, default: &str) -> Result<Activation> {
        let name = self.str_or(field, default)?;
        Activation::from_name(name).ok_or_else(|| CheckpointError::Unsupported {
            path: self.path.to_owned(),
            reason: format!(
                "{field} `{name}` (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ),
        })
    }
    pub fn missing(&self, field: &str, expected: &'static str) -> CheckpointError {
        CheckpointError::ConfigField {
            path: self.path.to_owned(),
            field: field.into(),
            expected,
        }
    }
    pub fn invalid(&self, reason: String) -> CheckpointError {
        CheckpointError::ConfigInvalid {
            path: self.path.to_owned(),
            reason,
        }
    }
}

/// Writes activation `act` under `field` unless the raw value already names it (so `gelu_new`
/// and `gelu_pytorch_tanh`, the same function, keep their spelling).
pub(crate) fn set_activation(
    m: &mut Map<String, Value>,
    field: &str,
    act: Activation,
    default: &str,
) {
    let current = m.get(field).and_then(Value::as_str).unwrap_or(default);
    if Activation::from_name(current) != Some(act) {
        m.insert(field.into(), Value::from(act.name()));
    }
}

/// Writes `value` under `field` unless the raw object already says so (explicitly or by default).
pub(crate) fn set_bool(m: &mut Map<String, Value>, field: &str, value: bool, default: bool) {
    let current = m.get(field).and_then(Value::as_bool).unwrap_or(default);
    if current != value {
        m.insert(field.into(), Value::from(value));
    }
}

/// A BERT config: the fields the math needs, plus the raw object for everything else.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Hidden size D.
    pub hidden_size: usize,
    /// Number of encoder layers L.
    pub num_hidden_layers: usize,
    /// Attention heads A (head size D / A).
    pub num_attention_heads: usize,
    /// FFN inner size F.
    pub intermediate_size: usize,
    /// FFN activation.
    pub hidden_act: Activation,
    /// Rows of the position embedding.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the MLM decoder shares the word embedding.
    pub tie_word_embeddings: bool,
    /// The whole config.json object; unknown fields are written back unchanged.
    pub raw: Map<String, Value>,
}

impl BertConfig {
    /// Parses and validates a raw BERT config; `path` names errors.
    pub fn from_raw(path: &Path, raw: Map<String, Value>) -> Result<Self> {
        let f = Fields { path, raw: &raw };
        let pe = f.str_or("position_embedding_type", "absolute")?;
        if pe != "absolute" {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: format!("position_embedding_type `{pe}` (only absolute is supported)"),
            });
        }
        if f.bool_or("add_cross_attention", false)? || f.bool_or("is_decoder", false)? {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: "BERT as a decoder or with cross-attention".into(),
            });
        }
        let cfg = Self {
            vocab_size: f.usize("vocab_size")?,
            hidden_size: f.usize("hidden_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: f.usize("num_attention_heads")?,
            intermediate_size: f.usize("intermediate_size")?,
            hidden_act: f.activation("hidden_act", "gelu")?,
            max_position_embeddings: f.usize_or("max_position_embeddings", 512)?,
            type_vocab_size: f.usize_or("type_vocab_size", 2)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-12)?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
            raw: Map::new(),
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(f.invalid(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(Self { raw, ..cfg })
    }

    /// Head size D / A.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The config as JSON: the raw object with every typed field written over it.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.raw.clone();
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            m.insert(k.into(), Value::from(v));
        }
        m.insert("layer_norm_eps".into(), Value::from(self.layer_norm_eps));
        set_activation(&mut m, "hidden_act", self.hidden_act, "gelu");
        set_bool(
            &mut m,
            "tie_word_embeddings",
            self.tie_word_embeddings,
            true,
        );
        m.entry("model_type").or_insert_with(|| Value::from("bert"));
        m
    }

    /// A config with a new shape (layers, hidden, heads, FFN) and everything else kept.
    pub fn with_shape(
        &self,
        layers: usize,
        hidden: usize,
        heads: usize,
        intermediate: usize,
    ) -> Self {
        Self {
            num_hidden_layers: layers,
            hidden_size: hidden,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            ..self.clone()
        }
    }

    /// A minimal config for tests and fresh models, with Hugging Face defaults elsewhere.
    pub fn new(
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        intermediate: usize,
        max_pos: usize,
    ) -> Self {
        let raw: Map<String, Value> = serde_json::json!({
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "attention_probs_dropout_prob": 0.1,
            "hidden_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "layer_norm_eps": 1e-12,
            "tie_word_embeddings": true,
        })
        .as_object()
        .cloned()
        .expect("object");
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            hidden_act: Activation::Gelu,
            max_position_embeddings: max_pos,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            tie_word_embeddings: true,
            raw,
        }
    }
}

/// A GPT-2 config: the fields the math needs, plus the raw object for everything else.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Rows of the position embedding (context length).
    pub n_positions: usize,
    /// Hidden size D.
    pub n_embd: usize,
    /// Number of blocks L.
    pub n_layer: usize,
    /// Attention heads A (head size D / A).
    pub n_head: usize,
    /// FFN inner size; `None` (JSON null) means 4 D.
    pub n_inner: Option<usize>,
    /// FFN activation (`gelu_new` by default).
    pub activation_function: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Whether the LM head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// The whole config.json object; unknown fields are written back unchanged.
    pub raw: Map<String, Value>,
}

impl Gpt2Config {
    /// Parses and validates a raw GPT-2 config; `path` names errors.
    pub fn from_raw(path: &Path, raw: Map<String, Value>) -> Result<Self> {
        let f = Fields { path, raw: &raw };
        if f.bool_or("add_cross_attention", false)? {
            return Err(CheckpointError::Unsupported {
                path: path.to_owned(),
                reason: "GPT-2 with cross-attention (add_cross_attention: true)".into(),
            });
        }
        let n_inner = match raw.get("n_inner") {
            None | Some(Value::Null) => None,
            Some(_) => Some(f.usize("n_inner")?),
        };
        let cfg = Self {
            vocab_size: f.usize("vocab_size")?,
            n_positions: f.usize_or("n_positions", 1024)?,
            n_embd: f.usize("n_embd")?,
            n_layer: f.usize("n_layer")?,
            n_head: f.usize("n_head")?,
            n_inner,
            activation_function: f.activation("activation_function", "gelu_new")?,
            layer_norm_epsilon: f.f64_or("layer_norm_epsilon", 1e-5)?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
            raw: Map::new(),
        };
        if !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(f.invalid(format!(
                "n_embd {} is not divisible by n_head {}",
                cfg.n_embd, cfg.n_head
            )));
        }
        Ok(Self { raw, ..cfg })
    }

    /// FFN inner size F: `n_inner`, or 4 D when it is null.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Head size D / A.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The config as JSON: the raw object with every typed field written over it.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.raw.clone();
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            m.insert(k.into(), Value::from(v));
        }
        // Old configs carry `n_ctx`, which transformers reads as the context length too.
        if m.get("n_ctx").is_some_and(Value::is_u64) {
            m.insert("n_ctx".into(), Value::from(self.n_positions));
        }
        m.insert(
            "n_inner".into(),
            self.n_inner.map_or(Value::Null, Value::from),
        );
        m.insert(
            "layer_norm_epsilon".into(),
            Value::from(self.layer_norm_epsilon),
        );
        set_activation(
            &mut m,
            "activation_function",
            self.activation_function,
            "gelu_new",
        );
        set_bool(
            &mut m,
            "tie_word_embeddings",
            self.tie_word_embeddings,
            true,
        );
        m.entry("model_type").or_insert_with(|| Value::from("gpt2"));
        m
    }

    /// A config with a new shape (layers, hidden, heads, FFN) and everything else kept. The FFN
    /// size stays implicit (`n_inner: null`) when it is 4 x hidden and was implicit before.
    pub fn with_shape(&self, layers: usize, hidden: usize, heads: usize, inner: usize) -> Self {
        let n_inner = if self.n_inner.is_none() && inner == 4 * hidden {
            None
        } else {
            Some(inner)
        };
        Self {
            n_layer: layers,
            n_embd: hidden,
            n_head: heads,
            n_inner,
            ..self.clone()
        }
    }

    /// A minimal config for tests and fresh models, with Hugging Face defaults elsewhere.
    pub fn new(vocab: usize, hidden: usize, layers: usize, heads: usize, positions: usize) -> Self {
        let raw: Map<String, Value> = serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": "gelu_new",
            "attn_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "resid_pdrop": 0.1,
            "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-5,
            "n_inner": null,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
        })
        .as_object()
        .cloned()
        .expect("object");
        Self {
            vocab_size: vocab,
            n_positions: positions,
            n_embd: hidden,
            n_layer: layers,
            n_head: heads,
            n_inner: None,
            activation_function: Activation::GeluTanh,
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
            raw,
        }
    }
}
