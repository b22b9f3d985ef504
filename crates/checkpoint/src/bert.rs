//! Typed BERT weights (`BertModel`, `BertForMaskedLM`, `BertForPreTraining`) and their Hugging
//! Face names.

use crate::config::BertConfig;
use crate::error::{CheckpointError, Result};
use crate::loader::Taker;
use crate::model::TensorDef as Def;
use crate::model::{Dropped, NamedTensor, check_shapes};
use crate::nn::{LayerNorm, Linear};
use crate::safetensors::TensorStore;
use ndarray::{Array1, Array2, ArrayViewD, ArrayViewMutD};

/// Word, position and token-type embeddings with their LayerNorm.
#[derive(Clone, Debug, PartialEq)]
pub struct BertEmbeddings {
    /// (V, D).
    pub word: Array2<f32>,
    /// (P, D).
    pub position: Array2<f32>,
    /// (T, D).
    pub token_type: Array2<f32>,
    /// LayerNorm over D.
    pub layer_norm: LayerNorm,
}

/// One post-LN encoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct BertLayer {
    /// Q: (D, D).
    pub query: Linear,
    /// K: (D, D).
    pub key: Linear,
    /// V: (D, D).
    pub value: Linear,
    /// W_O: (D, D).
    pub attention_output: Linear,
    /// LayerNorm after attention.
    pub attention_layer_norm: LayerNorm,
    /// W_1: (D, F).
    pub intermediate: Linear,
    /// W_2: (F, D).
    pub output: Linear,
    /// LayerNorm after the FFN.
    pub output_layer_norm: LayerNorm,
}

/// The masked-language-model head.
#[derive(Clone, Debug, PartialEq)]
pub struct MlmHead {
    /// Transform dense: (D, D).
    pub transform: Linear,
    /// Transform LayerNorm.
    pub layer_norm: LayerNorm,
    /// Output bias (V).
    pub bias: Array1<f32>,
    /// An untied decoder (D, V); `None` when tied to the word embeddings (the usual case).
    pub decoder: Option<Array2<f32>>,
}

/// A whole BERT checkpoint in typed form.
#[derive(Clone, Debug, PartialEq)]
pub struct Bert {
    /// The config, shape fields in step with the tensors.
    pub config: BertConfig,
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder layers, bottom first.
    pub layers: Vec<BertLayer>,
    /// Pooler dense (D, D), if the checkpoint has one.
    pub pooler: Option<Linear>,
    /// MLM head, if the checkpoint has one.
    pub mlm: Option<MlmHead>,
    /// NSP classifier (D, 2), if the checkpoint has one.
    pub nsp: Option<Linear>,
    /// Whether encoder names carry the `bert.` prefix (true for the *For* models).
    pub prefixed: bool,
}

/// Weight or bias of a linear map or LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leaf {
    /// `.weight`.
    Weight,
    /// `.bias`.
    Bias,
}

impl Leaf {
    /// The name's last component.
    pub fn name(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Bias => "bias",
        }
    }
}

/// The modules of one encoder layer, in the order transformers' state dict lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// `attention.self.query`: (D, D).
    Query,
    /// `attention.self.key`: (D, D).
    Key,
    /// `attention.self.value`: (D, D).
    Value,
    /// `attention.output.dense`: (D, D).
    AttentionOutput,
    /// `attention.output.LayerNorm` (D).
    AttentionLayerNorm,
    /// `intermediate.dense`: stored (F, D).
    Intermediate,
    /// `output.dense`: stored (D, F).
    Output,
    /// `output.LayerNorm` (D).
    OutputLayerNorm,
}

impl Part {
    /// Every part, in write order.
    pub const ALL: [Self; 8] = [
        Self::Query,
        Self::Key,
        Self::Value,
        Self::AttentionOutput,
        Self::AttentionLayerNorm,
        Self::Intermediate,
        Self::Output,
        Self::OutputLayerNorm,
    ];

    /// The module's name under `encoder.layer.N.`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "attention.self.query",
            Self::Key => "attention.self.key",
            Self::Value => "attention.self.value",
            Self::AttentionOutput => "attention.output.dense",
            Self::AttentionLayerNorm => "attention.output.LayerNorm",
            Self::Intermediate => "intermediate.dense",
            Self::Output => "output.dense",
            Self::OutputLayerNorm => "output.LayerNorm",
        }
    }
}

/// What a stored BERT tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `embeddings.word_embeddings.weight` (V, D).
    WordEmbeddings,
    /// `embeddings.position_embeddings.weight` (P, D).
    PositionEmbeddings,
    /// `embeddings.token_type_embeddings.weight` (T, D).
    TokenTypeEmbeddings,
    /// `embeddings.LayerNorm` (D).
    EmbeddingsLayerNorm(Leaf),
    /// A tensor of encoder layer `.0`.
    Layer(usize, Part, Leaf),
    /// `pooler.dense` (D, D).
    Pooler(Leaf),
    /// `cls.predictions.transform.dense` (D, D).
    Transform(Leaf),
    /// `cls.predictions.transform.LayerNorm` (D).
    TransformLayerNorm(Leaf),
    /// `cls.predictions.bias` (V).
    MlmBias,
    /// `cls.predictions.decoder.weight` (V, D), only when untied.
    Decoder,
    /// `cls.seq_relationship` (2, D).
    Nsp(Leaf),
}

/// One row of the BERT tensor table.
pub type TensorDef = Def<Role>;

/// Which optional parts a BERT checkpoint has, and how its names are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertLayout {
    /// Encoder names carry the `bert.` prefix.
    pub prefixed: bool,
    /// A pooler.
    pub pooler: bool,
    /// An MLM head.
    pub mlm: bool,
    /// An untied MLM decoder (only with `mlm`).
    pub decoder: bool,
    /// An NSP classifier.
    pub nsp: bool,
}

impl BertLayout {
    /// `BertForMaskedLM`, the model the trainers train: MLM head, untied decoder or not.
    pub fn masked_lm(untied_decoder: bool) -> Self {
        Self {
            prefixed: true,
            pooler: false,
            mlm: true,
            decoder: untied_decoder,
            nsp: false,
        }
    }
}

/// Every tensor a BERT checkpoint of config `c` and layout `layout` stores, in write order.
pub fn tensor_table(c: &BertConfig, layout: BertLayout) -> Vec<TensorDef> {
    table_with_layers(c, layout, c.num_hidden_layers)
}

fn table_with_layers(c: &BertConfig, layout: BertLayout, layers: usize) -> Vec<TensorDef> {
    let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let p = if layout.prefixed { "bert." } else { "" };
    let mut t = Table(Vec::new());
    t.row(
        format!("{p}embeddings.word_embeddings.weight"),
        vec![v, d],
        Role::WordEmbeddings,
    );
    t.row(
        format!("{p}embeddings.position_embeddings.weight"),
        vec![c.max_position_embeddings, d],
        Role::PositionEmbeddings,
    );
    t.row(
        format!("{p}embeddings.token_type_embeddings.weight"),
        vec![c.type_vocab_size, d],
        Role::TokenTypeEmbeddings,
    );
    t.norm(
        &format!("{p}embeddings.LayerNorm"),
        d,
        Role::EmbeddingsLayerNorm,
    );
    for l in 0..layers {
        for part in Part::ALL {
            let name = format!("{p}encoder.layer.{l}.{}", part.name());
            let role = |leaf| Role::Layer(l, part, leaf);
            match part {
                Part::AttentionLayerNorm | Part::OutputLayerNorm => t.norm(&name, d, role),
                Part::Intermediate => t.linear(&name, f, d, role),
                Part::Output => t.linear(&name, d, f, role),
                Part::Query | Part::Key | Part::Value | Part::AttentionOutput => {
                    t.linear(&name, d, d, role)
                }
            }
        }
    }
    if layout.pooler {
        t.linear(&format!("{p}pooler.dense"), d, d, Role::Pooler);
    }
    if layout.mlm {
        t.linear("cls.predictions.transform.dense", d, d, Role::Transform);
        t.norm(
            "cls.predictions.transform.LayerNorm",
            d,
            Role::TransformLayerNorm,
        );
        t.row("cls.predictions.bias".into(), vec![v], Role::MlmBias);
        if layout.decoder {
            t.row(DECODER.into(), vec![v, d], Role::Decoder);
        }
    }
    if layout.nsp {
        t.linear("cls.seq_relationship", 2, d, Role::Nsp);
    }
    t.0
}

/// A table under construction.
struct Table(Vec<TensorDef>);

impl Table {
    fn row(&mut self, name: String, shape: Vec<usize>, role: Role) {
        self.0.push(TensorDef { name, shape, role });
    }

    /// An `nn.Linear` with `o` outputs and `i` inputs: weight stored (o, i), then bias.
    fn linear(&mut self, name: &str, o: usize, i: usize, role: impl Fn(Leaf) -> Role) {
        self.row(format!("{name}.weight"), vec![o, i], role(Leaf::Weight));
        self.row(format!("{name}.bias"), vec![o], role(Leaf::Bias));
    }

    /// A LayerNorm over `n`: weight, then bias.
    fn norm(&mut self, name: &str, n: usize, role: impl Fn(Leaf) -> Role) {
        self.row(format!("{name}.weight"), vec![n], role(Leaf::Weight));
        self.row(format!("{name}.bias"), vec![n], role(Leaf::Bias));
    }
}

const DECODER: &str = "cls.predictions.decoder.weight";
const DECODER_BIAS: &str = "cls.predictions.decoder.bias";

/// Buffers that are not weights: dropped on purpose, since transformers recomputes them.
fn is_buffer(name: &str) -> bool {
    name.ends_with("embeddings.position_ids") || name.ends_with("embeddings.token_type_ids")
}

impl Bert {
    /// Loads typed weights from `store`, checking every shape against `config`.
    pub fn load(store: &TensorStore, config: BertConfig) -> Result<(Self, Vec<Dropped>)> {
        let c = &config;
        let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let prefixed = store.contains("bert.embeddings.word_embeddings.weight");
        let p = if prefixed { "bert." } else { "" };
        let mut t = Taker::new(store, is_buffer);
        let e = format!("{p}embeddings");
        let embeddings = BertEmbeddings {
            word: t.mat(&format!("{e}.word_embeddings.weight"), v, d)?,
            position: t.mat(
                &format!("{e}.position_embeddings.weight"),
                c.max_position_embeddings,
                d,
            )?,
            token_type: t.mat(
                &format!("{e}.token_type_embeddings.weight"),
                c.type_vocab_size,
                d,
            )?,
            layer_norm: t.layer_norm(&format!("{e}.LayerNorm"), d)?,
        };
        // Grown as loaded, never sized from the config: a config claiming far more layers than
        // the file holds must fail at the first missing tensor, not allocate for them.
        let mut layers = Vec::new();
        for l in 0..c.num_hidden_layers {
            let q = format!("{p}encoder.layer.{l}");
            layers.push(BertLayer {
                query: t.linear_t(&format!("{q}.attention.self.query"), d, d)?,
                key: t.linear_t(&format!("{q}.attention.self.key"), d, d)?,
                value: t.linear_t(&format!("{q}.attention.self.value"), d, d)?,
                attention_output: t.linear_t(&format!("{q}.attention.output.dense"), d, d)?,
                attention_layer_norm: t
                    .layer_norm(&format!("{q}.attention.output.LayerNorm"), d)?,
                intermediate: t.linear_t(&format!("{q}.intermediate.dense"), d, f)?,
                output: t.linear_t(&format!("{q}.output.dense"), f, d)?,
                output_layer_norm: t.layer_norm(&format!("{q}.output.LayerNorm"), d)?,
            });
        }
        let pooler = if t.has(&format!("{p}pooler.dense.weight")) {
            Some(t.linear_t(&format!("{p}pooler.dense"), d, d)?)
        } else {
            None
        };
        let nsp = if t.has("cls.seq_relationship.weight") {
            Some(t.linear_t("cls.seq_relationship", d, 2)?)
        } else {
            None
        };
        let mut dropped = Vec::new();
        let mlm = if t.has("cls.predictions.transform.dense.weight") {
            let transform = t.linear_t("cls.predictions.transform.dense", d, d)?;
            let layer_norm = t.layer_norm("cls.predictions.transform.LayerNorm", d)?;
            let bias = if t.has("cls.predictions.bias") {
                t.vec("cls.predictions.bias", v)?
            } else {
                t.vec(DECODER_BIAS, v)?
            };
            if t.has(DECODER_BIAS) {
                let db = t.vec(DECODER_BIAS, v)?;
                if db != bias {
                    return Err(CheckpointError::Tensor {
                        path: store
                            .file_of(DECODER_BIAS)
                            .unwrap_or(store.root())
                            .to_owned(),
                        tensor: DECODER_BIAS.into(),
                        reason: "differs from cls.predictions.bias, which transformers ties it to"
                            .into(),
                    });
                }
                dropped.push(Dropped::new(DECODER_BIAS, "alias of cls.predictions.bias"));
            }
            let mut decoder = None;
            if t.has(DECODER) {
                let w = t.mat(DECODER, v, d)?;
                if !c.tie_word_embeddings {
                    // Untied: kept even if equal today, since training will move them apart.
                    decoder = Some(w.reversed_axes());
                } else if w == embeddings.word {
                    dropped.push(Dropped::new(DECODER, "tied: equal to the word embeddings"));
                } else {
                    dropped.push(Dropped::new(
                        DECODER,
                        "config ties it to the word embeddings, so transformers ignores the stored copy",
                    ));
                }
            } else if !c.tie_word_embeddings {
                // transformers would initialise an untied decoder at random: refuse instead.
                return Err(CheckpointError::MissingTensor {
                    path: store.root().to_owned(),
                    tensor: DECODER.into(),
                });
            }
            Some(MlmHead {
                transform,
                layer_norm,
                bias,
                decoder,
            })
        } else {
            None
        };
        for name in t.rest() {
            if is_buffer(&name) {
                dropped.push(Dropped::new(
                    &name,
                    "buffer, not a weight: transformers recomputes it",
                ));
            } else {
                return Err(CheckpointError::UnexpectedTensor {
                    path: store.file_of(&name).unwrap_or(store.root()).to_owned(),
                    tensor: name,
                    family: "BERT",
                });
            }
        }
        for d in &dropped {
            tracing::debug!(tensor = %d.name, reason = %d.reason, "dropped on purpose");
        }
        Ok((
            Self {
                config,
                embeddings,
                layers,
                pooler,
                mlm,
                nsp,
                prefixed,
            },
            dropped,
        ))
    }

    /// Every weight under its Hugging Face name, in Hugging Face orientation (`nn.Linear` as (out, in)).
    pub fn named_tensors(&self) -> Vec<NamedTensor<'_>> {
        self.table()
            .into_iter()
            .map(|def| {
                let t = self
                    .tensor(def.role)
                    .expect("the table lists only the parts this model has");
                (def.name, t)
            })
            .collect()
    }

    /// Which optional parts this model has, and how its names are spelled.
    pub fn layout(&self) -> BertLayout {
        BertLayout {
            prefixed: self.prefixed,
            pooler: self.pooler.is_some(),
            mlm: self.mlm.is_some(),
            decoder: self.mlm.as_ref().is_some_and(|m| m.decoder.is_some()),
            nsp: self.nsp.is_some(),
        }
    }

    /// This model's tensor table: one row per tensor of its layers and optional parts.
    pub fn table(&self) -> Vec<TensorDef> {
        // Sized by the layers held, not the config's count, so that `validate` can report a
        // count mismatch as such rather than as a missing tensor.
        table_with_layers(&self.config, self.layout(), self.layers.len())
    }

    /// The tensor of `role` in Hugging Face orientation; `None` if this model lacks that part.
    pub fn tensor(&self, role: Role) -> Option<ArrayViewD<'_, f32>> {
        let e = &self.embeddings;
        Some(match role {
            Role::WordEmbeddings => e.word.view().into_dyn(),
            Role::PositionEmbeddings => e.position.view().into_dyn(),
            Role::TokenTypeEmbeddings => e.token_type.view().into_dyn(),
            Role::EmbeddingsLayerNorm(leaf) => e.layer_norm.leaf(leaf),
            Role::Layer(l, part, leaf) => {
                let y = self.layers.get(l)?;
                match part {
                    Part::Query => linear_view(&y.query, leaf),
                    Part::Key => linear_view(&y.key, leaf),
                    Part::Value => linear_view(&y.value, leaf),
                    Part::AttentionOutput => linear_view(&y.attention_output, leaf),
                    Part::AttentionLayerNorm => y.attention_layer_norm.leaf(leaf),
                    Part::Intermediate => linear_view(&y.intermediate, leaf),
                    Part::Output => linear_view(&y.output, leaf),
                    Part::OutputLayerNorm => y.output_layer_norm.leaf(leaf),
                }
            }
            Role::Pooler(leaf) => linear_view(self.pooler.as_ref()?, leaf),
            Role::Transform(leaf) => linear_view(&self.mlm.as_ref()?.transform, leaf),
            Role::TransformLayerNorm(leaf) => self.mlm.as_ref()?.layer_norm.leaf(leaf),
            Role::MlmBias => self.mlm.as_ref()?.bias.view().into_dyn(),
            Role::Decoder => self.mlm.as_ref()?.decoder.as_ref()?.t().into_dyn(),
            Role::Nsp(leaf) => linear_view(self.nsp.as_ref()?, leaf),
        })
    }

    /// Checks that every tensor's shape agrees with the config.
    pub fn validate(&self) -> Result<()> {
        let c = &self.config;
        let d = c.hidden_size;
        if c.num_attention_heads == 0 || !d.is_multiple_of(c.num_attention_heads) {
            return Err(CheckpointError::InvalidModel(format!(
                "hidden_size {d} is not divisible by num_attention_heads {}",
                c.num_attention_heads
            )));
        }
        if self.layers.len() != c.num_hidden_layers {
            return Err(CheckpointError::InvalidModel(format!(
                "{} layers, config says {}",
                self.layers.len(),
                c.num_hidden_layers
            )));
        }
        check_shapes(&self.named_tensors(), &self.expected_shapes())
    }

    /// The tensor of `role` in Hugging Face orientation, writable (a transposed view for
    /// `nn.Linear` weights); `None` if this model lacks that part.
    pub fn tensor_mut(&mut self, role: Role) -> Option<ArrayViewMutD<'_, f32>> {
        let e = &mut self.embeddings;
        Some(match role {
            Role::WordEmbeddings => e.word.view_mut().into_dyn(),
            Role::PositionEmbeddings => e.position.view_mut().into_dyn(),
            Role::TokenTypeEmbeddings => e.token_type.view_mut().into_dyn(),
            Role::EmbeddingsLayerNorm(leaf) => e.layer_norm.leaf_mut(leaf),
            Role::Layer(l, part, leaf) => {
                let y = self.layers.get_mut(l)?;
                match part {
                    Part::Query => linear_mut(&mut y.query, leaf),
                    Part::Key => linear_mut(&mut y.key, leaf),
                    Part::Value => linear_mut(&mut y.value, leaf),
                    Part::AttentionOutput => linear_mut(&mut y.attention_output, leaf),
                    Part::AttentionLayerNorm => y.attention_layer_norm.leaf_mut(leaf),
                    Part::Intermediate => linear_mut(&mut y.intermediate, leaf),
                    Part::Output => linear_mut(&mut y.output, leaf),
                    Part::OutputLayerNorm => y.output_layer_norm.leaf_mut(leaf),
                }
            }
            Role::Pooler(leaf) => linear_mut(self.pooler.as_mut()?, leaf),
            Role::Transform(leaf) => linear_mut(&mut self.mlm.as_mut()?.transform, leaf),
            Role::TransformLayerNorm(leaf) => self.mlm.as_mut()?.layer_norm.leaf_mut(leaf),
            Role::MlmBias => self.mlm.as_mut()?.bias.view_mut().into_dyn(),
            Role::Decoder => self
                .mlm
                .as_mut()?
                .decoder
                .as_mut()?
                .view_mut()
                .reversed_axes()
                .into_dyn(),
            Role::Nsp(leaf) => linear_mut(self.nsp.as_mut()?, leaf),
        })
    }

    /// Every tensor name [`Bert::named_tensors`] yields, with the shape the config implies.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.table()
            .into_iter()
            .map(|def| (def.name, def.shape))
            .collect()
    }
}

fn linear_view(l: &Linear, leaf: Leaf) -> ArrayViewD<'_, f32> {
    match leaf {
        Leaf::Weight => l.weight.t().into_dyn(),
        Leaf::Bias => l.bias.view().into_dyn(),
    }
}

fn linear_mut(l: &mut Linear, leaf: Leaf) -> ArrayViewMutD<'_, f32> {
    match leaf {
        Leaf::Weight => l.weight.view_mut().reversed_axes().into_dyn(),
        Leaf::Bias => l.bias.view_mut().into_dyn(),
    }
}
