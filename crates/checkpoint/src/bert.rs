//! Typed BERT weights (`BertModel`, `BertForMaskedLM`, `BertForPreTraining`) and their Hugging
//! Face names.

use crate::config::BertConfig;
use crate::error::{CheckpointError, Result};
use crate::loader::Taker;
use crate::model::{Dropped, NamedTensor, check_shapes};
use crate::nn::{LayerNorm, Linear};
use crate::safetensors::TensorStore;
use ndarray::{Array1, Array2};

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
        let p = if self.prefixed { "bert." } else { "" };
        let e = &self.embeddings;
        let mut out: Vec<NamedTensor<'_>> = vec![
            (
                format!("{p}embeddings.word_embeddings.weight"),
                e.word.view().into_dyn(),
            ),
            (
                format!("{p}embeddings.position_embeddings.weight"),
                e.position.view().into_dyn(),
            ),
            (
                format!("{p}embeddings.token_type_embeddings.weight"),
                e.token_type.view().into_dyn(),
            ),
        ];
        push_ln(&mut out, format!("{p}embeddings.LayerNorm"), &e.layer_norm);
        for (l, layer) in self.layers.iter().enumerate() {
            let q = format!("{p}encoder.layer.{l}");
            push_linear(&mut out, format!("{q}.attention.self.query"), &layer.query);
            push_linear(&mut out, format!("{q}.attention.self.key"), &layer.key);
            push_linear(&mut out, format!("{q}.attention.self.value"), &layer.value);
            push_linear(
                &mut out,
                format!("{q}.attention.output.dense"),
                &layer.attention_output,
            );
            push_ln(
                &mut out,
                format!("{q}.attention.output.LayerNorm"),
                &layer.attention_layer_norm,
            );
            push_linear(
                &mut out,
                format!("{q}.intermediate.dense"),
                &layer.intermediate,
            );
            push_linear(&mut out, format!("{q}.output.dense"), &layer.output);
            push_ln(
                &mut out,
                format!("{q}.output.LayerNorm"),
                &layer.output_layer_norm,
            );
        }
        if let Some(pooler) = &self.pooler {
            push_linear(&mut out, format!("{p}pooler.dense"), pooler);
        }
        if let Some(m) = &self.mlm {
            push_linear(
                &mut out,
                "cls.predictions.transform.dense".into(),
                &m.transform,
            );
            push_ln(
                &mut out,
                "cls.predictions.transform.LayerNorm".into(),
                &m.layer_norm,
            );
            out.push(("cls.predictions.bias".into(), m.bias.view().into_dyn()));
            if let Some(dec) = &m.decoder {
                out.push((DECODER.into(), dec.t().into_dyn()));
            }
        }
        if let Some(nsp) = &self.nsp {
            push_linear(&mut out, "cls.seq_relationship".into(), nsp);
        }
        out
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

    /// Every tensor name [`Bert::named_tensors`] yields, with the shape the config implies.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let p = if self.prefixed { "bert." } else { "" };
        let mut out: Vec<(String, Vec<usize>)> = vec![
            (format!("{p}embeddings.word_embeddings.weight"), vec![v, d]),
            (
                format!("{p}embeddings.position_embeddings.weight"),
                vec![c.max_position_embeddings, d],
            ),
            (
                format!("{p}embeddings.token_type_embeddings.weight"),
                vec![c.type_vocab_size, d],
            ),
            (format!("{p}embeddings.LayerNorm.weight"), vec![d]),
            (format!("{p}embeddings.LayerNorm.bias"), vec![d]),
        ];
        let lin = |out: &mut Vec<_>, name: String, o: usize, i: usize| {
            out.push((format!("{name}.weight"), vec![o, i]));
            out.push((format!("{name}.bias"), vec![o]));
        };
        for l in 0..self.layers.len() {
            let q = format!("{p}encoder.layer.{l}");
            for (n, o, i) in [
                ("attention.self.query", d, d),
                ("attention.self.key", d, d),
                ("attention.self.value", d, d),
                ("attention.output.dense", d, d),
                ("attention.output.LayerNorm", d, 0),
                ("intermediate.dense", f, d),
                ("output.dense", d, f),
                ("output.LayerNorm", d, 0),
            ] {
                if i == 0 {
                    out.push((format!("{q}.{n}.weight"), vec![o]));
                    out.push((format!("{q}.{n}.bias"), vec![o]));
                } else {
                    lin(&mut out, format!("{q}.{n}"), o, i);
                }
            }
        }
        if self.pooler.is_some() {
            lin(&mut out, format!("{p}pooler.dense"), d, d);
        }
        if let Some(m) = &self.mlm {
            lin(&mut out, "cls.predictions.transform.dense".into(), d, d);
            out.push(("cls.predictions.transform.LayerNorm.weight".into(), vec![d]));
            out.push(("cls.predictions.transform.LayerNorm.bias".into(), vec![d]));
            out.push(("cls.predictions.bias".into(), vec![v]));
            if m.decoder.is_some() {
                out.push((DECODER.into(), vec![v, d]));
            }
        }
        if self.nsp.is_some() {
            lin(&mut out, "cls.seq_relationship".into(), 2, d);
        }
        out
    }
}

fn push_linear<'a>(out: &mut Vec<NamedTensor<'a>>, prefix: String, l: &'a Linear) {
    out.push((format!("{prefix}.weight"), l.weight.t().into_dyn()));
    out.push((format!("{prefix}.bias"), l.bias.view().into_dyn()));
}

fn push_ln<'a>(out: &mut Vec<NamedTensor<'a>>, prefix: String, ln: &'a LayerNorm) {
    out.push((format!("{prefix}.weight"), ln.weight.view().into_dyn()));
    out.push((format!("{prefix}.bias"), ln.bias.view().into_dyn()));
}
