//! Typed GPT-2 weights (`GPT2LMHeadModel`, `GPT2Model`) and their Hugging Face names.
//!
//! GPT-2 stores its projections as `Conv1D`, already (in, out): they load as they are, with no
//! transpose. The attention's Q, K and V are one fused `c_attn` of shape (D, 3D); it is held fused,
//! as stored, so that [`Gpt2::named_tensors`] can hand out views, and [`Gpt2Block::split_qkv`] /
//! [`Gpt2Block::set_qkv`] give growth code the three (D, D) maps and put them back.

use crate::bert::Leaf;
use crate::config::Gpt2Config;
use crate::error::{CheckpointError, Result};
use crate::loader::Taker;
use crate::model::TensorDef as Def;
use crate::model::{Dropped, NamedTensor, check_shapes};
use crate::nn::{LayerNorm, Linear};
use crate::safetensors::TensorStore;
use ndarray::{Array2, ArrayViewD, ArrayViewMutD, Axis, concatenate, s};

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

/// The modules of one block, in the order transformers' state dict lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// `ln_1` (D).
    Ln1,
    /// `attn.c_attn`: Conv1D (D, 3D).
    CAttn,
    /// `attn.c_proj`: Conv1D (D, D).
    AttnProj,
    /// `ln_2` (D).
    Ln2,
    /// `mlp.c_fc`: Conv1D (D, F).
    Fc,
    /// `mlp.c_proj`: Conv1D (F, D).
    MlpProj,
}

impl Part {
    /// Every part, in write order.
    pub const ALL: [Self; 6] = [
        Self::Ln1,
        Self::CAttn,
        Self::AttnProj,
        Self::Ln2,
        Self::Fc,
        Self::MlpProj,
    ];

    /// The module's name under `h.N.`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ln1 => "ln_1",
            Self::CAttn => "attn.c_attn",
            Self::AttnProj => "attn.c_proj",
            Self::Ln2 => "ln_2",
            Self::Fc => "mlp.c_fc",
            Self::MlpProj => "mlp.c_proj",
        }
    }
}

/// What a stored GPT-2 tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `wte.weight` (V, D).
    Wte,
    /// `wpe.weight` (P, D).
    Wpe,
    /// A tensor of block `.0`.
    Block(usize, Part, Leaf),
    /// `ln_f` (D).
    LnF(Leaf),
    /// `lm_head.weight` (V, D), only when untied.
    LmHead,
}

/// One row of the GPT-2 tensor table.
pub type TensorDef = Def<Role>;

/// Which optional parts a GPT-2 checkpoint has, and how its names are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpt2Layout {
    /// Names carry the `transformer.` prefix.
    pub prefixed: bool,
    /// An untied `lm_head`.
    pub lm_head: bool,
}

impl Gpt2Layout {
    /// `GPT2LMHeadModel`, the model the trainers train: `lm_head` stored when untied.
    pub fn lm_head_model(untied_head: bool) -> Self {
        Self {
            prefixed: true,
            lm_head: untied_head,
        }
    }
}

/// Every tensor a GPT-2 checkpoint of config `c` and layout `layout` stores, in write order.
pub fn tensor_table(c: &Gpt2Config, layout: Gpt2Layout) -> Vec<TensorDef> {
    table_with_layers(c, layout, c.n_layer)
}

fn table_with_layers(c: &Gpt2Config, layout: Gpt2Layout, layers: usize) -> Vec<TensorDef> {
    let (d, f, v) = (c.n_embd, c.inner_dim(), c.vocab_size);
    let p = if layout.prefixed { PREFIX } else { "" };
    let mut out = Vec::new();
    let mut row = |name: String, shape: Vec<usize>, role: Role| {
        out.push(TensorDef { name, shape, role });
    };
    row(format!("{p}wte.weight"), vec![v, d], Role::Wte);
    row(format!("{p}wpe.weight"), vec![c.n_positions, d], Role::Wpe);
    for l in 0..layers {
        for part in Part::ALL {
            // Conv1D weights are stored (in, out); LayerNorm weights are vectors.
            let (weight, o) = match part {
                Part::Ln1 | Part::Ln2 => (vec![d], d),
                Part::CAttn => (vec![d, 3 * d], 3 * d),
                Part::AttnProj => (vec![d, d], d),
                Part::Fc => (vec![d, f], f),
                Part::MlpProj => (vec![f, d], d),
            };
            let q = format!("{p}h.{l}.{}", part.name());
            row(
                format!("{q}.weight"),
                weight,
                Role::Block(l, part, Leaf::Weight),
            );
            row(
                format!("{q}.bias"),
                vec![o],
                Role::Block(l, part, Leaf::Bias),
            );
        }
    }
    row(format!("{p}ln_f.weight"), vec![d], Role::LnF(Leaf::Weight));
    row(format!("{p}ln_f.bias"), vec![d], Role::LnF(Leaf::Bias));
    if layout.lm_head {
        row(LM_HEAD.into(), vec![v, d], Role::LmHead);
    }
    out
}

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
    pub fn layout(&self) -> Gpt2Layout {
        Gpt2Layout {
            prefixed: self.prefixed,
            lm_head: self.lm_head.is_some(),
        }
    }

    /// This model's tensor table: one row per tensor of its blocks and optional head.
    pub fn table(&self) -> Vec<TensorDef> {
        // Sized by the blocks held (see `Bert::table`).
        table_with_layers(&self.config, self.layout(), self.blocks.len())
    }

    /// The tensor of `role` in Hugging Face orientation; `None` if this model lacks that part.
    pub fn tensor(&self, role: Role) -> Option<ArrayViewD<'_, f32>> {
        Some(match role {
            Role::Wte => self.wte.view().into_dyn(),
            Role::Wpe => self.wpe.view().into_dyn(),
            Role::Block(l, part, leaf) => {
                let b = self.blocks.get(l)?;
                match part {
                    Part::Ln1 => b.ln_1.leaf(leaf),
                    Part::CAttn => conv_view(&b.c_attn, leaf),
                    Part::AttnProj => conv_view(&b.attn_proj, leaf),
                    Part::Ln2 => b.ln_2.leaf(leaf),
                    Part::Fc => conv_view(&b.fc, leaf),
                    Part::MlpProj => conv_view(&b.mlp_proj, leaf),
                }
            }
            Role::LnF(leaf) => self.ln_f.leaf(leaf),
            Role::LmHead => self.lm_head.as_ref()?.t().into_dyn(),
        })
    }

    /// The tensor of `role` in Hugging Face orientation, writable (a transposed view for an
    /// untied `lm_head`); `None` if this model lacks that part.
    pub fn tensor_mut(&mut self, role: Role) -> Option<ArrayViewMutD<'_, f32>> {
        Some(match role {
            Role::Wte => self.wte.view_mut().into_dyn(),
            Role::Wpe => self.wpe.view_mut().into_dyn(),
            Role::Block(l, part, leaf) => {
                let b = self.blocks.get_mut(l)?;
                match part {
                    Part::Ln1 => b.ln_1.leaf_mut(leaf),
                    Part::CAttn => pair_mut(&mut b.c_attn.weight, &mut b.c_attn.bias, leaf),
                    Part::AttnProj => {
                        pair_mut(&mut b.attn_proj.weight, &mut b.attn_proj.bias, leaf)
                    }
                    Part::Ln2 => b.ln_2.leaf_mut(leaf),
                    Part::Fc => pair_mut(&mut b.fc.weight, &mut b.fc.bias, leaf),
                    Part::MlpProj => pair_mut(&mut b.mlp_proj.weight, &mut b.mlp_proj.bias, leaf),
                }
            }
            Role::LnF(leaf) => self.ln_f.leaf_mut(leaf),
            Role::LmHead => self.lm_head.as_mut()?.view_mut().reversed_axes().into_dyn(),
        })
    }

    /// Every tensor name [`Gpt2::named_tensors`] yields, with the shape the config implies.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.table()
            .into_iter()
            .map(|def| (def.name, def.shape))
            .collect()
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

/// A Conv1D's or LayerNorm's weight or bias, writable, as held (= as stored).
fn pair_mut<'a, W: ndarray::Dimension, B: ndarray::Dimension>(
    weight: &'a mut ndarray::Array<f32, W>,
    bias: &'a mut ndarray::Array<f32, B>,
    leaf: Leaf,
) -> ArrayViewMutD<'a, f32> {
    match leaf {
        Leaf::Weight => weight.view_mut().into_dyn(),
        Leaf::Bias => bias.view_mut().into_dyn(),
    }
}

fn conv_view(l: &Linear, leaf: Leaf) -> ArrayViewD<'_, f32> {
    match leaf {
        Leaf::Weight => l.weight.view().into_dyn(),
        Leaf::Bias => l.bias.view().into_dyn(),
    }
}
