//! Building blocks shared by every family: a linear map and a LayerNorm, in one orientation.

use ndarray::{Array1, Array2};

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
