//! bert2bert-expand: the bert2BERT growth math (spec sections 2 to 7) on typed ndarray weights,
//! with a reference forward pass that proves function preservation.
//!
//! - [`grow`] grows a model in memory; [`GrowPlan`] (BERT, GPT-2) and [`LlamaPlan`] (the Llama
//!   family) compute every index map up front and produce the grown tensors one at a time in
//!   Hugging Face orientation. Both are a [`Growth`], the family-neutral view a streaming writer
//!   uses.
//! - [`verify`] runs source and grown model on the same seeded batches with the reference
//!   forward pass ([`forward`]) and reports the differences layer by layer.
//!
//! Orientation: like bert2bert-checkpoint, linear maps are held `(in, out)`, `y = x W + b`.
#![warn(missing_docs)]

pub mod baselines;
pub mod bench;
mod bert;
pub mod error;
pub mod expn;
pub mod forward;
mod gpt2;
pub mod llama;
pub mod maps;
pub mod options;
pub mod report;
#[cfg(feature = "linalg")]
pub mod spectrum;
pub mod verify;

pub use error::ExpandError;
pub use llama::{LlamaPlan, LlamaTarget};
pub use maps::{IndexMap, MapRole, layer_order};
pub use options::{AkiScope, Depth, GrowOptions, MapKind, Method, ParseOptionError, Target};
pub use report::{GrowReport, LayerReport, MapSummary, ModuleReport};
pub use verify::{Diff, EXACT_REL_TOL, VerifyOptions, VerifyReport, verify};

use bert2bert_checkpoint::{BertConfig, Gpt2Config, Model};
use ndarray::ArrayD;

/// A planned growth of any family as a streaming writer sees it: the grown tensors' names and
/// shapes, each tensor on demand, the grown config and what the growth does.
///
/// The writer (`cargo xtask grow`) needs nothing else, so a new family's plan joins it by
/// implementing this.
pub trait Growth {
    /// Every grown tensor as (Hugging Face name, Hugging Face shape), in write order.
    fn tensors(&self) -> Vec<(String, Vec<usize>)>;
    /// Values of the largest grown tensor (to size a reusable buffer).
    fn max_tensor_len(&self) -> usize;
    /// Writes grown tensor `i` into `out` (row-major, Hugging Face orientation); `out` holds
    /// exactly its values.
    fn tensor_into(&self, i: usize, out: &mut [f32]) -> Result<(), ExpandError>;
    /// The grown model's `config.json` object.
    fn config_json(&self) -> serde_json::Map<String, serde_json::Value>;
    /// What the growth does and whether it is expected to be exact.
    fn report(&self) -> GrowReport;
}

impl Growth for GrowPlan<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        GrowPlan::tensors(self)
    }
    fn max_tensor_len(&self) -> usize {
        GrowPlan::max_tensor_len(self)
    }
    fn tensor_into(&self, i: usize, out: &mut [f32]) -> Result<(), ExpandError> {
        // The in-memory families read nothing while growing: nothing can fail.
        GrowPlan::tensor_into(self, i, out);
        Ok(())
    }
    fn config_json(&self) -> serde_json::Map<String, serde_json::Value> {
        GrowPlan::config_json(self)
    }
    fn report(&self) -> GrowReport {
        GrowPlan::report(self)
    }
}

impl Growth for LlamaPlan<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.table()
            .iter()
            .map(|d| (d.name.clone(), d.shape.clone()))
            .collect()
    }
    fn max_tensor_len(&self) -> usize {
        LlamaPlan::max_tensor_len(self)
    }
    fn tensor_into(&self, i: usize, out: &mut [f32]) -> Result<(), ExpandError> {
        LlamaPlan::tensor_into(self, i, out)
    }
    fn config_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.config().to_json()
    }
    fn report(&self) -> GrowReport {
        LlamaPlan::report(self)
    }
}

/// A planned growth: every index map computed, the grown tensors produced on demand.
///
/// Tensors are listed and produced in the order of the grown model's `Model::named_tensors()`,
/// under the same names and in Hugging Face orientation (`nn.Linear` as (out, in), GPT-2's
/// `Conv1D` as (in, out), as held). A stacked layer is produced again from the same source
/// layer and maps, never held twice.
#[derive(Debug)]
pub struct GrowPlan<'a> {
    inner: Inner<'a>,
}

/// The family's plan.
#[derive(Debug)]
enum Inner<'a> {
    Bert(bert::BertPlan<'a>),
    Gpt2(gpt2::Gpt2Plan<'a>),
}

/// `$e` with `$p` bound to whichever family's plan `$self` holds.
macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match &$self.inner {
            Inner::Bert($p) => $e,
            Inner::Gpt2($p) => $e,
        }
    };
}

/// Refuses the options that only pre-LN models can honour (spec sections 5 and 7).
fn check_post_ln(opts: &GrowOptions) -> Result<(), ExpandError> {
    if opts.map == MapKind::Exact {
        return Err(ExpandError::Unsupported {
            option: "--map exact",
            family: "BERT",
            reason: "BERT is post-LN: each LayerNorm normalizes the residual sum itself, and no \
                     linear growth of the stream keeps its mean and variance for generic gamma at \
                     a non-integer ratio (spec section 5); --map balanced is exact at integer ratios",
        });
    }
    if opts.depth == Depth::Identity {
        return Err(ExpandError::Unsupported {
            option: "--depth identity",
            family: "BERT",
            reason: "BERT is post-LN: a block with zero output projections still applies its \
                     LayerNorms to the stream, so it is not an identity (spec section 7); use \
                     --depth stack or interleave",
        });
    }
    Ok(())
}

impl<'a> GrowPlan<'a> {
    /// Plans growing `model` to `target`; refuses targets smaller than the source, head size
    /// changes and inconsistent models.
    pub fn new(model: &'a Model, target: &Target, opts: &GrowOptions) -> Result<Self, ExpandError> {
        let inner = match model {
            Model::Bert(bert) => {
                check_post_ln(opts)?;
                Inner::Bert(bert::BertPlan::new(bert, target, opts)?)
            }
            Model::Gpt2(m) => Inner::Gpt2(gpt2::Gpt2Plan::new(m, target, opts)?),
        };
        Ok(Self { inner })
    }

    /// The grown model's config, if it is a BERT.
    pub fn bert_config(&self) -> Option<&BertConfig> {
        match &self.inner {
            Inner::Bert(p) => Some(p.config()),
            Inner::Gpt2(_) => None,
        }
    }

    /// The grown model's config, if it is a GPT-2.
    pub fn gpt2_config(&self) -> Option<&Gpt2Config> {
        match &self.inner {
            Inner::Gpt2(p) => Some(p.config()),
            Inner::Bert(_) => None,
        }
    }

    /// The grown model's `config.json` object.
    pub fn config_json(&self) -> serde_json::Map<String, serde_json::Value> {
        each!(self, p => p.config().to_json())
    }

    /// Number of hidden units that hold the mean of the source's units (`--map exact`: r in
    /// D_t = k D_s + r, the last r units); 0 otherwise.
    pub fn mean_units(&self) -> usize {
        match &self.inner {
            Inner::Gpt2(p) => p.mean_units(),
            Inner::Bert(_) => 0,
        }
    }

    /// Number of output tensors.
    pub fn len(&self) -> usize {
        each!(self, p => p.len())
    }

    /// Whether there is no output tensor (never, for a valid model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hugging Face name of output tensor `i`.
    pub fn name(&self, i: usize) -> &str {
        each!(self, p => p.name(i))
    }

    /// Hugging Face shape of output tensor `i`.
    pub fn shape(&self, i: usize) -> &[usize] {
        each!(self, p => p.shape(i))
    }

    /// Every output tensor as (name, shape), in write order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        (0..self.len())
            .map(|i| (self.name(i).to_owned(), self.shape(i).to_vec()))
            .collect()
    }

    /// The index of output tensor `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.name(i) == name)
    }

    /// Number of f32 values of the largest output tensor (to size one reusable buffer).
    pub fn max_tensor_len(&self) -> usize {
        (0..self.len())
            .map(|i| self.shape(i).iter().product::<usize>())
            .max()
            .unwrap_or(0)
    }

    /// Writes output tensor `i` into `out` (row-major, Hugging Face orientation).
    ///
    /// # Panics
    /// If `out.len()` is not the tensor's number of values.
    pub fn tensor_into(&self, i: usize, out: &mut [f32]) {
        each!(self, p => p.tensor_into(i, out))
    }

    /// Output tensor `i` in a new array.
    pub fn tensor(&self, i: usize) -> ArrayD<f32> {
        each!(self, p => p.tensor(i))
    }

    /// Output tensor `name` in a new array.
    pub fn tensor_by_name(&self, name: &str) -> Result<ArrayD<f32>, ExpandError> {
        let i = self
            .index_of(name)
            .ok_or_else(|| ExpandError::UnknownTensor(name.to_owned()))?;
        Ok(self.tensor(i))
    }

    /// The output tensors one at a time, as (name, values).
    pub fn iter(&self) -> impl Iterator<Item = (&str, ArrayD<f32>)> + '_ {
        (0..self.len()).map(move |i| (self.name(i), self.tensor(i)))
    }

    /// The hidden map g. With `--map exact` its last [`GrowPlan::mean_units`] units are
    /// mean-units; their entries name the source unit whose reader rows they carry.
    pub fn hidden_map(&self) -> &IndexMap {
        each!(self, p => p.hidden_map())
    }

    /// The head map h_l of source layer `l` (heads).
    pub fn head_map(&self, l: usize) -> &IndexMap {
        &each!(self, p => &p.maps).heads[l]
    }

    /// The head map of source layer `l` expanded to units (u_l).
    pub fn head_unit_map(&self, l: usize) -> &IndexMap {
        &each!(self, p => &p.maps).head_units[l]
    }

    /// The FFN map f_l of source layer `l`.
    pub fn ffn_map(&self, l: usize) -> &IndexMap {
        &each!(self, p => &p.maps).ffn[l]
    }

    /// Target layer -> source layer.
    pub fn layer_order(&self) -> &[usize] {
        &each!(self, p => &p.maps).order
    }

    /// What this growth does and whether it is expected to be exact.
    pub fn report(&self) -> GrowReport {
        each!(self, p => p.report())
    }

    /// The whole grown model in memory (linear weights in the typed (in, out) orientation,
    /// standard layout).
    pub fn build(&self) -> Model {
        match &self.inner {
            Inner::Bert(p) => Model::Bert(p.build()),
            Inner::Gpt2(p) => Model::Gpt2(p.build()),
        }
    }
}

/// Grows `model` to `target` in memory.
pub fn grow(
    model: &Model,
    target: &Target,
    opts: &GrowOptions,
) -> Result<(Model, GrowReport), ExpandError> {
    let plan = GrowPlan::new(model, target, opts)?;
    let report = plan.report();
    tracing::info!(from = %report.source, to = %report.target, method = %opts.method, "growing");
    Ok((plan.build(), report))
}
