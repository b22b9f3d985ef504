//! bert2BERT for BERT (spec sections 4, 6 and 7): a plan that holds every index map and can
//! produce any grown tensor on demand, and the in-memory growth built on it.

use crate::error::ExpandError;
use crate::expn::{MatrixSpec, Orient, VectorSpec, fill_matrix, fill_vector};
use crate::maps::{IndexMap, LayerMapSet, MapRole};
use crate::options::{AkiScope, GrowOptions, Method, Target};
use crate::report::{GrowReport, LayerMaps, MapSummary, ModuleReport};
use bert2bert_checkpoint::bert::{Leaf, Part, Role, TensorDef, tensor_table};
use bert2bert_checkpoint::{
    Bert, BertConfig, BertEmbeddings, BertLayer, LayerNorm, Linear, MlmHead,
};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

/// How to produce one tensor.
enum Spec<'s> {
    /// A matrix; `linear` ones are written (out, in) in Hugging Face orientation.
    Matrix {
        spec: MatrixSpec<'s>,
        linear: bool,
    },
    Vector(VectorSpec<'s>),
}

/// Every index map and the layer order of one BERT growth, with the tensor list of the result.
#[derive(Debug)]
pub(crate) struct BertPlan<'a> {
    src: &'a Bert,
    target: Target,
    opts: GrowOptions,
    config: BertConfig,
    hidden: IndexMap,
    pub(crate) maps: LayerMapSet,
    entries: Vec<TensorDef>,
}

impl<'a> BertPlan<'a> {
    pub(crate) fn new(
        src: &'a Bert,
        target: &Target,
        opts: &GrowOptions,
    ) -> Result<Self, ExpandError> {
        src.validate()?;
        let c = &src.config;
        target.check_growth_from(&Target::of(c))?;
        let (seed, kind) = (opts.seed, opts.map);
        let hidden = IndexMap::new(kind, c.hidden_size, target.hidden, seed, MapRole::Hidden);
        let ls = c.num_hidden_layers;
        let maps = LayerMapSet::new(
            opts,
            target,
            ls,
            c.num_attention_heads,
            c.head_dim(),
            c.intermediate_size,
        );
        let config = c.with_shape(
            target.layers,
            target.hidden,
            target.heads,
            target.intermediate,
        );
        let mut plan = Self {
            src,
            target: *target,
            opts: *opts,
            config,
            hidden,
            maps,
            entries: Vec::new(),
        };
        plan.entries = plan.list_entries();
        Ok(plan)
    }

    /// The grown tensors in the order of `Bert::named_tensors`, with Hugging Face shapes: the
    /// rows of the grown config's tensor table, with the source's optional parts and names.
    fn list_entries(&self) -> Vec<TensorDef> {
        tensor_table(&self.config, self.src.layout())
    }

    /// The source layer whose weights fill the new units of source layer `l`, if AKI applies.
    fn upper_of(&self, l: usize) -> Option<usize> {
        (self.opts.method == Method::Aki && l + 1 < self.src.layers.len()).then_some(l + 1)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_spec<'s>(
        &'s self,
        lin: impl Fn(&'s BertLayer) -> &'s Linear,
        l: usize,
        upper: Option<usize>,
        rows: &'s IndexMap,
        cols: &'s IndexMap,
        prm: Leaf,
    ) -> Spec<'s> {
        let layers = &self.src.layers;
        let lower = lin(&layers[l]);
        let upper = upper.map(|u| lin(&layers[u]));
        let split = cols.source();
        match prm {
            Leaf::Weight => Spec::Matrix {
                spec: MatrixSpec {
                    lower: lower.weight.view(),
                    upper: upper.map(|u| u.weight.view()),
                    rows: Some(rows),
                    cols: Some(cols),
                    split,
                },
                linear: true,
            },
            Leaf::Bias => Spec::Vector(VectorSpec {
                lower: lower.bias.view(),
                upper: upper.map(|u| u.bias.view()),
                map: Some(cols),
                split,
                divide: false,
            }),
        }
    }

    fn ln_spec<'s>(
        &'s self,
        ln: &'s LayerNorm,
        upper: Option<&'s LayerNorm>,
        prm: Leaf,
        divide: bool,
    ) -> Spec<'s> {
        let pick = |n: &'s LayerNorm| match prm {
            Leaf::Weight => n.weight.view(),
            Leaf::Bias => n.bias.view(),
        };
        Spec::Vector(VectorSpec {
            lower: pick(ln),
            upper: upper.map(pick),
            map: Some(&self.hidden),
            split: self.hidden.source(),
            divide,
        })
    }

    fn plain_linear<'s>(
        &'s self,
        lin: &'s Linear,
        cols: Option<&'s IndexMap>,
        prm: Leaf,
    ) -> Spec<'s> {
        match prm {
            Leaf::Weight => Spec::Matrix {
                spec: MatrixSpec {
                    lower: lin.weight.view(),
                    upper: None,
                    rows: Some(&self.hidden),
                    cols,
                    split: 0,
                },
                linear: true,
            },
            Leaf::Bias => Spec::Vector(VectorSpec {
                lower: lin.bias.view(),
                upper: None,
                map: cols,
                split: 0,
                divide: false,
            }),
        }
    }

    fn embedding<'s>(&'s self, m: &'s Array2<f32>) -> Spec<'s> {
        Spec::Matrix {
            spec: MatrixSpec {
                lower: m.view(),
                upper: None,
                rows: None,
                cols: Some(&self.hidden),
                split: 0,
            },
            linear: false,
        }
    }

    fn spec(&self, role: Role) -> Spec<'_> {
        let s = self.src;
        let e = &s.embeddings;
        let all = self.opts.aki_scope == AkiScope::All;
        match role {
            Role::WordEmbeddings => self.embedding(&e.word),
            Role::PositionEmbeddings => self.embedding(&e.position),
            Role::TokenTypeEmbeddings => self.embedding(&e.token_type),
            Role::EmbeddingsLayerNorm(prm) => self.ln_spec(&e.layer_norm, None, prm, false),
            Role::Layer(t, part, prm) => {
                let l = self.maps.order[t];
                let up = self.upper_of(l);
                let up_all = up.filter(|_| all);
                let (g, u, f) = (&self.hidden, &self.maps.head_units[l], &self.maps.ffn[l]);
                let layers = &s.layers;
                match part {
                    Part::Query => self.linear_spec(|x| &x.query, l, up, g, u, prm),
                    Part::Key => self.linear_spec(|x| &x.key, l, up, g, u, prm),
                    Part::Value => self.linear_spec(|x| &x.value, l, up, g, u, prm),
                    Part::AttentionOutput => {
                        self.linear_spec(|x| &x.attention_output, l, up_all, u, g, prm)
                    }
                    Part::Intermediate => self.linear_spec(|x| &x.intermediate, l, up, g, f, prm),
                    Part::Output => self.linear_spec(|x| &x.output, l, up_all, f, g, prm),
                    Part::AttentionLayerNorm => self.ln_spec(
                        &layers[l].attention_layer_norm,
                        up_all.map(|u| &layers[u].attention_layer_norm),
                        prm,
                        false,
                    ),
                    Part::OutputLayerNorm => self.ln_spec(
                        &layers[l].output_layer_norm,
                        up_all.map(|u| &layers[u].output_layer_norm),
                        prm,
                        false,
                    ),
                }
            }
            Role::Pooler(prm) => {
                let pooler = s.pooler.as_ref().expect("listed only when present");
                self.plain_linear(pooler, Some(&self.hidden), prm)
            }
            Role::Transform(prm) => {
                let m = s.mlm.as_ref().expect("listed only when present");
                self.plain_linear(&m.transform, Some(&self.hidden), prm)
            }
            Role::TransformLayerNorm(prm) => {
                let m = s.mlm.as_ref().expect("listed only when present");
                // Tied decoder: the grown word embeddings are copies, not divided, so the
                // transform LayerNorm (which feeds only the decoder) divides instead.
                self.ln_spec(&m.layer_norm, None, prm, m.decoder.is_none())
            }
            Role::MlmBias => {
                let m = s.mlm.as_ref().expect("listed only when present");
                Spec::Vector(VectorSpec {
                    lower: m.bias.view(),
                    upper: None,
                    map: None,
                    split: 0,
                    divide: false,
                })
            }
            Role::Decoder => {
                let m = s.mlm.as_ref().expect("listed only when present");
                let dec = m.decoder.as_ref().expect("listed only when untied");
                Spec::Matrix {
                    spec: MatrixSpec {
                        lower: dec.view(),
                        upper: None,
                        rows: Some(&self.hidden),
                        cols: None,
                        split: 0,
                    },
                    linear: true,
                }
            }
            Role::Nsp(prm) => {
                let nsp = s.nsp.as_ref().expect("listed only when present");
                self.plain_linear(nsp, None, prm)
            }
        }
    }

    fn fill(&self, what: Role, orient_linear: Orient, out: &mut [f32]) {
        match self.spec(what) {
            Spec::Matrix { spec, linear } => {
                let orient = if linear { orient_linear } else { Orient::Typed };
                fill_matrix(&spec, orient, out)
            }
            Spec::Vector(spec) => fill_vector(&spec, out),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.entries[i].name
    }

    pub(crate) fn shape(&self, i: usize) -> &[usize] {
        &self.entries[i].shape
    }

    pub(crate) fn tensor_into(&self, i: usize, out: &mut [f32]) {
        self.fill(self.entries[i].role, Orient::Hf, out)
    }

    pub(crate) fn tensor(&self, i: usize) -> ArrayD<f32> {
        let shape = self.entries[i].shape.clone();
        let mut v = vec![0.0f32; shape.iter().product()];
        self.tensor_into(i, &mut v);
        ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape matches size")
    }

    pub(crate) fn config(&self) -> &BertConfig {
        &self.config
    }

    pub(crate) fn hidden_map(&self) -> &IndexMap {
        &self.hidden
    }

    fn vector(&self, what: Role, n: usize) -> Array1<f32> {
        let mut v = vec![0.0f32; n];
        self.fill(what, Orient::Typed, &mut v);
        Array1::from_vec(v)
    }

    /// A matrix in the typed orientation ((in, out) for linear maps, (rows, D) for embeddings).
    fn matrix(&self, what: Role) -> Array2<f32> {
        let Spec::Matrix { spec, .. } = self.spec(what) else {
            unreachable!("a matrix entry")
        };
        let dims = spec.grown_dims();
        let mut v = vec![0.0f32; dims.0 * dims.1];
        fill_matrix(&spec, Orient::Typed, &mut v);
        Array2::from_shape_vec(dims, v).expect("shape matches size")
    }

    fn linear(&self, w: Role, b: Role, n_out: usize) -> Linear {
        Linear {
            weight: self.matrix(w),
            bias: self.vector(b, n_out),
        }
    }

    fn layer_norm(&self, w: Role, b: Role) -> LayerNorm {
        let d = self.target.hidden;
        LayerNorm {
            weight: self.vector(w, d),
            bias: self.vector(b, d),
        }
    }

    /// Grows source layer `l` (the first target layer made from it stands for all its copies).
    fn grown_layer(&self, t: usize) -> BertLayer {
        let (d, f) = (self.target.hidden, self.target.intermediate);
        let lin = |part, n| {
            self.linear(
                Role::Layer(t, part, Leaf::Weight),
                Role::Layer(t, part, Leaf::Bias),
                n,
            )
        };
        let ln = |part| {
            self.layer_norm(
                Role::Layer(t, part, Leaf::Weight),
                Role::Layer(t, part, Leaf::Bias),
            )
        };
        BertLayer {
            query: lin(Part::Query, d),
            key: lin(Part::Key, d),
            value: lin(Part::Value, d),
            attention_output: lin(Part::AttentionOutput, d),
            attention_layer_norm: ln(Part::AttentionLayerNorm),
            intermediate: lin(Part::Intermediate, f),
            output: lin(Part::Output, d),
            output_layer_norm: ln(Part::OutputLayerNorm),
        }
    }

    /// The whole grown model in memory. Each source layer is grown once; stacked copies are
    /// clones of it.
    pub(crate) fn build(&self) -> Bert {
        let s = self.src;
        let (d, v) = (self.target.hidden, self.config.vocab_size);
        let embeddings = BertEmbeddings {
            word: self.matrix(Role::WordEmbeddings),
            position: self.matrix(Role::PositionEmbeddings),
            token_type: self.matrix(Role::TokenTypeEmbeddings),
            layer_norm: self.layer_norm(
                Role::EmbeddingsLayerNorm(Leaf::Weight),
                Role::EmbeddingsLayerNorm(Leaf::Bias),
            ),
        };
        let ls = s.layers.len();
        let mut remaining = vec![0usize; ls];
        for &l in &self.maps.order {
            remaining[l] += 1;
        }
        let mut grown: Vec<Option<BertLayer>> = vec![None; ls];
        let mut layers = Vec::with_capacity(self.maps.order.len());
        for (t, &l) in self.maps.order.iter().enumerate() {
            if grown[l].is_none() {
                grown[l] = Some(self.grown_layer(t));
            }
            remaining[l] -= 1;
            layers.push(if remaining[l] == 0 {
                grown[l].take().expect("grown")
            } else {
                grown[l].clone().expect("grown")
            });
        }
        let pooler = s
            .pooler
            .as_ref()
            .map(|_| self.linear(Role::Pooler(Leaf::Weight), Role::Pooler(Leaf::Bias), d));
        let mlm = s.mlm.as_ref().map(|m| MlmHead {
            transform: self.linear(
                Role::Transform(Leaf::Weight),
                Role::Transform(Leaf::Bias),
                d,
            ),
            layer_norm: self.layer_norm(
                Role::TransformLayerNorm(Leaf::Weight),
                Role::TransformLayerNorm(Leaf::Bias),
            ),
            bias: self.vector(Role::MlmBias, v),
            decoder: m.decoder.as_ref().map(|_| self.matrix(Role::Decoder)),
        });
        let nsp = s
            .nsp
            .as_ref()
            .map(|_| self.linear(Role::Nsp(Leaf::Weight), Role::Nsp(Leaf::Bias), 2));
        Bert {
            config: self.config.clone(),
            embeddings,
            layers,
            pooler,
            mlm,
            nsp,
            prefixed: s.prefixed,
        }
    }

    pub(crate) fn report(&self) -> GrowReport {
        let s = self.src;
        let c = &s.config;
        let hidden_uniform = self.hidden.is_uniform();
        let all = self.opts.aki_scope == AkiScope::All;
        let mut reasons = Vec::new();
        if !hidden_uniform {
            reasons.push(format!(
                "hidden copy counts differ ({}): every LayerNorm's mean and variance shift",
                MapSummary::of(&self.hidden)
            ));
        }
        let (layers, aki_reason) = LayerMaps {
            maps: &self.maps,
            hidden: &self.hidden,
            aki_all: all,
            hidden_ok: hidden_uniform,
            identity: &[],
        }
        .reports(|l| self.upper_of(l));
        reasons.extend(aki_reason);
        if self.target.layers > c.num_hidden_layers {
            reasons.push(format!(
                "{} layers added by {}: added layers are not function-preserving",
                self.target.layers - c.num_hidden_layers,
                self.opts.depth
            ));
        }
        let mut modules = vec![ModuleReport {
            module: "embeddings (word, position, token type, LayerNorm)".into(),
            maps: "hidden dim: copy by g".into(),
            exact: hidden_uniform,
        }];
        if s.pooler.is_some() {
            modules.push(ModuleReport {
                module: "pooler".into(),
                maps: "in: divide by g; out: copy by g".into(),
                exact: true,
            });
        }
        if let Some(m) = &s.mlm {
            modules.push(ModuleReport {
                module: "MLM head".into(),
                maps: if m.decoder.is_none() {
                    "transform in: divide by g, out: copy by g; LayerNorm: copy by g and divide by C (tied decoder fix); bias unchanged".into()
                } else {
                    "transform in: divide by g, out: copy by g; untied decoder in: divide by g; bias unchanged".into()
                },
                exact: hidden_uniform,
            });
        }
        if s.nsp.is_some() {
            modules.push(ModuleReport {
                module: "NSP classifier".into(),
                maps: "in: divide by g".into(),
                exact: true,
            });
        }
        let src_params: usize = s.named_tensors().iter().map(|(_, t)| t.len()).sum();
        let grown_params: usize = self
            .entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum();
        GrowReport {
            family: "bert",
            source: Target::of(c),
            target: self.target,
            head_dim: c.head_dim(),
            options: self.opts,
            hidden_map: MapSummary::of(&self.hidden),
            layer_order: self.maps.order.clone(),
            layers,
            modules,
            source_parameters: src_params,
            grown_parameters: grown_params,
            expected_exact: reasons.is_empty(),
            inexact_reasons: reasons,
        }
    }
}
