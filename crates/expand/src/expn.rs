//! EXPN (spec section 3): growing one matrix or vector with index maps, as direct gathers into a
//! preallocated output (no products with selection matrices).
//!
//! Every output element is computed by one expression, `S[r, c] * (1 / C_r)` (see
//! [`reciprocal`]; `S[r, c] * 1` where the in-dim is not grown), whatever the output orientation, so a tensor produced in Hugging Face
//! orientation and the same tensor produced in the typed (in, out) orientation hold the same
//! bits.

use crate::maps::IndexMap;
use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;
use std::sync::Mutex;

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

/// Scratch buffers for transposed sources, reused across calls: on this project's VMs the
/// first touch of fresh memory costs about 9 us per 4 KiB page, more than the gather itself.
static SCRATCH: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Buffers kept for reuse: the lower and upper source of one call. At most two source matrices
/// stay allocated between calls.
const SCRATCH_KEEP: usize = 2;

/// A source matrix with one axis contiguous: `line(k)` is row `k` (`Typed`) or column `k`
/// (`Hf`) as a slice, so every output row is a gather from one cache-resident slice.
struct Lines<'a> {
    borrowed: Option<&'a [f32]>,
    owned: Vec<f32>,
    len: usize,
}

impl<'a> Lines<'a> {
    /// Borrows `v` when it already has the layout `orient` reads, else copies it with that
    /// layout into a scratch buffer.
    fn new(v: ArrayView2<'a, f32>, orient: Orient) -> Self {
        // Typed reads source rows (so needs the standard layout); Hf reads source columns.
        let (want, other) = match orient {
            Orient::Typed => (v, v.reversed_axes()),
            Orient::Hf => (v.reversed_axes(), v),
        };
        let len = want.ncols();
        if let Some(s) = want.to_slice() {
            return Self {
                borrowed: Some(s),
                owned: Vec::new(),
                len,
            };
        }
        // The largest kept buffer: after the first few tensors none needs to grow.
        let mut owned = SCRATCH
            .lock()
            .ok()
            .and_then(|mut p| {
                let i = (0..p.len()).max_by_key(|&i| p[i].capacity())?;
                Some(p.swap_remove(i))
            })
            .unwrap_or_default();
        match other.to_slice() {
            Some(s) => transpose_into(s, other.nrows(), other.ncols(), &mut owned),
            None => {
                owned.clear();
                owned.extend(want.iter().copied());
            }
        }
        Self {
            borrowed: None,
            owned,
            len,
        }
    }

    fn line(&self, k: usize) -> &[f32] {
        let data = self.borrowed.unwrap_or(&self.owned);
        &data[k * self.len..(k + 1) * self.len]
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if self.owned.capacity() > 0
            && let Ok(mut pool) = SCRATCH.lock()
            && pool.len() < SCRATCH_KEEP
        {
            pool.push(std::mem::take(&mut self.owned));
        }
    }
}

/// The transpose of the row-major `rows x cols` matrix `src`, row-major.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::new();
    transpose_into(src, rows, cols, &mut out);
    out
}

/// [`transpose`] into `out` (resized). Each task owns `S` output rows (source columns) and
/// moves 8 x 8 tiles through registers, `S x S` source blocks at a time: the matrix sizes of
/// Transformers are multiples of 4 KiB, so plain strided loops hit the same cache sets.
fn transpose_into(src: &[f32], rows: usize, cols: usize, out: &mut Vec<f32>) {
    const B: usize = 8;
    const S: usize = 64;
    assert_eq!(src.len(), rows * cols, "matrix size");
    out.clear();
    out.resize(rows * cols, 0.0);
    if out.is_empty() {
        return;
    }
    let block = |(sb, chunk): (usize, &mut [f32])| {
        let c_start = sb * S;
        let c_end = c_start + chunk.len() / rows;
        for rs in (0..rows).step_by(S) {
            let r_end = (rs + S).min(rows);
            let mut r0 = rs;
            while r0 < r_end {
                let rn = (r_end - r0).min(B);
                let mut c0 = c_start;
                while c0 < c_end {
                    let cn = (c_end - c0).min(B);
                    if rn == B && cn == B {
                        let mut t = [[0.0f32; B]; B];
                        for (i, ti) in t.iter_mut().enumerate() {
                            let at = (r0 + i) * cols + c0;
                            ti.copy_from_slice(&src[at..at + B]);
                        }
                        // Column j of the tile is read across its rows: an index is clearest.
                        #[allow(clippy::needless_range_loop)]
                        for j in 0..B {
                            let at = (c0 + j - c_start) * rows + r0;
                            let o = &mut chunk[at..at + B];
                            for (i, oi) in o.iter_mut().enumerate() {
                                *oi = t[i][j];
                            }
                        }
                    } else {
                        for i in 0..rn {
                            for j in 0..cn {
                                chunk[(c0 + j - c_start) * rows + r0 + i] =
                                    src[(r0 + i) * cols + c0 + j];
                            }
                        }
                    }
                    c0 += cn;
                }
                r0 += rn;
            }
        }
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(S * rows).enumerate().for_each(block);
    } else {
        out.chunks_mut(S * rows).enumerate().for_each(block);
    }
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
    // Old units keep their place (maps.rs), so both maps start with an identity run: there the
    // gather is a contiguous, vectorised multiply by the same factors (the same bits).
    let id_prefix = |m: &[usize]| m.iter().enumerate().take_while(|(k, s)| k == *s).count();
    let (rid, cid) = (id_prefix(&rmap), id_prefix(&cmap).min(split));
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
                    let (same, moved) = left.split_at_mut(cid);
                    for (dst, &s) in same.iter_mut().zip(&l[..cid]) {
                        *dst = s * m;
                    }
                    for (dst, &c) in moved.iter_mut().zip(&cmap[cid..split]) {
                        *dst = l[c] * m;
                    }
                    for (dst, &c) in right.iter_mut().zip(&cmap[split..]) {
                        *dst = u[c] * m;
                    }
                }
                Orient::Hf => {
                    // Output row = output unit a: one source column, one scale per element.
                    let col = if a >= split { up } else { &lo }.line(cmap[a]);
                    let (same, moved) = orow.split_at_mut(rid);
                    for ((dst, &s), &m) in same.iter_mut().zip(&col[..rid]).zip(&inv[..rid]) {
                        *dst = s * m;
                    }
                    for ((dst, &r), &m) in moved.iter_mut().zip(&rmap[rid..]).zip(&inv[rid..]) {
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
    fn transpose_is_a_transpose() {
        for (r, c) in [(1, 1), (3, 70), (65, 33), (300, 257), (64, 256)] {
            let a = Array2::from_shape_fn((r, c), |(i, j)| (i * 1000 + j) as f32);
            let t = transpose(a.as_slice().unwrap(), r, c);
            assert_eq!(Array2::from_shape_vec((c, r), t).unwrap(), a.t());
        }
    }

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
