//! EXPN (spec section 3): growing one matrix or vector with index maps, as direct gathers into a
//! preallocated output (no products with selection matrices).
//!
//! Every output element is computed by one expression, `S[r, c] / C_r` (or `S[r, c]` where the
//! in-dim is not grown), whatever the output orientation, so a tensor produced in Hugging Face
//! orientation and the same tensor produced in the typed (in, out) orientation hold the same
//! bits.

use crate::maps::IndexMap;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

/// Output tiles are `TILE x TILE`: a transposing gather then reads and writes whole cache lines.
const TILE: usize = 64;
/// Below this many output elements one thread is faster than rayon's hand-off.
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

/// A matrix as a slice plus element strides (non-negative), copying only views that are not
/// contiguous in memory (or that must share another matrix's layout).
struct Strided<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    rs: usize,
    cs: usize,
}

impl<'a> Strided<'a> {
    /// Borrows `v` when it is contiguous with non-negative strides, else copies it.
    fn new(v: ArrayView2<'a, f32>) -> Self {
        let strides = v.strides();
        if strides.iter().all(|&s| s >= 0)
            && let Some(s) = v.to_slice_memory_order()
        {
            return Self {
                data: std::borrow::Cow::Borrowed(s),
                rs: strides[0] as usize,
                cs: strides[1] as usize,
            };
        }
        Self::standard(v)
    }

    /// A row-major copy of `v`.
    fn standard(v: ArrayView2<'a, f32>) -> Self {
        let ncols = v.ncols();
        let owned: Array2<f32> = v.as_standard_layout().into_owned();
        Self {
            data: std::borrow::Cow::Owned(owned.into_raw_vec_and_offset().0),
            rs: ncols,
            cs: 1,
        }
    }
}

/// Fills `out` (row-major, `orient`) with the grown matrix of `spec`.
pub fn fill_matrix(spec: &MatrixSpec<'_>, orient: Orient, out: &mut [f32]) {
    let (n_in, n_out) = spec.grown_dims();
    assert_eq!(out.len(), n_in * n_out, "output buffer size");
    if let Some(u) = &spec.upper {
        assert_eq!(u.dim(), spec.lower.dim(), "AKI source shapes");
    }
    let mut lower = Strided::new(spec.lower);
    let mut upper = spec.upper.map(Strided::new);
    // The layer above must share the layout so one offset table serves both.
    if let Some(u) = &upper
        && (u.rs, u.cs) != (lower.rs, lower.cs)
    {
        lower = Strided::standard(spec.lower);
        upper = spec.upper.map(Strided::standard);
    }
    let row_src: Vec<usize> = match spec.rows {
        Some(m) => m.map().to_vec(),
        None => (0..n_in).collect(),
    };
    let roff: Vec<usize> = row_src.iter().map(|&r| r * lower.rs).collect();
    let div: Vec<f32> = match spec.rows {
        Some(m) => row_src.iter().map(|&r| m.counts()[r] as f32).collect(),
        None => vec![1.0; n_in],
    };
    let coff: Vec<usize> = match spec.cols {
        Some(m) => m.map().iter().map(|&c| c * lower.cs).collect(),
        None => (0..n_out).map(|c| c * lower.cs).collect(),
    };
    let lo: &[f32] = &lower.data;
    let up: &[f32] = upper.as_ref().map_or(lo, |u| &u.data);
    let split = if upper.is_some() { spec.split } else { n_out };
    let src = |o: usize| if o >= split { up } else { lo };
    let parallel = out.len() >= PAR_MIN;
    match orient {
        Orient::Typed => {
            let block = |(b, chunk): (usize, &mut [f32])| {
                let i0 = b * TILE;
                for o0 in (0..n_out).step_by(TILE) {
                    let o1 = (o0 + TILE).min(n_out);
                    for (di, orow) in chunk.chunks_mut(n_out).enumerate() {
                        let (base, d) = (roff[i0 + di], div[i0 + di]);
                        for o in o0..o1 {
                            orow[o] = src(o)[base + coff[o]] / d;
                        }
                    }
                }
            };
            if parallel {
                out.par_chunks_mut(TILE * n_out).enumerate().for_each(block);
            } else {
                out.chunks_mut(TILE * n_out).enumerate().for_each(block);
            }
        }
        Orient::Hf => {
            let block = |(b, chunk): (usize, &mut [f32])| {
                let o_start = b * TILE;
                for i0 in (0..n_in).step_by(TILE) {
                    let i1 = (i0 + TILE).min(n_in);
                    for (doo, orow) in chunk.chunks_mut(n_in).enumerate() {
                        let o = o_start + doo;
                        let (s, c) = (src(o), coff[o]);
                        for i in i0..i1 {
                            orow[i] = s[roff[i] + c] / div[i];
                        }
                    }
                }
            };
            if parallel {
                out.par_chunks_mut(TILE * n_in).enumerate().for_each(block);
            } else {
                out.chunks_mut(TILE * n_in).enumerate().for_each(block);
            }
        }
    }
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
            v / m.counts()[k] as f32
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
                    let want = s / gi.counts()[r] as f32;
                    assert_eq!(typed[i * 600 + o].to_bits(), want.to_bits());
                    assert_eq!(hf[o * 130 + i].to_bits(), want.to_bits());
                }
            }
        }
    }
}
