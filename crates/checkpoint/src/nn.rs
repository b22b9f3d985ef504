//! Building blocks shared by every family: a linear map and a LayerNorm, in one orientation.

use crate::bert::Leaf;
use ndarray::{Array1, Array2, ArrayViewD, ArrayViewMutD};

/// A linear map y = x W + b with `weight` of shape (in, out): rows are input units, columns output
/// units (the spec's orientation). Hugging Face `nn.Linear` stores the transpose; the loaders flip it.
///
/// Any memory layout is valid. Loaded weights keep the file's (out, in) row-major bytes, that is,
/// an (in, out) array in column-major layout: loading copies nothing twice, and `weight.t()` is
/// the Hugging Face matrix with a contiguous view (what writing and growing read). Code that needs
/// a slice must not assume the standard layout (use `as_standard_layout` or iterate).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// (in, out).
    pub weight: Array2<f32>,
    /// (out,).
    pub bias: Array1<f32>,
}

impl Linear {
    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.nrows()
    }
    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.ncols()
    }
}

/// LayerNorm scale and shift; epsilon lives in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// gamma.
    pub weight: Array1<f32>,
    /// beta.
    pub bias: Array1<f32>,
}

impl LayerNorm {
    /// The weight or the bias (as stored: LayerNorms have no orientation).
    pub(crate) fn leaf(&self, leaf: Leaf) -> ArrayViewD<'_, f32> {
        match leaf {
            Leaf::Weight => self.weight.view().into_dyn(),
            Leaf::Bias => self.bias.view().into_dyn(),
        }
    }

    /// The weight or the bias, writable.
    pub(crate) fn leaf_mut(&mut self, leaf: Leaf) -> ArrayViewMutD<'_, f32> {
        match leaf {
            Leaf::Weight => self.weight.view_mut().into_dyn(),
            Leaf::Bias => self.bias.view_mut().into_dyn(),
        }
    }
}
