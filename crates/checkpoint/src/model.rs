//! The family-independent model: one enum over the typed families, so growth, training and the
//! command line dispatch in one place and a new family is one more variant.

use crate::bert::Bert;
use crate::config::Family;
use crate::error::{CheckpointError, Result};
use crate::gpt2::Gpt2;
use ndarray::ArrayViewD;
use serde_json::{Map, Value};

/// A weight's Hugging Face name and its values in Hugging Face orientation.
pub type NamedTensor<'a> = (String, ArrayViewD<'a, f32>);

/// A stored tensor that was deliberately not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Its name in the file.
    pub name: String,
    /// Why it was dropped.
    pub reason: String,
}

impl Dropped {
    pub(crate) fn new(name: &str, reason: &str) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Typed weights of any supported family.
// A handful of Models live at a time and their weights are on the heap anyway; boxing the
// variants would only change every `Model::Bert(..)` in the workspace.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// A BERT encoder with optional heads.
    Bert(Bert),
    /// A GPT-2 decoder with its (usually tied) LM head.
    Gpt2(Gpt2),
}

impl Model {
    /// The model's family.
    pub fn family(&self) -> Family {
        match self {
            Self::Bert(_) => Family::Bert,
            Self::Gpt2(_) => Family::Gpt2,
        }
    }

    /// Every weight under its Hugging Face name.
    pub fn named_tensors(&self) -> Vec<NamedTensor<'_>> {
        match self {
            Self::Bert(m) => m.named_tensors(),
            Self::Gpt2(m) => m.named_tensors(),
        }
    }

    /// config.json for these weights.
    pub fn config_json(&self) -> Map<String, Value> {
        match self {
            Self::Bert(m) => m.config.to_json(),
            Self::Gpt2(m) => m.config.to_json(),
        }
    }

    /// Checks that tensor shapes agree with the config.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Bert(m) => m.validate(),
            Self::Gpt2(m) => m.validate(),
        }
    }

    /// Number of parameters (tied weights counted once).
    pub fn num_parameters(&self) -> usize {
        self.named_tensors().iter().map(|(_, t)| t.len()).sum()
    }

    /// The BERT weights, if this is a BERT.
    pub fn as_bert(&self) -> Option<&Bert> {
        match self {
            Self::Bert(m) => Some(m),
            Self::Gpt2(_) => None,
        }
    }

    /// The BERT weights, mutable, if this is a BERT.
    pub fn as_bert_mut(&mut self) -> Option<&mut Bert> {
        match self {
            Self::Bert(m) => Some(m),
            Self::Gpt2(_) => None,
        }
    }

    /// The GPT-2 weights, mutable, if this is a GPT-2.
    pub fn as_gpt2_mut(&mut self) -> Option<&mut Gpt2> {
        match self {
            Self::Gpt2(m) => Some(m),
            Self::Bert(_) => None,
        }
    }

    /// The GPT-2 weights, if this is a GPT-2.
    pub fn as_gpt2(&self) -> Option<&Gpt2> {
        match self {
            Self::Gpt2(m) => Some(m),
            Self::Bert(_) => None,
        }
    }
}

/// One row of a family's tensor table: Hugging Face name, shape as stored, role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDef<R> {
    /// Name in the file.
    pub name: String,
    /// Shape as stored (`nn.Linear`: (out, in)).
    pub shape: Vec<usize>,
    /// What it is.
    pub role: R,
}

/// Compares the tensors a typed model yields with the shapes its config implies, name by name.
pub(crate) fn check_shapes(
    actual: &[NamedTensor<'_>],
    expected: &[(String, Vec<usize>)],
) -> Result<()> {
    if actual.len() != expected.len() {
        return Err(CheckpointError::InvalidModel(format!(
            "{} tensors, config implies {}",
            actual.len(),
            expected.len()
        )));
    }
    for ((name, t), (ename, shape)) in actual.iter().zip(expected) {
        debug_assert_eq!(name, ename, "named_tensors and expected_shapes disagree");
        if t.shape() != shape.as_slice() {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` has shape {:?}, config implies {shape:?}",
                t.shape()
            )));
        }
        if t.is_empty() {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` is empty: {shape:?}"
            )));
        }
    }
    Ok(())
}
