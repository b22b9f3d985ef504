//! Symmetry diagnostics (feature `linalg`): singular spectra and ranks of grown matrices.
//!
//! FPI copies units, so a grown matrix has duplicated columns (and rows proportional to each
//! other): its numerical rank stays at most the source's. AKI fills new units from the layer
//! above, which raises the rank; how much shows how far it breaks FPI's symmetry.

use crate::error::ExpandError;
use bert2bert_checkpoint::Model;
use ndarray::ArrayView2;
use ndarray_linalg::SVD;
use serde::Serialize;

/// The singular spectrum of one matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spectrum {
    /// Hugging Face name of the weight.
    pub name: String,
    /// (rows, cols) as stored (the spectrum does not depend on the orientation).
    pub shape: (usize, usize),
    /// Singular values, largest first.
    pub singular_values: Vec<f64>,
    /// Numerical rank: singular values above `max(in, out) * f32::EPSILON * s_max`, the noise
    /// floor of an f32 matrix.
    pub rank: usize,
    /// Effective rank exp(H(p)), p_i = s_i / sum s (Roy and Vetterli, 2007): a continuous rank
    /// that counts how evenly the spectrum spreads.
    pub effective_rank: f64,
}

/// The spectrum of `w` (computed in f64).
pub fn spectrum(name: &str, w: ArrayView2<'_, f32>) -> Result<Spectrum, ExpandError> {
    let a = w.mapv(f64::from);
    let (_, s, _) = a
        .svd(false, false)
        .map_err(|e| ExpandError::Verify(format!("SVD of `{name}` failed: {e}")))?;
    let mut sv: Vec<f64> = s.to_vec();
    sv.sort_by(|x, y| y.total_cmp(x));
    let smax = sv.first().copied().unwrap_or(0.0);
    let floor = w.nrows().max(w.ncols()) as f64 * f32::EPSILON as f64 * smax;
    let rank = sv.iter().filter(|&&x| x > floor).count();
    let total: f64 = sv.iter().sum();
    let effective_rank = if total > 0.0 {
        let h: f64 = sv
            .iter()
            .map(|&x| x / total)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        h.exp()
    } else {
        0.0
    };
    Ok(Spectrum {
        name: name.to_owned(),
        shape: w.dim(),
        singular_values: sv,
        rank,
        effective_rank,
    })
}

/// Spectra of every 2-D weight of `model` except embeddings, under their Hugging Face names.
pub fn spectra(model: &Model) -> Result<Vec<Spectrum>, ExpandError> {
    model
        .named_tensors()
        .into_iter()
        .filter(|(n, t)| t.ndim() == 2 && !n.contains("embeddings"))
        .map(|(n, t)| spectrum(&n, t.into_dimensionality::<ndarray::Ix2>().expect("2-d")))
        .collect()
}
