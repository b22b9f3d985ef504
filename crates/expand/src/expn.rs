//! EXPN (spec section 3): growing one matrix or vector with index maps, as direct gathers into a
//! preallocated output (no products with selection matrices).
//!
//! Every output element is computed by one expression, `S[r, c] * (1 / C_r)` (see
//! [`reciprocal`]; `S[r, c] * 1` where the in-dim is not grown), whatever the output orientation, so a tensor produced in Hugging Face
//! orientation and the same tensor produced in the typed (in, out) orientation hold the same
//! bits.

use crate::maps::IndexMap;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

/// Below this many output elements one thread is faster than rayon's hand-off; also the
/// number of elements per parallel task.
const PAR_MIN: usize = 1 << 16;

/// Layout of a matrix output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orient {
    /// (in, out), row-major: the typed orientation of [`bert2bert_checkpoint::Linear`].
    Typed,
    /// (out, in), row-major: Hugging Face `nn.Linear.weight`.
    Hf,
}

/// One matrix to grow, in the typed orientation `y = x W`.
///
/// Output unit `o` copies column `cols(o)` of `lower`, or of `upper` when `o >= split` (AKI's
/// new units from the layer above); input unit `i` takes row `rows(i)` divided by its copy count.
/// `None` for an axis means it is not grown (identity, no division).
pub struct MatrixSpec<'a> {
    /// The layer's own matrix, (in, out).
    pub lower: ArrayView2<'a, f32>,
    /// The layer above's matrix for new output units (AKI), same shape.
    pub upper: Option<ArrayView2<'a, f32>>,
    /// In-dim map (divide).
    pub rows: Option<&'a IndexMap>,
    /// Out-dim map (copy).
    pub cols: Option<&'a IndexMap>,
    /// First output unit taken from `upper`.
    pub split: usize,
}

impl MatrixSpec<'_> {
    /// Grown (in, out) sizes.
    pub fn grown_dims(&self) -> (usize, usize) {
        (
            self.rows.map_or(self.lower.nrows(), IndexMap::target),
            self.cols.map_or(self.lower.ncols(), IndexMap::target),
        )
    }
}

/// A source matrix with one axis contiguous: `line(k)` is row `k` (`Typed`) or column `k`
/// (`Hf`) as a slice, so every output row is a gather from one cache-resident slice.
struct Lines<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    len: usize,
}

impl<'a> Lines<'a> {
    /// Borrows `v` when it already has the layout `orient` reads, else makes a copy with it.
    fn new(v: ArrayView2<'a, f32>, orient: Orient) -> Self {
        // Typed reads source rows (so needs the standard layout); Hf reads source columns.
        let v = match orient {
            Orient::Typed => v,
            Orient::Hf => v.reversed_axes(),
        };
        let len = v.ncols();
        if let Some(s) = v.to_slice() {
            return Self {
                data: std::borrow::Cow::Borrowed(s),
                len,
            };
        }
        Self {
            data: std::borrow::Cow::Owned(to_row_major(v)),
            len,
        }
    }

    fn line(&self, k: usize) -> &[f32] {
        &self.data[k * self.len..(k + 1) * self.len]
    }
}

/// A row-major copy of `v`, transposing in cache-sized blocks when its rows are not contiguous.
fn to_row_major(v: ArrayView2<'_, f32>) -> Vec<f32> {
    const B: usize = 32;
    let (nr, nc) = v.dim();
    let mut out = vec![0.0f32; nr * nc];
    for r0 in (0..nr).step_by(B) {
        for c0 in (0..nc).step_by(B) {
            for c in c0..(c0 + B).min(nc) {
                for r in r0..(r0 + B).min(nr) {
                    out[r * nc + c] = v[[r, c]];
                }
            }
        }
    }
    out
}

/// Fills `out` (row-major, `orient`) with the grown matrix of `spec`.
pub fn fill_matrix(spec: &MatrixSpec<'_>, orient: Orient, out: &mut [f32]) {
    let (n_in, n_out) = spec.grown_dims();
    assert_eq!(out.len(), n_in * n_out, "output buffer size");
    if let Some(u) = &spec.upper {
        assert_eq!(u.dim(), spec.lower.dim(), "AKI source shapes");
    }
    let lo = Lines::new(spec.lower, orient);
    let up = spec.upper.map(|u| Lines::new(u, orient));
    let up = up.as_ref().unwrap_or(&lo);
    let split = if spec.upper.is_some() {
        spec.split
    } else {
        n_out
    };
    let rmap: Vec<usize> = match spec.rows {
        Some(m) => m.map().to_vec(),
        None => (0..n_in).collect(),
    };
    let inv: Vec<f32> = match spec.rows {
        Some(m) => rmap.iter().map(|&r| reciprocal(m.counts()[r])).collect(),
        None => vec![1.0; n_in],
    };
    let cmap: Vec<usize> = match spec.cols {
        Some(m) => m.map().to_vec(),
        None => (0..n_out).collect(),
    };
    let row_len = match orient {
        Orient::Typed => n_out,
        Orient::Hf => n_in,
    };
    let rows_per_task = (PAR_MIN / row_len.max(1)).max(1);
    let task = |(t, chunk): (usize, &mut [f32])| {
        for (k, orow) in chunk.chunks_mut(row_len).enumerate() {
            let a = t * rows_per_task + k;
            match orient {
                Orient::Typed => {
                    // Output row = input unit a: one source row per AKI half, one scale.
                    let m = inv[a];
                    let (l, u) = (lo.line(rmap[a]), up.line(rmap[a]));
                    let (left, right) = orow.split_at_mut(split);
                    for (dst, &c) in left.iter_mut().zip(&cmap[..split]) {
                        *dst = l[c] * m;
                    }
                    for (dst, &c) in right.iter_mut().zip(&cmap[split..]) {
                        *dst = u[c] * m;
                    }
                }
                Orient::Hf => {
                    // Output row = output unit a: one source column, one scale per element.
                    let col = if a >= split { up } else { &lo }.line(cmap[a]);
                    for ((dst, &r), &m) in orow.iter_mut().zip(&rmap).zip(&inv) {
                        *dst = col[r] * m;
                    }
                }
            }
        }
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(rows_per_task * row_len)
            .enumerate()
            .for_each(task);
    } else {
        out.chunks_mut(rows_per_task * row_len)
            .enumerate()
            .for_each(task);
    }
}

/// `1 / C` in f32. In-dim division multiplies by it: exactly `x / C` for the power-of-two
/// counts of integer ratios 2, 4, 8, within one rounding (6e-8 relative) otherwise, and a
/// multiplication instead of a division per element.
pub fn reciprocal(count: u32) -> f32 {
    1.0 / count as f32
}

/// One vector to grow: bias, LayerNorm parameter or embedding-free vector.
///
/// `out[j] = v[map(j)]`, from `upper` for `j >= split`, divided by C_{map(j)} when `divide`
/// (the tied-decoder fix on the MLM transform LayerNorm).
pub struct VectorSpec<'a> {
    /// The layer's own vector.
    pub lower: ArrayView1<'a, f32>,
    /// The layer above's vector for new units (AKI).
    pub upper: Option<ArrayView1<'a, f32>>,
    /// The unit map; `None` keeps the vector as it is.
    pub map: Option<&'a IndexMap>,
    /// First unit taken from `upper`.
    pub split: usize,
    /// Divide by the copy counts.
    pub divide: bool,
}

impl VectorSpec<'_> {
    /// Grown length.
    pub fn grown_len(&self) -> usize {
        self.map.map_or(self.lower.len(), IndexMap::target)
    }
}

/// Fills `out` with the grown vector of `spec`.
pub fn fill_vector(spec: &VectorSpec<'_>, out: &mut [f32]) {
    assert_eq!(out.len(), spec.grown_len(), "output buffer size");
    let Some(m) = spec.map else {
        for (o, v) in out.iter_mut().zip(spec.lower.iter()) {
            *o = *v;
        }
        return;
    };
    for (j, o) in out.iter_mut().enumerate() {
        let k = m.map()[j];
        let v = match &spec.upper {
            Some(u) if j >= spec.split => u[k],
            _ => spec.lower[k],
        };
        *o = if spec.divide {
            v * reciprocal(m.counts()[k])
        } else {
            v
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapRole;
    use crate::options::MapKind;
    use ndarray::Array2;

    /// The tiled, orientation-aware kernel against the spec's formula written naively.
    #[test]
    fn both_orientations_match_the_formula() {
        // Large enough (130 x 600) for the parallel path.
        let w = Array2::from_shape_fn((5, 7), |(r, c)| (r * 10 + c) as f32 + 0.5);
        let up = w.mapv(|x| -x);
        let gi = IndexMap::new(MapKind::Random, 5, 130, 1, MapRole::Hidden);
        let go = IndexMap::new(MapKind::Balanced, 7, 600, 2, MapRole::Ffn(0));
        let fortran = w.t().as_standard_layout().into_owned().reversed_axes();
        for lower in [w.view(), fortran.view()] {
            let spec = MatrixSpec {
                lower,
                upper: Some(up.view()),
                rows: Some(&gi),
                cols: Some(&go),
                split: 7,
            };
            let mut typed = vec![0.0; 130 * 600];
            let mut hf = vec![0.0; 130 * 600];
            fill_matrix(&spec, Orient::Typed, &mut typed);
            fill_matrix(&spec, Orient::Hf, &mut hf);
            for i in 0..130 {
                for o in 0..600 {
                    let (r, c) = (gi.map()[i], go.map()[o]);
                    let s = if o >= 7 { up[[r, c]] } else { w[[r, c]] };
                    let want = s * reciprocal(gi.counts()[r]);
                    assert_eq!(typed[i * 600 + o].to_bits(), want.to_bits());
                    assert_eq!(hf[o * 130 + i].to_bits(), want.to_bits());
                }
            }
        }
    }
}
